"""Typed errors shared by every package.

The CLI renders any `ShopsearchError` once, as a message and an exit code, never as a
traceback; library users catch the specific subclass they care about.
"""


class ShopsearchError(Exception):
    """Base class: a problem the user can fix (bad input, missing model, wrong collection)."""

    exit_code = 1


class UsageError(ShopsearchError):
    """A bad flag or argument value."""

    exit_code = 2


class FilterError(UsageError):
    """A `--filter` expression that cannot be parsed or does not fit the collection schema."""


class CatalogError(ShopsearchError):
    """The catalog file itself cannot be read (missing, unknown format, no id/title column)."""


class ModelNotFoundError(ShopsearchError):
    """No exported encoder where one was expected, or a base model that cannot be resolved."""


class ModelIntegrityError(ShopsearchError):
    """An exported model's files do not match the sha256 recorded in its manifest."""


class EncoderMismatchError(ShopsearchError):
    """The encoder differs from the one that built the collection: its vectors would be garbage."""


class CollectionError(ShopsearchError):
    """The collection is missing, was not built by shopsearch, or has an incompatible schema."""


class CollectionBusyError(CollectionError):
    """Another process has the collection: an ingest writing it, or (embedded Qdrant Edge,
    one process per shard) any process holding its shard open."""


class ServerError(CollectionError):
    """The Qdrant server cannot be reached, refuses the API key, or fails a request; the
    message names the URL, so a wrong `--qdrant-url` or key is fixed without a traceback."""


class MissingExtraError(ShopsearchError):
    """A command needs an optional extra (e.g. `shopsearch[train]`) that is not installed."""


class InputFileError(UsageError):
    """A judgments, run or query file with a bad line, column or value; the message names the
    file and the line or column, so the user can fix the file rather than guess."""


class Interrupted(ShopsearchError):
    """The user pressed Ctrl-C. The message, if any, says what the command kept, so that a
    user knows whether to run it again; the CLI prints it after "interrupted"."""

    exit_code = 130
