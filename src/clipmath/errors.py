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


class ComposeError(ClipmathError):
    """A composition query is missing inputs or is malformed."""


class DatasetError(ClipmathError):
    """A benchmark folder is incomplete or malformed."""


class SubmissionError(ClipmathError):
    """A test-server prediction file does not follow the server's documented format."""


class CaptionError(ClipmathError):
    """Captioning options, targets or a caption file to score are invalid."""
