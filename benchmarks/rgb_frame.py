"""Random access to one RGB frame of a stored episode: Hand3DDataset.rgb_frame (keyframe seek) vs decoding from the start.

Input: the first frames of the bundled real hand video (1280x720), written once as a Hand3D
episode (H.264, keyframe at least every 30 frames). Ours: ``rgb_frame(id, i)`` for a fixed
set of random frame indices, with the decoded-frame cache emptied before every access (cold:
what a jump on the timeline costs). Baseline: open the same mp4 and decode from frame 0 up to
frame i, the approach without an index. Both return the same pixels (checked). value and
baseline are the best of N interleaved runs, per access; the warm (cached, sequential
playback) per-frame time is reported beside them. Goal: faster (ratio >= 1).
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np


def _decode(path: str, n: int) -> np.ndarray:
    import av

    out = []
    with av.open(path) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return np.stack(out)


def run(quick: bool) -> dict[str, Any]:
    import av

    from vipa.bench import time_pair
    from vipa.data import dataset as dsmod
    from vipa.data.episode import Episode
    from vipa.geometry import fov_intrinsics
    from vipa.resources import SAMPLE_VIDEO

    n = 60 if quick else 150
    frames = _decode(str(SAMPLE_VIDEO), n)
    t, h, w, _ = frames.shape
    rng = np.random.default_rng(0)
    picks = [int(i) for i in rng.integers(0, t, 8 if quick else 20)]
    with tempfile.TemporaryDirectory() as tmp:
        ds = dsmod.Hand3DDataset.create(f"{tmp}/ds")
        ep = Episode("clip", 30.0, w, h, fov_intrinsics(w, h).astype(np.float32), {}, t, rgb=frames)
        ds.write_episode(ep)
        path = str(ds.episode_dir("clip") / "rgb.mp4")

        def ours() -> list[np.ndarray]:
            got = []
            for i in picks:
                dsmod.FRAME_CACHE._d.clear()
                dsmod.FRAME_CACHE._bytes = 0
                got.append(ds.rgb_frame("clip", i))
            return got

        def baseline() -> list[np.ndarray]:
            got = []
            for i in picks:
                with av.open(path) as c:
                    for k, frame in enumerate(c.decode(video=0)):
                        if k == i:
                            got.append(frame.to_ndarray(format="rgb24")[:h, :w])
                            break
            return got

        a, b = ours(), baseline()
        if not all(np.array_equal(x, y) for x, y in zip(a, b)):
            raise RuntimeError("rgb_frame and sequential decoding returned different pixels")
        repeats = 2 if quick else 5
        t_ours, t_base = time_pair(ours, baseline, repeats=repeats, warmup=1)

        def warm() -> None:
            for i in range(t):
                ds.rgb_frame("clip", i)

        dsmod.FRAME_CACHE._d.clear()
        dsmod.FRAME_CACHE._bytes = 0
        t_warm, _ = time_pair(warm, None, repeats=1, warmup=0)
        keyframes = ds._video("clip")[2].key_frames.tolist()
    k = len(picks)
    return {
        "metric": f"time per random frame access ({w}x{h} H.264, {t} frames)",
        "unit": "ms",
        "value": t_ours.best * 1e3 / k,
        "baseline": t_base.best * 1e3 / k,
        "baseline_name": "PyAV decode from frame 0 up to the frame",
        "goal": 1.0,
        "lower_is_better": True,
        "ours_median_ms": t_ours.median * 1e3 / k,
        "baseline_median_ms": t_base.median * 1e3 / k,
        "sequential_playback_ms_per_frame": t_warm.best * 1e3 / t,
        "accesses": k,
        "keyframes": keyframes,
        "runs": repeats,
        "input": "samples/human_hand_video/human_hand_video.mp4",
    }
