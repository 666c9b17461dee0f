"""Synthetic ground-truth generator: determinism, schema, and that the ground truth agrees with
the rendered pixels and with the physics of the task (grasp, carry, place)."""

from __future__ import annotations

import numpy as np
import pytest

from annotators.hand_model import HandShape, joint_radius, local_joints
from annotators.synthetic import LABEL_HAND, RELATIONS, generate_episode
from vipa.conventions import HAND_EDGES, INDEX_TIP, MIDDLE_MCP, MIDDLE_TIP, THUMB_TIP, WRIST

W, H, T = 96, 96, 16


@pytest.fixture(scope="module")
def episodes():
    return {s: generate_episode(s, width=W, height=H, num_frames=T, return_labels=True) for s in range(6)}


def _hand(ep):
    return ep.hands[ep.extra["synthetic"]["hand_side"]]


def _to_world(ep, pts_cam: np.ndarray) -> np.ndarray:
    """(T, N, 3) camera-frame points -> world, frame by frame."""
    P = ep.camera_pose.astype(np.float64)
    return np.einsum("tij,tnj->tni", P[:, :3, :3], pts_cam) + P[:, None, :3, 3]


def _sdf(obj: dict, p: np.ndarray) -> np.ndarray:
    """Signed distance (metres) of world points p (N, 3) to a synthetic object at its placement."""
    c = np.asarray(obj["center"])
    yaw = obj["yaw"]
    R = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    q = (p - c) @ R
    h = np.asarray(obj["half_extent"])
    if obj["shape"] == "ball":
        return np.linalg.norm(q, axis=-1) - h[0]
    if obj["shape"] == "cylinder":
        d = np.stack([np.linalg.norm(q[:, :2], axis=-1) - h[0], np.abs(q[:, 2]) - h[2]], -1)
    else:
        d = np.abs(q) - h
    return np.minimum(d.max(-1), 0) + np.linalg.norm(np.maximum(d, 0), axis=-1)


def test_deterministic_per_seed():
    a = generate_episode(7, width=64, height=48, num_frames=6)
    b = generate_episode(7, width=64, height=48, num_frames=6)
    c = generate_episode(8, width=64, height=48, num_frames=6)
    assert a.episode_id == "syn_000007"
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth_raw, b.depth_raw)
    np.testing.assert_array_equal(_hand(a).joints_3d, _hand(b).joints_3d)
    assert a.instruction == b.instruction
    assert not np.array_equal(a.rgb, c.rgb)


def test_schema_shapes_and_depth_units(episodes):
    for ep, _ in episodes.values():
        ep.validate()
        assert ep.rgb.shape == (T, H, W, 3) and ep.rgb.dtype == np.uint8
        assert ep.depth_raw.shape == (T, H, W) and ep.depth_raw.dtype == np.float32
        assert ep.depth_unit == 0.001 and np.all(ep.depth_scale == 1.0)
        assert ep.K.dtype == np.float32 and not ep.K_is_estimate
        hand = _hand(ep)
        assert hand.present.any() and np.all(hand.confidence == 1.0)
        other = ep.hands["left" if hand.side == "right" else "right"]
        assert not other.present.any()
        d = ep.metric_depth(0)
        assert np.nanmin(d) > 0.1 and np.nanmax(d) < 5.0  # metres
        assert ep.instruction and ep.extra["synthetic"]["seed"] >= 0
        assert 2 <= len(ep.objects) <= 4 and len({o.name for o in ep.objects}) == len(ep.objects)


def test_joints_2d_are_projections_with_pixel_centre_convention(episodes):
    for ep, _ in episodes.values():
        hand = _hand(ep)
        j = hand.joints_3d.astype(np.float64)
        K = ep.K.astype(np.float64)
        uv = j[..., :2] / j[..., 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
        np.testing.assert_allclose(hand.joints_2d, uv, atol=1e-3)
        # A visible joint's pixel, unprojected through its centre with the rendered depth, lands
        # on the hand's surface next to the joint (within its capsule radius and a pixel's width).
        rad = joint_radius(HandShape(ep.extra["synthetic"]["hand_scale"], hand.side))
        t_idx, k_idx = np.nonzero(hand.valid)
        assert len(t_idx) > 0
        u, v = hand.joints_2d[t_idx, k_idx].T
        i, jj = np.floor(v).astype(int), np.floor(u).astype(int)
        z = ep.depth_raw[t_idx, i, jj].astype(np.float64) * ep.depth_unit
        p = np.stack([(jj + 0.5 - K[0, 2]) / K[0, 0] * z, (i + 0.5 - K[1, 2]) / K[1, 1] * z, z], -1)
        dist = np.linalg.norm(p - j[t_idx, k_idx], axis=-1)
        pix = z / K[0, 0]  # metres per pixel at that depth
        assert np.all(dist <= rad[k_idx] + 0.003 + 1.5 * pix)


def test_visible_joints_land_on_skin_pixels(episodes):
    for ep, labels in episodes.values():
        hand = _hand(ep)
        skin = np.asarray(ep.extra["synthetic"]["skin"])
        t_idx, k_idx = np.nonzero(hand.valid)
        u, v = hand.joints_2d[t_idx, k_idx].T
        i, jj = np.floor(v).astype(int), np.floor(u).astype(int)
        assert np.all(labels[t_idx, i, jj] == LABEL_HAND)
        rgb = ep.rgb[t_idx, i, jj].astype(np.float64)
        cos = (rgb @ skin) / (np.linalg.norm(rgb, axis=-1) * np.linalg.norm(skin) + 1e-9)
        assert np.all(cos > 0.99), cos.min()


def test_depth_at_visible_joint_matches_joint_z(episodes):
    seen = []
    for ep, _ in episodes.values():
        hand = _hand(ep)
        rad = joint_radius(HandShape(ep.extra["synthetic"]["hand_scale"], hand.side))
        t_idx, k_idx = np.nonzero(hand.valid)
        u, v = hand.joints_2d[t_idx, k_idx].T
        d = ep.depth_raw[t_idx, np.floor(v).astype(int), np.floor(u).astype(int)] * ep.depth_unit
        z = hand.joints_3d[t_idx, k_idx, 2]
        assert np.all(np.abs(d - z) <= rad[k_idx] + 0.003 + 1e-4)
        # the wrist or a knuckle is visible in most frames with the hand present
        seen.append(hand.valid[:, [WRIST, 5, MIDDLE_MCP, 13, 17]].any(1)[hand.present])
    assert np.concatenate(seen).mean() > 0.85


def test_out_of_image_joints_are_not_valid():
    ep = generate_episode(3, width=W, height=H, num_frames=T)
    hand = _hand(ep)
    uv = hand.joints_2d
    outside = (uv[..., 0] < 0) | (uv[..., 0] >= W) | (uv[..., 1] < 0) | (uv[..., 1] >= H)
    assert not np.any(hand.valid & outside)


def test_object_centres_inside_their_boxes(episodes):
    for ep, _ in episodes.values():
        K = ep.K.astype(np.float64)
        for obj in ep.objects:
            c = obj.center.astype(np.float64)
            uv = c[:, :2] / c[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
            ok = np.isfinite(obj.box_2d).all(1) & (uv[:, 0] > 0) & (uv[:, 0] < W) & (uv[:, 1] > 0) & (uv[:, 1] < H)
            assert ok.any()
            b = obj.box_2d[ok]
            assert np.all((b[:, 0] <= uv[ok, 0]) & (uv[ok, 0] <= b[:, 2]) & (b[:, 1] <= uv[ok, 1]) & (uv[ok, 1] <= b[:, 3]))
            assert np.all(obj.size > 0.03) and np.all(obj.size < 0.15)


def test_hand_grasps_and_carries_the_object(episodes):
    for ep, _ in episodes.values():
        info = ep.extra["synthetic"]
        mv = info["task"]["object_index"]
        ph = info["phases"]
        hand = _hand(ep)
        jw = _to_world(ep, hand.joints_3d.astype(np.float64))
        ow = _to_world(ep, ep.objects[mv].center[:, None].astype(np.float64))[:, 0]
        obj = dict(info["objects"][mv], center=ow[ph["grasp"]])
        tips = jw[ph["grasp"], [THUMB_TIP, INDEX_TIP, MIDDLE_TIP]]
        sd = _sdf(obj, tips)
        assert abs(sd[0]) < 0.02 and np.abs(sd[1:]).min() < 0.02, sd  # thumb and a finger touch it
        # before the grasp the object rests where it started; while held it moves rigidly with the wrist
        start = np.asarray(info["objects"][mv]["start_world"])
        assert np.abs(ow[: ph["grasp"]] - start).max() < 1e-4
        held = np.asarray(info["attached_frames"])
        rel = ow[held] - jw[held, WRIST]
        assert np.abs(rel - rel[0]).max() < 1e-4
        assert np.linalg.norm(ow[-1] - ow[0]) > 0.05
        assert ow[held].min(0)[2] >= ow[0, 2] - 1e-4 and ow[held][:, 2].max() > ow[0, 2] + 0.05  # lifted


def test_instruction_matches_final_placement(episodes):
    for ep, _ in episodes.values():
        info = ep.extra["synthetic"]["task"]
        assert info["object"] in ep.instruction and info["reference"] in ep.instruction
        assert info["relation"] in ep.instruction
        mv, ref = info["object_index"], info["reference_index"]
        ow = _to_world(ep, np.stack([ep.objects[mv].center, ep.objects[ref].center], 1).astype(np.float64))
        right = ep.camera_pose[0, :3, 0].astype(np.float64)
        right[2] = 0
        right /= np.linalg.norm(right)
        fwd = ep.camera_pose[0, :3, 2].astype(np.float64)
        fwd[2] = 0
        fwd /= np.linalg.norm(fwd)
        dr, df = RELATIONS[info["relation"]]
        d = ow[-1, 0] - ow[-1, 1]
        along = d @ (dr * right + df * fwd)
        assert along > 0.08
        assert abs(d @ (df * right - dr * fwd)) < 0.03  # little off-axis offset


def test_bone_lengths_constant_and_plausible(episodes):
    for ep, _ in episodes.values():
        j = _hand(ep).joints_3d.astype(np.float64)
        for a, b in HAND_EDGES:
            L = np.linalg.norm(j[:, a] - j[:, b], axis=-1)
            assert L.std() < 1e-5 and 0.01 < L.mean() < 0.1
        wm = np.linalg.norm(j[:, WRIST] - j[:, MIDDLE_MCP], axis=-1)
        assert np.all((0.08 <= wm) & (wm <= 0.10))
        full = np.linalg.norm(j[:, WRIST] - j[:, MIDDLE_TIP], axis=-1).max()  # open hand length
        assert 0.16 < full < 0.20


def test_hand_model_grip_closes_fingers():
    open_, closed = local_joints(0.0), local_joints(1.0)
    for tip in (INDEX_TIP, MIDDLE_TIP):
        assert np.linalg.norm(closed[tip]) < np.linalg.norm(open_[tip]) - 0.05
    left = local_joints(0.3, HandShape(side="left"))
    right = local_joints(0.3, HandShape(side="right"))
    np.testing.assert_allclose(left * [1, -1, 1], right, atol=1e-7)


def test_camera_static_or_moving():
    moving = 0
    for s in range(12):
        ep = generate_episode(s, width=32, height=32, num_frames=4)
        cam = ep.extra["synthetic"]["camera"]
        delta = np.abs(ep.camera_pose[-1] - ep.camera_pose[0]).max()
        if cam["moving"]:
            moving += 1
            assert delta > 0.01
        else:
            assert delta == 0.0
        R = ep.camera_pose[:, :3, :3].astype(np.float64)
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    assert 0 < moving < 12


def test_culled_render_equals_full_render():
    a = generate_episode(11, width=48, height=40, num_frames=5)
    b = generate_episode(11, width=48, height=40, num_frames=5, cull=False)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth_raw, b.depth_raw)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        generate_episode(0, num_frames=1)
    with pytest.raises(ValueError, match="width"):
        generate_episode(0, width=4)


def test_tasks_share_a_scene():
    a = generate_episode(21, width=48, height=48, num_frames=4, scene_seed=20)
    b = generate_episode(22, width=48, height=48, num_frames=4, scene_seed=20)
    np.testing.assert_array_equal(a.K, b.K)
    np.testing.assert_array_equal(a.camera_pose, b.camera_pose)
    assert [o.name for o in a.objects] == [o.name for o in b.objects]
    sa, sb = a.extra["synthetic"], b.extra["synthetic"]
    assert [o["start_world"] for o in sa["objects"]] == [o["start_world"] for o in sb["objects"]]
    assert (sa["task"], sa["hand_scale"]) != (sb["task"], sb["hand_scale"])


def test_dataset_round_trip_splits_and_resume(tmp_path):
    from annotators.synthetic import episode_plan, generate_dataset, main, read_splits
    from vipa.data.dataset import Hand3DDataset

    root = tmp_path / "syn"
    generate_dataset(root, 4, seed=3, width=64, height=48, num_frames=6, episodes_per_scene=2,
                     test_fraction=0.5, progress=False)
    ds = Hand3DDataset.open(root)
    ids = ds.episode_ids()
    assert sorted(ids) == [f"syn_{300000 + k:06d}" for k in range(4)]
    splits = read_splits(root)
    assert sorted(splits["train"] + splits["test"]) == sorted(ids) and splits["train"] and splits["test"]
    plan = {p["episode_id"]: p for p in episode_plan(4, 3, 2, 0.5)}
    for split, members in splits.items():  # whole scenes are held out
        scenes = {plan[i]["scene_seed"] for i in members}
        other = {plan[i]["scene_seed"] for s, m in splits.items() if s != split for i in m}
        assert not scenes & other
    eid = ids[0]
    ref = generate_episode(plan[eid]["seed"], width=64, height=48, num_frames=6, scene_seed=plan[eid]["scene_seed"])
    ep = ds.load_episode(eid)
    side = ref.extra["synthetic"]["hand_side"]
    np.testing.assert_allclose(ep.hands[side].joints_3d, ref.hands[side].joints_3d, atol=1e-6)
    np.testing.assert_array_equal(ep.hands[side].valid, ref.hands[side].valid)
    assert ep.instruction == ref.instruction and ep.extra["synthetic"]["split"] == plan[eid]["split"]
    d = ds.depth_frame(eid, 2)
    ok = np.isfinite(ref.depth_raw[2])
    np.testing.assert_allclose(d[ok], ref.depth_raw[2][ok] * 1e-3, atol=1e-3)
    assert np.abs(ds.rgb_frame(eid, 2).astype(int) - ref.rgb[2]).mean() < 6  # H.264, lossy
    # resume: finished episodes are not rewritten; the CLI adds the missing ones
    stamp = (root / "episodes" / eid / "episode.json").stat().st_mtime_ns
    assert main(["--out", str(root), "--episodes", "5", "--seed", "3", "--width", "64", "--height", "48",
                 "--frames", "6", "--per-scene", "2", "--test-fraction", "0.5", "--no-progress"]) == 0
    assert (root / "episodes" / eid / "episode.json").stat().st_mtime_ns == stamp
    assert len(Hand3DDataset.open(root).episode_ids()) == 5
    assert len(sum(read_splits(root).values(), [])) == 5


def test_dataset_bad_arguments(tmp_path):
    from annotators.synthetic import generate_dataset

    with pytest.raises(ValueError, match="split"):
        generate_dataset(tmp_path / "a", 2, split="val", progress=False)
    with pytest.raises(ValueError, match="episodes_per_scene"):
        generate_dataset(tmp_path / "b", 2, episodes_per_scene=0, progress=False)


def test_handedness_is_anatomical():
    """Palm down, fingers pointing away (+y), seen from above (+z up): a right hand's thumb is
    on the left (-x), a left hand's on the right."""
    from annotators.hand_model import hand_rotation, place

    R = hand_rotation(np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0]))
    for side, sign in (("right", -1.0), ("left", 1.0)):
        j = place(local_joints(0.0, HandShape(side=side)), np.zeros(3, np.float32), R)
        assert np.sign(j[THUMB_TIP, 0] - j[MIDDLE_MCP, 0]) == sign
        assert np.sign(j[17, 0] - j[5, 0]) == -sign  # pinky opposite the index
        assert j[MIDDLE_TIP, 1] > 0.15  # fingers point along +y


def test_depth_pose_and_intrinsics_agree_with_the_scene(episodes):
    """Pixels unprojected with depth, K and camera_pose land on the table plane (world z = 0)
    or on the surface of the object their label names."""
    for ep, labels in episodes.values():
        info = ep.extra["synthetic"]
        K = ep.K.astype(np.float64)
        jj, ii = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
        for t in (0, T - 1):
            z = ep.depth_raw[t].astype(np.float64) * ep.depth_unit
            p = np.stack([(jj - K[0, 2]) / K[0, 0] * z, (ii - K[1, 2]) / K[1, 1] * z, z], -1)
            pw = p @ ep.camera_pose[t, :3, :3].T.astype(np.float64) + ep.camera_pose[t, :3, 3]
            table = labels[t] == 0
            assert table.mean() > 0.3
            assert np.abs(pw[table][:, 2]).max() < 1e-4
            ow = _to_world(ep, np.stack([o.center for o in ep.objects], 1).astype(np.float64))[t]
            for k, obj in enumerate(info["objects"]):
                m = labels[t] == k + 1
                if m.any():
                    sd = _sdf(dict(obj, center=ow[k]), pw[m])
                    assert np.abs(sd).max() < 1e-4


def test_easy_preset_narrows_the_ranges():
    from annotators.synthetic import PRESETS

    for s in range(6):
        ep = generate_episode(s, width=32, height=32, num_frames=3, params=PRESETS["easy"])
        info = ep.extra["synthetic"]
        assert not info["camera"]["moving"] and info["hand_side"] == "right"
        assert 55.0 <= info["camera"]["fov_deg"] <= 65.0 and len(ep.objects) <= 3


def test_dataset_with_worker_processes_matches_serial(tmp_path):
    from annotators.synthetic import generate_dataset
    from vipa.data.dataset import Hand3DDataset

    kw = dict(seed=4, width=40, height=32, num_frames=4, progress=False)
    generate_dataset(tmp_path / "one", 3, workers=1, **kw)
    generate_dataset(tmp_path / "two", 3, workers=2, **kw)
    a, b = Hand3DDataset.open(tmp_path / "one"), Hand3DDataset.open(tmp_path / "two")
    assert a.episode_ids() == b.episode_ids()
    for eid in a.episode_ids():
        ea, eb = a.load_episode(eid), b.load_episode(eid)
        side = ea.extra["synthetic"]["hand_side"]
        np.testing.assert_array_equal(ea.hands[side].joints_3d, eb.hands[side].joints_3d)
        assert ea.instruction == eb.instruction


def test_projection_is_vipa_geometry_with_the_full_K():
    """The generator projects with vipa.geometry.project (skew included); its ray caster, which
    needs separable rays, refuses a skewed K rather than rendering it wrongly."""
    from annotators.synthetic import RayCaster
    from vipa import geometry

    ep = generate_episode(0, num_frames=4)
    hand = _hand(ep)
    np.testing.assert_array_equal(hand.joints_2d, geometry.project(hand.joints_3d, ep.K))
    K = ep.K.astype(np.float64).copy()
    K[0, 1] = 3.0
    p = np.array([[0.05, -0.04, 0.5]])
    skewed = geometry.project(p, K)[0]
    assert skewed[0] == pytest.approx(K[0, 0] * 0.1 + 3.0 * -0.08 + K[0, 2], abs=1e-4)
    with pytest.raises(ValueError, match="skew"):
        RayCaster(ep.width, ep.height, K)


def test_real_frame_pasted_as_background():
    """Off by default; when given, the image replaces the table and the empty background (shaded on
    the table), and nothing else: object and hand pixels, depth and ground truth stay as rendered."""
    from annotators.synthetic import LABEL_NONE, LABEL_TABLE, generate_episode

    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    plain, lab = generate_episode(5, width=48, height=40, num_frames=3, return_labels=True)
    ep, lab2 = generate_episode(5, width=48, height=40, num_frames=3, return_labels=True, background=bg)
    assert np.array_equal(lab, lab2) and np.array_equal(plain.depth_raw, ep.depth_raw, equal_nan=True)
    assert all(np.array_equal(plain.hands[s].joints_3d, ep.hands[s].joints_3d, equal_nan=True) for s in ep.hands)
    fg = (lab != LABEL_TABLE) & (lab != LABEL_NONE)
    assert fg.any() and np.array_equal(plain.rgb[fg], ep.rgb[fg])
    back = ~fg
    assert (plain.rgb[back] != ep.rgb[back]).any(axis=-1).mean() > 0.9
    from PIL import Image

    big = np.asarray(Image.fromarray(bg).resize((48, 40), Image.BILINEAR), np.float32)
    none = lab[0] == LABEL_NONE
    if none.any():  # no shading off the table: the pasted image itself
        assert np.abs(ep.rgb[0][none].astype(np.float32) - big[none]).max() <= 1
    corr = np.corrcoef(ep.rgb[0][back[0]].astype(np.float32).ravel(), big[back[0]].ravel())[0, 1]
    assert corr > 0.5
    with pytest.raises(ValueError, match="background"):
        generate_episode(5, width=48, height=40, num_frames=2, background=bg[..., :2])
