"""The robot loop end to end: collect expert demos -> post-train (flow matching) -> evaluate
through the policy server; and the rollout recordings the workbench shows."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("metaworld")

from vipa.viz import paths
from vipa.viz.rollout import (END_EFFECTOR, PREDICTED_2D, PREDICTED_PATH, ROBOT_IMAGE, integrate_chunk, load_rollout,
                              save_rollout_rrd)

REPO = Path(__file__).resolve().parents[1]


def _rrd_rows(path: Path) -> dict[str, list[int]]:
    rerun_bin = Path(sys.executable).parent / "rerun"
    if not rerun_bin.exists():
        pytest.skip("rerun CLI not installed next to the interpreter")
    res = subprocess.run([str(rerun_bin), "rrd", "print", str(path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RERUN_ANALYTICS": "0"})
    assert res.returncode == 0, res.stderr
    rows: dict[str, list[int]] = {}
    for m in re.finditer(r"with (\d+) rows .* - (/\S+) - data columns", res.stdout):
        rows.setdefault(m.group(2), []).append(int(m.group(1)))
    return rows


def test_integrate_chunk_follows_metaworld_action_scale():
    chunk = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, -2, 0.5, 1]], np.float32)  # -2 is clipped to -1
    p = integrate_chunk(np.array([0.1, 0.6, 0.2]), chunk)
    np.testing.assert_allclose(p, [[0.1, 0.6, 0.2], [0.11, 0.6, 0.2], [0.12, 0.6, 0.2], [0.12, 0.59, 0.205]],
                               atol=1e-6)


def _fake_rollout(tmp_path: Path, t: int = 20) -> Path:
    from vipa.sim.metaworld_env import MetaWorldEnv

    with MetaWorldEnv("reach-v3", width=48, height=48) as env:
        obs = env.reset(seed=1)
        rgb, state, action = [], [], []
        for _ in range(t):
            a = env.expert_action()
            rgb.append(obs.rgb)
            state.append(obs.state)
            action.append(a)
            obs, _, _ = env.step(a)
    steps = np.arange(0, t, 8)
    chunks = np.stack([np.repeat(action[s][None], 16, 0) for s in steps])
    path = tmp_path / "reach-v3_seed1.npz"
    np.savez_compressed(path, rgb=np.stack(rgb), state=np.stack(state), action=np.stack(action), chunk_steps=steps,
                        chunks=chunks, K=obs.K, camera_pose=obs.camera_pose, task=np.array("reach-v3"),
                        seed=np.array(1), success=np.array(False), instruction=np.array(obs.instruction))
    return path


def test_rollout_rrd_is_columnar_with_images_and_predicted_chunks(tmp_path):
    npz = _fake_rollout(tmp_path, t=20)
    out = save_rollout_rrd(npz)
    assert out.suffix == ".rrd" and out.read_bytes()[:4] == b"RRF2"
    rows = _rrd_rows(out)
    assert rows["/" + ROBOT_IMAGE] .count(20) == 1  # all frames of the camera in one chunk
    assert 20 in rows["/" + END_EFFECTOR]
    assert 3 in rows["/" + PREDICTED_PATH] and 3 in rows["/" + PREDICTED_2D]  # one row per predicted chunk (steps 0, 8, 16)
    assert ROBOT_IMAGE.startswith("robot/") and not ROBOT_IMAGE.startswith(paths.WORLD + "/")


def test_rollout_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_rollout(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", state=np.zeros((5, 4)), action=np.zeros((4, 4)), chunk_steps=np.zeros(0, np.int64),
             chunks=np.zeros((0, 16, 4)))
    with pytest.raises(ValueError, match="one rollout"):
        load_rollout(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", state=np.zeros((5, 4)), action=np.zeros((5, 4)), chunk_steps=np.array([9]),
             chunks=np.zeros((1, 16, 4)))
    with pytest.raises(ValueError, match="chunk_steps"):
        load_rollout(tmp_path / "bad2.npz")


@pytest.mark.slow
def test_collect_posttrain_evaluate_through_the_server(tmp_path):
    import json

    from vipa.cli import main as vipa_main
    from vipa.infer.predictor import Predictor
    from vipa.model.checkpoint import read_checkpoint_info
    from vipa.sim.collect import collect_demos
    from vipa.train.robot import post_train
    from vipa.infer.policy import PredictorPolicy

    collect_demos(tmp_path / "demos", ["reach-v3"], episodes=2, seed=0, size=48, max_steps=120)
    res = post_train(tmp_path / "demos", tmp_path / "run", steps=40, batch_size=8, lr=2e-3, threads=1,
                     progress=False, log_every=1)
    losses = [m["loss"] for m in res.metrics]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:8])  # flow-matching loss falls

    assert read_checkpoint_info(res.final)["stage"] == "post"
    predictor = Predictor.load(res.final)
    stats = predictor.action_stats
    assert {"state_mean", "state_std", "action_mean", "action_std"} <= set(stats)
    assert len(stats["action_mean"]) == 4 and min(stats["action_std"]) > 0

    # the same data through `vipa train post` (the user's path), continuing from that checkpoint
    rc = vipa_main(["train", "post", "--config", "tiny", "--data", str(tmp_path / "demos"), "--out", str(tmp_path / "run2"),
                    "--init", str(res.final), "--steps", "2", "--batch-size", "4", "--threads", "1", "--no-progress"])
    assert rc == 0
    assert Predictor.load(tmp_path / "run2" / "final").action_stats == stats

    policy = PredictorPolicy(predictor)
    assert policy.metadata["checkpoint"] == "run/final"  # names the folder, never the server's full path
    from vipa.sim.metaworld_env import MetaWorldEnv
    from vipa.sim.evaluate import observation_dict

    with MetaWorldEnv("reach-v3", width=48, height=48) as env:
        obs = observation_dict(env.reset(seed=5))
    a1 = policy.infer(obs)
    assert a1.shape == (16, 4) and a1.dtype == np.float32 and np.isfinite(a1).all()
    policy.reset()
    np.testing.assert_array_equal(policy.infer(obs), a1)  # seeded: repeatable after reset

    # `vipa sim eval` goes through an in-process policy server and its WebSocket client
    rc = vipa_main(["sim", "eval", str(res.final), "--tasks", "reach-v3", "--episodes", "2", "--size", "48",
                    "--max-steps", "24", "--replan", "8", "--out", str(tmp_path / "eval"), "--save-videos", "1"])
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    (task,) = report["tasks"]
    assert task["task"] == "reach-v3" and task["episodes"] == 2
    assert 0.0 <= task["success_rate"] <= 1.0
    lo, hi = task["ci95"]
    assert 0.0 <= lo <= task["success_rate"] <= hi <= 1.0
    assert report["policy"]["chunk"] == 16 and report["policy"]["use_3d"] is True
    rollouts = sorted((tmp_path / "eval" / "rollouts").glob("*.npz"))
    assert len(rollouts) == 1
    r = load_rollout(rollouts[0])
    assert r["chunks"].shape[1:] == (16, 4) and len(r["chunk_steps"]) == 3  # 24 steps, replan 8
    assert r["rgb"].shape[1:] == (48, 48, 3)
    assert rollouts[0].with_suffix(".rrd").stat().st_size > 1000
    assert list((tmp_path / "eval" / "videos").glob("reach-v3_seed*.mp4"))


def _toy_npz(path: Path, instruction: str, episodes: list[int], t: int = 5, size: int = 16) -> Path:
    n = len(episodes) * t
    rng = np.random.default_rng(len(instruction))
    K = np.array([[20, 0, size / 2], [0, 20, size / 2], [0, 0, 1]], np.float32)
    np.savez_compressed(path, rgb=rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
                        depth_mm=np.full((n, size, size), 800, np.uint16), K=np.repeat(K[None], n, 0),
                        state=rng.normal(size=(n, 4)).astype(np.float32),
                        action=np.tile(np.arange(t, dtype=np.float32)[:, None], (len(episodes), 4)),
                        episode=np.repeat(np.array(episodes, np.int64), t), task_index=np.zeros(n, np.int64),
                        instructions=np.array([instruction]))
    return path


def test_post_training_arrays_merge_tasks_and_chunks_stop_at_episode_ends(tmp_path):
    from vipa.model.config import get_config
    from vipa.train.robot import load_robot_data, read_arrays

    p1 = _toy_npz(tmp_path / "b.npz", "open the drawer", [0, 1])
    p2 = _toy_npz(tmp_path / "a.npz", "reach the red goal point", [0, 1, 2])
    arrays = read_arrays([p1, p2])
    assert arrays["instructions"] == ["open the drawer", "reach the red goal point"]
    assert len(np.unique(arrays["episode"])) == 5  # episode ids offset per file, never merged
    assert arrays["task_index"][:10].tolist() == [0] * 10 and arrays["task_index"][10:].tolist() == [1] * 15
    cfg = get_config("tiny")
    ds, tok, stats, meta = load_robot_data(f"{p1},{p2}", cfg)
    assert meta["episodes"] == 5 and len(ds) == 25
    item = ds[3]  # frame 3 of a 5-frame episode: 2 real actions, the last one repeated after
    assert item["actions"].shape == (cfg.model.chunk_len, 4) and item["image"].shape == (3, 64, 64)
    assert item["action_mask"].tolist() == [True, True] + [False] * (cfg.model.chunk_len - 2)
    real = item["actions"][:2] * torch_tensor(stats["action_std"]) + torch_tensor(stats["action_mean"])
    np.testing.assert_allclose(real[:, 0].numpy(), [3, 4], atol=1e-5)
    np.testing.assert_allclose(item["xyz"][2].mean().item(), 0.8, atol=1e-3)  # 800 mm -> 0.8 m along z
    assert tok.decode(item["prompt_ids"][item["prompt_mask"] == 1].tolist()) == "open the drawer"
    with pytest.raises(ValueError, match="different model config"):
        from vipa.train.robot import post_train

        post_train(p1, tmp_path / "run", init=_small_checkpoint(tmp_path), steps=1)


def torch_tensor(x):
    import torch

    return torch.tensor(x, dtype=torch.float32)


def _small_checkpoint(tmp_path: Path) -> Path:
    from vipa.model.checkpoint import save_checkpoint
    from vipa.model.config import get_config
    from vipa.model.vla import VIPAModel
    from vipa.train.robot import robot_tokenizer

    cfg = get_config("tiny", use_3d=False)
    tok = robot_tokenizer(["open the drawer"], cfg)
    return save_checkpoint(tmp_path / "no3d", VIPAModel(cfg.model, tok.vocab_size, tok.pad_id), cfg, tok)


def test_experiment_report_compares_runs_on_common_seeds(tmp_path):
    import json

    from vipa.sim.experiment import newcombe_diff, report

    rows = [{"run": "a", "task": "t", "seed": s, "success": s < 3, "steps": 10} for s in range(5)]
    rows += [{"run": "b", "task": "t", "seed": s, "success": s == 0, "steps": 20} for s in range(4)]  # b stopped early
    (tmp_path / "episodes.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    t = report(tmp_path)
    a, b = t["runs"]["a"]["tasks"]["t"], t["runs"]["b"]["tasks"]["t"]
    assert (a["successes"], a["episodes"], b["successes"], b["episodes"]) == (3, 4, 1, 4)  # seed 4 only in a: dropped
    d, lo, hi = t["differences_pooled"]["a-b"]
    assert d == pytest.approx(0.5) and lo < d < hi
    d0, lo0, hi0 = newcombe_diff(5, 10, 5, 10)
    assert d0 == 0 and lo0 == pytest.approx(-hi0) and lo0 < -0.3


def test_experiment_report_pools_training_seeds_per_condition(tmp_path):
    import json

    from vipa.sim.experiment import condition_of, report

    assert condition_of("b@s2") == ("b", 2) and condition_of("a3") == ("a3", 0)
    with pytest.raises(ValueError, match="integer seed"):
        condition_of("b@sx")
    rows = []
    # condition "good": every seed succeeds on 8/10; "bad": seeds 0 and 1 at 2/10, seed 2 at 8/10 (a lucky seed)
    for run, k in (("good", 8), ("good@s1", 8), ("good@s2", 8), ("bad", 2), ("bad@s1", 2), ("bad@s2", 8)):
        rows += [{"run": run, "task": "t", "seed": s, "success": s < k, "steps": 5} for s in range(10)]
    (tmp_path / "episodes.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    t = report(tmp_path)
    good, bad = t["conditions"]["good"], t["conditions"]["bad"]
    assert good["seeds"] == [0, 1, 2] and good["pooled"] == {"successes": 24, "episodes": 30,
                                                              "ci95": good["pooled"]["ci95"]}
    assert bad["per_seed_mean_rate"] == {"0": 0.2, "1": 0.2, "2": 0.8}
    assert bad["mean_rate"] == pytest.approx(0.4) and bad["seed_std"] == pytest.approx(np.std([.2, .2, .8], ddof=1))
    d = t["differences_conditions"]["bad-good"]
    assert d["difference"] == pytest.approx(12 / 30 - 24 / 30)
    # the bootstrap over seeds counts the lucky seed's spread: wider than the episode-level interval
    (nl, nh), (bl, bh) = d["newcombe95"], d["bootstrap95"]
    assert bh - bl > nh - nl and bl < d["difference"] < bh
    from vipa.sim.experiment import markdown
    assert "| bad-good |" in markdown(t)


def test_diagnose_post_3d_measures_runs_on_training_and_unseen_demos(tmp_path):
    """scripts/diagnose_post_3d.py: the same figures for a 3D and a 3D-free post-trained model, on two
    sets of demonstrations; the same data gives the same figures (the noise is fixed per checkpoint)."""
    import importlib.util
    import json

    from vipa.train.robot import post_train

    spec = importlib.util.spec_from_file_location("diagnose_post_3d", REPO / "scripts" / "diagnose_post_3d.py")
    diag = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diag)
    demos = []
    for name, eps in (("a", [0, 1]), ("b", [0])):
        p = _toy_npz(tmp_path / f"{name}.npz", "reach the red goal point", eps, t=6)
        z = dict(np.load(p))
        pose = np.repeat(np.eye(4, dtype=np.float32)[None], len(z["action"]), 0)
        pose[:, 2, 3] = -1.0  # the camera 1 m behind the world origin, looking along +z
        np.savez_compressed(p, **z, camera_pose=pose)
        demos.append(str(p))
    runs = []
    for tag, use_3d in (("full", True), ("no3d", False)):
        res = post_train(demos[0], tmp_path / f"post_{tag}", use_3d=use_3d, steps=2, batch_size=4, progress=False)
        runs += ["--run", f"{tag}={res.final}"]
    out = tmp_path / "diag"
    assert diag.main([*runs, "--train", demos[0], "--heldout", demos[0], "--every", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "diagnose_post_3d.json").read_text())
    assert [(r["run"], r["split"]) for r in rows] == [("full", "train"), ("full", "heldout"),
                                                      ("no3d", "train"), ("no3d", "heldout")]
    keys = ("flow", "action_l1", "point_a_cm", "point_b_cm", "point_b_first_cm", "traj_cm")
    for r in rows:
        assert r["frames"] == 6  # frames 0, 2, 4 of each 6-frame episode
        assert all(np.isfinite(r[k]) and r[k] >= 0 for k in keys)
    assert all(rows[0][k] == rows[1][k] for k in keys)  # same data, same noise -> same figures
    assert rows[0]["alpha"] is not None and rows[2]["alpha"] is None
    assert "| full | train | 6 |" in (out / "diagnose_post_3d.md").read_text()


def test_probe_closed_loop_logs_the_readout_against_the_truth(tmp_path):
    """scripts/probe_closed_loop.py on a 2-step toy policy: one row per episode, one entry per replanning
    step, pointer A against proprioception; --anchor swaps pointer A for the proprioceptive end effector."""
    import importlib.util
    import json

    import torch

    from vipa.train.robot import post_train

    spec = importlib.util.spec_from_file_location("probe_closed_loop", REPO / "scripts" / "probe_closed_loop.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    p = _toy_npz(tmp_path / "a.npz", "reach the red goal point", [0], t=6)
    ckpt = post_train(p, tmp_path / "post", steps=1, batch_size=2, progress=False).final
    out = tmp_path / "probe.jsonl"
    assert probe.main([str(ckpt), "--task", "reach-v3", "--episodes", "1", "--max-steps", "10", "--out", str(out)]) == 0
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["seed"] == 100000 and row["steps"] == 10 and not row["anchor"]
    assert [r["step"] for r in row["replans"]] == [0, 8]
    assert all(np.isfinite(r["pa_err"]) and len(r["pb_goal"]) == 3 for r in row["replans"])
    # the anchored geometry puts the given end effector where pointer A was, and moves B - A with it
    from vipa.model.checkpoint import load_checkpoint

    model, cfg, *_ = load_checkpoint(ckpt)
    x = torch.zeros(1, 3, 64, 64)
    ids = torch.ones(1, cfg.model.max_prompt_len, dtype=torch.long)
    xyz = torch.zeros(1, 3, 64, 64)
    xyz[:, 2] = 0.8
    with torch.no_grad():
        out_ = model(x, ids, torch.ones_like(ids), xyz, torch.ones(1, 1, 64, 64))
        geom = probe.anchored_geometry(model, {"now": np.array([0.1, 0.2, 0.3], np.float32)})(out_)
        ref = model.action_geometry(out_)
    assert geom.shape == ref.shape
    np.testing.assert_allclose(geom[0, :3].numpy(), [0.1, 0.2, 0.3])
    np.testing.assert_allclose(geom[0, 3:6].numpy(), ref[0, 3:6].numpy())  # pointer B unchanged
    np.testing.assert_allclose(geom[0, 6:9].numpy(), (out_.point_b[0] - torch.tensor([0.1, 0.2, 0.3])).numpy(),
                               rtol=1e-5, atol=1e-6)
