"""What every model-running command does first: set torch's threads and load the encoder at the asked precision."""

from __future__ import annotations

from typing import Any, Optional

from clipmath.cli.output import status


def set_threads(threads: Optional[int]) -> None:
    """``--threads N``: torch's intra-op threads (left alone when not given)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def load_model(
    model: Optional[str],
    device: str = "cpu",
    preprocessing: Optional[str] = None,
    dtype: str = "auto",
    threads: Optional[int] = None,
    as_json: bool = False,
    lazy: bool = False,
) -> Any:
    """The encoder a command runs, with a ``model: …`` line on stderr (so output always says which model ran).
    ``lazy``: a stand-in that loads the model on first use (no load, no torch import, when nothing is encoded)."""
    from clipmath.encoders import load_encoder
    from clipmath.encoders.lazy import LazyEncoder

    if lazy:
        encoder = LazyEncoder(model, device, preprocessing, dtype=dtype, threads=threads)
    else:
        set_threads(threads)
        encoder = load_encoder(model, device=device, preprocessing=preprocessing, dtype=dtype)
        if threads and hasattr(encoder, "set_threads"):
            encoder.set_threads(threads)  # also in the other threads that call it, and as many image workers
    status(f"model: {encoder.info.label()}", as_json)
    return encoder
