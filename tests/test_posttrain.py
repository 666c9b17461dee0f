"""Robot post-training data and heads: end-effector spatial targets, shift augmentation, the readout
geometry the action head reads, and post-training from a checkpoint with another action head."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vipa.model.action_head import FlowMatchingDiT
from vipa.model.checkpoint import load_checkpoint, save_checkpoint
from vipa.model.config import ModelConfig, get_config, same_backbone
from vipa.model.vla import VIPAModel
from vipa.train.robot import RobotFrames, normalizer_stats, robot_tokenizer, spatial_targets

torch.set_num_threads(1)


def _pose(yaw: float, t) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4, dtype=np.float32)
    T[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    T[:3, 3] = t
    return T


def test_spatial_targets_are_camera_frame_end_effector_positions():
    rng = np.random.default_rng(0)
    episode = np.array([0] * 10 + [1] * 6)
    state = np.concatenate([rng.normal(0, 0.2, (16, 3)), rng.uniform(0, 1, (16, 1))], 1).astype(np.float32)
    pose = np.repeat(_pose(0.7, [0.3, -0.2, 0.9])[None], 16, 0)
    t = spatial_targets(state, pose, episode, horizon=3, stride=4)
    inv = np.linalg.inv(pose[0])
    ee = state[:, :3] @ inv[:3, :3].T + inv[:3, 3]
    np.testing.assert_allclose(t["point_a"], ee, atol=1e-5)
    np.testing.assert_allclose(t["point_b"][:10], np.repeat(ee[9:10], 10, 0), atol=1e-5)
    np.testing.assert_allclose(t["point_b"][10:], np.repeat(ee[15:16], 6, 0), atol=1e-5)
    # frame 1: waypoints 5, 9, then held at the episode's last frame (9)
    np.testing.assert_allclose(t["traj"][1], ee[[5, 9, 9]], atol=1e-5)
    # frame 12 of episode 1 (frames 10-15): 15 is the last, so every waypoint is 15
    np.testing.assert_allclose(t["traj"][12], ee[[15, 15, 15]], atol=1e-5)
    assert t["traj_mask"].tolist() == [1] * 6 + [0] * 4 + [1] * 2 + [0] * 4


def _arrays(n: int = 6, size: int = 64) -> dict:
    cols = np.arange(size, dtype=np.float32)
    rgb = np.zeros((n, size, size, 3), np.uint8)
    rgb[..., 0] = (cols * 4).astype(np.uint8)[None, None, :]
    depth = np.broadcast_to((1000 + cols * 10).astype(np.uint16)[None, None, :], (n, size, size)).copy()
    K = np.repeat(np.array([[50, 0, 32], [0, 50, 32], [0, 0, 1]], np.float32)[None], n, 0)
    state = np.random.default_rng(1).normal(0, 0.1, (n, 4)).astype(np.float32)
    action = np.random.default_rng(2).uniform(-1, 1, (n, 4)).astype(np.float32)
    return {"rgb": rgb, "depth_mm": depth, "K": K, "state": state, "action": action,
            "episode": np.zeros(n, np.int64), "task_index": np.zeros(n, np.int64),
            "camera_pose": np.repeat(np.eye(4, dtype=np.float32)[None], n, 0), "instructions": ["open the drawer"]}


def test_shift_augmentation_moves_image_and_point_map_together():
    cfg = get_config("tiny")
    a = _arrays()
    tok = robot_tokenizer(a["instructions"], cfg)
    stats = normalizer_stats(a["state"], a["action"])
    plain = RobotFrames(a, cfg, tok, stats, shift=0)
    aug = RobotFrames(a, cfg, tok, stats, shift=4, seed=3)
    moved = 0
    for i in range(len(aug)):
        item = aug[i]
        col_from_image = item["image"][0] * 255 / 4  # column index the pixel came from
        col_from_depth = (item["xyz"][2] * 1000 - 1000) / 10
        np.testing.assert_allclose(col_from_image.numpy(), col_from_depth.numpy(), atol=0.6)
        moved += int(not torch.equal(item["image"], plain[i]["image"]))
        assert {"point_a", "point_b", "traj", "traj_mask"} <= set(item)
    assert moved >= 3  # the augmentation really shifts most frames
    assert torch.equal(plain[0]["image"], plain[0]["image"])


def test_action_head_reads_the_readout_geometry():
    cfg = get_config("tiny")
    assert cfg.model.action_geometry and cfg.model.geometry_dim == 9 + 3 * cfg.model.traj_horizon
    a = _arrays(4)
    tok = robot_tokenizer(a["instructions"], cfg)
    ds = RobotFrames(a, cfg, tok, normalizer_stats(a["state"], a["action"]))
    from vipa.model.processor import collate

    batch = collate([ds[i] for i in range(4)], tok.pad_id)
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id)
    loss, losses = model.compute_loss(batch, "post", cfg.train)
    assert {"flow", "point_a", "point_b", "traj"} <= set(losses)
    loss.backward()
    # the geometry token's embedding and the pointer offsets (which set pointer A/B) both get gradient
    assert model.action_head.geom_in[0].weight.grad.abs().sum() > 0
    assert model.offset[-1].weight.grad.abs().sum() > 0
    head = FlowMatchingDiT(32, 4, 4, 16, d=32, layers=1, heads=4, geom_dim=5)
    with pytest.raises(ValueError, match="geometry"):
        head.velocity(torch.randn(2, 16, 4), torch.rand(2), torch.randn(2, 4), torch.randn(2, 3, 32))


def test_legacy_checkpoints_load_and_post_train_with_a_geometry_head(tmp_path: Path):
    """A checkpoint saved before ``action_geometry`` existed loads as it was trained (off); a post-training
    run initialised from it keeps every backbone weight and gets the geometry-aware head."""
    import json

    legacy = get_config("tiny", action_geometry=False)
    tok = robot_tokenizer(["open the drawer"], legacy)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "legacy", VIPAModel(legacy.model, tok.vocab_size, tok.pad_id), legacy, tok)
    cfg_file = ckpt / "config.json"  # the checkpoint's info, with the run's config under "config"
    info = json.loads(cfg_file.read_text())
    info["config"]["model"].pop("action_geometry")
    cfg_file.write_text(json.dumps(info))
    m0, c0, _, _ = load_checkpoint(ckpt)
    assert c0.model.action_geometry is False and m0.action_head.geom_in is None
    assert same_backbone(c0.model, get_config("tiny").model)
    assert not same_backbone(c0.model, get_config("tiny", use_3d=False).model)
    assert ModelConfig.from_dict(get_config("tiny").model.to_dict()).action_geometry is True

    from vipa.train.robot import post_train

    npz = tmp_path / "demo.npz"
    a = _arrays(12)
    np.savez_compressed(npz, **{k: v for k, v in a.items() if k != "instructions"},
                        instructions=np.array(a["instructions"]))
    res = post_train(npz, tmp_path / "post", init=ckpt, steps=2, batch_size=4, progress=False)
    m1, c1, _, _ = load_checkpoint(res.final)
    assert c1.model.action_geometry and m1.action_head.geom_in is not None
    # the backbone came from the init checkpoint (the pointer offsets did not train far in 2 steps)
    w0, w1 = m0.semantic.state_dict(), m1.semantic.state_dict()
    assert all(torch.allclose(w0[k], w1[k], atol=0.05) for k in w0)


def test_vipa_train_post_is_the_one_post_training_command(tmp_path: Path):
    """`vipa train post` exports demonstrations to one .npz, trains from several inputs within a time
    budget (calibrated), and rejects post-only options for the Hand3D stages."""
    import json

    from vipa.cli import main

    a = _arrays(8)
    parts = []
    for i in range(2):
        p = tmp_path / f"demo{i}.npz"
        np.savez_compressed(p, **{k: v for k, v in a.items() if k != "instructions"},
                            instructions=np.array([f"open drawer {i}"]))
        parts.append(str(p))
    merged = tmp_path / "merged.npz"
    assert main(["train", "post", "--data", *parts, "--out", str(tmp_path / "x"), "--export-npz", str(merged)]) == 0
    with np.load(merged) as z:
        assert len(z["action"]) == 16 and sorted(z["instructions"].tolist()) == ["open drawer 0", "open drawer 1"]
    run = tmp_path / "run"
    assert main(["train", "post", "--data", str(merged), "--out", str(run), "--batch-size", "4", "--budget-s", "0.1",
                 "--threads", "1", "--no-progress"]) == 0
    info = json.loads((run / "final" / "config.json").read_text())
    assert info["budget"]["steps"] == 10 and (run / "calibration" / "final").is_dir()
    assert main(["train", "stage1", "--data", str(merged), "--out", str(run), "--budget-s", "1"]) == 2


def test_post_training_from_the_sample_checkpoint_keeps_its_parts(tmp_path: Path):
    """`vipa train post --init checkpoints/tiny_sample` with the default flags: the checkpoint's geometry
    token and motion decoding are parts of the init, kept (a plain `--config tiny` run once refused it)."""
    import json

    from vipa.cli import main

    sample = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny_sample"
    init = json.loads((sample / "config.json").read_text())["config"]["model"]
    a = _arrays(8)
    np.savez_compressed(tmp_path / "d.npz", **a)
    run = tmp_path / "run"
    assert main(["train", "post", "--data", str(tmp_path / "d.npz"), "--out", str(run), "--init", str(sample),
                 "--steps", "1", "--batch-size", "4", "--threads", "1", "--no-progress"]) == 0
    got = json.loads((run / "final" / "config.json").read_text())["config"]["model"]
    assert (got["geometry_token"], got["motion_decoding"]) == (init["geometry_token"], init["motion_decoding"])
    assert got["geometry_features"] == init.get("geometry_features", "raw")  # "raw" if made before the field
    from vipa.train.robot import post_train  # the Python form keeps them too

    res = post_train(tmp_path / "d.npz", tmp_path / "run_py", init=sample, steps=1, batch_size=4, threads=1,
                     progress=False)
    got = json.loads((res.final / "config.json").read_text())["config"]["model"]
    assert (got["geometry_token"], got["geometry_features"]) == (True, init.get("geometry_features", "raw"))
