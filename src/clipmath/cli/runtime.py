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
) -> Any:
    """The encoder a command runs, with a ``model: …`` line on stderr (so output always says which model ran)."""
    from clipmath.encoders import load_encoder

    set_threads(threads)
    encoder = load_encoder(model, device=device, preprocessing=preprocessing, dtype=dtype)
    status(f"model: {encoder.info.label()}", as_json)
    return encoder
