"""Video bytes per frame in an annotated real clip's Rerun recording (.rrd) against the source mp4's own bytes per frame.

The bundled human-hand video (samples/human_hand_video, 300 frames; the first 60 with --quick)
is annotated with the default pipeline and written to a dataset: its ``rgb.mp4`` is re-encoded
by ``vipa.data.video.encode_h264`` with the bit rate capped at the source's bytes per frame
(``vipa.data.video.source_bytes_per_frame``). ``value`` is what the video costs in the .rrd the
workbench and `vipa view` send (the embedded video asset and its per-frame references: the .rrd's
size minus that of the same recording without images) divided by its frames; ``baseline`` is the
source file's size divided by its frames. ``ratio`` = value / baseline (goal: at most 1.5).
``uncapped_ratio``: the same with the stored video encoded as before the cap (crf 18 alone), from
the same decoded frames. ``whole_rrd_bytes_per_frame`` is the whole .rrd (hands in 2D and 3D,
trajectory, plots, blueprint and the video) per frame; ``whole_ratio`` that against the source.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def run(quick: bool) -> dict[str, Any]:
    import av

    from annotators.pipeline import AnnotateConfig, run_pipeline, write_annotation
    from vipa.data.dataset import Hand3DDataset
    from vipa.data.video import encode_h264, source_bytes_per_frame
    from vipa.resources import SAMPLE_VIDEO
    from vipa.viz.recording import ViewOptions, episode_rrd_bytes, media_from_files

    max_frames = 60 if quick else None
    with av.open(str(SAMPLE_VIDEO)) as c:
        source_frames = sum(1 for _ in c.decode(video=0))
    with tempfile.TemporaryDirectory(prefix="vipa-bench-rrd-") as tmp:
        ds = Hand3DDataset.create(Path(tmp) / "ds")
        ann = run_pipeline(SAMPLE_VIDEO, AnnotateConfig(decode={"max_frames": max_frames}), episode_id="clip")
        ep = ann.episode
        rgb = ep.rgb
        write_annotation(ds, ann)
        stored = ds.episode_dir("clip") / "rgb.mp4"
        loaded = ds.load_episode("clip", media=False)
        frames = loaded.num_frames
        rrd = episode_rrd_bytes(loaded, ViewOptions(), media=media_from_files(stored, None))
        rrd_no_video = episode_rrd_bytes(loaded, ViewOptions(with_images=False), media=media_from_files(stored, None))

        uncapped_mp4 = Path(tmp) / "uncapped.mp4"
        encode_h264(rgb, uncapped_mp4, ep.fps)  # the encode before the cap: crf 18 alone
        rrd_uncapped = episode_rrd_bytes(loaded, ViewOptions(), media=media_from_files(uncapped_mp4, None))
        stored_bytes, uncapped_bytes = stored.stat().st_size, uncapped_mp4.stat().st_size
        cap = source_bytes_per_frame(ep.extra.get("source_info"))

    source_bpf = SAMPLE_VIDEO.stat().st_size / source_frames
    value = (len(rrd) - len(rrd_no_video)) / frames
    ratio = value / source_bpf
    return {
        "metric": f"video bytes per frame in the Rerun recording ({frames} frames of {SAMPLE_VIDEO.name})",
        "unit": "bytes/frame",
        "value": value,
        "baseline": source_bpf,
        "baseline_name": "the source mp4's bytes per frame",
        "lower_is_better": False,
        "ratio": ratio,
        "goal": "ratio <= 1.5",
        "passed": bool(ratio <= 1.5),
        "uncapped_ratio": (len(rrd_uncapped) - len(rrd_no_video)) / frames / source_bpf,
        "whole_rrd_bytes_per_frame": len(rrd) / frames,
        "whole_ratio": len(rrd) / frames / source_bpf,
        "stored_mp4_bytes_per_frame": stored_bytes / frames,
        "uncapped_mp4_bytes_per_frame": uncapped_bytes / frames,
        "cap_bytes_per_frame": cap,
        "num_frames": frames,
    }
