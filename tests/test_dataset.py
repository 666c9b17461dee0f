"""Hand3D dataset format: round trips, validation errors that name the field, atomicity,
migration, random access to video frames, path containment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vipa.conventions import HANDS
from vipa.data import schema, writer
from vipa.data._io import stat_key
from vipa.data.dataset import (
    FORMAT_VERSION,
    MIGRATIONS,
    FRAME_CACHE,
    Hand3DDataset,
    PathEscapeError,
    quantize_depth,
    resolve_inside,
)
from vipa.data.episode import Episode, HandTrack, ObjectTrack, SchemaError

REPO = Path(__file__).resolve().parents[1]


def smooth_video(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """Moving colour gradients: content H.264 reproduces closely."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 3)
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        for c in range(3):
            frames[i, :, :, c] = 127 + 100 * np.sin(xx / (20 + 4 * c) + yy / 25 + phase[c] + 0.2 * i)
    return frames


def make_episode(episode_id: str = "ep0", t: int = 10, h: int = 48, w: int = 64, seed: int = 0,
                 rgb: bool = False, depth: bool = False, objects: int = 1) -> Episode:
    rng = np.random.default_rng(seed)
    K = np.array([[50.0, 0, w / 2], [0, 52.0, h / 2], [0, 0, 1]], np.float32)
    hands = {}
    for side in HANDS:
        j2 = rng.uniform(0, min(h, w), (t, 21, 2)).astype(np.float32)
        j2[0, 3] = np.nan
        hands[side] = HandTrack(
            side=side, joints_2d=j2,
            joints_3d=rng.normal(0, 0.1, (t, 21, 3)).astype(np.float32) + np.float32([0, 0, 0.6]),
            confidence=rng.uniform(size=(t, 21)).astype(np.float32), valid=rng.uniform(size=(t, 21)) > 0.3,
            present=rng.uniform(size=t) > 0.2, reproj_error=rng.uniform(0, 3, (t, 21)).astype(np.float32),
            provenance=np.array([f"stage{rng.integers(3)}" for _ in range(t)], dtype=object),
        )
    objs = [ObjectTrack(f"obj{k}", f"thing {k}", rng.normal(size=(t, 3)).astype(np.float32),
                        rng.uniform(0.05, 0.2, 3).astype(np.float32), rng.uniform(0, 40, (t, 4)).astype(np.float32),
                        provenance="manual") for k in range(objects)]
    pose = np.tile(np.eye(4, dtype=np.float32), (t, 1, 1))
    pose[:, :3, 3] = rng.normal(size=(t, 3))
    ep = Episode(
        episode_id=episode_id, fps=15.0, width=w, height=h, K=K, hands=hands, num_frames=t,
        K_is_estimate=True, instruction="put the cup on the plate", source=f"video_{seed}.mp4", objects=objs,
        depth_unit=0.001, depth_scale=rng.uniform(0.5, 2, t).astype(np.float32), camera_pose=pose,
        frame_valid=rng.uniform(size=t) > 0.1, quality={"detection_rate": 0.9, "reproj_px": 1.5},
        review_status="needs-fix", extra={"note": "x", "ids": [1, 2]},
    )
    if rgb:
        ep.rgb = smooth_video(rng, t, h, w)
    if depth:
        d = rng.integers(300, 5000, (t, h, w)).astype(np.float32)
        d[:, :3, :5] = 0
        ep.depth_raw = d
    return ep.validate()


def assert_episodes_equal(a: Episode, b: Episode) -> None:
    for f in ("episode_id", "fps", "width", "height", "num_frames", "K_is_estimate", "instruction", "source",
              "depth_unit", "quality", "review_status", "extra"):
        assert getattr(a, f) == getattr(b, f), f
    for f in ("K", "depth_scale", "camera_pose", "frame_valid", "timestamps"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    for side in HANDS:
        for f in ("joints_2d", "joints_3d", "confidence", "valid", "present", "reproj_error", "provenance"):
            x, y = getattr(a.hands[side], f), getattr(b.hands[side], f)
            assert x.dtype == y.dtype, (side, f)
            np.testing.assert_array_equal(x, y, err_msg=f"{side}.{f}")
    assert [o.object_id for o in a.objects] == [o.object_id for o in b.objects]
    for oa, ob in zip(a.objects, b.objects):
        assert (oa.name, oa.provenance) == (ob.name, ob.provenance)
        for f in ("center", "size", "box_2d"):
            np.testing.assert_array_equal(getattr(oa, f), getattr(ob, f))


@pytest.fixture
def ds(tmp_path: Path) -> Hand3DDataset:
    return Hand3DDataset.create(tmp_path / "ds", fps=15.0)


# ----------------------------------------------------------------------------- round trips


def test_round_trip_arrays_and_metadata(ds: Hand3DDataset) -> None:
    ep = make_episode("a", objects=2)
    ds.write_episode(ep)
    again = Hand3DDataset.open(ds.root)
    assert again.episode_ids() == ["a"]
    back = again.load_episode("a", corrected=False)
    assert_episodes_equal(ep, back)
    for arr in (back.hands["left"].joints_3d, back.depth_scale, back.camera_pose, back.timestamps,
                back.objects[0].center, back.objects[0].size):
        assert arr.flags.writeable  # callers own the arrays (the frames table stays cached)
    back.hands["left"].joints_3d[:] = 0
    assert_episodes_equal(ep, again.load_episode("a"))
    row = again.episodes_table()[0]
    assert row["num_frames"] == 10 and row["K"] == [float(x) for x in ep.K.reshape(9)]
    assert row["quality"] == {"detection_rate": 0.9, "reproj_px": 1.5}
    assert row["status"] == "ok" and row["has_rgb"] is False and row["has_depth"] is False
    info = json.loads((ds.root / "meta" / "info.json").read_text())
    assert info["format_version"] == FORMAT_VERSION
    assert info["features"]["right.joints_3d"] == {**info["features"]["right.joints_3d"], "shape": [21, 3],
                                                   "dtype": "float32", "unit": "m", "frame": "camera"}


def test_no_objects_and_empty_hands(ds: Hand3DDataset) -> None:
    ep = Episode("bare", 30.0, 32, 24, np.diag([30.0, 30.0, 1.0]).astype(np.float32), {}, 5)
    ds.write_episode(ep)
    assert_episodes_equal(ep, ds.load_episode("bare"))


def test_media_round_trip_odd_size(ds: Hand3DDataset) -> None:
    ep = make_episode("m", t=12, h=47, w=61, rgb=True, depth=True)
    ds.write_episode(ep)
    back = ds.load_episode("m", media=True)
    assert back.rgb.shape == (12, 47, 61, 3) and back.rgb.dtype == np.uint8
    err = np.abs(back.rgb.astype(np.int16) - ep.rgb.astype(np.int16))
    assert err.mean() < 2.5 and np.percentile(err, 99) < 12, (err.mean(), np.percentile(err, 99))
    np.testing.assert_array_equal(back.depth_raw, ep.depth_raw)  # integer counts: exact
    assert back.depth_unit == ep.depth_unit
    for i in (0, 5, 11):
        metric = ds.depth_frame("m", i)
        assert metric.dtype == np.float32 and metric.shape == (47, 61)
        assert np.all(np.isnan(metric[:3, :5]))
        expect = ep.depth_raw[i] * np.float32(ep.depth_unit * ep.depth_scale[i])
        np.testing.assert_allclose(metric[3:], expect[3:], rtol=1e-6)
    assert ds.has_depth("m") and ds.has_rgb("m")


def test_depth_scale_never_baked_in(ds: Hand3DDataset) -> None:
    ep = make_episode("s", t=3, depth=True)
    ep.depth_scale[:] = np.float32([2.0, np.nan, 0.5])
    ds.write_episode(ep)
    png = ds.root / "episodes" / "s" / "depth" / "000000.png"
    import cv2

    raw = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(raw, ep.depth_raw[0].astype(np.uint16))  # raw counts on disk
    np.testing.assert_allclose(ds.depth_frame("s", 0)[5, 5], ep.depth_raw[0, 5, 5] * 0.001 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(ds.depth_frame("s", 1)[5, 5], ep.depth_raw[1, 5, 5] * 0.001, rtol=1e-6)


def test_float_depth_gets_a_unit_that_fits(ds: Hand3DDataset) -> None:
    ep = make_episode("f", t=2, depth=True)
    rng = np.random.default_rng(3)
    ep.depth_raw = rng.uniform(0.2, 3.0, (2, 48, 64)).astype(np.float32)  # e.g. estimator output
    ep.depth_raw[0, 0, 0] = np.nan
    ep.depth_raw[0, 0, 1] = -1
    ep.depth_unit = 1.0
    ds.write_episode(ep)
    back = ds.load_episode("f", media=True)
    assert back.depth_unit == 5e-05  # 3.0 / 65535 rounded up to 1/2/5 x 10^k
    metric_in = ep.depth_raw * ep.depth_unit
    metric_out = back.depth_raw * back.depth_unit
    ok = np.isfinite(metric_in) & (metric_in > 0)
    assert np.max(np.abs(metric_out[ok] - metric_in[ok])) <= back.depth_unit / 2 + 1e-7
    assert back.depth_raw[0, 0, 0] == 0 and back.depth_raw[0, 0, 1] == 0


def test_quantize_depth_keeps_small_positive_values_valid() -> None:
    d = np.array([[[1e-9, 1000.0, 0.0]]], np.float32)
    counts, unit = quantize_depth(d, 1.0)
    assert counts[0, 0, 0] == 1 and counts[0, 0, 2] == 0 and counts.max() <= 65535 and unit == 0.02


def test_rgb_random_access_matches_sequential_and_is_cached(ds: Hand3DDataset) -> None:
    ep = make_episode("v", t=70, h=32, w=48, rgb=True)
    ds.write_episode(ep)
    key = stat_key(ds.root / "episodes" / "v" / "rgb.mp4")
    first = ds.rgb_frame("v", 45)
    index = ds._video("v")[2]
    cached = sorted(k[1] for k in FRAME_CACHE._d if k[0] == key)
    # decoded from the keyframe before 45 up to a short read-ahead, not the whole video
    start = max(index.keyframe_before(45), 45 - Hand3DDataset.LOOKBEHIND)
    assert cached == list(range(start, 45 + Hand3DDataset.PREFETCH + 1))
    allf = ds.rgb_frames("v")
    np.testing.assert_array_equal(first, allf[45])
    for i in (3, 69, 44, 0, 31):
        np.testing.assert_array_equal(ds.rgb_frame("v", i), allf[i])
    with pytest.raises(IndexError, match="frame 70 out of range"):
        ds.rgb_frame("v", 70)


def test_replace_episode_keeps_one_row_and_new_content(ds: Hand3DDataset) -> None:
    ds.write_episode(make_episode("a", seed=1, rgb=True))
    ds.write_episode(make_episode("b", seed=2))
    new = make_episode("a", t=6, seed=5)
    ds.write_episode(new)
    assert ds.episode_ids() == ["a", "b"]
    assert_episodes_equal(new, ds.load_episode("a"))
    assert not ds.has_rgb("a")
    assert not [p for p in (ds.root / "episodes").iterdir() if p.name.startswith(".")]


def test_failures_are_recorded_and_retried(ds: Hand3DDataset) -> None:
    ds.record_failure("bad", "clip.mp4", "ValueError: no hands found")
    assert ds.episode_ids() == [] and ds.episode_ids(include_failed=True) == ["bad"]
    assert not ds.is_finished("bad") and ds.status("bad") == "failed"
    assert "no hands" in ds.error("bad")
    ds.write_episode(make_episode("bad"))
    assert ds.is_finished("bad") and ds.episode_ids() == ["bad"] and ds.error("bad") == ""
    assert ds.status("unknown") is None and not ds.is_finished("unknown")


def test_derived_records(ds: Hand3DDataset) -> None:
    ds.write_episode(make_episode("a"))
    assert ds.read_derived("a", "qa") is None
    recs = [{"question": "where?", "answer": "left, 0.2m", "frame": 3, "score": float("nan")}]
    ds.write_derived("a", "qa", recs)
    assert ds.read_derived("a", "qa") == [{"question": "where?", "answer": "left, 0.2m", "frame": 3, "score": None}]
    ds.write_derived("a", "motion", [])
    assert ds.read_derived("a", "motion") == []
    with pytest.raises(ValueError, match="derived name"):
        ds.write_derived("a", "../../x", recs)


def test_unknown_episode_and_bad_ids(ds: Hand3DDataset) -> None:
    with pytest.raises(KeyError, match="nope"):
        ds.load_episode("nope")
    for bad in ("../x", "a/b", "a\\b", "..", ".hidden", ""):
        with pytest.raises(SchemaError, match="episode_id"):
            ds.load_episode(bad)
    ep = make_episode("ok")
    ep.episode_id = "../escape"
    with pytest.raises(SchemaError, match="episode_id"):
        ds.write_episode(ep)


def test_invalid_episode_is_refused_before_anything_is_written(ds: Hand3DDataset) -> None:
    ep = make_episode("a")
    ep.hands["left"].joints_3d = ep.hands["left"].joints_3d[:, :20]
    with pytest.raises(SchemaError, match=r"hands.left.joints_3d: expected shape"):
        ds.write_episode(ep)
    assert ds.episode_ids() == [] and not any((ds.root / "episodes").iterdir())


def test_resolve_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "episodes").mkdir(parents=True)
    assert resolve_inside(root, "episodes/a") == (root / "episodes" / "a").resolve()
    assert resolve_inside(root, root / "episodes") == (root / "episodes").resolve()
    (root / "link").symlink_to(tmp_path)
    for bad in ("../x", "/etc/passwd", "episodes/../../x", "link/secret", "a\x00b"):
        with pytest.raises(PathEscapeError):
            resolve_inside(root, bad)


def test_create_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        Hand3DDataset.create(tmp_path / "other")
    Hand3DDataset.create(tmp_path / "new")
    with pytest.raises(FileExistsError):
        Hand3DDataset.create(tmp_path / "new", exist_ok=False)


# ----------------------------------------------------------------------------- validation


def _edit_info(root: Path, fn) -> None:
    p = root / "meta" / "info.json"
    info = json.loads(p.read_text())
    fn(info)
    p.write_text(json.dumps(info))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda i: i.pop("fps"), r"meta/info.json: fps: missing"),
        (lambda i: i.update(fps="fast"), r"meta/info.json: fps: expected a number"),
        (lambda i: i.update(fps=-3), r"meta/info.json: fps: must be > 0"),
        (lambda i: i.update(format_version="1"), r"meta/info.json: format_version: expected a non-negative integer"),
        (lambda i: i.pop("format_version"), r"meta/info.json: format_version: missing"),
        (lambda i: i.update(conventions=[]), r"meta/info.json: conventions: expected an object"),
        (lambda i: i["features"]["left.joints_2d"].update(shape=[21, 3]),
         r"meta/info.json: features.left.joints_2d.shape: expected \[21, 2\], got \[21, 3\]"),
        (lambda i: i["features"].pop("right.valid"), r"meta/info.json: features.right.valid: missing"),
        (lambda i: i["features"]["depth"].update(dtype="float32"), r"features.depth.dtype: expected 'uint16'"),
    ],
)
def test_hand_edited_info_names_the_field(ds: Hand3DDataset, edit, message: str) -> None:
    _edit_info(ds.root, edit)
    with pytest.raises(SchemaError, match=message):
        Hand3DDataset.open(ds.root)


def test_truncated_info_json(ds: Hand3DDataset) -> None:
    p = ds.root / "meta" / "info.json"
    p.write_bytes(p.read_bytes()[:57])
    with pytest.raises(SchemaError, match=r"meta/info.json: not valid JSON \(line \d+.*truncated") as exc:
        Hand3DDataset.open(ds.root)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__


def test_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(SchemaError, match="meta/info.json: missing"):
        Hand3DDataset.open(tmp_path / "x")
    with pytest.raises(SchemaError, match="no such dataset folder"):
        Hand3DDataset.open(tmp_path / "nothing")


def _rewrite_parquet(path: Path, fn) -> None:
    pq.write_table(fn(pq.read_table(path)), path)


def test_frames_missing_column_and_wrong_shape(ds: Hand3DDataset) -> None:
    ds.write_episode(make_episode("a"))
    frames = ds.root / "episodes" / "a" / "frames.parquet"
    orig = pq.read_table(frames)
    _rewrite_parquet(frames, lambda t: t.drop_columns(["right.confidence"]))
    with pytest.raises(SchemaError, match=r"episodes/a/frames.parquet: missing column 'right.confidence'"):
        Hand3DDataset.open(ds.root).load_episode("a")
    bad = orig.set_column(orig.column_names.index("left.joints_2d"), "left.joints_2d",
                          pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(10 * 40, np.float32)), 40))
    pq.write_table(bad, frames)
    with pytest.raises(SchemaError, match=r"column 'left.joints_2d': 40 values per row, expected 42 \(shape \[21, 2\]\)"):
        Hand3DDataset.open(ds.root).load_episode("a")
    ragged = orig.set_column(orig.column_names.index("camera_pose"), "camera_pose",
                             pa.array([[1.0] * 16] * 9 + [[1.0] * 15], pa.list_(pa.float32())))
    pq.write_table(ragged, frames)
    with pytest.raises(SchemaError, match=r"column 'camera_pose': row 9 has 15 values, expected 16"):
        Hand3DDataset.open(ds.root).load_episode("a")
    pq.write_table(orig.slice(0, 7), frames)
    with pytest.raises(SchemaError, match=r"frames.parquet: has 7 rows, episode.json says num_frames=10"):
        Hand3DDataset.open(ds.root).load_episode("a")


def test_episodes_table_validation(ds: Hand3DDataset) -> None:
    ds.write_episode(make_episode("a"))
    table = ds.root / "meta" / "episodes.parquet"
    orig = pq.read_table(table)
    pq.write_table(orig.drop_columns(["K"]), table)
    with pytest.raises(SchemaError, match=r"meta/episodes.parquet: missing column 'K'"):
        Hand3DDataset.open(ds.root)
    pq.write_table(orig.set_column(orig.column_names.index("status"), "status", pa.array(["done"])), table)
    with pytest.raises(SchemaError, match=r"row 0 \(a\): status: expected 'ok' or 'failed'"):
        Hand3DDataset.open(ds.root)
    table.write_bytes(b"PAR1garbage")
    with pytest.raises(SchemaError, match=r"meta/episodes.parquet: not a readable Parquet file"):
        Hand3DDataset.open(ds.root)


def test_episode_json_validation(ds: Hand3DDataset) -> None:
    ds.write_episode(make_episode("a"))
    p = ds.root / "episodes" / "a" / "episode.json"
    row = json.loads(p.read_text())
    row["K"] = row["K"][:8]
    p.write_text(json.dumps(row))
    with pytest.raises(SchemaError, match=r"episodes/a/episode.json: K: expected 9 numbers"):
        ds.load_episode("a")


# ----------------------------------------------------------------------------- versions


def test_newer_format_is_refused(ds: Hand3DDataset) -> None:
    _edit_info(ds.root, lambda i: i.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(SchemaError, match=r"format_version \d+ is newer than this library"):
        Hand3DDataset.open(ds.root)


def test_migration_from_a_fake_older_version(ds: Hand3DDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ds.write_episode(make_episode("a"))
    old = FORMAT_VERSION - 1

    def pretend_old(info: dict) -> None:  # the "old" format had no depth feature and named fps "rate"
        info["format_version"] = old
        info["features"].pop("depth")
        info["rate"] = info.pop("fps")

    _edit_info(ds.root, pretend_old)
    with pytest.raises(SchemaError, match=rf"format_version {old}: no migration to {old + 1}"):
        Hand3DDataset.open(ds.root)
    calls = []

    def migrate(root: Path, info: dict) -> dict:
        calls.append(root)
        info["fps"] = info.pop("rate")
        info["features"]["depth"] = schema.FEATURES["depth"]
        info["format_version"] = old + 1
        return info

    monkeypatch.setitem(MIGRATIONS, old, migrate)
    opened = Hand3DDataset.open(ds.root)
    assert calls == [ds.root] and opened.format_version == FORMAT_VERSION and opened.fps == 15.0
    assert json.loads((ds.root / "meta" / "info.json").read_text())["format_version"] == FORMAT_VERSION
    Hand3DDataset.open(ds.root)
    assert len(calls) == 1  # migrated once, on disk
    assert opened.episode_ids() == ["a"]


def test_register_migration_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "MIGRATIONS", {})

    @schema.register_migration(7)
    def m7(root: Path, info: dict) -> dict:
        return info

    assert schema.MIGRATIONS == {7: m7}


# ----------------------------------------------------------------------------- atomicity


def test_crash_mid_episode_write_keeps_old_version(ds: Hand3DDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    old = make_episode("a", seed=1)
    ds.write_episode(old)

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writer, "encode_h264", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ds.write_episode(make_episode("a", seed=2, rgb=True))
    with pytest.raises(RuntimeError):
        ds.write_episode(make_episode("new", seed=3, rgb=True))
    again = Hand3DDataset.open(ds.root)
    assert again.episode_ids() == ["a"]
    assert_episodes_equal(old, again.load_episode("a"))
    assert not [p for p in (ds.root / "episodes").iterdir() if p.name.startswith(".")]


def test_crash_before_table_update_leaves_dataset_readable(ds: Hand3DDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ds.write_episode(make_episode("a", seed=1))

    def boom(rows):
        raise RuntimeError("killed")

    monkeypatch.setattr(writer, "rows_to_table", boom)
    new_a = make_episode("a", t=4, seed=9)
    with pytest.raises(RuntimeError):
        ds.write_episode(new_a)
    with pytest.raises(RuntimeError):
        ds.write_episode(make_episode("b", seed=2))
    monkeypatch.undo()
    again = Hand3DDataset.open(ds.root)
    assert again.episode_ids() == ["a"]
    assert_episodes_equal(new_a, again.load_episode("a"))  # the folder describes itself
    assert again.rebuild_index() == 2
    assert again.episode_ids() == ["a", "b"] and again.episodes_table()[0]["num_frames"] == 4


def test_crash_between_the_two_renames_is_recovered(ds: Hand3DDataset) -> None:
    ep = make_episode("a")
    ds.write_episode(ep)
    os.rename(ds.root / "episodes" / "a", ds.root / "episodes" / ".old-a-0123abcd")
    again = Hand3DDataset.open(ds.root)
    assert_episodes_equal(ep, again.load_episode("a"))


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_dataset import make_episode
    from vipa.data.dataset import Hand3DDataset
    ds = Hand3DDataset.open({root!r})
    i = 0
    while True:
        ds.write_episode(make_episode(f"ep{{i % 3}}", t=8 + i % 5, seed=i, rgb=True, depth=True))
        print("wrote", i, flush=True)
        i += 1
    """
)


def test_killed_writer_leaves_dataset_readable(ds: Hand3DDataset) -> None:
    code = WRITER.format(tests=str(Path(__file__).parent), root=str(ds.root))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    try:
        written = 0
        deadline = time.monotonic() + 120
        while written < 4 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            written += line.startswith("wrote")
        time.sleep(0.05 + 0.1 * np.random.default_rng().uniform())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    again = Hand3DDataset.open(ds.root)
    ids = again.episode_ids()
    assert set(ids) <= {"ep0", "ep1", "ep2"} and len(ids) >= 3
    for eid in ids:
        ep = again.load_episode(eid, media=True)
        assert ep.rgb.shape[0] == ep.num_frames == ep.depth_raw.shape[0]


def test_concurrent_writers_lose_no_row(ds: Hand3DDataset) -> None:
    from concurrent.futures import ThreadPoolExecutor

    other = Hand3DDataset.open(ds.root)
    eps = [make_episode(f"e{i}", t=3, seed=i) for i in range(12)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: (ds if k % 2 else other).write_episode(eps[k]), range(12)))
    assert sorted(Hand3DDataset.open(ds.root).episode_ids()) == sorted(e.episode_id for e in eps)


def test_format_doc_describes_every_feature() -> None:
    doc = (REPO / "docs" / "FORMAT.md").read_text()
    assert f"format_version {FORMAT_VERSION}" in doc
    for name in schema.FEATURES:
        key = name.replace("left.", "<side>.").replace("right.", "<side>.").removeprefix("object.")
        if name in ("rgb", "depth"):
            continue
        assert f"`{key}`" in doc, name
    for col in schema.EPISODE_SCHEMA.names:
        assert f"`{col}`" in doc, col


def test_dataset_module_is_the_role_modules_public_names() -> None:
    import ast

    from vipa.data import dataset, depth, reader, video

    assert dataset.Hand3DDataset is reader.Hand3DDataset and dataset.FRAME_CACHE is video.FRAME_CACHE
    assert dataset.MIGRATIONS is schema.MIGRATIONS and dataset.quantize_depth is depth.quantize_depth
    assert isinstance(video.FRAME_CACHE, video.VideoFrameCache)
    assert all(hasattr(dataset, name) for name in dataset.__all__)
    # one way: schema <- depth, video <- writer <- reader (<- dataset); corrections <- reader; never back
    allowed = {"schema": set(), "depth": set(), "video": set(), "writer": {"schema", "depth", "video"},
               "corrections": {"schema"}}
    for mod, ok in allowed.items():
        used = set()
        for node in ast.walk(ast.parse((REPO / "vipa" / "data" / f"{mod}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "vipa.data":
                used |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vipa.data."):
                used.add(node.module.removeprefix("vipa.data."))
        assert used - {"_io", "episode"} <= ok, (mod, used)


def test_damaged_media_are_clear_errors(ds: Hand3DDataset) -> None:
    ds.write_episode(make_episode("a", t=6, rgb=True, depth=True))
    video = ds.root / "episodes" / "a" / "rgb.mp4"
    video.write_bytes(video.read_bytes()[:300])  # truncated file
    fresh = Hand3DDataset.open(ds.root)
    with pytest.raises(SchemaError, match=r"episodes/a/rgb.mp4: "):
        fresh.rgb_frames("a")
    with pytest.raises(SchemaError, match=r"episodes/a/rgb.mp4: "):
        fresh.rgb_frame("a", 2)
    (ds.root / "episodes" / "a" / "depth" / "000004.png").unlink()
    with pytest.raises(SchemaError, match=r"episodes/a/depth/000004.png: missing"):
        fresh.depth_frame("a", 4)
    (ds.root / "episodes" / "a" / "depth" / "000001.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(SchemaError, match=r"episodes/a/depth/000001.png: expected uint16"):
        fresh.depth_frame("a", 1)
    assert fresh.depth_frame("a", 0).shape == (48, 64)  # the rest still reads


def test_cleanup_removes_only_stale_temporaries(ds: Hand3DDataset) -> None:
    ds.write_episode(make_episode("a"))
    stale = ds.root / "episodes" / ".tmp-a-deadbeef"
    stale.mkdir()
    (stale / "frames.parquet").write_bytes(b"half")
    fresh = ds.root / "meta" / ".tmp-episodes.parquet.x.part"
    fresh.write_bytes(b"in progress")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert ds.cleanup(max_age_s=3600) == 1
    assert not stale.exists() and fresh.exists() and ds.episode_ids() == ["a"]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=st.integers(0, 6), n_obj=st.integers(0, 3), seed=st.integers(0, 2**16),
       nan_frac=st.floats(0, 1), quality=st.dictionaries(st.text(min_size=1, max_size=8), st.floats(allow_nan=True), max_size=3),
       instruction=st.text(max_size=30))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, t: int, n_obj: int, seed: int,
                             nan_frac: float, quality: dict, instruction: str) -> None:
    ds = Hand3DDataset.create(tmp_path_factory.mktemp("prop") / "ds")
    ep = make_episode("p", t=t, seed=seed, objects=n_obj) if t else Episode(
        "p", 30.0, 8, 6, np.diag([5.0, 5.0, 1.0]).astype(np.float32), {}, 0)
    rng = np.random.default_rng(seed)
    for side in HANDS:
        mask = rng.uniform(size=ep.hands[side].joints_3d.shape) < nan_frac
        ep.hands[side].joints_3d[mask] = np.nan
    ep.quality, ep.instruction = dict(quality), instruction
    ds.write_episode(ep)
    back = ds.load_episode("p")
    assert back.quality.keys() == ep.quality.keys()
    np.testing.assert_array_equal(list(back.quality.values()), list(ep.quality.values()))
    back.quality = ep.quality
    assert_episodes_equal(ep, back)


def test_rgb_frame_returns_an_array_the_caller_owns(ds: Hand3DDataset) -> None:
    ds.write_episode(make_episode("v", t=4, rgb=True))
    a = ds.rgb_frame("v", 1)
    keep = a.copy()
    a[:] = 0  # e.g. drawing joints onto it
    np.testing.assert_array_equal(ds.rgb_frame("v", 1), keep)


def test_defer_sigint_delivers_ctrl_c_after_the_critical_section() -> None:
    """A Ctrl-C inside defer_sigint() does not cut the section; KeyboardInterrupt comes at its end."""
    import os
    import signal

    from vipa.data._io import defer_sigint

    # as in a terminal (a background `make test &` starts Python with SIGINT ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        reached_end = False
        with pytest.raises(KeyboardInterrupt):
            with defer_sigint():
                os.kill(os.getpid(), signal.SIGINT)
                reached_end = True
        assert reached_end
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with defer_sigint():  # nothing pending: no interrupt
            pass
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with defer_sigint():  # an ignored Ctrl-C stays ignored
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, before)
