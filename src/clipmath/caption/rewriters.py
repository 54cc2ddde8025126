"""Rewriters: turn a reference image's caption and a modification text into a caption of the wanted image.

The composed-retrieval pipelines of :mod:`clipmath.caption.rewrite_methods` (CIReVL, LDRE, SEIZE) caption the
reference image, rewrite the caption with the instruction, then retrieve by text. A rewriter is named in
:data:`REWRITERS`:

* ``template`` — rules (replace / add / remove / change a colour or attribute / keep), no model;
* ``lm:NAME`` — any causal instruction model of :data:`~clipmath.caption.LANGUAGE_MODELS` (``lm:smollm2-135m``
  offline), prompted with a few-shot prompt;
* ``openai:URL[#MODEL]`` — any OpenAI-compatible chat endpoint (llama.cpp server, vLLM, Ollama, a hosted API); the
  key is read from ``$CLIPMATH_OPENAI_KEY`` or ``$OPENAI_API_KEY``.

    rewriter = load_rewriter("template")
    rewriter.rewrite("a brown dog on a sofa", "make the dog white")   # -> "a white dog on a sofa"

Prompts are data (``caption/data/rewrite_prompts.json``), each citing the paper it follows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol

from clipmath.errors import CaptionError
from clipmath.registry import Registry

__all__ = ["REWRITERS", "FewShotPrompt", "Rewriter", "RewriterSpec", "load_prompt", "load_rewriter", "prompt_names"]


class Rewriter(Protocol):
    """What the pipelines call; ``label`` says which rewriter (and model) ran, for output."""

    label: str

    def rewrite(self, caption: str, instruction: str) -> str: ...


@dataclass(frozen=True)
class FewShotPrompt:
    """A few-shot editing prompt: a system text, worked examples, and where it comes from."""

    name: str
    system: str
    examples: tuple[tuple[str, str, str], ...]  # (caption, instruction, edited)
    source: str

    @staticmethod
    def user_text(caption: str, instruction: str) -> str:
        return f"Image content: {caption}\nInstruction: {instruction}\nEdited description:"

    def messages(self, caption: str, instruction: str) -> list[dict[str, str]]:
        """Chat messages: the system text, one user/assistant pair per example, then the query."""
        out = [{"role": "system", "content": self.system}]
        for before, change, after in self.examples:
            out.append({"role": "user", "content": self.user_text(before, change)})
            out.append({"role": "assistant", "content": after})
        return out + [{"role": "user", "content": self.user_text(caption, instruction)}]

    def plain(self, caption: str, instruction: str) -> str:
        """The same prompt as one text, for a model without a chat template."""
        shots = "".join(f"{self.user_text(b, c)} {a}\n\n" for b, c, a in self.examples)
        return f"{self.system}\n\n{shots}{self.user_text(caption, instruction)}"


@lru_cache(maxsize=1)
def _prompt_table() -> dict[str, Any]:
    return json.loads(resources.files("clipmath.caption").joinpath("data/rewrite_prompts.json").read_text("utf-8"))


def prompt_names() -> list[str]:
    return list(_prompt_table())


def load_prompt(name: str) -> FewShotPrompt:
    """The prompt ``name`` of the data file (a :class:`CaptionError` naming the known ones if unknown)."""
    table = _prompt_table()
    if name not in table:
        raise CaptionError(f"unknown rewrite prompt {name!r} (available: {', '.join(table)})")
    item = table[name]
    examples = tuple((e["caption"], e["instruction"], e["edited"]) for e in item["examples"])
    return FewShotPrompt(name, item["system"], examples, item["source"])


@dataclass(frozen=True)
class RewriterSpec:
    """A named rewriter: ``build(arg, prompt)`` makes it (``arg``: the text after ``name:``)."""

    name: str
    description: str
    build: Callable[[str | None, FewShotPrompt], Rewriter]
    arg_name: str | None = None


#: Every rewriter by name; built-ins are registered by ``clipmath.caption.builtin_rewriters``.
REWRITERS: Registry[RewriterSpec] = Registry(
    "rewriter", error=CaptionError, arg_name="argument", builtins="clipmath.caption.builtin_rewriters"
)


def load_rewriter(name: str, prompt: str = "cirevl") -> Rewriter:
    """The rewriter ``name`` (``template``, ``lm:NAME``, ``openai:URL[#MODEL]``) using the few-shot ``prompt``."""
    spec, arg = REWRITERS.resolve(name)
    if arg is None and spec.arg_name is not None:
        raise CaptionError(f"rewriter '{spec.name}' needs {spec.arg_name} after ':' (e.g. {spec.name}:...)")
    return spec.build(arg, load_prompt(prompt))


def first_line(text: str) -> str:
    """A model's answer cut to its first non-empty line, without quotes or a leading label."""
    for line in text.strip().splitlines():
        line = line.strip().strip('"').strip()
        for label in ("Edited description:", "Target description:"):
            if line.lower().startswith(label.lower()):
                line = line[len(label) :].strip()
        if line:
            return line
    return ""


class LanguageModelRewriter:
    """A local instruction model (any :data:`LANGUAGE_MODELS` entry) rewriting greedily from the few-shot prompt."""

    def __init__(self, lm_name: str, prompt: FewShotPrompt, max_new_tokens: int = 40, device: str = "cpu") -> None:
        from clipmath.caption.language_models import load_language_model

        self.lm = load_language_model(lm_name, device=device)
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.label = f"lm:{self.lm.model_id} ({prompt.name} prompt) [{self.lm.label()}]"

    def rewrite(self, caption: str, instruction: str) -> str:
        import warnings

        import torch

        ids = self.prompt_ids(caption, instruction).to(self.lm.device)
        eos = self.lm.end_of_text_ids()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' own deprecations, nothing a user can act on
            out = self.lm.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=eos[0] if eos else 0,
            )  # fmt: skip
        answer = first_line(self.lm.decode(out[0, ids.shape[1] :].tolist()))
        return answer or f"{caption}, {instruction}"

    def prompt_ids(self, caption: str, instruction: str) -> Any:
        """The prompt's token ids ``(1, T)``: as many examples as fit the model's context, the query always."""
        import torch

        config = self.lm.model.config
        room = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2048))
        room -= self.max_new_tokens
        tokenizer: Any = self.lm.tokenizer
        ids: list[int] = []
        for shots in range(len(self.prompt.examples), -1, -1):
            prompt = replace(self.prompt, examples=self.prompt.examples[:shots])
            if getattr(tokenizer, "chat_template", None):
                ids = list(tokenizer.apply_chat_template(
                    prompt.messages(caption, instruction), add_generation_prompt=True, tokenize=True,
                    return_dict=True)["input_ids"])  # fmt: skip
            else:
                ids = self.lm.encode(self.lm.context_prefix + prompt.plain(caption, instruction))
            if len(ids) <= room:
                break
        return torch.tensor([ids[-room:]], dtype=torch.long)
