"""The correction layer: people's edits over the annotators' output, never an overwrite.

An append-only edit log in SQLite (``<dataset>/corrections.sqlite``, WAL, one transaction per
action). Each row says who changed what, when, from which value to which (JSON). Edits made by
one action share a ``batch_id`` and undo/redo as one. Undo and redo are themselves appended
rows (target "undo"/"redo" naming the batch), so nothing is ever deleted or updated; triggers
in the database refuse UPDATE and DELETE on the table.

The effective annotation = base episode + the active edits applied in log order
(``CorrectionLog.apply_to``). Edit targets and their values:

    joint_2d       frame, hand, joint   [u, v] px. The 3D joint is re-derived: same depth z,
                                         the new pixel unprojected with K. Marks the joint valid,
                                         confidence 1, reprojection error 0.
    joint_visible  frame, hand, joint   bool -> hand.valid
    joint_depth    frame, hand, joint   z (m, > 0): the joint slides along its camera ray
    scale          (episode)            s > 0 -> depth_scale of every frame
    hand_scale     hand (episode)       the hand's size / mean hand, in HAND_SCALE_RANGE. Every 3D
                                         joint of that hand is multiplied about the camera centre by
                                         new / the lift's estimate (``extra["hand_scale"][hand]["scale"]``,
                                         1 when none was recorded): the 2D fit is unchanged. The record
                                         becomes source "correction", sd 0. Where the cloud was scaled to
                                         the hands (depth not metric, no ``scale`` edit), depth_scale
                                         follows: times the frame-weighted geometric mean of the hands'
                                         factors (what re-running the median calibration gives).
    object_box     frame, object_id     {"box_2d": [x0, y0, x1, y1], optional "center" [3],
                                         "size" [3], "name"}; without "center" the box centre is
                                         re-derived at the object's previous depth
    frame_bad      frame                bool (True = bad) -> frame_valid = not bad
    instruction    (episode)            str
    review_status  (episode)            "todo" | "needs-fix" | "approved"
    frame_review   frame                same statuses -> episode.extra["frame_review"][str(frame)]

Identity (a log cannot vanish unnoticed): the log holds its own id (table ``log_meta``), and the
dataset records it with the last edit (id and a hash of that row) in ``meta/corrections.json``,
rewritten after every committed action. Opening a log that is missing, empty (0 bytes), of
another id, or without that last edit, where the dataset recorded edits, raises
``LogIdentityError`` naming the file; it is never taken for a fresh, empty log.
``snapshot`` writes a read-only copy to ``meta/corrections_backups/`` (done at each export);
``restore`` (``python -m vipa.data.corrections restore DATASET``) puts the newest one back.

Concurrency: any number of CorrectionLog instances, threads or processes may write the same
log; SQLite serialises the transactions (BEGIN IMMEDIATE, busy timeout) and no edit is lost.
A process killed inside a transaction leaves the log as it was before that transaction.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vipa.conventions import HANDS, NUM_JOINTS
from vipa.data._io import file_lock
from vipa.data.episode import REVIEW_STATUSES, Episode, ObjectTrack
from vipa.data.schema import validate_episode_id
from vipa.geometry import unproject_pixels

__all__ = ["TARGETS", "Edit", "EditRecord", "CorrectionLog", "CorrectionError", "LogIdentityError",
           "check_log", "log_exists", "snapshot", "restore"]

SCHEMA_VERSION = 1
TARGETS = ("joint_2d", "joint_visible", "joint_depth", "scale", "hand_scale", "object_box", "frame_bad",
           "instruction", "review_status", "frame_review")
_JOINT_TARGETS = ("joint_2d", "joint_visible", "joint_depth")
_FRAME_TARGETS = _JOINT_TARGETS + ("object_box", "frame_bad", "frame_review")
_EPISODE_TARGETS = ("instruction", "review_status")
_HAND_TARGETS = _JOINT_TARGETS + ("hand_scale",)
HAND_SCALE_RANGE = (0.5, 2.0)  # hand sizes / mean hand a person may set (a toddler's to a thick glove)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS edits (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id    TEXT NOT NULL,
    episode_id  TEXT NOT NULL,
    frame       INTEGER,
    target      TEXT NOT NULL,
    hand        TEXT,
    joint       INTEGER,
    object_id   TEXT,
    old_value   TEXT,
    new_value   TEXT,
    ref_batch   TEXT,
    author      TEXT NOT NULL,
    timestamp   TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS edits_episode ON edits (episode_id, id)",
    "CREATE INDEX IF NOT EXISTS edits_target ON edits (target, id)",
    """CREATE TRIGGER IF NOT EXISTS edits_no_update BEFORE UPDATE ON edits
    BEGIN SELECT RAISE(ABORT, 'corrections are append-only: UPDATE refused'); END""",
    """CREATE TRIGGER IF NOT EXISTS edits_no_delete BEFORE DELETE ON edits
    BEGIN SELECT RAISE(ABORT, 'corrections are append-only: DELETE refused'); END""",
    "CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "INSERT OR IGNORE INTO log_meta (key, value) VALUES ('log_id', lower(hex(randomblob(16))))",
)


class CorrectionError(ValueError):
    """An edit is malformed or cannot be applied; the message names the field."""


class LogIdentityError(CorrectionError):
    """The correction log on disk is not the one the dataset recorded (missing, empty, replaced
    or rolled back); the message says which and how to recover."""


@dataclass(frozen=True)
class Edit:
    """One change requested by a person. ``old`` is filled in by the log when left None."""

    target: str
    new: Any
    frame: int | None = None
    hand: str | None = None
    joint: int | None = None
    object_id: str | None = None
    old: Any = None


@dataclass(frozen=True)
class EditRecord:
    """One row of the log (an edit, or an undo/redo of ``ref_batch``)."""

    id: int
    batch_id: str
    episode_id: str
    frame: int | None
    target: str
    hand: str | None
    joint: int | None
    object_id: str | None
    old: Any
    new: Any
    ref_batch: str | None
    author: str
    timestamp: str

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _finite(x: Any, n: int, field: str) -> list[float]:
    try:
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CorrectionError(f"{field}: expected {n} numbers, got {x!r}") from None
    if arr.size != n or not np.all(np.isfinite(arr)):
        raise CorrectionError(f"{field}: expected {n} finite numbers, got {x!r}")
    return [float(v) for v in arr]


def _normalise(edit: Edit, num_frames: int | None) -> Edit:
    """Validate an edit and return it with its value in canonical JSON-able form."""
    t = edit.target
    if t not in TARGETS:
        raise CorrectionError(f"target: {t!r} is not one of {TARGETS}")
    frame, hand, joint, obj = edit.frame, edit.hand, edit.joint, edit.object_id
    if t in _FRAME_TARGETS:
        if not isinstance(frame, (int, np.integer)) or isinstance(frame, bool) or frame < 0:
            raise CorrectionError(f"{t}.frame: expected a frame index >= 0, got {frame!r}")
        if num_frames is not None and frame >= num_frames:
            raise CorrectionError(f"{t}.frame: {frame} out of range 0..{num_frames - 1}")
        frame = int(frame)
    else:
        frame = None
    if t in _HAND_TARGETS and hand not in HANDS:
        raise CorrectionError(f"{t}.hand: expected one of {HANDS}, got {hand!r}")
    if t in _JOINT_TARGETS:
        if not isinstance(joint, (int, np.integer)) or isinstance(joint, bool) or not 0 <= joint < NUM_JOINTS:
            raise CorrectionError(f"{t}.joint: expected 0..{NUM_JOINTS - 1}, got {joint!r}")
        joint = int(joint)
    else:
        hand = hand if t in _HAND_TARGETS else None
        joint = None
    if t == "object_box":
        if not isinstance(obj, str) or not obj:
            raise CorrectionError(f"object_box.object_id: expected a non-empty string, got {obj!r}")
    else:
        obj = None
    v = edit.new
    if t == "joint_2d":
        v = _finite(v, 2, "joint_2d.new")
    elif t in ("joint_visible", "frame_bad"):
        if not isinstance(v, (bool, np.bool_)):
            raise CorrectionError(f"{t}.new: expected true/false, got {v!r}")
        v = bool(v)
    elif t in ("joint_depth", "scale"):
        (v,) = _finite(v, 1, f"{t}.new")
        if v <= 0:
            raise CorrectionError(f"{t}.new: must be > 0, got {v}")
    elif t == "hand_scale":
        (v,) = _finite(v, 1, "hand_scale.new")
        if not HAND_SCALE_RANGE[0] <= v <= HAND_SCALE_RANGE[1]:
            raise CorrectionError(f"hand_scale.new: a hand {v} times the mean hand; expected "
                                  f"{HAND_SCALE_RANGE[0]}..{HAND_SCALE_RANGE[1]}")
    elif t == "object_box":
        if not isinstance(v, dict) or "box_2d" not in v:
            raise CorrectionError(f"object_box.new: expected {{'box_2d': [x0, y0, x1, y1], ...}}, got {v!r}")
        unknown = set(v) - {"box_2d", "center", "size", "name"}
        if unknown:
            raise CorrectionError(f"object_box.new: unknown keys {sorted(unknown)}")
        box = _finite(v["box_2d"], 4, "object_box.new.box_2d")
        if not (box[0] <= box[2] and box[1] <= box[3]):
            raise CorrectionError(f"object_box.new.box_2d: expected x0 <= x1 and y0 <= y1, got {box}")
        out: dict[str, Any] = {"box_2d": box}
        for k in ("center", "size"):
            if v.get(k) is not None:
                out[k] = _finite(v[k], 3, f"object_box.new.{k}")
        if v.get("name") is not None:
            out["name"] = str(v["name"])
        v = out
    elif t == "instruction":
        if not isinstance(v, str) or len(v) > 10000:
            raise CorrectionError(f"instruction.new: expected a string of at most 10000 characters, got {v!r:.80}")
    elif t in ("review_status", "frame_review"):
        if v not in REVIEW_STATUSES:
            raise CorrectionError(f"{t}.new: expected one of {REVIEW_STATUSES}, got {v!r}")
    return Edit(t, v, frame, hand, joint, obj, edit.old)


class CorrectionLog:
    """Append-only edit log for one dataset (SQLite, WAL).

    ``base_loader(episode_id) -> Episode`` gives the uncorrected episode; it is used to fill in
    old values, to range-check frames and for keyframe interpolation.
    """

    def __init__(self, path: str | os.PathLike, base_loader: Callable[[str], Episode] | None = None,
                 busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.base_loader = base_loader
        self.busy_timeout_s = float(busy_timeout_s)
        self._local = threading.local()
        self._init_lock = threading.Lock()
        self._initialised = False
        self._cache: dict[str, tuple[tuple, list[EditRecord]]] = {}
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------------ connection

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            if _inode(self.path) == getattr(self._local, "ino", None):
                return conn
            conn.close()  # the file was replaced or removed under us: check the new one
            self._local.conn = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_log(self.path)  # before connecting: SQLite would take a missing or empty file for a new log
        try:
            conn = self._open()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise CorrectionError(f"{self.path.name}: not a readable correction log ({exc})") from None
        self._local.conn = conn
        self._local.pid = os.getpid()
        self._local.ino = _inode(self.path)
        if _identity_path(self.path).parent.is_dir() and read_identity(self.path) is None:
            _record_identity(self.path, conn)  # adopt a log written before logs had an identity
        return conn

    def _open(self) -> sqlite3.Connection:
        # Switching a new file to WAL takes an exclusive lock for which SQLite does not always call its busy
        # handler, so two processes opening a fresh log at once could fail with "database is locked";
        # a sidecar flock serialises the (cheap) open and schema set-up across processes.
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            return self._open_locked()

    def _open_locked(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                               check_same_thread=True)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            with self._init_lock:
                if not self._initialised:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        for stmt in _SCHEMA:
                            conn.execute(stmt)
                        version = conn.execute("PRAGMA user_version").fetchone()[0]
                        if version > SCHEMA_VERSION:
                            raise CorrectionError(f"{self.path}: log schema version {version} is newer than "
                                                  f"this library ({SCHEMA_VERSION})")
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    self._initialised = True
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        if not self.path.exists():
            check_log(self.path)
            return []
        return self._conn().execute(sql, args).fetchall()

    @staticmethod
    def _record(row: tuple) -> EditRecord:
        (id_, batch, eid, frame, target, hand, joint, obj, old, new, ref, author, ts) = row
        return EditRecord(id_, batch, eid, frame, target, hand, joint, obj,
                          None if old is None else json.loads(old), None if new is None else json.loads(new),
                          ref, author, ts)

    _COLS = "id, batch_id, episode_id, frame, target, hand, joint, object_id, old_value, new_value, ref_batch, author, timestamp"

    def _records(self, episode_id: str, conn: sqlite3.Connection | None = None) -> list[EditRecord]:
        """All records of the episode in log order (parsed once; re-read when the log grows)."""
        if conn is None:
            if not self.path.exists():
                check_log(self.path)
                return []
            conn = self._conn()
        count, max_id = conn.execute("SELECT COUNT(*), MAX(id) FROM edits WHERE episode_id = ?",
                                     (episode_id,)).fetchone()
        with self._cache_lock:
            hit = self._cache.get(episode_id)
        if hit is not None and hit[0] == (count, max_id):
            return list(hit[1])
        sql = f"SELECT {self._COLS} FROM edits WHERE episode_id = ? ORDER BY id"
        records = [self._record(r) for r in conn.execute(sql, (episode_id,)).fetchall()]
        if len(records) == count and (not records or records[-1].id == max_id):
            with self._cache_lock:
                self._cache[episode_id] = ((count, max_id), records)
        return list(records)

    def _insert(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        conn.executemany(
            "INSERT INTO edits (batch_id, episode_id, frame, target, hand, joint, object_id, old_value, "
            "new_value, ref_batch, author, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _transaction(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        _record_identity(self.path, conn)
        return out

    # ------------------------------------------------------------------ state

    @staticmethod
    def _resolve(records: Iterable[EditRecord], author: str | None = None
                 ) -> tuple[set[str], list[str], list[str], dict[str, str]]:
        """(active batch ids, undo stack, redo stack, batch -> author) for a scope.

        ``author=None`` is the scope of everyone's batches; otherwise that author's only.
        """
        active: set[str] = set()
        done: list[str] = []
        redo: list[str] = []
        owner: dict[str, str] = {}
        for r in records:
            if r.target in ("undo", "redo"):
                x = r.ref_batch
                if x not in owner:
                    continue
                in_scope = author is None or owner[x] == author
                if r.target == "undo":
                    active.discard(x)
                    if in_scope and x in done:
                        done.remove(x)
                        redo.append(x)
                else:
                    active.add(x)
                    if in_scope and x in redo:
                        redo.remove(x)
                        done.append(x)
            elif r.batch_id not in owner:
                owner[r.batch_id] = r.author
                active.add(r.batch_id)
                if author is None or r.author == author:
                    done.append(r.batch_id)
                    redo.clear()
        return active, done, redo, owner

    def history(self, episode_id: str) -> list[EditRecord]:
        """Every record of the episode (edits, undos, redos) in log order."""
        return self._records(episode_id)

    def active_edits(self, episode_id: str) -> list[EditRecord]:
        """The edits in effect (not undone), in log order."""
        records = self._records(episode_id)
        active = self._resolve(records)[0]
        return [r for r in records if r.target in TARGETS and r.batch_id in active]

    def can_undo(self, episode_id: str, author: str | None = None) -> bool:
        return bool(self._resolve(self._records(episode_id), author)[1])

    def can_redo(self, episode_id: str, author: str | None = None) -> bool:
        return bool(self._resolve(self._records(episode_id), author)[2])

    def scale(self, episode_id: str) -> float | None:
        """The corrected calibration scale of the episode, or None when not corrected."""
        vals = [r.new for r in self.active_edits(episode_id) if r.target == "scale"]
        return float(vals[-1]) if vals else None

    def hand_scales(self, episode_id: str) -> dict[str, float]:
        """{hand: corrected size / mean hand} for the hands whose size was corrected."""
        return {r.hand: float(r.new) for r in self.active_edits(episode_id) if r.target == "hand_scale"}

    def episode_overrides(self) -> dict[str, dict[str, Any]]:
        """{episode_id: {"instruction": ..., "review_status": ...}} for corrected episodes."""
        sql = (f"SELECT {self._COLS} FROM edits WHERE target IN ('instruction', 'review_status', 'undo', 'redo') "
               "ORDER BY id")
        records = [self._record(r) for r in self._read(sql)]
        toggles: dict[str, bool] = {}
        for r in records:
            if r.target in ("undo", "redo"):
                toggles[r.ref_batch] = r.target == "redo"
        out: dict[str, dict[str, Any]] = {}
        for r in records:
            if r.target in _EPISODE_TARGETS and toggles.get(r.batch_id, True):
                out.setdefault(r.episode_id, {})[r.target] = r.new
        return out

    # ------------------------------------------------------------------ writing

    def _base(self, episode_id: str) -> Episode | None:
        return None if self.base_loader is None else self.base_loader(episode_id)

    def record(self, episode_id: str, edits: Sequence[Edit] | Edit, author: str,
               batch_id: str | None = None) -> str:
        """Append ``edits`` as one batch (one transaction); return the batch id."""
        if isinstance(edits, Edit):
            edits = [edits]
        edits = list(edits)
        return self._append(episode_id, lambda current: edits, author, batch_id)

    def _append(self, episode_id: str, make: Callable[[Episode | None], list[Edit]], author: str,
                batch_id: str | None = None, needs_base: bool = False) -> str:
        """Append the edits ``make(current effective episode)`` returns, in one transaction.

        ``make`` runs while the log's write lock is held, so edits computed from the current
        values (a depth nudge, keyframe in-betweens) see every edit committed before them.
        """
        validate_episode_id(episode_id)
        if not isinstance(author, str) or not author.strip() or len(author) > 200:
            raise CorrectionError(f"author: expected a non-empty name (<= 200 characters), got {author!r}")
        base = self._base(episode_id)
        if needs_base and base is None:
            raise CorrectionError("this edit needs the base annotation: give CorrectionLog a base_loader")
        num_frames = None if base is None else base.num_frames
        batch = batch_id or uuid.uuid4().hex

        def work(conn: sqlite3.Connection) -> str:
            current = None if base is None else self._apply(base, self._records(episode_id, conn))
            edits = [_normalise(e, num_frames) for e in make(current)]
            if not edits:
                raise CorrectionError("edits: empty batch")
            ts = _now()
            rows = []
            for e in edits:
                old = e.old if e.old is not None or current is None else _current_value(current, e)
                rows.append((batch, episode_id, e.frame, e.target, e.hand, e.joint, e.object_id,
                             json.dumps(old), json.dumps(e.new), None, author, ts))
            self._insert(conn, rows)
            return batch

        if num_frames is None:  # validate before touching the database
            make_once = make(None)
            for e in make_once:
                _normalise(e, None)
        return self._transaction(work)

    def _undo_redo(self, episode_id: str, author: str | None, kind: str, by: str | None = None) -> str | None:
        validate_episode_id(episode_id)

        def work(conn: sqlite3.Connection) -> str | None:
            _, done, redo, _ = self._resolve(self._records(episode_id, conn), author)
            stack = done if kind == "undo" else redo
            if not stack:
                return None
            x = stack[-1]
            self._insert(conn, [(uuid.uuid4().hex, episode_id, None, kind, None, None, None, None,
                                 json.dumps(x), x, by or author or "anonymous", _now())])
            return x

        if not self.path.exists():
            check_log(self.path)
            return None
        return self._transaction(work)

    def undo(self, episode_id: str, author: str | None = None, by: str | None = None) -> str | None:
        """Undo the latest active batch (``author``'s own when given); return its id or None.
        ``by``: who undoes it, recorded on the row (default ``author``)."""
        return self._undo_redo(episode_id, author, "undo", by)

    def redo(self, episode_id: str, author: str | None = None, by: str | None = None) -> str | None:
        """Redo the latest undone batch (``author``'s own when given); None when nothing to redo.
        A new edit in the same scope empties the redo stack, as in any editor."""
        return self._undo_redo(episode_id, author, "redo", by)

    # convenience ----------------------------------------------------------

    def set_joint_2d(self, episode_id: str, frame: int, hand: str, joint: int, uv: Sequence[float],
                     author: str) -> str:
        return self.record(episode_id, Edit("joint_2d", list(uv), frame, hand, joint), author)

    def set_joint_visible(self, episode_id: str, frame: int, hand: str, joint: int, visible: bool,
                          author: str) -> str:
        return self.record(episode_id, Edit("joint_visible", bool(visible), frame, hand, joint), author)

    def nudge_joint_depth(self, episode_id: str, frame: int, hand: str, joint: int, dz: float,
                          author: str) -> str:
        """Move the joint ``dz`` metres along its camera ray (z += dz, from the current z)."""

        def make(cur: Episode | None) -> list[Edit]:
            if hand not in HANDS:
                raise CorrectionError(f"joint_depth.hand: expected one of {HANDS}, got {hand!r}")
            if not 0 <= frame < cur.num_frames or not 0 <= joint < NUM_JOINTS:
                raise CorrectionError(f"joint_depth: frame {frame} / joint {joint} out of range")
            z = float(cur.hands[hand].joints_3d[frame, joint, 2])
            if not math.isfinite(z):
                raise CorrectionError(f"joint_depth: {hand} joint {joint} at frame {frame} has no depth to nudge")
            return [Edit("joint_depth", z + float(dz), frame, hand, joint)]

        return self._append(episode_id, make, author, needs_base=True)

    def set_scale(self, episode_id: str, scale: float, author: str) -> str:
        return self.record(episode_id, Edit("scale", float(scale)), author)

    def set_hand_scale(self, episode_id: str, hand: str, scale: float, author: str) -> str:
        """Set ``hand``'s size (times the mean hand) for the episode: its lifted joints follow."""
        return self.record(episode_id, Edit("hand_scale", float(scale), hand=hand), author)

    def set_object_box(self, episode_id: str, frame: int, object_id: str, box_2d: Sequence[float],
                       author: str, center: Sequence[float] | None = None,
                       size: Sequence[float] | None = None, name: str | None = None) -> str:
        value: dict[str, Any] = {"box_2d": list(box_2d)}
        if center is not None:
            value["center"] = list(center)
        if size is not None:
            value["size"] = list(size)
        if name is not None:
            value["name"] = name
        return self.record(episode_id, Edit("object_box", value, frame, object_id=object_id), author)

    def mark_frame_bad(self, episode_id: str, frame: int, author: str, bad: bool = True) -> str:
        return self.record(episode_id, Edit("frame_bad", bool(bad), frame), author)

    def set_instruction(self, episode_id: str, text: str, author: str) -> str:
        return self.record(episode_id, Edit("instruction", text), author)

    def set_review_status(self, episode_id: str, status: str, author: str) -> str:
        return self.record(episode_id, Edit("review_status", status), author)

    def set_frame_review(self, episode_id: str, frame: int, status: str, author: str) -> str:
        return self.record(episode_id, Edit("frame_review", status, frame), author)

    def interpolate_keyframes(self, episode_id: str, hand: str, joint: int | None, frames: Sequence[int],
                              author: str) -> str:
        """Linear 2D in-betweens of ``joint`` (all joints when None) between consecutive keyframes,
        from the corrected values at the keyframes, recorded as one batch. Joints unknown (NaN)
        at either keyframe of a pair are left alone."""
        base = self._base(episode_id)
        if base is None:
            raise CorrectionError("interpolate_keyframes: needs a base_loader")
        if hand not in HANDS:
            raise CorrectionError(f"interpolate_keyframes.hand: expected one of {HANDS}, got {hand!r}")
        keys = sorted({int(f) for f in frames})
        if len(keys) < 2:
            raise CorrectionError(f"interpolate_keyframes.frames: need at least 2 keyframes, got {list(frames)}")
        if keys[0] < 0 or keys[-1] >= base.num_frames:
            raise CorrectionError(f"interpolate_keyframes.frames: {keys} out of range 0..{base.num_frames - 1}")
        if joint is not None and not 0 <= int(joint) < NUM_JOINTS:
            raise CorrectionError(f"interpolate_keyframes.joint: expected 0..{NUM_JOINTS - 1} or None, got {joint!r}")
        joints = range(NUM_JOINTS) if joint is None else [int(joint)]

        def make(cur: Episode | None) -> list[Edit]:
            uv = cur.hands[hand].joints_2d
            edits = []
            for a, b in zip(keys[:-1], keys[1:]):
                for j in joints:
                    ua, ub = uv[a, j].astype(np.float64), uv[b, j].astype(np.float64)
                    if not (np.all(np.isfinite(ua)) and np.all(np.isfinite(ub))):
                        continue
                    for f in range(a + 1, b):
                        w = (f - a) / (b - a)
                        p = (1 - w) * ua + w * ub
                        edits.append(Edit("joint_2d", [float(p[0]), float(p[1])], f, hand, j))
            if not edits:
                raise CorrectionError("interpolate_keyframes: nothing to interpolate (adjacent keyframes or "
                                      "unknown joints at the keyframes)")
            return edits

        return self._append(episode_id, make, author, needs_base=True)

    # ------------------------------------------------------------------ applying

    def apply_to(self, episode: Episode) -> Episode:
        """A new Episode: ``episode`` with this log's active edits applied (input unchanged)."""
        return self._apply(episode, self._records(episode.episode_id))

    def _apply(self, episode: Episode, records: list[EditRecord]) -> Episode:
        active = self._resolve(records)[0]
        edits = [r for r in records if r.target in TARGETS and r.batch_id in active]
        ep = _copy_episode(episode)
        if not edits:
            return ep
        t = ep.num_frames
        K = ep.K
        hand_scales = {r.hand: (float(r.new), r.author) for r in edits if r.target == "hand_scale"}  # last wins
        if hand_scales:
            _apply_hand_scales(ep, hand_scales, rescale_cloud=not any(r.target == "scale" for r in edits))
        base3d = {s: h.joints_3d.copy() for s, h in ep.hands.items()}
        moved: dict[tuple[str, int, int], str] = {}  # joints whose 2D changed -> author
        depth: dict[tuple[str, int, int], float] = {}
        skipped = 0
        for r in edits:
            if r.frame is not None and not 0 <= r.frame < t:
                skipped += 1
                continue
            f = r.frame
            if r.target in _JOINT_TARGETS:
                h = ep.hands[r.hand]
                key = (r.hand, f, r.joint)
                if r.target == "joint_2d":
                    h.joints_2d[f, r.joint] = r.new
                    h.valid[f, r.joint] = True
                    h.present[f] = True
                    moved[key] = r.author
                elif r.target == "joint_visible":
                    h.valid[f, r.joint] = bool(r.new)
                else:
                    depth[key] = float(r.new)
                if h.provenance is not None:
                    h.provenance[f] = f"correction:{r.author}"
            elif r.target == "scale":
                ep.depth_scale[:] = np.float32(r.new)
            elif r.target == "hand_scale":
                pass  # applied above, before the joint edits (their depths are absolute)
            elif r.target == "frame_bad":
                ep.frame_valid[f] = not r.new
            elif r.target == "instruction":
                ep.instruction = r.new
            elif r.target == "review_status":
                ep.review_status = r.new
            elif r.target == "frame_review":
                ep.extra.setdefault("frame_review", {})[str(f)] = r.new
            elif r.target == "object_box":
                _apply_box(ep, r)
        for key in set(moved) | set(depth):
            side, f, j = key
            h = ep.hands[side]
            p0 = base3d[side][f, j]
            z = depth.get(key, float(p0[2]))
            if not (math.isfinite(z) and z > 0):
                others = base3d[side][f, :, 2]
                others = others[np.isfinite(others) & (others > 0)]
                z = float(np.median(others)) if others.size else math.nan
            if key in moved or not (math.isfinite(float(p0[2])) and p0[2] > 0):
                uv = h.joints_2d[f, j]
                p = unproject_pixels(uv, z, K)  # NaN when z or the pixel is unknown
            else:
                p = (p0 * np.float32(z / float(p0[2]))).astype(np.float32)
            h.joints_3d[f, j] = p
            if key in moved:
                h.confidence[f, j] = 1.0
                if h.reproj_error is not None:
                    h.reproj_error[f, j] = 0.0
        if skipped:
            ep.extra["corrections_skipped"] = skipped
        return ep


def _copy_episode(ep: Episode) -> Episode:
    media = (ep.rgb, ep.depth_raw)
    ep.rgb, ep.depth_raw = None, None
    try:
        out = copy.deepcopy(ep)
    finally:
        ep.rgb, ep.depth_raw = media
    out.rgb, out.depth_raw = media  # media are never edited; share them
    return out


def _lifted_hand_scale(ep: Episode, hand: str) -> float:
    """The hand's size / mean hand that the lift estimated (``extra["hand_scale"]``); 1 when none."""
    rec = (ep.extra.get("hand_scale") or {}).get(hand) or {}
    v = rec.get("scale")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 1.0
    return v if math.isfinite(v) and v > 0 else 1.0


def _apply_hand_scales(ep: Episode, scales: dict[str, tuple[float, str]], rescale_cloud: bool) -> None:
    """Rescale each corrected hand's 3D joints about the camera centre (see ``hand_scale`` above)."""
    logs, weights = [], []
    records = dict(ep.extra.get("hand_scale") or {})
    for side, (new, author) in scales.items():
        h = ep.hands[side]
        old = _lifted_hand_scale(ep, side)
        factor = new / old
        lifted = np.isfinite(h.joints_3d).all(-1).any(-1)
        h.joints_3d *= np.float32(factor)
        if h.provenance is not None:
            h.provenance[lifted] = f"correction:{author}"
        prev = records.get(side) or {}
        records[side] = {"scale": new, "sigma_log": 0.0, "source": "correction",
                         "n_frames": int(prev.get("n_frames", 0) or 0), "applied": float(prev.get("applied", 1.0) or 1.0)
                         * factor, "estimate": prev.get("scale")}
        logs.append(math.log(factor))
        weights.append(int(lifted.sum()))
    for side in HANDS:  # the uncorrected hands keep their size: factor 1, weighted by their frames
        if side not in scales:
            logs.append(0.0)
            weights.append(int(np.isfinite(ep.hands[side].joints_3d).all(-1).any(-1).sum()))
    ep.extra["hand_scale"] = records
    metric = bool((ep.extra.get("depth_backend") or {}).get("metric", False))
    if rescale_cloud and not metric and sum(weights) > 0:
        ep.depth_scale = (ep.depth_scale * np.float32(math.exp(np.average(logs, weights=weights)))).astype(np.float32)


def _apply_box(ep: Episode, r: EditRecord) -> None:
    t, f = ep.num_frames, r.frame
    obj = next((o for o in ep.objects if o.object_id == r.object_id), None)
    if obj is None:
        obj = ObjectTrack(object_id=r.object_id, name=r.new.get("name", r.object_id),
                          center=np.full((t, 3), np.nan, np.float32), size=np.full(3, np.nan, np.float32),
                          box_2d=np.full((t, 4), np.nan, np.float32), provenance=f"correction:{r.author}")
        ep.objects.append(obj)
    box = np.asarray(r.new["box_2d"], np.float32)
    old_z = float(obj.center[f, 2])
    obj.box_2d[f] = box
    if "center" in r.new:
        obj.center[f] = r.new["center"]
    elif math.isfinite(old_z) and old_z > 0:
        obj.center[f] = unproject_pixels(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]), old_z, ep.K)
    if "size" in r.new:
        obj.size[:] = r.new["size"]
    if "name" in r.new:
        obj.name = r.new["name"]
    obj.provenance = f"correction:{r.author}"


def _json_floats(a: np.ndarray) -> list:
    return [float(x) if math.isfinite(float(x)) else None for x in np.asarray(a).reshape(-1)]


def _current_value(ep: Episode, e: Edit) -> Any:
    """The effective value that ``e`` replaces (JSON-able; None where unknown)."""
    if e.target in _JOINT_TARGETS:
        h = ep.hands[e.hand]
        if e.target == "joint_2d":
            return _json_floats(h.joints_2d[e.frame, e.joint])
        if e.target == "joint_visible":
            return bool(h.valid[e.frame, e.joint])
        return _json_floats(h.joints_3d[e.frame, e.joint, 2:3])[0]
    if e.target == "scale":
        s = ep.depth_scale[np.isfinite(ep.depth_scale)]
        return float(np.median(s)) if s.size else None
    if e.target == "hand_scale":
        return _lifted_hand_scale(ep, e.hand)
    if e.target == "frame_bad":
        return not bool(ep.frame_valid[e.frame])
    if e.target == "instruction":
        return ep.instruction
    if e.target == "review_status":
        return ep.review_status
    if e.target == "frame_review":
        return ep.extra.get("frame_review", {}).get(str(e.frame), "todo")
    obj = next((o for o in ep.objects if o.object_id == e.object_id), None)
    if obj is None:
        return None
    return {"box_2d": _json_floats(obj.box_2d[e.frame]), "center": _json_floats(obj.center[e.frame]),
            "size": _json_floats(obj.size), "name": obj.name}


# --------------------------------------------------------------------------- log identity

IDENTITY_FILE = Path("meta") / "corrections.json"
BACKUP_DIR = Path("meta") / "corrections_backups"
RECOVERY_HINT = "see docs/FORMAT.md, 'Recovering the correction log'"


def _identity_path(log_path: Path) -> Path:
    return Path(log_path).parent / IDENTITY_FILE


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _row_hash(row: tuple) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(list(row), separators=(",", ":")).encode()).hexdigest()


def read_identity(log_path: str | os.PathLike) -> dict | None:
    """What the dataset recorded about its log (``meta/corrections.json``), or None."""
    p = _identity_path(Path(log_path))
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise LogIdentityError(f"{IDENTITY_FILE}: unreadable ({exc}); {RECOVERY_HINT}") from None
    if not isinstance(data, dict) or not isinstance(data.get("log_id"), str):
        raise LogIdentityError(f"{IDENTITY_FILE}: log_id: missing; {RECOVERY_HINT}")
    return data


def _log_state(conn: sqlite3.Connection) -> dict:
    """{"log_id", "last_edit_id", "last_edit_hash", "edits"} of an open log."""
    row = conn.execute("SELECT value FROM log_meta WHERE key = 'log_id'").fetchone()
    last = conn.execute(f"SELECT {CorrectionLog._COLS} FROM edits ORDER BY id DESC LIMIT 1").fetchone()
    (count,) = conn.execute("SELECT COUNT(*) FROM edits").fetchone()
    return {"log_id": row[0] if row else None, "last_edit_id": None if last is None else int(last[0]),
            "last_edit_hash": None if last is None else _row_hash(last), "edits": int(count)}


def _record_identity(log_path: Path, conn: sqlite3.Connection) -> None:
    """Write the log's id and last edit to ``meta/corrections.json`` (after a commit). Every
    writer writes the state it reads under the lock, so the file ends at the newest state."""
    from vipa.data._io import atomic_write_json

    meta = _identity_path(log_path)
    if not meta.parent.is_dir():  # a log outside a dataset (tests, scratch): nothing to record
        return
    with file_lock(meta.with_name(meta.name + ".lock")):
        state = _log_state(conn)
        state.update(file=Path(log_path).name, updated=_now())
        atomic_write_json(meta, state)  # no fsync: a record that lags the log still matches a row in it


def check_log(log_path: str | os.PathLike) -> None:
    """Raise LogIdentityError when the dataset recorded edits and the log at ``log_path`` is
    missing, empty, another log, or lacks the recorded last edit. A dataset without a record
    adopts the log it finds (datasets written before logs had an identity)."""
    path = Path(log_path)
    key = (str(path), _stat_key(path), _stat_key(_identity_path(path)))
    if key in _checked:
        return
    _check_log(path)
    if len(_checked) > 256:
        _checked.clear()
    _checked.add(key)


_checked: set = set()  # (path, log stat, record stat) already found consistent


def _stat_key(p: Path) -> tuple | None:
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _check_log(path: Path) -> None:
    ident = read_identity(path)
    if ident is None:
        return
    n = int(ident.get("edits") or 0)
    where = f"{path.name} (dataset {path.parent.name})"
    if not path.exists():
        if n:
            raise LogIdentityError(f"{where} is missing, but {IDENTITY_FILE} records {n} edits "
                                   f"(last id {ident.get('last_edit_id')}); not starting a new log: {RECOVERY_HINT}")
        return
    if path.stat().st_size == 0:
        if n:
            raise LogIdentityError(f"{where} is empty (0 bytes), but {IDENTITY_FILE} records {n} edits "
                                   f"(last id {ident.get('last_edit_id')}); not starting a new log: {RECOVERY_HINT}")
        return
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as exc:
        raise LogIdentityError(f"{where}: cannot be opened ({exc}); {RECOVERY_HINT}") from None
    try:
        has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'log_meta'").fetchone()
        if has_meta is None:
            if n:
                raise LogIdentityError(f"{where} has no log id, but {IDENTITY_FILE} records log "
                                       f"{ident['log_id']} with {n} edits: the file was replaced; {RECOVERY_HINT}")
            return
        row = conn.execute("SELECT value FROM log_meta WHERE key = 'log_id'").fetchone()
        if row is None or row[0] != ident["log_id"]:
            raise LogIdentityError(f"{where} is log {row[0] if row else None}, but {IDENTITY_FILE} records log "
                                   f"{ident['log_id']}: the file was replaced (another dataset's log?); {RECOVERY_HINT}")
        last_id = ident.get("last_edit_id")
        if last_id is not None:
            last = conn.execute(f"SELECT {CorrectionLog._COLS} FROM edits WHERE id = ?", (int(last_id),)).fetchone()
            if last is None or _row_hash(last) != ident.get("last_edit_hash"):
                raise LogIdentityError(f"{where} lacks the last recorded edit (id {last_id}): it is an older or "
                                       f"altered copy; {RECOVERY_HINT}")
    except sqlite3.DatabaseError as exc:
        raise LogIdentityError(f"{where}: not a readable correction log ({exc}); {RECOVERY_HINT}") from None
    finally:
        conn.close()


def log_exists(log_path: str | os.PathLike) -> bool:
    """Whether there is a log to apply; LogIdentityError when one is missing or not the recorded one."""
    check_log(log_path)
    return Path(log_path).exists()


def snapshot(root: str | os.PathLike, tag: str = "export") -> Path | None:
    """A consistent, read-only (0444) copy of ``<root>/corrections.sqlite`` in
    ``<root>/meta/corrections_backups/`` named by time, tag and last edit id; None without a log."""
    root = Path(root)
    src = root / "corrections.sqlite"
    check_log(src)
    if not src.exists():
        return None
    out_dir = root / BACKUP_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=60) as conn:
        last = _log_state(conn)["last_edit_id"] if conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'log_meta'").fetchone() else None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        dst = out_dir / f"corrections-{stamp}-{_safe_tag(tag)}-last{last if last is not None else 0}.sqlite"
        tmp = dst.with_name(dst.name + ".tmp")
        with sqlite3.connect(tmp) as out:
            conn.backup(out)
        out.close()
    conn.close()
    os.chmod(tmp, 0o444)
    os.replace(tmp, dst)
    return dst


def _safe_tag(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)[:40] or "copy"


def restore(root: str | os.PathLike, backup: str | os.PathLike | None = None) -> Path:
    """Put a backup (the newest in ``meta/corrections_backups/`` by default) in place as
    ``<root>/corrections.sqlite`` (writable) and record it as the dataset's log. The log found
    there, if any, is kept beside it as ``corrections.sqlite.replaced-<time>``. Edits made after
    the backup are not in it."""
    import shutil

    root = Path(root)
    if backup is None:
        found = sorted((root / BACKUP_DIR).glob("corrections-*.sqlite"))
        if not found:
            raise LogIdentityError(f"{root / BACKUP_DIR}: no backup to restore")
        backup = found[-1]
    backup = Path(backup)
    dst = root / "corrections.sqlite"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for suffix in ("", "-wal", "-shm"):
        p = dst.with_name(dst.name + suffix)
        if p.exists():
            p.replace(p.with_name(f"{p.name}.replaced-{stamp}"))
    tmp = dst.with_name(dst.name + ".restoring")
    shutil.copyfile(backup, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)
    with sqlite3.connect(dst) as conn:
        for stmt in _SCHEMA:
            conn.execute(stmt)
        conn.commit()
        _record_identity(dst, conn)
    conn.close()
    return dst


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m vipa.data.corrections",
                                description="Check or restore a dataset's correction log")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="say whether the log is the one the dataset recorded")
    c.add_argument("dataset", type=Path)
    r = sub.add_parser("restore", help="put a backup from meta/corrections_backups/ in place")
    r.add_argument("dataset", type=Path)
    r.add_argument("--from", dest="backup", type=Path, default=None,
                   help="the backup file (default: the newest one)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "check":
            check_log(args.dataset / "corrections.sqlite")
            ident = read_identity(args.dataset / "corrections.sqlite")
            print(f"{args.dataset}: correction log ok" + (f" ({ident['edits']} edits, last id "
                                                          f"{ident['last_edit_id']})" if ident else " (no record yet)"))
        else:
            dst = restore(args.dataset, args.backup)
            print(f"restored {dst}; {read_identity(dst)['edits']} edits")
    except CorrectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
