"""Exceptions for mistakes in what a user gave (config, data, paths), as opposed to bugs.

Why a separate family: an entry point prints a `UserError` as one line (what went wrong, where,
how to fix it) and exits with status 2, because a traceback would only bury that line; anything
else is a bug and keeps its traceback. Each class also derives from the builtin exception that
callers already catch (`ValueError`, `FileNotFoundError`), so raising one changes no caller.
"""


class UserError(Exception):
  """Base: the input is wrong, the code is not. The message must say how to fix it."""


class ConfigError(UserError, ValueError):
  """A config value or key that cannot work (unknown name, invalid setting)."""


class DataError(UserError, ValueError):
  """The data exist but cannot be used (no identity folders, no readable image)."""


class MissingInputError(UserError, FileNotFoundError):
  """A path the run needs does not exist (data root, pretrained backbone, checkpoint)."""


class CorruptFileError(DataError):
  """A file this code wrote earlier no longer reads back as written (truncated, zeroed, altered)."""


class CorruptCheckpointError(CorruptFileError):
  """A checkpoint step that cannot be restored; `step`, `path` and `reason` say which and why."""

  def __init__(self, message: str, step: int | None = None, path: str | None = None,
               reason: str | None = None):
    super().__init__(message)
    self.step = step
    self.path = path
    self.reason = reason


class CorruptCacheError(CorruptFileError):
  """A decoded-image cache whose files differ from what was recorded when it was written."""
