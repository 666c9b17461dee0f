"""Message encoding for the policy server: openpi's msgpack-numpy, decoded without executing anything.

Wire format (the same bytes as ``openpi_client.msgpack_numpy``):

    array    {b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str (e.g. "<f4"), b"shape": [...]}
    scalar   {b"__npgeneric__": True, b"data": value, b"dtype": dtype.str}

Keys of those two maps are msgpack *bin* (bytes), every other string is msgpack *str*. Decoding
accepts only plain numeric, boolean and fixed-width string dtypes (no object, void or complex
arrays: nothing is unpickled) and checks that the data size matches the shape.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ALLOWED_KINDS = frozenset("biufUS")  # bool, ints, floats, fixed-width unicode / bytes


class MessageError(ValueError):
    """A message could not be decoded or does not have the expected fields."""


def _check_dtype(spec: Any) -> np.dtype:
    if not isinstance(spec, (str, bytes)):
        raise MessageError(f"malformed array (dtype={spec!r})")
    try:
        dtype = np.dtype(spec.decode() if isinstance(spec, bytes) else spec)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"malformed array (dtype={spec!r})") from exc
    if dtype.kind not in ALLOWED_KINDS or dtype.hasobject:
        raise MessageError(f"array dtype {dtype} not allowed")
    return dtype


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise MessageError(f"array dtype {obj.dtype} not allowed")
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(),
                b"dtype": obj.dtype.str, b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise MessageError(f"scalar dtype {obj.dtype} not allowed")
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype = _check_dtype(obj.get(b"dtype"))
        shape, data = obj.get(b"shape"), obj.get(b"data")
        if (not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape)
                or not isinstance(data, bytes)):
            raise MessageError(f"malformed array (shape={shape!r})")
        count = int(np.prod(shape, dtype=np.int64))
        if len(data) != count * dtype.itemsize:
            raise MessageError(f"array data has {len(data)} bytes, shape {list(shape)} of {dtype} needs "
                               f"{count * dtype.itemsize}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        dtype = _check_dtype(obj.get(b"dtype"))
        try:
            return dtype.type(obj.get(b"data"))
        except (TypeError, ValueError) as exc:
            raise MessageError(f"malformed scalar of dtype {dtype}") from exc
    return obj


def packb(obj: Any) -> bytes:
    """Encode ``obj`` (maps, lists, scalars, strings, numpy arrays) as openpi does."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Decode one message; raise MessageError (never anything else) for garbage or unsafe arrays."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError("expected a binary (msgpack) message")
    try:
        return msgpack.unpackb(data, object_hook=_hook, raw=False)
    except MessageError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for garbage input
        raise MessageError(f"undecodable message: {exc}") from exc
