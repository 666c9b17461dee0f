"""Message encoding for the policy server: msgpack with numpy arrays as typed byte blobs.

An array travels as {"__ndarray__": True, "dtype": str, "shape": [...], "data": bytes}; only
plain numeric dtypes are accepted, so decoding never executes anything (no pickle).
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

ALLOWED_DTYPES = {"uint8", "uint16", "int32", "int64", "float16", "float32", "float64", "bool"}


class MessageError(ValueError):
    """A message could not be decoded or does not have the expected fields."""


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in ALLOWED_DTYPES:
            raise MessageError(f"array dtype {obj.dtype} not allowed")
        return {"__ndarray__": True, "dtype": obj.dtype.name, "shape": list(obj.shape),
                "data": np.ascontiguousarray(obj).tobytes()}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _hook(obj: dict) -> Any:
    if obj.get("__ndarray__") is True:
        dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("data")
        if dtype not in ALLOWED_DTYPES or not isinstance(shape, list) or not isinstance(data, bytes):
            raise MessageError(f"malformed array (dtype={dtype!r})")
        arr = np.frombuffer(data, dtype=dtype)
        if arr.size != int(np.prod(shape)):
            raise MessageError(f"array data has {arr.size} values, shape {shape} needs {int(np.prod(shape))}")
        return arr.reshape(shape)
    return obj


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    if not isinstance(data, (bytes, bytearray)):
        raise MessageError("expected a binary message")
    try:
        return msgpack.unpackb(data, object_hook=_hook, raw=False, strict_map_key=False)
    except MessageError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for garbage input
        raise MessageError(f"undecodable message: {exc}") from exc
