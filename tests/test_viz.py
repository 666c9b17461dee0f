"""vipa.viz: recordings are built from an Episode in columns (send_columns), entity paths come
from the one module, the cloud and the alignment figures are right."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rerun as rr

from vipa.conventions import HANDS, NUM_JOINTS
from vipa.data.episode import Episode, HandTrack, ObjectTrack
from vipa.viz import figures, paths, recording
from vipa.viz.recording import cloud_columns, episode_rrd_bytes, scale_cloud

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
    out = {paths.WORLD, paths.CAMERA, paths.IMAGE, paths.CLOUD, paths.DEPTH_SCALE_PLOT}
    for s in HANDS:
        out |= {paths.hand_joints_3d(s), paths.hand_bones_3d(s), paths.hand_joints_2d(s), paths.hand_bones_2d(s),
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
    for p in ("world/camera", "world/camera/image", "world/camera/points", paths.hand_joints_3d("right"),
              paths.hand_bones_2d("right"), paths.object_box("cup"), paths.DEPTH_SCALE_PLOT):
        assert spy.columns.get(p) == ep.num_frames, (p, spy.columns.get(p))
    assert set(spy.columns) <= known and {p for p, _ in spy.logs} <= known


def test_per_frame_baseline_logs_the_same_entities(monkeypatch):
    ep = make_episode(num_frames=8)
    spy = Spy(monkeypatch)
    episode_rrd_bytes(ep, columnar=False)
    logged = {p for p, _ in spy.logs}
    assert not spy.columns
    assert sum(1 for p, s in spy.logs if p == paths.CLOUD and not s) == ep.num_frames
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
    assert rows["/world/camera/points"] == [30]
    assert sorted(rows["/" + paths.hand_joints_2d("right")]) == [1, 30]  # static style + all frames
    assert "TimePanelBlueprint:timeline" in res.stdout and "ViewBlueprint:space_origin" in res.stdout


def test_cloud_is_metric_scaled_and_projects_back_to_its_pixels():
    ep = make_episode(num_frames=3, depth_scale=2.0)  # raw 250 mm * s=2 -> 0.5 m
    pts, cols, counts = cloud_columns(ep, stride=4, max_points=0)
    assert counts.tolist() == [30 * 40] * 3
    np.testing.assert_allclose(pts[:, 2], 0.5, rtol=1e-6)
    uv = pts[:, :2] / pts[:, 2:] * ep.K[0, 0] + ep.K[:2, 2]
    assert np.allclose((uv - 0.5) % 4, 0, atol=1e-3)  # centres of every 4th pixel
    raw = cloud_columns(ep, 4, 0, apply_scale=False)
    ep.frame_valid[1] = False
    p2, _, c2 = scale_cloud(raw, ep)
    assert c2.tolist() == [1200, 0, 1200]
    np.testing.assert_allclose(p2[:, 2], 0.5, rtol=1e-6)
    capped = cloud_columns(ep, 1, 500)[2]
    assert capped.max() <= 500 and capped.min() > 0


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
