"""The bundled sample: the webcam video and the seven real clips of samples/real_clips join the
synthetic episodes, annotated in the background; the done-marker records what was built, so a
changed list of inputs builds again (keeping the episodes already annotated); each real clip
has its quality figures in the Browse table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.sample import (DONE_MARKER, REAL_CLIPS, REAL_CLIPS_DIR, SAMPLE_VERSION, SampleBuilder, sample_is_built,
                        sample_manifest, sample_videos)
from vipa.resources import SAMPLE_VIDEO

pytest.importorskip("mediapipe")


def test_the_sample_lists_the_webcam_video_and_all_seven_real_clips():
    videos = sample_videos()
    assert videos[0] == SAMPLE_VIDEO
    assert len(REAL_CLIPS) == 7 and len(set(REAL_CLIPS)) == 7
    assert all(v.is_file() for v in videos), [v for v in videos if not v.is_file()]
    listed = {line.split("|")[1].strip() for line in (REAL_CLIPS_DIR / "SOURCE.md").read_text().splitlines()
              if line.startswith("| ") and ".mp4" in line}
    assert listed == set(REAL_CLIPS)  # every clip the folder documents, no other
    m = sample_manifest(videos)
    assert m["version"] == SAMPLE_VERSION and [n for n, _ in m["videos"]] == [v.name for v in videos]


def build(root: Path, videos, frames: int = 8) -> tuple[SampleBuilder, list[Path]]:
    from annotators.pipeline import AnnotateConfig

    ready = []
    b = SampleBuilder(root, videos=videos, seeds=(0,), num_frames=6,
                      config=AnnotateConfig(decode={"max_frames": frames}))
    b.start(ready.append)
    if b.thread is not None:
        b.thread.join(600)
    return b, ready


def test_real_clips_are_annotated_with_quality_and_a_changed_list_builds_again(tmp_path):
    from app.workbench import QUALITY_COLUMNS, TABLE_HEADERS, Workbench

    root = tmp_path / "sample"
    reach = REAL_CLIPS_DIR / "mediapipe_samples" / "hand_reach.mp4"
    b, ready = build(root, [reach])
    st = b.status()
    assert b.error is None and st["ready"] and ready == [root], (b.error, st)
    marker = json.loads((root / DONE_MARKER).read_text())
    assert marker["manifest"] == b.manifest and sample_is_built(root, b.manifest)

    wb = Workbench(root)
    rows = {r[0]: dict(zip(TABLE_HEADERS, r)) for r in wb.table()}
    assert set(rows) == {"synthetic_00", "hand_reach"}
    real = rows["hand_reach"]
    assert real["frames"] > 0 and real["source"] == "hand_reach.mp4"
    assert 0 < real["detection_rate"] <= 1 and real["reproj_median_px"] is not None
    assert real["calib_residual"] is None  # no depth; the Align tab says why (test_app_cli)
    # the synthetic episode (with depth) fills every quality column the table lists
    assert all(rows["synthetic_00"][k] is not None for k in QUALITY_COLUMNS)
    _, resid, _ = wb.align("hand_reach", 0)
    assert "no calibration residual" in resid.layout.annotations[0].text

    # the same list again: nothing to do, the dataset opens at once
    again, ready2 = build(root, [reach])
    assert again.thread is None and ready2 == [root] and again.status()["ready"]

    # a clip added: built again; the finished clip is kept (not annotated a second time)
    done_file = next((root / "episodes" / "hand_reach").rglob("*.parquet"))
    mtime = done_file.stat().st_mtime_ns
    typing = REAL_CLIPS_DIR / "mediapipe_samples" / "typing.mp4"
    assert not sample_is_built(root, sample_manifest([reach, typing], (0,), b.manifest["config"]))
    more, _ = build(root, [reach, typing])
    assert more.thread is not None and more.error is None and more.status()["ready"]
    assert done_file.stat().st_mtime_ns == mtime
    assert {r[0] for r in Workbench(root).table()} == {"synthetic_00", "hand_reach", "typing"}
    assert sample_is_built(root, more.manifest) and not sample_is_built(root, b.manifest)


def test_a_marker_from_before_the_versioned_one_builds_again(tmp_path):
    (tmp_path / DONE_MARKER).write_text("built in 80.1 s\n")  # the version-1 marker: plain text
    assert not sample_is_built(tmp_path, sample_manifest([]))
    (tmp_path / DONE_MARKER).write_text(json.dumps({"manifest": {**sample_manifest([]), "version": 1}}))
    assert not sample_is_built(tmp_path, sample_manifest([]))
    (tmp_path / DONE_MARKER).write_text(json.dumps({"manifest": sample_manifest([])}))
    assert sample_is_built(tmp_path, sample_manifest([]))
