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
    object_box     frame, object_id     {"box_2d": [x0, y0, x1, y1], optional "center" [3],
                                         "size" [3], "name"}; without "center" the box centre is
                                         re-derived at the object's previous depth
    frame_bad      frame                bool (True = bad) -> frame_valid = not bad
    instruction    (episode)            str
    review_status  (episode)            "todo" | "needs-fix" | "approved"
    frame_review   frame                same statuses -> episode.extra["frame_review"][str(frame)]

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

__all__ = ["TARGETS", "Edit", "EditRecord", "CorrectionLog", "CorrectionError"]

SCHEMA_VERSION = 1
TARGETS = ("joint_2d", "joint_visible", "joint_depth", "scale", "object_box", "frame_bad",
           "instruction", "review_status", "frame_review")
_JOINT_TARGETS = ("joint_2d", "joint_visible", "joint_depth")
_FRAME_TARGETS = _JOINT_TARGETS + ("object_box", "frame_bad", "frame_review")
_EPISODE_TARGETS = ("instruction", "review_status")

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
)


class CorrectionError(ValueError):
    """An edit is malformed or cannot be applied; the message names the field."""


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
    if t in _JOINT_TARGETS:
        if hand not in HANDS:
            raise CorrectionError(f"{t}.hand: expected one of {HANDS}, got {hand!r}")
        if not isinstance(joint, (int, np.integer)) or isinstance(joint, bool) or not 0 <= joint < NUM_JOINTS:
            raise CorrectionError(f"{t}.joint: expected 0..{NUM_JOINTS - 1}, got {joint!r}")
        joint = int(joint)
    else:
        hand, joint = None, None
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
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._open()
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise CorrectionError(f"{self.path.name}: not a readable correction log ({exc})") from None
        self._local.conn = conn
        self._local.pid = os.getpid()
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
            return out
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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

    def _undo_redo(self, episode_id: str, author: str | None, kind: str) -> str | None:
        validate_episode_id(episode_id)

        def work(conn: sqlite3.Connection) -> str | None:
            _, done, redo, _ = self._resolve(self._records(episode_id, conn), author)
            stack = done if kind == "undo" else redo
            if not stack:
                return None
            x = stack[-1]
            self._insert(conn, [(uuid.uuid4().hex, episode_id, None, kind, None, None, None, None,
                                 json.dumps(x), x, author or "anonymous", _now())])
            return x

        if not self.path.exists():
            return None
        return self._transaction(work)

    def undo(self, episode_id: str, author: str | None = None) -> str | None:
        """Undo the latest active batch (``author``'s own when given); return its id or None."""
        return self._undo_redo(episode_id, author, "undo")

    def redo(self, episode_id: str, author: str | None = None) -> str | None:
        """Redo the latest undone batch (``author``'s own when given); None when nothing to redo.
        A new edit in the same scope empties the redo stack, as in any editor."""
        return self._undo_redo(episode_id, author, "redo")

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
