"""Decoders for dlib's binary serialisation format, in plain Python and NumPy.

Why: dlib's pretrained networks ship as files written by its C++ `serialize()`; reading them without
importing dlib keeps the model a pure params pytree (no C++ extension at run time, nothing that
JAX cannot trace). Only the primitives a dlib DNN file uses are implemented, each checked against
dlib's own definitions (dlib/serialize.h, dlib/float_details.h, dlib/cuda/tensor.h):

- integers: one control byte (bit 7: negative, low 4 bits: number of bytes), then that many
  little-endian magnitude bytes;
- floats and doubles: an integer mantissa then an integer exponent, value = mantissa * 2**exponent
  (exponents 32000/32001/32002 mean +inf/-inf/NaN);
- strings: an integer length then the raw bytes; bools: the ASCII byte '1' or '0';
- tensors: a version integer (2), then num_samples, k, nr, nc as integers, then the values as
  little-endian IEEE float32 (dlib writes tensors raw, not through its float encoding);
- alias tensors (views into a layer's params): version 1 and the four sizes, no data.
"""

from __future__ import annotations

import math

import numpy as np

# float_details' special exponents.
_EXP_INF = 32000
_EXP_NINF = 32001
_EXP_NAN = 32002


class DlibFormatError(ValueError):
  """The bytes are not what dlib would have written at this point."""


class Reader:
  """A cursor over the bytes of a dlib-serialised object.

  Every read either returns a value and advances, or raises `DlibFormatError` naming the byte
  offset, so that a wrong file or a topology mismatch is reported where it is detected rather than
  as garbage weights.
  """

  def __init__(self, data: bytes):
    self._data = memoryview(data)
    self.pos = 0

  def __len__(self) -> int:
    return len(self._data)

  @property
  def remaining(self) -> int:
    return len(self._data) - self.pos

  def _take(self, n: int) -> memoryview:
    if n < 0 or self.pos + n > len(self._data):
      raise DlibFormatError(f"unexpected end of data at byte {self.pos} (wanted {n} bytes)")
    out = self._data[self.pos:self.pos + n]
    self.pos += n
    return out

  def read_int(self, signed: bool = True) -> int:
    """A compact integer; an unsigned one with the sign bit set is an error, as in `unpack_int`."""
    start = self.pos
    control = self._take(1)[0]
    size = control & 0x0F
    if control & 0x70 or size == 0 or size > 8 or (control & 0x80 and not signed):
      raise DlibFormatError(f"bad integer control byte 0x{control:02x} at byte {start}")
    value = int.from_bytes(self._take(size), "little")
    if signed and control & 0x80:
      value = -value
    return value

  def read_float(self) -> float:
    """A float/double: mantissa then exponent (dlib's current binary format, not the old ASCII)."""
    start = self.pos
    if self.pos < len(self._data) and self._data[self.pos] & 0x70:
      raise DlibFormatError(f"old ASCII float encoding at byte {start} is not supported")
    mantissa = self.read_int()
    exponent = self.read_int()
    if exponent == _EXP_INF:
      return math.inf
    if exponent == _EXP_NINF:
      return -math.inf
    if exponent == _EXP_NAN:
      return math.nan
    if not -32768 <= exponent < _EXP_INF:
      raise DlibFormatError(f"float exponent {exponent} out of range at byte {start}")
    return math.ldexp(float(mantissa), exponent)

  def read_string(self) -> str:
    n = self.read_int(signed=False)
    return bytes(self._take(n)).decode("latin-1")

  def read_bool(self) -> bool:
    start = self.pos
    ch = self._take(1)[0]
    if ch not in (ord("0"), ord("1")):
      raise DlibFormatError(f"bad bool byte 0x{ch:02x} at byte {start}")
    return ch == ord("1")

  def expect_string(self, *allowed: str) -> str:
    """Reads a version tag and checks it is one of `allowed`."""
    start = self.pos
    tag = self.read_string()
    if tag not in allowed:
      raise DlibFormatError(f"expected one of {allowed} at byte {start}, found {tag!r}")
    return tag

  def expect_int(self, *allowed: int) -> int:
    start = self.pos
    value = self.read_int()
    if value not in allowed:
      raise DlibFormatError(f"expected one of {allowed} at byte {start}, found {value}")
    return value

  def read_tensor(self) -> np.ndarray:
    """A `resizable_tensor` as a float32 array of shape (num_samples, k, nr, nc)."""
    start = self.pos
    version = self.read_int()
    if version != 2:
      raise DlibFormatError(f"tensor version {version} at byte {start}; only 2 is known")
    shape = tuple(self.read_int() for _ in range(4))
    if any(d < 0 for d in shape):
      raise DlibFormatError(f"negative tensor shape {shape} at byte {start}")
    count = int(np.prod(shape))
    raw = self._take(4 * count)
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

  def read_alias_tensor(self) -> tuple[int, int, int, int]:
    """An `alias_tensor` (a shaped view into params): only its shape is stored."""
    self.expect_int(1)
    return tuple(self.read_int() for _ in range(4))
