"""Private file helpers for the Hand3D dataset: atomic writes, an inter-process lock,
path containment. Every write goes to a temporary name in the target's folder, then
``os.replace`` (atomic on POSIX), so readers see either the old or the new file, never half.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"


class PathEscapeError(ValueError):
    """A relative path resolves outside the folder it must stay in."""


def resolve_inside(root: str | os.PathLike, rel: str | os.PathLike) -> Path:
    """Resolve ``rel`` against ``root`` (symlinks followed); refuse anything outside ``root``.

    ``rel`` may be absolute only if it already lies inside ``root``. Raises PathEscapeError.
    """
    root_r = Path(root).resolve()
    rel_s = os.fspath(rel)
    if "\x00" in rel_s:
        raise PathEscapeError(f"path {rel_s!r}: contains a NUL byte")
    target = (root_r / rel_s).resolve()
    if target != root_r and not target.is_relative_to(root_r):
        raise PathEscapeError(f"path {rel_s!r}: resolves outside {root_r}")
    return target


def stat_key(path: Path) -> tuple | None:
    """(inode, mtime ns, size) of ``path``, or None when it cannot be stat'ed: changes whenever the
    file is replaced or rewritten, so it keys caches of what was read from it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _tmp_name(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=".part")
    os.close(fd)
    return Path(tmp)


FILE_MODE, DIR_MODE = 0o644, 0o755  # what every written file / folder gets, whatever the umask


def set_readable(path: str | os.PathLike) -> None:
    """0644 for a file; for a folder 0755 and the same for everything below it (umask-independent:
    mkstemp makes 0600 files, a strict umask makes 0600 ones; datasets are shared within a group)."""
    path = Path(path)
    if not path.is_dir():
        os.chmod(path, FILE_MODE)
        return
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, DIR_MODE)
        for f in files:
            os.chmod(os.path.join(folder, f), FILE_MODE)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_target(path: Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder to write; on success rename it onto ``path``
    (optionally fsynced), on any error remove it and re-raise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, FILE_MODE)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    with atomic_target(path, fsync) as tmp:
        tmp.write_bytes(data)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def to_json(obj: Any, indent: int | None = None) -> str:
    """JSON text; NaN/inf become null (strict JSON), numpy values become Python values."""
    return json.dumps(_nan_to_none(obj), indent=indent, default=_json_default, allow_nan=False)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.floating) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        return _nan_to_none(obj.tolist())
    return obj


def atomic_write_json(path: Path, obj: Any, fsync: bool = False) -> None:
    atomic_write_bytes(path, (to_json(obj, indent=2) + "\n").encode(), fsync=fsync)


def atomic_write_parquet(path: Path, table: pa.Table, fsync: bool = False) -> None:
    with atomic_target(path, fsync) as tmp:
        pq.write_table(table, tmp)


_thread_locks: dict[str, threading.RLock] = {}
_lock_depth: dict[str, int] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock across processes (flock) and threads of this process on ``path``.

    Re-entrant within one thread (the inner call neither reopens nor re-flocks the file).
    """
    path = Path(path)
    key = str(path.resolve())
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, threading.RLock())
    with tlock:
        if _lock_depth.get(key, 0) > 0:
            _lock_depth[key] += 1
            try:
                yield
            finally:
                _lock_depth[key] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _lock_depth[key] = 1
            try:
                yield
            finally:
                _lock_depth[key] = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


@contextlib.contextmanager
def defer_sigint() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) back during a short critical section of the main thread and deliver it at
    the end, so a step made of two writes (e.g. an episode folder and its index row) is never cut in half.
    Elsewhere (other threads) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    prev = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, prev)
        if got:
            if callable(prev):
                prev(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here
            elif prev == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)
