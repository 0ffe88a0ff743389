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
