"""vipa.viz: recordings are built from an Episode in columns (send_columns), entity paths come
from the one module; they are lean (the stored video referenced, depth as depth images, skeletons
from an annotation context); the alignment figures are right."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rerun as rr

from vipa.conventions import HAND_EDGES, HANDS, NUM_JOINTS
from vipa.data.episode import Episode, HandTrack, ObjectTrack
from vipa.viz import figures, paths, recording
from vipa.viz.recording import episode_rrd_bytes, media_from_episode

REPO = Path(__file__).resolve().parents[1]


def make_episode(episode_id: str = "ep0", num_frames: int = 20, width: int = 160, height: int = 120,
                 seed: int = 0, depth_scale: float = 1.0) -> Episode:
    """A right hand moving in front of a plane; exact 2D/3D joints; depth in mm consistent
    with the joints when ``depth_scale`` is the true calibration scale."""
    rng = np.random.default_rng(seed)
    t = num_frames
    f = 0.9 * width
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float32)
    offs = rng.normal(0, 0.02, (NUM_JOINTS, 3)).astype(np.float32)
    offs[0] = 0
    offs[:, 2] = 0  # a flat hand parallel to the image plane
    phase = np.linspace(0, 1, t, dtype=np.float32)
    wrist = np.stack([-0.05 + 0.1 * phase, 0.01 * np.sin(6 * phase), np.full(t, 0.5, np.float32)], -1)
    j3 = (wrist[:, None, :] + offs[None]).astype(np.float32)
    uv = (j3[..., :2] / j3[..., 2:3] * f + K[:2, 2]).astype(np.float32)
    right = HandTrack.empty("right", t)
    right.joints_3d, right.joints_2d = j3, uv
    right.confidence = rng.uniform(0.6, 1.0, (t, NUM_JOINTS)).astype(np.float32)
    right.valid = np.ones((t, NUM_JOINTS), bool)
    right.present = np.ones(t, bool)
    right.reproj_error = rng.uniform(0, 1, (t, NUM_JOINTS)).astype(np.float32)
    depth = np.full((t, height, width), 500.0 / depth_scale, np.float32)  # raw mm; metric = raw * s
    rgb = np.zeros((t, height, width, 3), np.uint8)
    rgb[..., 0] = np.arange(width, dtype=np.uint8)[None, None, :]
    rgb[..., 1] = 100
    center = np.tile(np.array([[0.05, 0.05, 0.6]], np.float32), (t, 1))
    center[t // 2] = np.nan  # object unknown in one frame
    obj = ObjectTrack("cup", "cup", center, np.array([0.06, 0.1, 0.06], np.float32),
                      np.tile(np.array([[60, 50, 90, 90]], np.float32), (t, 1)))
    ep = Episode(episode_id=episode_id, fps=30.0, width=width, height=height, K=K, hands={"right": right},
                 num_frames=t, instruction="move right", source="handmade", objects=[obj], depth_unit=0.001,
                 depth_scale=np.full(t, depth_scale, np.float32), rgb=rgb, depth_raw=depth)
    return ep.validate()


class Spy:
    """Records every rr.log / rr.send_columns call (entity path, static, rows)."""

    def __init__(self, monkeypatch):
        self.logs: list[tuple[str, bool]] = []
        self.columns: dict[str, int] = {}
        real_log, real_send = rr.log, rr.send_columns

        def log(path, *a, static=False, **kw):
            self.logs.append((path, static))
            return real_log(path, *a, static=static, **kw)

        def send_columns(path, indexes, columns, **kw):
            idx = list(indexes)
            self.columns[path] = len(idx[0].as_arrow_array()) if hasattr(idx[0], "as_arrow_array") else -1
            return real_send(path, indexes=idx, columns=columns, **kw)

        monkeypatch.setattr(recording.rr, "log", log)
        monkeypatch.setattr(recording.rr, "send_columns", send_columns)


def _known_paths(ep: Episode) -> set[str]:
    out = {paths.WORLD, paths.CAMERA, paths.IMAGE, paths.DEPTH, paths.DEPTH_SCALE_PLOT}
    for s in HANDS:
        out |= {paths.hand_joints_3d(s), paths.hand_joints_2d(s),
                paths.trajectory(s), paths.wrist_plot(s), paths.confidence_plot(s), paths.reproj_plot(s)}
    out |= {paths.object_box(o.object_id) for o in ep.objects}
    return out


def test_episode_is_logged_in_columns_with_paths_from_the_one_module(monkeypatch):
    ep = make_episode(num_frames=25)
    spy = Spy(monkeypatch)
    data = episode_rrd_bytes(ep)
    assert data[:4] == b"RRF2"  # an .rrd stream
    temporal = [p for p, static in spy.logs if not static]
    assert temporal == [], f"per-frame rr.log calls in the columnar path: {temporal[:5]}"
    known = _known_paths(ep)
    for p in ("world/camera", "world/camera/image", "world/camera/image/depth", paths.hand_joints_3d("right"),
              paths.hand_joints_2d("right"), paths.object_box("cup"), paths.DEPTH_SCALE_PLOT):
        assert spy.columns.get(p) == ep.num_frames, (p, spy.columns.get(p))
    assert set(spy.columns) <= known and {p for p, _ in spy.logs} <= known


def test_per_frame_baseline_logs_the_same_entities(monkeypatch):
    ep = make_episode(num_frames=8)
    spy = Spy(monkeypatch)
    episode_rrd_bytes(ep, columnar=False)
    logged = {p for p, _ in spy.logs}
    assert not spy.columns
    assert sum(1 for p, s in spy.logs if p == paths.DEPTH and not s) == ep.num_frames
    spy2 = Spy(monkeypatch)
    episode_rrd_bytes(ep, columnar=True)
    assert logged == {p for p, _ in spy2.logs} | set(spy2.columns)


def test_rrd_file_holds_one_chunk_per_entity_with_all_frames(tmp_path):
    rerun_bin = Path(sys.executable).parent / "rerun"
    if not rerun_bin.exists():
        pytest.skip("rerun CLI not installed next to the interpreter")
    ep = make_episode(num_frames=30)
    out = recording.save_episode_rrd(ep, tmp_path / "ep.rrd")
    res = subprocess.run([str(rerun_bin), "rrd", "print", str(out)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RERUN_ANALYTICS": "0"})
    assert res.returncode == 0, res.stderr
    rows = {}
    for m in re.finditer(r"with (\d+) rows .* - (/\S+) - data columns", res.stdout):
        rows.setdefault(m.group(2), []).append(int(m.group(1)))
    assert sorted(rows["/world/camera/image/depth"]) == [1, 30]  # static media type + all frames
    assert sorted(rows["/world/camera/image"]) == [1, 1, 30]  # Pinhole, AssetVideo (static), frame references
    assert sorted(rows["/" + paths.hand_joints_2d("right")]) == [1, 30]  # static style + all frames
    assert "TimePanelBlueprint:timeline" in res.stdout and "ViewBlueprint:space_origin" in res.stdout


def test_depth_is_a_png_depth_image_with_the_metric_scale():
    import cv2

    ep = make_episode(num_frames=3, depth_scale=2.0)  # raw 250 mm * s=2 -> 0.5 m
    media = media_from_episode(ep)
    raw = cv2.imdecode(np.frombuffer(media.depth_png[1], np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (ep.height, ep.width) and (raw == 250).all()
    meter = recording.depth_meter(ep)  # counts per metre: 250 counts / meter = 0.5 m
    np.testing.assert_allclose(250 / meter, 0.5, rtol=1e-6)
    ep.depth_scale[1] = np.nan  # unknown scale -> s = 1
    assert recording.depth_meter(ep)[1] == pytest.approx(1000.0)


def test_skeletons_come_from_the_annotation_context(monkeypatch):
    ctx = recording.hand_annotation_context()
    arrow = [d["class_description"] for d in ctx.as_component_batches()[0].as_arrow_array().to_pylist()[0]]
    assert {c["info"]["id"] for c in arrow} == set(recording.HAND_CLASS_IDS.values())
    for c in arrow:
        assert [k["id"] for k in c["keypoint_annotations"]] == list(range(NUM_JOINTS))
        assert sorted(tuple(e.values()) if isinstance(e, dict) else tuple(e) for e in c["keypoint_connections"]) \
            == sorted(tuple(map(int, e)) for e in HAND_EDGES)
    ep = make_episode(num_frames=4)
    ep.hands["right"].valid[2, 5] = False
    sent = {}
    real = rr.send_columns

    def spy(path, indexes, columns, **kw):
        sent[path] = list(columns)
        return real(path, indexes=indexes, columns=columns, **kw)

    monkeypatch.setattr(recording.rr, "send_columns", spy)
    episode_rrd_bytes(ep)
    cols = {c.component_descriptor().component: c for c in sent[paths.hand_joints_3d("right")]}
    kids = [k for k in cols["Points3D:keypoint_ids"].as_arrow_array().to_pylist()]
    assert kids[2] == [j for j in range(NUM_JOINTS) if j != 5] and kids[0] == list(range(NUM_JOINTS))


def test_recording_references_the_stored_video_and_stays_lean(tmp_path, monkeypatch):
    """The stored mp4 travels once, as is, and everything else costs at most 2 KB a frame (the
    bundled real clip, 1.66 KB of video a frame, makes a recording of 1.47x its video's bytes;
    the JPEG frames of before made 9.3x)."""
    from annotators.synthetic import generate_episode
    from app.workbench import Workbench
    from vipa.data.dataset import Hand3DDataset

    ds = Hand3DDataset.create(tmp_path / "ds")
    ep = generate_episode(3, num_frames=90)
    ep.episode_id = "rgb_only"
    ep.depth_raw = None
    ds.write_episode(ep)
    wb = Workbench(ds.root)
    assets = []
    real = rr.log

    def spy(path, *a, **kw):
        assets.extend(x for x in a if isinstance(x, rr.AssetVideo))
        return real(path, *a, **kw)

    monkeypatch.setattr(recording.rr, "log", spy)
    data = wb.recording("rgb_only")
    video = (ds.episode_dir("rgb_only") / "rgb.mp4").read_bytes()
    (asset,) = assets  # the mp4 travels once, as stored (not re-encoded)
    assert bytes(asset.blob.as_arrow_array().to_pylist()[0]) == video
    overhead = (len(data) - len(video)) / 90
    assert overhead < 2048, overhead


def test_frame_update_holds_only_the_frames_asked_for(monkeypatch):
    ep = make_episode(num_frames=10)
    rows = {}
    real = rr.send_columns

    def spy(path, indexes, columns, **kw):
        rows[path] = len(list(indexes)[0].as_arrow_array())
        return real(path, indexes=indexes, columns=columns, **kw)

    monkeypatch.setattr(recording.rr, "send_columns", spy)
    full = episode_rrd_bytes(ep, recording_id="r1")
    rows.clear()
    chunk = recording.frames_rrd_bytes(ep, "r1", [4])
    assert rows == {paths.hand_joints_3d("right"): 1, paths.hand_joints_2d("right"): 1, paths.object_box("cup"): 1}
    assert len(chunk) < len(full) / 5
    rows.clear()
    recording.frames_rrd_bytes(ep, "r1", [], depth_scale=True)
    assert rows == {paths.DEPTH: 10}


def test_calibration_residual_and_worst_frames():
    ep = make_episode(num_frames=12)
    res = figures.calibration_residual(ep)
    assert np.nanmax(res) < 1e-5  # joints lie on the plane at the true scale
    assert figures.calibration_residual(ep, scale=1.1)[0] == pytest.approx(0.1, abs=1e-4)
    ep.hands["right"].reproj_error[7] = 50.0
    worst = figures.worst_frames(ep, k=3)
    assert worst[0]["frame"] == 7 and worst[0]["by"] == "reprojection"
    fig = figures.scale_change_figure(ep, 2, 1.2)
    assert "residual 0.200" in fig.data[1].name
    for fn in (figures.wrist_xyz_figure, figures.confidence_figure, figures.reproj_error_figure,
               figures.align_timeseries_figure, figures.calibration_residual_figure):
        assert fn(ep, frame=3).data, fn.__name__


def test_bad_frames_and_absent_hands_are_not_drawn(monkeypatch):
    ep = make_episode(num_frames=6)
    ep.frame_valid[2] = False
    ep.hands["right"].present[4] = False
    spy = Spy(monkeypatch)
    episode_rrd_bytes(ep)
    w = recording.wrist_world(ep, "right")
    assert np.isnan(w[[2, 4]]).all() and np.isfinite(w[[0, 1, 3, 5]]).all()
    assert paths.hand_joints_3d("left") not in spy.columns  # never present


def test_entity_paths_only_in_vipa_viz():
    pattern = re.compile(r"""["'](world|plots)/""")
    offenders = []
    for folder in ("vipa", "app", "annotators"):
        for f in (REPO / folder).rglob("*.py"):
            if "viz" in f.relative_to(REPO).parts[:2]:
                continue
            if pattern.search(f.read_text(errors="ignore")):
                offenders.append(str(f.relative_to(REPO)))
    assert offenders == []


def test_vipa_view_writes_an_rrd(tmp_path):
    from vipa.data.dataset import Hand3DDataset
    from vipa.viz.cli import register
    import argparse

    ds = Hand3DDataset.create(tmp_path / "ds")
    ds.write_episode(make_episode("a", num_frames=5))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["view", str(tmp_path / "ds"), "--out", str(tmp_path / "a.rrd")])
    assert args.func(args) == 0
    assert (tmp_path / "a.rrd").stat().st_size > 10_000
    args = parser.parse_args(["view", str(tmp_path / "ds"), "--episode", "nope"])
    assert args.func(args) == 2
    # Rerun's standard options: --save writes through rr.script_setup
    args = parser.parse_args(["view", str(tmp_path / "ds"), "--save", str(tmp_path / "b.rrd")])
    assert args.save and hasattr(args, "connect") and hasattr(args, "serve") and hasattr(args, "spawn")
    assert args.func(args) == 0
    assert (tmp_path / "b.rrd").read_bytes()[:4] == b"RRF2" and (tmp_path / "b.rrd").stat().st_size > 10_000
