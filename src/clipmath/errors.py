"""Exceptions that carry a one-line, actionable message for the user.

Anything raised as a :class:`ClipmathError` is a user-facing problem (bad input, missing model, incomplete
dataset folder); the CLI and the HTTP server print its message instead of a traceback.
"""


class ClipmathError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""


class ModelLoadError(ClipmathError):
    """A model name, folder or checkpoint could not be loaded."""


class StoreError(ClipmathError):
    """A gallery store is missing, corrupt, or incompatible with the request."""


class SearchError(ClipmathError):
    """A search that cannot mean anything: a query vector that is not finite or is zero, k below 1, a gallery that
    is not a 2-d array of rows, an index FAISS cannot build."""


class ComposeError(ClipmathError):
    """A composition query is missing inputs or is malformed.

    ``field`` names the query field at fault when there is one (``reference``, ``text``, ``source``, ``target``,
    ``lam``, ``expression``, ``checkpoint``, ``k``), so that a front end can word the message its own way (a CLI
    flag, a JSON key) without parsing it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DatasetError(ClipmathError):
    """A benchmark folder is incomplete or malformed."""


class SubmissionError(ClipmathError):
    """A test-server prediction file does not follow the server's documented format."""


class CaptionError(ClipmathError):
    """Captioning options, targets or a caption file to score are invalid."""
