"""How the server runs: :class:`ServeConfig` (address, token, limits, checkpoints), checked before it starts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from clipmath.compose import available_methods, learned_methods, zero_shot_methods
from clipmath.errors import ClipmathError
from clipmath.imageio import MAX_PIXELS
from clipmath.serve.schemas import MAX_K

TOKEN_ENV = "CLIPMATH_TOKEN"


@dataclass
class ServeConfig:
    """How the server runs. ``index`` is the search index kind ``clipmath serve`` opens the retriever with."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    #: Largest upload accepted (width × height); thumbnails of gallery files use the index's limit, MAX_PIXELS.
    max_pixels: int = MAX_PIXELS
    #: Pixels of uploads decoded at once, all requests together; beyond it an upload waits (then 503).
    upload_pixel_budget: int = MAX_PIXELS
    #: Seconds an upload may wait for room in the pixel budget before it is answered 503.
    upload_wait_seconds: float = 60.0
    default_k: int = 12
    max_k: int = 100
    index: str = "exact"
    thumbnail_size: int = 256
    thumbnail_cache_bytes: int = 64 * 1024 * 1024
    max_batch: int = 32
    upload_slots: int = 128
    #: Host headers accepted; None = loopback names when bound to loopback (stops DNS rebinding), else any.
    allowed_hosts: tuple[str, ...] | None = None
    #: Trained weights of learned compose methods, by method name; only these learned methods are offered.
    checkpoints: dict[str, str] = field(default_factory=dict)
    #: Captions: the language model of image captions (None: off), their decoder and its options (a decoder without
    #: a language model, memory or decap, is on when its options name a corpus or checkpoint), and a trained
    #: CLIP4IDC checkpoint for difference captions (None: zero-shot with the decoder when captions are on).
    caption_lm: str | None = None
    decoder: str = "magic"
    decoder_options: dict[str, object] = field(default_factory=dict)
    difference_checkpoint: str | None = None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def check(self) -> None:
        """Refuse unsafe or impossible settings with a one-line :class:`ClipmathError`."""
        if not self.loopback and not self.token:
            raise ClipmathError(
                f"binding to {self.host} exposes the server beyond this machine: set a 'token' "
                f"or the {TOKEN_ENV} environment variable (or bind to 127.0.0.1)"
            )
        if self.token is not None and len(self.token) < 8:
            raise ClipmathError("the token is too short: use at least 8 characters (16+ random ones recommended)")
        if not 1 <= self.default_k <= self.max_k <= MAX_K:
            raise ClipmathError(f"need 1 <= default k ({self.default_k}) <= max k ({self.max_k}) <= {MAX_K}")
        if self.max_upload_bytes < 1 or self.max_pixels < 1:
            raise ClipmathError("upload byte and pixel limits must be positive")
        if self.upload_pixel_budget < self.max_pixels:
            raise ClipmathError(
                f"the upload pixel budget ({self.upload_pixel_budget:,}) is below the pixel limit of one upload "
                f"({self.max_pixels:,})"
            )
        unknown = sorted(set(self.checkpoints) - set(learned_methods()))
        if unknown:
            raise ClipmathError(
                f"checkpoints given for {', '.join(unknown)}, which are not learned methods "
                f"(learned: {', '.join(learned_methods()) or 'none'})"
            )

    def methods(self) -> dict[str, str]:
        """The compose methods this server offers: zero-shot ones, and learned ones given a checkpoint."""
        offered = set(zero_shot_methods()) | set(self.checkpoints)
        return {name: description for name, description in available_methods().items() if name in offered}

    def trusted_hosts(self) -> list[str]:
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        return ["127.0.0.1", "localhost", "[::1]", "::1"] if self.loopback else ["*"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
