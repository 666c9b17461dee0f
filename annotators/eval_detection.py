"""Hand detection scored on the hand-checked real-clip labels (``samples/real_clips/hand_labels.json``).

The backend runs as the pipeline runs it: every frame of a clip, in order (tracking on), read by
``annotators.io.open_source`` at ``max_width`` (640 px by default, as ``vipa annotate``); the labelled
frames (every 10th) are scored. ``frames="labelled"`` runs it on the labelled frames only (for
image-mode backends and quick tests).

Scoring, per clip (labels and detections compared in the clip's full-resolution pixels):

* A detection's box is its 2D landmarks' bounding box grown by 10 % of its longer side (clipped to
  the image); its centre is the mean of the wrist and the four finger MCPs (the palm).
* A detection matches a label when their boxes overlap by IoU >= 0.3 or its palm centre lies inside
  the label's box. Per frame, pairs are matched greedily (IoU first, then centre distance), one
  detection per label.
* ``recall``: matched labels / labels that are not ``partial`` and are at least ``min_size`` px
  (the longer side of the box, full resolution; 40 px). ``side_ok``: matched eligible labels whose
  detection has the label's side / matched eligible labels.
* A detection is false when it matches no label (a partial one included; a detection matching a
  small or partial hand is not false). ``false_frames``: labelled frames with at least one false
  detection / labelled frames.
* ``ms_per_frame``: the backend's ``detect`` time per frame (all frames run), CPU time of this process
  (all its threads; the machines this runs on are shared, so wall clock would measure the load).
  ``stages``: the same per search step, where the backend reports them (``search_stats``).

CLI: ``python -m annotators.eval_detection [--hands SPEC] [--option k=v ...] [--clips a,b] [--json OUT]``
prints one row per clip and a total.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from annotators.errors import InputError
from vipa.ranges import count

LABELS_FORMAT = "vipa-hand-labels/1"
DEFAULT_LABELS = Path(__file__).resolve().parents[1] / "samples" / "real_clips" / "hand_labels.json"
MIN_SIZE = 40.0  # px (full resolution): smallest hand counted in recall
IOU_MATCH = 0.3
BOX_MARGIN = 0.10  # detection box: landmark bounds grown by this fraction of the longer side
PALM = (0, 5, 9, 13, 17)  # wrist and finger MCPs (MediaPipe order)
TARGETS = {"recall": 0.95, "side_ok": 0.95, "false_frames": 0.02}


@dataclass
class ClipScore:
    """Detection figures of one clip (see the module docstring)."""

    clip: str
    frames: int = 0  # labelled frames scored
    hands: int = 0  # eligible labels (visible, >= min_size)
    found: int = 0
    side_ok: int = 0
    false_hands: int = 0
    false_frames: int = 0
    frames_run: int = 0
    detect_s: float = 0.0
    revise_s: float = 0.0  # CPU seconds of the backend's revisions() pass (look-back), when run
    misses: list = field(default_factory=list)  # [(frame, side)] of eligible labels not found
    false_at: list = field(default_factory=list)  # labelled frames with a false detection
    stages: dict = field(default_factory=dict)  # backend's per-step {"calls", "seconds"} (search_stats), if any

    @property
    def recall(self) -> float:
        return self.found / self.hands if self.hands else float("nan")

    @property
    def side_rate(self) -> float:
        return self.side_ok / self.found if self.found else float("nan")

    @property
    def false_rate(self) -> float:
        return self.false_frames / self.frames if self.frames else float("nan")

    @property
    def revise_ms_per_frame(self) -> float:
        return 1000.0 * self.revise_s / self.frames_run if self.frames_run else float("nan")

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 * self.detect_s / self.frames_run if self.frames_run else float("nan")

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(recall=self.recall, side_ok_rate=self.side_rate, false_frame_rate=self.false_rate,
                 ms_per_frame=self.ms_per_frame, revise_ms_per_frame=self.revise_ms_per_frame)
        return d


def total(scores: list[ClipScore]) -> ClipScore:
    """All clips pooled (hands and frames summed)."""
    t = ClipScore("all")
    for s in scores:
        for k in ("frames", "hands", "found", "side_ok", "false_hands", "false_frames", "frames_run", "detect_s",
                  "revise_s"):
            setattr(t, k, getattr(t, k) + getattr(s, k))
        for k, v in s.stages.items():
            acc = t.stages.setdefault(k, {"calls": 0, "seconds": 0.0})
            acc["calls"] += v["calls"]
            acc["seconds"] += v["seconds"]
    return t


# ----------------------------------------------------------------------------------------- labels


def load_hand_labels(path: str | Path = DEFAULT_LABELS) -> dict[str, dict]:
    """{clip: {"file", "size", "fps", "n_frames", "frames": {int: [{"side", "box", "partial"}]}}},
    checked; raises InputError naming the file and field that is wrong."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the hand labels: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != LABELS_FORMAT or not isinstance(doc.get("clips"), dict):
        raise InputError(path, f"expected a JSON object with format {LABELS_FORMAT!r} and 'clips'")
    out: dict[str, dict] = {}
    for clip, c in doc["clips"].items():
        where = f"clips.{clip}"
        try:
            w, h = (int(v) for v in c["size"])
            frames = {}
            for fr, hands in c["frames"].items():
                lst = []
                for i, hd in enumerate(hands):
                    box = [float(v) for v in hd["box"]]
                    if len(box) != 4 or not (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h):
                        raise ValueError(f"frames.{fr}[{i}].box {box} is not inside the {w}x{h} image")
                    if hd["side"] not in ("left", "right"):
                        raise ValueError(f"frames.{fr}[{i}].side {hd['side']!r}: expected 'left' or 'right'")
                    lst.append({"side": hd["side"], "box": box, "partial": bool(hd.get("partial", False))})
                frames[int(fr)] = lst
            out[clip] = {"file": str(c["file"]), "size": (w, h), "fps": float(c["fps"]),
                         "n_frames": int(c["n_frames"]), "frames": frames}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(path, f"{where}: {exc}") from None
    return out


# ---------------------------------------------------------------------------------------- scoring


def detection_box(landmarks_2d: np.ndarray, size: tuple[int, int], margin: float = BOX_MARGIN) -> np.ndarray:
    """[x0, y0, x1, y1] px: the landmarks' bounds grown by ``margin`` of the longer side, clipped to ``size`` (W, H)."""
    lo, hi = np.nanmin(landmarks_2d, 0), np.nanmax(landmarks_2d, 0)
    m = margin * float(np.max(hi - lo))
    w, h = size
    return np.array([max(0.0, lo[0] - m), max(0.0, lo[1] - m), min(w, hi[0] + m), min(h, hi[1] + m)], np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_frame(dets: list[tuple[str, np.ndarray, np.ndarray]], labels: list[dict]) -> list[tuple[int, int]]:
    """Greedy one-to-one matches (detection index, label index) for one frame. ``dets``: (side,
    box, palm centre) in label pixels."""
    cand = []
    for i, (_, box, centre) in enumerate(dets):
        for j, lab in enumerate(labels):
            lb = np.asarray(lab["box"])
            o = iou(box, lb)
            inside = lb[0] <= centre[0] <= lb[2] and lb[1] <= centre[1] <= lb[3]
            if o >= IOU_MATCH or inside:
                lc = 0.5 * (lb[:2] + lb[2:])
                cand.append((-o, float(np.hypot(*(centre - lc))), i, j))
    cand.sort()
    used_d, used_l, out = set(), set(), []
    for _, _, i, j in cand:
        if i not in used_d and j not in used_l:
            used_d.add(i)
            used_l.add(j)
            out.append((i, j))
    return out


def score_frame(score: ClipScore, frame: int, dets: list[tuple[str, np.ndarray, np.ndarray]], labels: list[dict],
                min_size: float = MIN_SIZE) -> None:
    """Add one labelled frame's matches to ``score``."""
    pairs = dict((j, i) for i, j in match_frame(dets, labels))
    score.frames += 1
    for j, lab in enumerate(labels):
        b = lab["box"]
        if lab["partial"] or max(b[2] - b[0], b[3] - b[1]) < min_size:
            continue
        score.hands += 1
        if j in pairs:
            score.found += 1
            score.side_ok += dets[pairs[j]][0] == lab["side"]
        else:
            score.misses.append((frame, lab["side"]))
    n_false = len(dets) - len(pairs)
    score.false_hands += n_false
    score.false_frames += n_false > 0
    if n_false:
        score.false_at.append(frame)


def _to_label_px(det, sx: float, sy: float, size: tuple[int, int]) -> tuple[str, np.ndarray, np.ndarray]:
    uv = np.asarray(det.landmarks_2d, np.float64) * np.array([sx, sy])
    return det.side, detection_box(uv, size), uv[list(PALM)].mean(0)


# ----------------------------------------------------------------------------------------- running


def evaluate_clip(clip: str, labels: dict, backend, *, root: Path | None = None, max_width: int | None = 640,
                  frames: str = "all", min_size: float = MIN_SIZE, look_back: bool = False) -> ClipScore:
    """Run ``backend`` (a HandBackend) over one labelled clip and score it (see the module docstring).
    ``look_back``: keep the clip's frames and score ``backend.revisions(frames, detections)`` instead
    (its CPU time is ``revise_s``, apart from ``detect_s``)."""
    from annotators.io import open_source

    if frames not in ("all", "labelled"):
        raise ValueError(f"frames must be 'all' or 'labelled', got {frames!r}")
    root = DEFAULT_LABELS.parent if root is None else Path(root)
    path = root / labels["file"]
    size = labels["size"]
    score = ClipScore(clip)
    backend.reset()
    stats0 = backend.search_stats() if hasattr(backend, "search_stats") else {}
    kept_frames, kept_dets, kept_idx = [], [], []
    with open_source(path, max_width=max_width) as src:
        sx, sy = size[0] / src.info.width, size[1] / src.info.height
        for fr in src:
            labelled = fr.source_index in labels["frames"]
            if frames == "labelled" and not labelled:
                continue
            t0 = time.process_time()
            dets = backend.detect(fr.rgb)
            score.detect_s += time.process_time() - t0
            score.frames_run += 1
            if look_back:
                kept_frames.append(fr.rgb)
                kept_dets.append(dets)
                kept_idx.append(fr.source_index)
            elif labelled:
                score_frame(score, fr.source_index, [_to_label_px(d, sx, sy, size) for d in dets],
                            labels["frames"][fr.source_index], min_size)
    if look_back:
        t0 = time.process_time()
        revised = backend.revisions(kept_frames, kept_dets)
        score.revise_s += time.process_time() - t0
        for idx, dets in zip(kept_idx, revised):
            if idx in labels["frames"]:
                score_frame(score, idx, [_to_label_px(d, sx, sy, size) for d in dets], labels["frames"][idx], min_size)
    if stats0:
        stats1 = backend.search_stats()
        score.stages = {k: {"calls": stats1[k]["calls"] - v["calls"], "seconds": stats1[k]["seconds"] - v["seconds"]}
                        for k, v in stats0.items()}
    return score


def evaluate(make_backend: Callable[[], Any], labels_path: str | Path = DEFAULT_LABELS, *, clips: list[str] | None = None,
             max_width: int | None = 640, frames: str = "all", min_size: float = MIN_SIZE,
             look_back: bool = False) -> list[ClipScore]:
    """Score a hand backend (built once by ``make_backend()``, reset per clip) on the labelled clips."""
    labels = load_hand_labels(labels_path)
    names = list(labels) if clips is None else clips
    unknown = [c for c in names if c not in labels]
    if unknown:
        raise InputError(labels_path, f"no labels for clips {unknown} (known: {', '.join(labels)})")
    root = Path(labels_path).parent
    out = []
    backend = make_backend()
    try:
        for c in names:
            out.append(evaluate_clip(c, labels[c], backend, root=root, max_width=max_width, frames=frames,
                                     min_size=min_size, look_back=look_back))
    finally:
        backend.close()
    return out


def format_table(scores: list[ClipScore]) -> str:
    """A plain-text table: one row per clip and the pooled total."""
    rows = [f"{'clip':<30} {'frames':>6} {'hands':>5} {'recall':>7} {'side':>6} {'false fr':>8} {'ms/fr':>7}  stages ms/fr"]
    # stages: the backend's own per-step CPU split; look_back is the revisions() pass, apart from ms/fr
    for s in [*scores, total(scores)]:
        st = " ".join(f"{k} {1000 * v['seconds'] / s.frames_run:.1f}" for k, v in s.stages.items()) if s.frames_run else ""
        rows.append(f"{s.clip:<30} {s.frames:>6} {s.hands:>5} {s.recall:>7.3f} {s.side_rate:>6.3f} "
                    f"{s.false_rate:>8.3f} {s.ms_per_frame:>7.1f}  {st}")
    return "\n".join(rows)


def _parse_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"--option {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    from annotators.hands import create_hand_backend

    p = argparse.ArgumentParser(prog="python -m annotators.eval_detection", description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", default=str(DEFAULT_LABELS), help="hand_labels.json (clips are found beside it)")
    p.add_argument("--hands", default="mediapipe", help="hand backend spec (as create_hand_backend)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="backend keyword (JSON value)")
    p.add_argument("--clips", default=None, help="comma-separated clip names (default: all)")
    p.add_argument("--frames", choices=("all", "labelled"), default="all", help="run every frame (tracking) or the labelled ones")
    p.add_argument("--max-width", type=count(0), default=640, help="downscale frames to this width first (0: full size)")
    p.add_argument("--json", default=None, help="write the per-clip figures here")
    p.add_argument("--look-back", action="store_true", help="score the backend's revisions() pass (look-back)")
    a = p.parse_args(argv)
    opts = _parse_options(a.option)
    scores = evaluate(lambda: create_hand_backend(a.hands, **opts), a.labels,
                      clips=a.clips.split(",") if a.clips else None, max_width=a.max_width or None, frames=a.frames,
                      look_back=a.look_back)
    print(format_table(scores))
    if a.json:
        Path(a.json).write_text(json.dumps({"hands": a.hands, "options": opts, "frames": a.frames, "look_back": a.look_back,
                                            "max_width": a.max_width,
                                            "clips": [s.summary() for s in [*scores, total(scores)]]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
