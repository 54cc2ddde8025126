"""``clipmath serve``: the HTTP API and web page over a gallery store (needs the ``serve`` extra: FastAPI, uvicorn).

See ``docs/serve.md``. :func:`create_app` builds the application for a :class:`~clipmath.retrieval.Retriever`;
:func:`run_server` runs it with uvicorn.
"""

from clipmath.serve.app import BackgroundServer, ServeConfig, check_port_free, create_app, run_server
from clipmath.serve.captioning import Captioner, CaptionSubject, FunctionCaptioner

__all__ = [
    "BackgroundServer",
    "CaptionSubject",
    "Captioner",
    "FunctionCaptioner",
    "ServeConfig",
    "check_port_free",
    "create_app",
    "run_server",
]
