"""The workbench's session-independent state: one dataset, media caches, the correction layer.

No gradio here (the UI in ``app/ui.py`` calls these methods) and no geometry: geometry and
corrections live in ``vipa``; QA and motion tokens are re-derived by ``annotators``.
"""

from __future__ import annotations

import json
import threading
import uuid
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vipa.conventions import HAND_EDGES, HANDS, JOINT_INDEX, JOINT_NAMES
from vipa.data.corrections import check_log, log_exists, snapshot
from vipa.data.dataset import Hand3DDataset, resolve_inside
from vipa.data.episode import REVIEW_STATUSES, Episode
from vipa.viz import figures
from vipa.viz.recording import (HAND_COLORS, OBJECT_COLOR, EpisodeMedia, ViewOptions, episode_rrd_bytes,
                                frames_rrd_bytes, media_from_files)

PENDING_DERIVE_FILE = ".derive_pending.json"  # in the dataset root: episodes whose derived products lag their edits
QUALITY_COLUMNS = ("detection_rate", "reproj_median_px", "calib_residual", "jitter_median_mps2")
TABLE_HEADERS = ["episode", "frames", "review", *QUALITY_COLUMNS, "instruction", "source"]


@dataclass
class ViewMedia:
    """What a recording embeds from an episode's media, read once (media never change with
    corrections): the stored mp4 and depth PNGs, as bytes."""

    media: EpisodeMedia
    seconds: float  # time it took to read


@dataclass(frozen=True)
class Change:
    """What an action changed in the viewer: annotations of ``frames`` (None: every frame) and
    whether the calibration scale changed (depth re-scaled)."""

    frames: tuple[int, ...] | None
    depth_scale: bool = False


class Workbench:
    """One dataset opened for browsing and correcting. Thread-safe for concurrent sessions:
    edits go straight to the correction log (SQLite, one transaction each)."""

    def __init__(self, root: str | Path, author: str = "app", view: ViewOptions | None = None,
                 media_cache: int = 6) -> None:
        self.root = Path(root).resolve()
        self.ds = Hand3DDataset.open(self.root)
        check_log(self.root / "corrections.sqlite")  # a vanished or replaced log stops the app here
        self.author = author
        self.view = view or ViewOptions()
        self._media: OrderedDict[str, ViewMedia] = OrderedDict()
        self._media_cap = media_cache
        self._lock = threading.Lock()
        self._base: OrderedDict[str, Episode] = OrderedDict()  # uncorrected episodes (no media)
        self._corrected: dict[str, tuple[tuple, Episode]] = {}  # episode -> (log state, corrected)
        self._calib: dict[str, tuple[tuple, float | None]] = {}  # episode -> (log state, median residual)
        self.ds.corrections.base_loader = self.base_episode  # the log reads the base from this cache
        # derived products (QA pairs, motion tokens) are re-derived after edits in the background:
        # 0.26-0.43 s of CPU for a 621-frame episode that an edit would otherwise wait for
        self._derive_cv = threading.Condition()
        self._stale: dict[str, float] = {}  # episode -> time of its latest edit
        self._deriving: str | None = None
        self._derive_thread: threading.Thread | None = None
        self.derive_errors: dict[str, str] = {}
        self.derive_delay = 0.5  # seconds of quiet after the latest edit of an episode before deriving
        # episodes edited but not re-derived when the app last stopped (killed): derived now
        self._pending_file = self.root / PENDING_DERIVE_FILE
        for eid in self._read_pending():
            self._edited(eid, "")

    # ------------------------------------------------------------------ paths and ids

    def resolve(self, rel: str) -> Path:
        """A path inside the dataset root or PathEscapeError (any path a request names)."""
        return resolve_inside(self.root, rel)

    def check_episode(self, episode_id: str) -> str:
        if not isinstance(episode_id, str) or not episode_id:
            raise ValueError("no episode selected")
        self.resolve(Path("episodes") / episode_id)  # refuses ../ and absolute paths
        if episode_id not in self.ds.episode_ids():
            raise KeyError(f"episode {episode_id!r} is not in {self.root.name}")
        return episode_id

    # ------------------------------------------------------------------ browse

    def table(self, query: str = "", review: str = "all", sort_by: str = "episode", descending: bool = False
              ) -> list[list[Any]]:
        """Episode rows (TABLE_HEADERS order), filtered by a substring of id/instruction/source
        and by review status, sorted by a column."""
        rows = []
        q = (query or "").strip().lower()
        for r in self.ds.episodes_table(corrected=True):
            if r["status"] != "ok":
                continue
            if review not in ("all", "", None) and r["review_status"] != review:
                continue
            text = f"{r['episode_id']} {r['instruction']} {r['source']}".lower()
            if q and q not in text:
                continue
            qual = dict(r.get("quality") or {})
            if _round(qual.get("calib_residual")) is None:
                qual["calib_residual"] = self.calib_residual(r["episode_id"])
            rows.append([r["episode_id"], int(r["num_frames"]), r["review_status"],
                         *[_round(qual.get(k)) for k in QUALITY_COLUMNS], r["instruction"], Path(r["source"]).name])
        if sort_by in TABLE_HEADERS:
            k = TABLE_HEADERS.index(sort_by)
            rows.sort(key=lambda row: (row[k] is None, row[k] if row[k] is not None else 0), reverse=descending)
        return rows

    def calib_residual(self, episode_id: str) -> float | None:
        """Median calibration residual of the corrected episode (as the Align tab plots it), for
        episodes whose quality figures lack it; None without depth. Cached until the log changes."""
        try:
            if not self.ds.has_depth(episode_id):
                return None
            recs = self.log.history(episode_id) if self._has_log() else []
        except (KeyError, ValueError):
            return None
        state = (len(recs), recs[-1].id if recs else None)
        hit = self._calib.get(episode_id)
        if hit is not None and hit[0] == state:
            return hit[1]
        ep = self.ds.load_episode(episode_id, media=True, corrected=True)
        res = figures.calibration_residual(ep)
        value = float(np.nanmedian(res)) if np.isfinite(res).any() else None
        self._calib[episode_id] = (state, value)
        return value

    def failed(self) -> list[list[str]]:
        return [[r["episode_id"], r["error"]] for r in self.ds.episodes_table() if r["status"] != "ok"]

    # ------------------------------------------------------------------ episodes and views

    def base_episode(self, episode_id: str) -> Episode:
        """The uncorrected episode without media (cached; the annotators' output does not change
        while the app runs). Callers must not modify it."""
        with self._lock:
            hit = self._base.get(episode_id)
            if hit is not None:
                self._base.move_to_end(episode_id)
                return hit
        ep = self.ds.load_episode(episode_id, media=False, corrected=False)
        with self._lock:
            self._base[episode_id] = ep
            while len(self._base) > 16:
                self._base.popitem(last=False)
        return ep

    def episode(self, episode_id: str) -> Episode:
        """The corrected episode without media (cached until the log changes). Callers must not
        modify it."""
        self.check_episode(episode_id)
        log = self.log
        if not self._has_log():
            return self.base_episode(episode_id)
        recs = log.history(episode_id)
        state = (len(recs), recs[-1].id if recs else None)
        with self._lock:
            hit = self._corrected.get(episode_id)
        if hit is not None and hit[0] == state:
            return hit[1]
        ep = log.apply_to(self.base_episode(episode_id))
        with self._lock:
            self._corrected[episode_id] = (state, ep)
        return ep

    def media(self, episode_id: str) -> ViewMedia:
        with self._lock:
            hit = self._media.get(episode_id)
            if hit is not None:
                self._media.move_to_end(episode_id)
                return hit
        t0 = time.perf_counter()
        folder = self.ds.episode_dir(episode_id)
        video = folder / "rgb.mp4" if self.ds.has_rgb(episode_id) else None
        depth = sorted((folder / "depth").glob("*.png")) if self.ds.has_depth(episode_id) else None
        vm = ViewMedia(media_from_files(video, depth), time.perf_counter() - t0)
        with self._lock:
            self._media[episode_id] = vm
            while len(self._media) > self._media_cap:
                self._media.popitem(last=False)
        return vm

    @staticmethod
    def new_recording_id(episode_id: str) -> str:
        """A fresh Rerun recording id per send, so a refreshed recording never mixes with the
        one it replaces in the viewer."""
        return f"{episode_id}-{uuid.uuid4().hex[:8]}"

    def prefetch(self, episode_ids: list[str] | None = None) -> None:
        """Build the media caches of the first episodes ahead of their first selection
        (call from a background thread); errors are left for the selection to report."""
        for eid in (episode_ids if episode_ids is not None else self.ds.episode_ids())[: self._media_cap]:
            try:
                self.media(eid)
            except Exception:  # noqa: BLE001 - the selection shows the error with context
                continue

    def recording(self, episode_id: str, predictions: dict[str, np.ndarray] | None = None,
                  ep: Episode | None = None, recording_id: str | None = None) -> bytes:
        """The corrected episode as .rrd bytes for the embedded viewer."""
        ep = ep or self.episode(episode_id)
        vm = self.media(episode_id)
        return episode_rrd_bytes(ep, self.view, media=vm.media, predictions=predictions,
                                 recording_id=recording_id or self.new_recording_id(episode_id))

    def recording_update(self, episode_id: str, recording_id: str, change: "Change") -> bytes:
        """An .rrd chunk for recording ``recording_id`` (already in the viewer) with what
        ``change`` touched, from the corrected episode."""
        return frames_rrd_bytes(self.episode(episode_id), recording_id, change.frames, depth_scale=change.depth_scale)

    def last_change(self, episode_id: str) -> Change:
        """What this author's latest action on the episode changed (an undo/redo: what its
        batch changed)."""
        recs = self.log.history(episode_id) if self._has_log() else []
        mine = [r for r in recs if r.author == self.author] or recs
        if not mine:
            return Change(())
        last = mine[-1]
        batch = last.ref_batch if last.target in ("undo", "redo") else last.batch_id
        rows = [r for r in recs if r.batch_id == batch and r.target not in ("undo", "redo")]
        if any(r.target in ("scale", "hand_scale") for r in rows):  # a hand's size: all its frames, maybe the cloud
            return Change(None, depth_scale=True)
        if any(r.target == "frame_bad" for r in rows):
            return Change(tuple(sorted({int(r.frame) for r in rows if r.frame is not None})))
        return Change(tuple(sorted({int(r.frame) for r in rows if r.frame is not None
                                    and r.target not in ("frame_review", "review_status", "instruction")})))

    @staticmethod
    def display_factor(ep: Episode, target: int = 560) -> int:
        """Integer magnification for showing small frames (a click at display pixel x is at
        episode pixel x / factor)."""
        return max(1, int(target // max(ep.width, ep.height)))

    def frame_image(self, episode_id: str, frame: int, side: str | None = None, joint: str | None = None,
                    ep: Episode | None = None) -> np.ndarray:
        """(H*f, W*f, 3) uint8 RGB frame (f = ``display_factor``) with the corrected 2D joints,
        bones and object boxes drawn; the selected joint is ringed."""
        ep = ep or self.episode(episode_id)
        frame = int(np.clip(frame, 0, ep.num_frames - 1))
        f = self.display_factor(ep)
        if self.ds.has_rgb(episode_id):
            img = np.ascontiguousarray(self.ds.rgb_frame(episode_id, frame))
        else:
            img = np.full((ep.height, ep.width, 3), 40, np.uint8)
        if f > 1:
            img = cv2.resize(img, (ep.width * f, ep.height * f), interpolation=cv2.INTER_LINEAR)
        lw = max(1, round(max(ep.width, ep.height) * f / 500))
        for obj in ep.objects:
            b = obj.box_2d[frame] * f
            if np.isfinite(b).all():
                cv2.rectangle(img, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), OBJECT_COLOR, lw)
                cv2.putText(img, obj.name or obj.object_id, (int(b[0]), max(10, int(b[1]) - 3)),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.35 * lw, OBJECT_COLOR, 1, cv2.LINE_AA)
        for s in HANDS:
            tr = ep.hands[s]
            if not tr.present[frame]:
                continue
            uv = tr.joints_2d[frame] * f
            ok = tr.valid[frame] & np.isfinite(uv).all(1)
            col = HAND_COLORS[s]
            for a, b in HAND_EDGES:
                if ok[a] and ok[b]:
                    cv2.line(img, _pt(uv[a]), _pt(uv[b]), col, lw, cv2.LINE_AA)
            for j in range(len(uv)):
                if np.isfinite(uv[j]).all():
                    cv2.circle(img, _pt(uv[j]), 2 * lw + 1, col if ok[j] else (128, 128, 128), -1, cv2.LINE_AA)
            if s == side and joint in JOINT_INDEX and np.isfinite(uv[JOINT_INDEX[joint]]).all():
                cv2.circle(img, _pt(uv[JOINT_INDEX[joint]]), 5 * lw + 3, (255, 255, 0), lw, cv2.LINE_AA)
        if not ep.frame_valid[frame]:
            cv2.putText(img, "MARKED BAD", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 0, 0), 2, cv2.LINE_AA)
        return img

    def inspect_figures(self, episode_id: str, frame: int | None = None, ep: Episode | None = None):
        ep = ep or self.episode(episode_id)
        return figures.wrist_xyz_figure(ep, frame), figures.confidence_figure(ep, frame)

    def align(self, episode_id: str, frame: int | None = None, k: int = 12, ep: Episode | None = None):
        """(per-joint reprojection heatmap, residual-over-time figure, worst frames rows)."""
        ep = ep or self.episode(episode_id)
        if ep.depth_raw is None and self.ds.has_depth(episode_id):
            ep = self.ds.load_episode(episode_id, media=True, corrected=True)
        res = figures.calibration_residual(ep)
        worst = figures.worst_frames(ep, k, residual=res)
        if ep.depth_raw is None:
            resid_fig = figures.note_figure("calibration residual", figures.NO_DEPTH_RESIDUAL)
        elif not np.isfinite(res).any():
            resid_fig = figures.note_figure("calibration residual", "no frame has a valid joint over valid depth, "
                                                                    "so no calibration residual")
        else:
            resid_fig = figures.calibration_residual_figure(ep, res, frame)
        return (figures.reproj_error_figure(ep, frame), resid_fig,
                [[w["frame"], w["reproj_px"], w["calib_residual"], w["lift_depth_ratio"], w["by"]] for w in worst])

    def scale_preview(self, episode_id: str, frame: int, new_scale: float):
        if not self.ds.has_depth(self.check_episode(episode_id)):
            return figures.note_figure("before / after scale change", figures.NO_DEPTH_SCALE)
        ep = self.ds.load_episode(episode_id, media=True, corrected=True)
        return figures.scale_change_figure(ep, int(frame), float(new_scale))

    # ------------------------------------------------------------------ state for the UI / API

    def joint_state(self, ep: Episode, frame: int, side: str, joint: str) -> dict | None:
        """One joint's corrected values at a frame (pixels, camera-frame metres), or None when
        the hand is not present there."""
        side, j = self._check_joint(side, joint)
        frame = self._check_frame(ep, frame)
        tr = ep.hands[side]
        if not tr.present[frame]:
            return None
        uv, xyz = tr.joints_2d[frame, j], tr.joints_3d[frame, j]
        fin = lambda a: [float(x) for x in a] if np.isfinite(a).all() else None
        return {"frame": frame, "side": side, "joint": JOINT_NAMES[j], "uv": fin(uv), "xyz": fin(xyz),
                "valid": bool(tr.valid[frame, j]), "confidence": float(tr.confidence[frame, j]),
                "frame_valid": bool(ep.frame_valid[frame]),
                "frame_review": (ep.extra or {}).get("frame_review", {}).get(str(frame), "todo")}

    def episode_info(self, episode_id: str) -> dict:
        ep = self.episode(episode_id)
        s = ep.depth_scale[np.isfinite(ep.depth_scale)]
        return {"episode_id": ep.episode_id, "num_frames": ep.num_frames, "width": ep.width, "height": ep.height,
                "fps": ep.fps, "instruction": ep.instruction, "review_status": ep.review_status,
                "scale": float(np.median(s)) if s.size else None,
                "bad_frames": [int(i) for i in np.nonzero(~ep.frame_valid)[0]],
                "frame_review": dict((ep.extra or {}).get("frame_review", {})),
                "objects": [o.object_id for o in ep.objects],
                "hands_present": {h: int(ep.hands[h].present.sum()) for h in HANDS},
                "quality": ep.quality, "edits": len(self.log.active_edits(episode_id)) if self._has_log() else 0}

    def _has_log(self) -> bool:
        return log_exists(self.root / "corrections.sqlite")

    def history(self, episode_id: str) -> list[dict]:
        self.check_episode(episode_id)
        if not self._has_log():
            return []
        return [r.to_dict() for r in self.log.history(episode_id)]

    def history_rows(self, episode_id: str, limit: int = 200) -> list[list[Any]]:
        """Newest first: id, when, who, what, frame, old, new, undone. Undo/redo rows name the
        action they undid or redid."""
        recs = self.history(episode_id)
        active = {r.id for r in self.log.active_edits(episode_id)} if recs else set()
        batches: dict[str, list[dict]] = {}
        for r in recs:
            if r["target"] not in ("undo", "redo"):
                batches.setdefault(r["batch_id"], []).append(r)
        rows = []
        for r in reversed(recs[-limit:]):
            if r["target"] in ("undo", "redo"):
                what = f"{r['target']}: {describe_batch(batches.get(r['ref_batch'], []))}"
                rows.append([r["id"], r["timestamp"][:19].replace("T", " "), r["author"], what, None, "", "", ""])
                continue
            what = r["target"] if r["hand"] is None else f"{r['target']} {r['hand']} {JOINT_NAMES[r['joint']] if r['joint'] is not None else ''}"
            if r["object_id"]:
                what += f" {r['object_id']}"
            rows.append([r["id"], r["timestamp"][:19].replace("T", " "), r["author"], what.strip(), r["frame"],
                         _short(r["old"]), _short(r["new"]), "" if r["id"] in active else "undone"])
        return rows

    # ------------------------------------------------------------------ corrections

    @property
    def log(self):
        return self.ds.corrections

    def _check_joint(self, side: str, joint: str | int) -> tuple[str, int]:
        if side not in HANDS:
            raise ValueError(f"hand: expected one of {HANDS}, got {side!r}")
        if isinstance(joint, str):
            if joint not in JOINT_INDEX:
                raise ValueError(f"joint: unknown name {joint!r}")
            return side, JOINT_INDEX[joint]
        j = int(joint)
        if not 0 <= j < len(JOINT_NAMES):
            raise ValueError(f"joint: expected 0..{len(JOINT_NAMES) - 1}, got {joint!r}")
        return side, j

    @staticmethod
    def _check_frame(ep: Episode, frame: int) -> int:
        f = int(frame)
        if not 0 <= f < ep.num_frames:
            raise IndexError(f"frame {frame} out of range 0..{ep.num_frames - 1}")
        return f

    def _edited(self, episode_id: str, what: str) -> str:
        """After an edit: the episode's derived products are re-derived in the background (once
        the edits to it pause), so the edit returns at once; ``flush_derived`` waits for them."""
        with self._derive_cv:
            if episode_id not in self._stale:
                self._stale[episode_id] = time.monotonic()
                self._write_pending()
            self._stale[episode_id] = time.monotonic()
            if self._derive_thread is None or not self._derive_thread.is_alive():
                self._derive_thread = threading.Thread(target=self._derive_loop, daemon=True, name="vipa-derive")
                self._derive_thread.start()
                if not getattr(self, "_atexit", False):
                    import atexit

                    atexit.register(self.flush_derived, 60.0)
                    self._atexit = True
            self._derive_cv.notify_all()
        return what

    def _derive_loop(self) -> None:
        while True:
            with self._derive_cv:
                while True:
                    if not self._stale:
                        self._derive_cv.notify_all()
                        if not self._derive_cv.wait(30.0) and not self._stale:
                            self._derive_thread = None  # idle: a later edit starts a new one
                            return
                        continue
                    eid, t = min(self._stale.items(), key=lambda kv: kv[1])
                    wait = t + self.derive_delay - time.monotonic()
                    if wait <= 0:
                        break
                    self._derive_cv.wait(wait)
                del self._stale[eid]
                self._deriving = eid
            try:
                self.rederive(eid)
                self.derive_errors.pop(eid, None)
            except Exception as exc:  # noqa: BLE001 - shown by pending_derived(); the edit itself is in the log
                import sys

                self.derive_errors[eid] = f"{type(exc).__name__}: {exc}"
                print(f"vipa workbench: re-deriving {eid}: {self.derive_errors[eid]}", file=sys.stderr, flush=True)
            finally:
                with self._derive_cv:
                    self._deriving = None
                    self._write_pending()
                    self._derive_cv.notify_all()

    def _read_pending(self) -> list[str]:
        try:
            ids = json.loads(self._pending_file.read_text())
        except (OSError, ValueError):
            return []
        known = set(self.ds.episode_ids())
        return [e for e in ids if isinstance(e, str) and e in known] if isinstance(ids, list) else []

    def _write_pending(self) -> None:
        """The episodes still to re-derive, on disk (under the lock), so that a killed app's next
        start re-derives them; no file when none."""
        ids = sorted(set(self._stale) | ({self._deriving} if self._deriving else set()))
        try:
            if ids:
                tmp = self._pending_file.with_name(self._pending_file.name + ".tmp")
                tmp.write_text(json.dumps(ids))
                tmp.replace(self._pending_file)
            else:
                self._pending_file.unlink(missing_ok=True)
        except OSError:  # a read-only dataset: nothing to remember
            pass

    def pending_derived(self) -> list[str]:
        """Episodes whose derived products are not yet re-derived after their latest edit."""
        with self._derive_cv:
            return sorted(set(self._stale) | ({self._deriving} if self._deriving else set()))

    def flush_derived(self, timeout: float | None = None) -> bool:
        """Re-derive every episode edited since (now, without the quiet delay) and wait for it;
        False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._derive_cv:
            for eid in self._stale:
                self._stale[eid] = -1e9  # due now
            self._derive_cv.notify_all()
            while self._stale or self._deriving:
                if self._derive_thread is None or not self._derive_thread.is_alive():
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._derive_cv.wait(left if left is not None else 1.0)
            todo = sorted(self._stale)  # no thread left to do them: here
            self._stale.clear()
        for eid in todo:
            self.rederive(eid)
        with self._derive_cv:
            self._write_pending()
        return True

    def move_joint(self, episode_id: str, frame: int, side: str, joint: str | int, u: float, v: float) -> str:
        """Move a joint to pixel (u, v) (corner convention); its 3D point is re-derived at the
        same depth by the correction layer."""
        ep = self.episode(episode_id)
        side, j = self._check_joint(side, joint)
        frame = self._check_frame(ep, frame)
        if not (np.isfinite(u) and np.isfinite(v) and 0 <= u <= ep.width and 0 <= v <= ep.height):
            raise ValueError(f"pixel ({u}, {v}) is outside the {ep.width}x{ep.height} frame")
        if not np.isfinite(ep.hands[side].joints_3d[frame, j, 2]):
            raise ValueError(f"{side} {JOINT_NAMES[j]} has no depth in frame {frame} to keep; set its depth first")
        self.log.set_joint_2d(episode_id, frame, side, j, [float(u), float(v)], self.author)
        return self._edited(episode_id, f"moved {side} {JOINT_NAMES[j]} in frame {frame} to ({u:.1f}, {v:.1f}) px")

    def set_visibility(self, episode_id: str, frame: int, side: str, joint: str | int, visible: bool) -> str:
        side, j = self._check_joint(side, joint)
        self.log.set_joint_visible(episode_id, int(frame), side, j, bool(visible), self.author)
        return self._edited(episode_id, f"{side} {JOINT_NAMES[j]} in frame {frame}: {'visible' if visible else 'hidden'}")

    def toggle_visibility(self, episode_id: str, frame: int, side: str, joint: str | int) -> str:
        ep = self.episode(episode_id)
        side, j = self._check_joint(side, joint)
        return self.set_visibility(episode_id, self._check_frame(ep, frame), side, j,
                                   not bool(ep.hands[side].valid[frame, j]))

    def nudge_depth(self, episode_id: str, frame: int, side: str, joint: str | int, dz: float) -> str:
        side, j = self._check_joint(side, joint)
        if not (np.isfinite(dz) and abs(dz) <= 1.0):
            raise ValueError(f"depth step {dz} m: expected a finite step of at most 1 m")
        self.log.nudge_joint_depth(self.check_episode(episode_id), int(frame), side, j, float(dz), self.author)
        return self._edited(episode_id, f"{side} {JOINT_NAMES[j]} in frame {frame}: depth {dz:+.3f} m")

    def set_scale(self, episode_id: str, scale: float) -> str:
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: expected a positive number, got {scale}")
        self.log.set_scale(self.check_episode(episode_id), float(scale), self.author)
        return self._edited(episode_id, f"episode scale s = {scale:.4f}")

    # hand size (issue 14): the lift's estimate per hand, and a person's correction of it

    def hand_scale_info(self, episode_id: str) -> str:
        """Markdown: each lifted hand's size / mean hand with its uncertainty and source, and how
        many frames the lift left ambiguous in depth."""
        ep = self.episode(self.check_episode(episode_id))
        recs = ep.extra.get("hand_scale") or {}
        lines = []
        for side in HANDS:
            r = recs.get(side)
            if not r or not ep.hands[side].present.any():
                continue
            sd = float(r.get("sigma_log") or 0.0)
            est = f" (lift's estimate {r['estimate']:.3f})" if r.get("estimate") is not None else ""
            lines.append(f"- **{side}** hand: {float(r['scale']):.3f} x the mean hand, ±{100 * sd:.0f} % "
                         f"({r.get('source', '?')}){est}")
        amb = figures.lift_ambiguity(ep)
        if not lines:
            lines.append("- no hand size recorded (lifted before issue 14, or no hand)")
        lines.append(f"- lift depth ambiguous in {len(amb)} of {ep.num_frames} frames (▼ in the reprojection plot)")
        return "\n".join(lines)

    def set_hand_scale(self, episode_id: str, side: str, scale: float) -> str:
        """Set one hand's size (times the mean hand) for the episode: its 3D joints are rescaled
        about the camera (the 2D fit unchanged); a cloud scaled to the hands follows."""
        if side not in HANDS:
            raise ValueError(f"hand: expected one of {HANDS}, got {side!r}")
        if not np.isfinite(scale):
            raise ValueError(f"hand scale: expected a number, got {scale}")
        ep = self.episode(self.check_episode(episode_id))
        if not np.isfinite(ep.hands[side].joints_3d).any():
            raise ValueError(f"the {side} hand has no 3D joints in episode {episode_id!r} to rescale")
        self.log.set_hand_scale(episode_id, side, float(scale), self.author)
        return self._edited(episode_id, f"{side} hand size = {scale:.3f} x the mean hand")

    def set_box(self, episode_id: str, frame: int, object_id: str, box: list[float]) -> str:
        ep = self.episode(episode_id)
        if object_id not in [o.object_id for o in ep.objects]:
            raise ValueError(f"object {object_id!r} is not in episode {episode_id!r}")
        b = [float(x) for x in box]
        if not (all(np.isfinite(b)) and b[0] < b[2] and b[1] < b[3]):
            raise ValueError(f"box {box}: expected x0 < x1 and y0 < y1 in pixels")
        self.log.set_object_box(episode_id, self._check_frame(ep, frame), object_id, b, self.author)
        obj = next(o for o in ep.objects if o.object_id == object_id)
        label = f"{obj.name} ({object_id})" if obj.name and obj.name != object_id else object_id
        return self._edited(episode_id, f"box of {label} in frame {frame} set to {[round(x, 1) for x in b]}")

    def mark_bad(self, episode_id: str, frame: int, bad: bool = True) -> str:
        self.log.mark_frame_bad(self.check_episode(episode_id), int(frame), self.author, bad=bool(bad))
        return self._edited(episode_id, f"frame {frame} marked {'bad' if bad else 'good'}")

    def toggle_bad(self, episode_id: str, frame: int) -> str:
        ep = self.episode(episode_id)
        return self.mark_bad(episode_id, self._check_frame(ep, frame), bool(ep.frame_valid[frame]))

    def interpolate(self, episode_id: str, side: str, joint: str | int | None, start: int, end: int) -> str:
        side, j = self._check_joint(side, joint) if joint not in (None, "", "all") else (side, None)
        self.log.interpolate_keyframes(self.check_episode(episode_id), side, j, [int(start), int(end)], self.author)
        name = "all joints" if j is None else JOINT_NAMES[j]
        return self._edited(episode_id, f"interpolated {side} {name} between frames {start} and {end}")

    def undo(self, episode_id: str) -> str:
        b = self.log.undo(self.check_episode(episode_id), by=self.author)
        return self._edited(episode_id, f"undone: {self._batch_text(episode_id, b)}" if b else "nothing to undo")

    def redo(self, episode_id: str) -> str:
        b = self.log.redo(self.check_episode(episode_id), by=self.author)
        return self._edited(episode_id, f"redone: {self._batch_text(episode_id, b)}" if b else "nothing to redo")

    def _batch_text(self, episode_id: str, batch_id: str) -> str:
        return describe_batch([r.to_dict() for r in self.log.history(episode_id) if r.batch_id == batch_id])

    def set_review(self, episode_id: str, status: str) -> str:
        if status not in REVIEW_STATUSES:
            raise ValueError(f"review status: expected one of {REVIEW_STATUSES}, got {status!r}")
        self.log.set_review_status(self.check_episode(episode_id), status, self.author)
        return f"review status: {status}"

    def set_frame_review(self, episode_id: str, frame: int, status: str) -> str:
        if status not in REVIEW_STATUSES:
            raise ValueError(f"frame review status: expected one of {REVIEW_STATUSES}, got {status!r}")
        ep = self.episode(episode_id)
        self.log.set_frame_review(episode_id, self._check_frame(ep, frame), status, self.author)
        return f"frame {frame} review status: {status}"

    def set_instruction(self, episode_id: str, text: str) -> str:
        text = (text or "").strip()
        if len(text) > 2000:
            raise ValueError("instruction: longer than 2000 characters")
        self.log.set_instruction(self.check_episode(episode_id), text, self.author)
        return self._edited(episode_id, "instruction saved")

    def rederive(self, episode_id: str) -> None:
        """The derived products of every registered derive stage (QA pairs, motion tokens, ...)
        from the corrected episode."""
        from annotators.pipeline import derive_products

        for product, records in derive_products(self.episode(episode_id)).items():
            self.ds.write_derived(episode_id, product, records)

    def predict(self, predictor: Any, episode_id: str, frame: int, instruction: str,
                upload: str | None = None, max_upload_mb: int = 20, depth_upload: str | None = None,
                depth_unit: float = 0.001, intrinsics: str = "") -> dict:
        """Run the checkpoint on one frame (or an uploaded image, with an optional uploaded 16-bit depth
        PNG of ``depth_unit`` metres per count and intrinsics "fx fy cx cy" in pixels) and draw its wrist
        trajectory beside the demonstrated one; returns {"message", "rrd", "error_m"}."""
        from app.predict import inputs_words, trajectory_of
        from vipa.data.trajectory import compare_to_demonstration
        from vipa.tasks import stride_frames

        if depth_upload and not upload:
            raise ValueError("a depth map was uploaded without its colour frame; upload the frame too")
        if upload:  # the upload's own scene, not the selected episode's (app.predict.predict_upload)
            from app.predict import load_upload_depth, parse_intrinsics, predict_upload
            image = load_upload_image(upload, max_upload_mb)
            K = parse_intrinsics(intrinsics)
            depth = (load_upload_depth(depth_upload, float(depth_unit), image.shape[:2], max_upload_mb)
                     if depth_upload else None)
            return predict_upload(predictor, image, instruction, self.new_recording_id("upload"), depth=depth, K=K)
        ep = self.episode(episode_id)
        frame = self._check_frame(ep, frame)
        image = self.ds.rgb_frame(episode_id, frame)
        depth = self.ds.depth_frame(episode_id, frame) if self.ds.has_depth(episode_id) else None
        result = predictor.predict(image, depth, ep.K, instruction=instruction or ep.instruction, mode="trajectory")
        traj = trajectory_of(result)
        if traj is None:
            return {"message": f"prediction: {result!r}"[:2000], "rrd": None, "error_m": None}
        # waypoint k is the wrist ``stride * (k + 1)`` frames ahead (the training records' spacing)
        cmp = compare_to_demonstration(ep, frame, traj, stride=stride_frames(ep.fps, predictor.motion_stride_s))
        world, side, err = cmp.predicted_world, cmp.side, cmp.error_m
        rid = self.new_recording_id(episode_id)
        rrd = self.recording(episode_id, predictions={"wrist": world}, ep=ep, recording_id=rid)
        used = inputs_words(result)
        msg = f"{len(traj)} predicted waypoints from frame {frame}" + (f" ({used})" if used else "") + (
            f"; mean distance to the demonstrated {side} wrist: {err:.3f} m" if err is not None else "")
        return {"message": msg, "rrd": rrd, "error_m": err, "recording_id": rid, "frame": frame}

    def export(self, out_rel: str) -> str:
        """Write the merged dataset to a new folder ``out_rel`` inside ``<root>_exports/``
        (refuses paths outside it); returns the folder."""
        base = self.root.parent / f"{self.root.name}_exports"
        base.mkdir(exist_ok=True)
        out = resolve_inside(base, out_rel)
        if out == base.resolve():
            raise ValueError("export: give a folder name")
        self.flush_derived()  # the export carries QA pairs and motion tokens of every edit made
        snapshot(self.root, tag=f"export-{out.name}")  # a read-only copy of the log at each export
        self.ds.export(out, corrected=True)
        return str(out)


UPLOAD_TYPES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def load_upload_image(path: str | Path, max_mb: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an uploaded PNG/JPEG, refusing other types and big files (the
    content is checked, not just the name)."""
    from PIL import Image

    p = Path(path)
    if p.suffix.lower() not in UPLOAD_TYPES:
        raise ValueError(f"The file {p.name} is not a PNG or JPEG image; please upload one of those.")
    size = p.stat().st_size
    if size > max_mb * 1024 * 1024:
        raise ValueError(f"The file {p.name} is {size / 1e6:.1f} MB, over the {max_mb} MB limit; please upload a smaller one.")
    from PIL import UnidentifiedImageError

    try:
        with Image.open(p) as im:
            if im.format not in ("PNG", "JPEG"):
                raise ValueError(f"The file {p.name} is a {im.format} image; please upload a PNG or JPEG.")
            if im.width * im.height > 40_000_000:
                raise ValueError(f"The image {p.name} is {im.width}x{im.height}, too large; please upload a smaller one.")
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError):  # garbled or truncated content
        raise ValueError(f"The file {p.name} is not a readable PNG or JPEG image; please upload another.") from None


def describe_batch(records: list[dict]) -> str:
    """One action (the rows of a batch) in words, e.g. "moved right wrist in frame 4"."""
    if not records:
        return "an earlier action"
    r = records[0]
    t, n = r["target"], len(records)
    joint = f"{r['hand']} {JOINT_NAMES[r['joint']]}" if r.get("joint") is not None else ""
    frames = sorted({x["frame"] for x in records if x.get("frame") is not None})
    where = (f"frame {frames[0]}" if len(frames) == 1 else f"frames {frames[0]}-{frames[-1]}") if frames else ""
    if t == "joint_2d":
        text = f"moved {joint} in {where}" if n == 1 else f"interpolated {r['hand']} joints in {where} ({n} points)"
    elif t == "joint_visible":
        text = f"{joint} in {where}: {'visible' if r['new'] else 'hidden'}"
    elif t == "joint_depth":
        text = f"{joint} depth in {where}"
    elif t == "scale":
        text = f"episode scale s = {float(r['new']):.4f}"
    elif t == "object_box":
        text = f"box of {r['object_id']} in {where}"
    elif t == "frame_bad":
        text = f"{where} marked {'bad' if r['new'] else 'good'}"
    elif t == "frame_review":
        text = f"{where} review status {r['new']}"
    elif t == "review_status":
        text = f"review status {r['new']}"
    elif t == "instruction":
        text = "instruction edited"
    else:
        text = t
    return text + (f" (+{n - 1} more)" if n > 1 and t != "joint_2d" else "")


def _short(x: Any, n: int = 60) -> str:
    t = json.dumps(x) if not isinstance(x, str) else x
    return t if len(t) <= n else t[: n - 1] + "…"


def _pt(uv: np.ndarray) -> tuple[int, int]:
    """Pixel-corner coordinates -> the integer pixel cv2 draws at."""
    return int(np.floor(uv[0])), int(np.floor(uv[1]))


def _round(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return round(x, 4) if np.isfinite(x) else None
