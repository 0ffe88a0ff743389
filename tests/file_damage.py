"""Damage a file written by the code the way disks and kills do (shared by the corruption tests)."""

import pathlib

KINDS = ("truncate_half", "empty", "zero_fill", "flip_byte", "delete")


def damage(path: pathlib.Path, how: str):
  data = path.read_bytes()
  if how == "truncate_half":
    path.write_bytes(data[:len(data) // 2])
  elif how == "empty":
    path.write_bytes(b"")
  elif how == "zero_fill":  # same size: only a checksum can tell
    path.write_bytes(bytes(len(data)))
  elif how == "flip_byte":  # orbax restores this one silently with a wrong value
    i = len(data) // 2
    path.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
  elif how == "delete":
    path.unlink()
  else:
    raise ValueError(how)
