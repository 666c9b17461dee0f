"""Selecting a 300-frame episode in the workbench until its Rerun recording is ready: columnar (send_columns) vs one rr.log per frame.

What is timed is ``app.workbench.Workbench.recording(episode_id)``: read the corrected episode
from the dataset, then build the whole .rrd (blueprint, camera, the stored H.264 video embedded
with a frame reference per frame, the 16-bit depth PNGs as depth images, both hands as
keypoints in 3D and 2D, wrist trajectory, object boxes, time series) that the embedded viewer
receives. ``value`` is a first selection (cold: the media files are read, then cached; media
never change with corrections) with columnar logging; ``baseline`` is the same first selection
with one ``rr.log`` per entity per frame. The warm figures (re-selecting, or refreshing after a correction) are reported
beside them, interleaved runs (vipa.bench.time_pair). The episode is a synthetic 224x224 RGB-D
one from annotators.synthetic (300 frames; 60 with --quick). Goal: value < 1.5 s and columnar
faster than per-frame (ratio = baseline / value > 1).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any


def run(quick: bool) -> dict[str, Any]:
    from annotators.synthetic import generate_episode
    from app.workbench import Workbench
    from vipa.bench import time_pair
    from vipa.data.dataset import Hand3DDataset
    from vipa.viz.recording import episode_rrd_bytes

    num_frames = 60 if quick else 300
    with tempfile.TemporaryDirectory(prefix="vipa-bench-viewer-") as tmp:
        root = Path(tmp) / "ds"
        ds = Hand3DDataset.create(root)
        ep = generate_episode(0, num_frames=num_frames)
        ep.episode_id = "bench"
        ds.write_episode(ep)
        del ep

        def first_selection(columnar: bool) -> tuple[float, int]:
            wb = Workbench(root)  # fresh caches
            t0 = time.perf_counter()
            if columnar:
                data = wb.recording("bench")
            else:
                data = episode_rrd_bytes(wb.episode("bench"), wb.view, columnar=False, media=wb.media("bench").media)
            return time.perf_counter() - t0, len(data)

        cold = {True: [], False: []}
        sizes = {}
        for _ in range(1 if quick else 3):
            for columnar in (True, False):
                dt, n = first_selection(columnar)
                cold[columnar].append(dt)
                sizes[columnar] = n

        wb = Workbench(root)
        vm = wb.media("bench")
        warm_ours, warm_base = time_pair(
            lambda: wb.recording("bench"),
            lambda: episode_rrd_bytes(wb.episode("bench"), wb.view, columnar=False, media=vm.media),
            repeats=3 if quick else 7, warmup=1)

    value, baseline = min(cold[True]), min(cold[False])
    return {
        "metric": f"first selection of a {num_frames}-frame episode until the viewer's .rrd is ready",
        "unit": "s",
        "value": value,
        "baseline": baseline,
        "baseline_name": "one rr.log per entity per frame (same content)",
        "goal": "value < 1.5 s and ratio > 1",
        "passed": bool(value < 1.5 and baseline / value > 1.0),
        "warm_value_s": warm_ours.best,
        "warm_baseline_s": warm_base.best,
        "warm_ratio": warm_base.best / warm_ours.best,
        "media_build_s": vm.seconds,
        "rrd_mb_columnar": sizes[True] / 1e6,
        "rrd_mb_per_frame": sizes[False] / 1e6,
        "num_frames": num_frames,
    }
