"""Hand detection on the hand-checked real-clip labels: recall of visible hands with the hand search vs MediaPipe's tracker alone.

Ours: ``annotators.hands.MediaPipeHands()`` (tracker + followers of lost hands on upright crops + multi-scale
search incl. the upside-down frame, ``annotators.hand_search``) and its look-back pass (``revisions``, as the
pipeline runs it); baseline: the same backend with ``search=False`` (MediaPipe's video-mode
graph on the frame padded by 25 %, as before the search existed). Both run every frame of the seven
clips in ``samples/real_clips`` at 640 px wide, in order (tracking on), and are scored on the labelled
frames (every 10th) by ``annotators.eval_detection``: recall of visible hands >= 40 px, side correct
among found hands, labelled frames with a false hand. ``--quick``: two clips (jar_desk, 02_cups).

value / baseline: recall (higher is better). The issue's targets (recall >= 0.95, side >= 0.95, false
frames <= 0.02) decide ``passed``. Costs: CPU ms per frame of ``detect`` for both, and per search step
(track / roi / tile) for ours, so the search's price is seen beside what it finds.
"""

from __future__ import annotations

import os

from annotators.eval_detection import TARGETS, evaluate, total
from annotators.hands import MediaPipeHands

QUICK_CLIPS = ["egoloc/jar_desk", "sam2_gallery/02_cups"]


def _run(search: bool, clips):
    scores = evaluate(lambda: MediaPipeHands(video_mode=True, search=search), clips=clips, look_back=search)
    return scores, total(scores)


def _fig(t) -> dict:
    return {"recall": round(t.recall, 4), "side_ok": round(t.side_rate, 4), "false_frames": round(t.false_rate, 4),
            "ms_per_frame_cpu": round(t.ms_per_frame, 2), "hands": t.hands, "found": t.found}


def run(quick: bool) -> dict:
    clips = QUICK_CLIPS if quick else None
    base_scores, base = _run(False, clips)
    ours_scores, ours = _run(True, clips)
    stages = {k: round(1000 * v["seconds"] / ours.frames_run, 2) for k, v in ours.stages.items()}
    search_ms = sum(v for k, v in stages.items() if k not in ("track", "look_back"))
    passed = (ours.recall >= TARGETS["recall"] and ours.side_rate >= TARGETS["side_ok"]
              and ours.false_rate <= TARGETS["false_frames"])
    return {
        "metric": "recall of visible hands >= 40 px on the labelled real-clip frames",
        "unit": "fraction",
        "value": round(ours.recall, 4),
        "baseline": round(base.recall, 4),
        "baseline_name": "MediaPipeHands(search=False): mp.solutions.hands video mode, 25 % padding",
        "lower_is_better": False,
        "goal": f"recall >= {TARGETS['recall']}, side >= {TARGETS['side_ok']}, false frames <= {TARGETS['false_frames']}",
        "passed": passed,
        "ours": _fig(ours),
        "base": _fig(base),
        "per_clip": {s.clip: {"ours": _fig(s), "base": _fig(b)} for s, b in zip(ours_scores, base_scores)},
        "search_ms_per_frame_cpu": stages,
        "search_extra_ms_per_frame_cpu": round(search_ms, 2),
        "look_back_ms_per_frame_cpu": round(ours.revise_ms_per_frame, 2),
        "extra_hands_found": ours.found - base.found,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
