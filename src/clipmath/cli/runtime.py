"""What every model-running command does first: set torch's threads and load the encoder at the asked precision."""

from __future__ import annotations

import inspect
from typing import Any, Optional

from clipmath.cli.output import status
from clipmath.errors import ClipmathError


def set_threads(threads: Optional[int]) -> None:
    """``--threads N``: torch's intra-op threads (left alone when not given)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def encoder_precision(load: Any, dtype: str, device: str) -> dict[str, Any]:
    """The keyword ``load`` (``load_encoder``) takes for ``--dtype``: ``dtype=`` where it has one, else ``fp16=``."""
    if dtype == "auto" and not device.startswith("cuda"):
        dtype = "float32"
    parameters = inspect.signature(load).parameters
    if "dtype" in parameters:
        return {"dtype": dtype}
    if dtype == "auto":
        dtype = "float16"
    if dtype == "bfloat16":
        raise ClipmathError("--dtype bfloat16 is not supported by this encoder loader yet: use float16 or float32")
    return {"fp16": True} if dtype == "float16" and "fp16" in parameters else {}


def load_model(
    model: Optional[str],
    device: str = "cpu",
    preprocessing: str = "clip",
    dtype: str = "float32",
    threads: Optional[int] = None,
    as_json: bool = False,
) -> Any:
    """The encoder a command runs, with a ``model: …`` line on stderr (so output always says which model ran)."""
    from clipmath.encoders import load_encoder

    set_threads(threads)
    precision = encoder_precision(load_encoder, dtype, device)
    encoder = load_encoder(model, device=device, preprocessing=preprocessing, **precision)
    status(f"model: {encoder.info.label()}", as_json)
    return encoder
