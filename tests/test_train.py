"""Training: schedule, stage data, frozen groups, checkpoints + resume, the CLI, the Predictor
and evaluation on a few synthetic episodes, DDP on two CPU processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vipa.model.config import get_config
from vipa.train.data import build_tokenizer
from vipa.train.datasets import Hand3DTorchDataset, cache_episode, split_ids
from vipa.train.loop import lr_factor, train

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _frame_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPA_CACHE_DIR", str(tmp_path / "frame_cache"))


def _episodes(n=3, size=48, frames=12):
    from annotators.synthetic import generate_episode

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [generate_episode(100 + i, width=size, height=size, num_frames=frames) for i in range(n)]


@pytest.fixture(scope="module")
def episodes():
    return _episodes()


@pytest.fixture(scope="module")
def small_cfg():
    cfg = get_config("tiny", image_size=32, patch_size=8, fine_stride=4, traj_horizon=3, past_horizon=2)
    cfg.train.warmup_steps = 2
    cfg.train.log_every = 1
    cfg.train.ckpt_every = 2
    return cfg


@pytest.fixture(scope="module")
def prepared(episodes, small_cfg):
    from vipa.train.data import task_params

    caches = [cache_episode(e, small_cfg.model.image_size, params=task_params(small_cfg.model)) for e in episodes]
    return caches, build_tokenizer(caches, small_cfg)


@pytest.fixture(scope="module")
def hand3d_root(tmp_path_factory, episodes):
    from vipa.data.dataset import Hand3DDataset

    root = tmp_path_factory.mktemp("h3d") / "ds"
    ds = Hand3DDataset.create(root, fps=15.0)
    for e in episodes:
        ds.write_episode(e)
    return root


def test_lr_schedule():
    f = [lr_factor(s, 100, 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] == pytest.approx(0.1, abs=1e-3)


def test_split_is_deterministic_and_disjoint():
    ids = [f"e{i}" for i in range(20)]
    tr, te = split_ids(ids, 0.2, 0)
    assert (tr, te) == split_ids(list(reversed(ids)), 0.2, 0)
    assert len(te) == 4 and not set(tr) & set(te) and set(tr) | set(te) == set(ids)


def test_stage2_replays_stage1_qa(prepared, small_cfg):
    """Stage 2 mixes in stage-1 QA samples (seeded, a fraction of its motion samples) unless turned off."""
    import copy

    from vipa.train.data import stage_dataset

    caches, tok = prepared
    motion = Hand3DTorchDataset(caches, tok, small_cfg.model, "stage2")
    cfg = copy.deepcopy(small_cfg)
    cfg.train.stage2_replay = 0.5
    mixed = stage_dataset(caches, tok, cfg, "stage2")
    n_qa = len(mixed) - len(motion)
    assert n_qa == min(len(Hand3DTorchDataset(caches, tok, cfg.model, "stage1")), round(0.5 * len(motion)))
    qa_item = mixed[len(motion)]
    assert qa_item["point_b_mask"] == 1 and qa_item["traj_mask"] == 0
    assert [mixed[len(motion) + i]["target"].tolist() for i in range(3)] == \
        [stage_dataset(caches, tok, cfg, "stage2")[len(motion) + i]["target"].tolist() for i in range(3)]
    cfg.train.stage2_replay = 0.0
    assert len(stage_dataset(caches, tok, cfg, "stage2")) == len(motion)
    assert get_config("paper").train.stage2_replay == 0.0


def test_stage_datasets(prepared, small_cfg):
    caches, tok = prepared
    s1 = Hand3DTorchDataset(caches, tok, small_cfg.model, "stage1")
    assert {s.kind for s in s1.samples} <= {"spatial", "task"} and len(s1) > 0
    item = s1[0]
    assert item["image"].shape == (3, 32, 32) and item["xyz"].shape == (3, 32, 32)
    assert item["prompt_ids"].shape == (small_cfg.model.max_prompt_len,)
    s = s1.samples[0]
    from vipa.data.qa import parse_direction_distance

    _, dist = parse_direction_distance(s.target)
    assert dist == pytest.approx(np.linalg.norm(s.point_b - s.point_a), abs=0.006)
    s2 = Hand3DTorchDataset(caches, tok, small_cfg.model, "stage2")
    kinds = {x.kind for x in s2.samples}
    assert "gen" in kinds and "translate" in kinds
    gen = next(x for x in s2.samples if x.kind == "gen")
    wp = tok.ids_to_waypoints(tok.encode(gen.target))
    assert np.abs(wp - gen.traj).max() < 2e-3


def _flat(model, groups):
    pg = model.param_groups()
    return {g: torch.cat([p.detach().flatten() for p in pg[g]]).clone() for g in groups if pg[g]}


def test_frozen_groups_unchanged_per_stage(prepared, small_cfg, tmp_path):
    """Paper settings on the tiny model: stage 1 trains only fusion (+ readout), stage 2 adds the LLM."""
    from vipa.model.checkpoint import load_checkpoint
    from vipa.model.vla import VIPAModel

    caches, tok = prepared
    paper = get_config("paper").train.trainable
    for stage in ("stage1", "stage2"):
        cfg = get_config("tiny", **{k: getattr(small_cfg.model, k) for k in
                                    ("image_size", "patch_size", "fine_stride", "traj_horizon", "past_horizon")})
        cfg.train.trainable = paper
        cfg.train.log_every = 1
        ds = Hand3DTorchDataset(caches, tok, cfg.model, stage)
        torch.manual_seed(cfg.train.seed)
        before = _flat(VIPAModel(cfg.model, tok.vocab_size, tok.pad_id), ["semantic", "spatial", "fusion", "llm", "action_head"])
        res = train(cfg, stage, ds, tok, tmp_path / stage, steps=2, progress=False)
        m, *_ = load_checkpoint(res.final)
        after = _flat(m, before)
        for g in before:
            changed = not torch.equal(before[g], after[g])
            assert changed == (g in paper[stage]), (stage, g)


def test_train_checkpoint_resume_and_predict(prepared, small_cfg, tmp_path):
    from vipa.infer.predictor import Predictor

    caches, tok = prepared
    ds = Hand3DTorchDataset(caches, tok, small_cfg.model, "stage2")
    res = train(small_cfg, "stage2", ds, tok, tmp_path / "run", steps=3, progress=False)
    assert res.steps == 3 and res.final == tmp_path / "run" / "final"
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3] and all("alpha" in r and "lr" in r for r in recs)
    assert (tmp_path / "run" / "checkpoints" / "step_0000002" / "train_state.pt").is_file()
    res2 = train(small_cfg, "stage2", ds, tok, tmp_path / "run", steps=5, resume=True, progress=False)
    assert res2.steps == 5 and [r["step"] for r in res2.metrics] == [4, 5]
    pred = Predictor.load(res2.final)
    c = caches[0]
    ep_img = (c.images[0].permute(1, 2, 0).numpy())
    pts = np.transpose(c.xyz[0].float().numpy(), (1, 2, 0))
    out = pred.predict(ep_img, points=pts, instruction=f"Predict the right wrist motion to {c.instruction}.")
    assert out.mode == "trajectory" and out.trajectory.shape == (small_cfg.model.traj_horizon, 3)
    assert out.trajectory_tokens.shape == (small_cfg.model.traj_horizon, 3)  # always the full horizon
    plain = pred.predict(ep_img, points=pts, instruction=c.instruction, mode="trajectory")  # app-style instruction
    assert np.array_equal(plain.trajectory, out.trajectory)
    ans = pred.predict(ep_img, points=pts, instruction="Where is the red cube relative to the right hand?")
    assert ans.mode == "answer" and isinstance(ans.text, str)
    # Same inputs, same checkpoint: same prediction.
    again = Predictor.load(res2.final).predict(ep_img, points=pts, instruction=f"Predict the right wrist motion to {c.instruction}.")
    assert np.array_equal(again.trajectory, out.trajectory)
    with pytest.raises(ValueError, match="context allows"):
        pred.predict(ep_img, points=pts, instruction="move " * 200)
    with pytest.raises(ValueError, match="does not match the image"):
        pred.predict(ep_img, points=pts[:10], instruction="Where is the cube?")
    holes = pts.copy()
    holes[:5] = np.nan  # documented: NaN pixels are missing data
    assert pred.predict(ep_img, points=holes, instruction="Where is the cube?").text
    with pytest.raises(ValueError, match="no valid pixel"):
        pred.predict(ep_img, points=np.full_like(pts, np.nan), instruction="Where is the cube?")
    with pytest.raises(ValueError, match="action_stats|post-train"):
        pred.predict(ep_img, points=pts, instruction="push", mode="action", state=np.zeros(4))
    # The same through `vipa predict`.
    from PIL import Image

    from vipa.cli import main

    Image.fromarray(np.ascontiguousarray(ep_img)).save(tmp_path / "f.png")
    np.save(tmp_path / "p.npy", pts)
    args = ["predict", str(res2.final), "--image", str(tmp_path / "f.png"), "--points", str(tmp_path / "p.npy"),
            "--instruction", f"Predict the right wrist motion to {c.instruction}."]
    assert main(args) == 0
    assert main(args[:-1] + ["move " * 200]) == 1


def test_cli_train_and_eval(hand3d_root, tmp_path, capsys):
    from vipa.cli import main

    out = tmp_path / "cli_run"
    rc = main(["train", "stage1", "--config", "tiny", "--data", str(hand3d_root), "--out", str(out), "--steps", "2",
               "--batch-size", "4", "--test-fraction", "0.34", "--no-progress"])
    assert rc == 0 and (out / "final" / "model.safetensors").is_file()
    info = json.loads((out / "final" / "config.json").read_text())
    assert info["stage"] == "stage1" and len(info["train_episodes"]) == 2
    rc = main(["train", "stage2", "--config", "tiny", "--data", str(hand3d_root), "--out", str(tmp_path / "s2"),
               "--steps", "1", "--batch-size", "4", "--test-fraction", "0.34", "--init", str(out / "final"), "--no-progress"])
    assert rc == 0
    rc = main(["train", "stage2", "--config", "tiny", "--no-3d", "--data", str(hand3d_root), "--out", str(tmp_path / "x"),
               "--steps", "1", "--init", str(out / "final"), "--no-progress"])
    assert rc == 1  # a 3D checkpoint cannot initialise a no-3D model, and the error names the field
    assert "use_3d: True != False" in capsys.readouterr().err
    # a stage-1 checkpoint from before geometry_features (reads "raw") still initialises stage 2 of
    # today's config (default "fourier"): without the token the encoding touches no weight
    old = tmp_path / "old_s1"
    shutil.copytree(out / "final", old)
    info = json.loads((old / "config.json").read_text())
    del info["config"]["model"]["geometry_features"]
    (old / "config.json").write_text(json.dumps(info))
    rc = main(["train", "stage2", "--config", "tiny", "--data", str(hand3d_root), "--out", str(tmp_path / "from_old"),
               "--steps", "1", "--batch-size", "4", "--test-fraction", "0.34", "--init", str(old), "--no-progress"])
    got = json.loads((tmp_path / "from_old" / "final" / "config.json").read_text())["config"]["model"]
    assert rc == 0 and got["geometry_features"] == "raw" and not got["geometry_token"]
    for features in ("raw", "fourier"):  # the token added to an init without one, in either encoding
        rc = main(["train", "stage2", "--config", "tiny", "--data", str(hand3d_root), "--out", str(tmp_path / features),
                   "--steps", "1", "--batch-size", "4", "--test-fraction", "0.34", "--init", str(out / "final"),
                   "--geometry-token", "--geometry-features", features, "--no-progress"])
        info = json.loads((tmp_path / features / "final" / "config.json").read_text())
        assert rc == 0 and info["config"]["model"]["geometry_features"] == features
    rc = main(["eval", str(tmp_path / "s2" / "final"), "--data", str(hand3d_root), "--out", str(tmp_path / "ev"),
               "--max-qa", "8", "--max-motion", "4"])
    assert rc == 0
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert rep["test_episodes"] == 1 and 0 <= rep["qa"]["model"]["mean_direction_score"] <= 3
    assert rep["motion"]["model_head"]["ade_cm"] >= 0 and (tmp_path / "ev" / "report.html").is_file()
    mo = rep["motion"]
    assert mo["model_tokens"] == mo["model_tokens_greedy"] and mo["model_tokens_expectation"]["fde_cm"] >= 0


def test_train_flags_for_the_rgb_only_parts(hand3d_root, tmp_path, capsys):
    """--pointmap-dropout, --no-mono-points, --lm-per-sample and --stage2-replay reach the run's recorded
    config; values out of range (these flags', --lr's, --batch-size's, ...) are refused in one line before
    anything is read or written."""
    from vipa.cli import main

    out = tmp_path / "nodrop"
    rc = main(["train", "stage1", "--config", "tiny", "--data", str(hand3d_root), "--out", str(out), "--steps", "1",
               "--batch-size", "4", "--test-fraction", "0.34", "--no-progress", "--pointmap-dropout", "0",
               "--no-mono-points", "--lm-per-sample", "--stage2-replay", "1"])
    cfg = json.loads((out / "final" / "config.json").read_text())["config"]
    assert rc == 0 and cfg["train"]["pointmap_dropout"] == 0.0 and cfg["model"]["mono_points"] is False
    assert cfg["train"]["lm_per_sample"] is True and cfg["train"]["stage2_replay"] == 1.0
    for flag, value, msg in (("--pointmap-dropout", "1.5", "--pointmap-dropout: must be in [0, 1], got 1.5"),
                             ("--stage2-replay", "-1", "--stage2-replay: must be >= 0, got -1.0"),
                             ("--lr", "-0.001", "--lr: must be > 0, got -0.001"),
                             ("--batch-size", "0", "--batch-size: must be >= 1, got 0"),
                             ("--steps", "-5", "--steps: must be >= 0, got -5"),
                             ("--real-weight", "1.5", "--real-weight: must be in [0, 1], got 1.5"),
                             ("--threads", "0", "--threads: must be >= 1, got 0")):
        with pytest.raises(SystemExit) as done:
            main(["train", "stage1", "--data", str(hand3d_root), "--out", str(tmp_path / "bad"), flag, value])
        assert done.value.code == 2 and msg in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


def test_ablations_with_step3_resume_and_timing(hand3d_root, tmp_path):
    """The ablation table with the sample recipe's step 3: every variant continues with the geometry
    token, the table records each phase's wall time, and a second call reuses the finished runs."""
    from vipa.evaluate import ABLATIONS, run_ablations
    from vipa.model.checkpoint import checkpoint_config

    out = tmp_path / "abl"
    rep = run_ablations(hand3d_root, out, [0], 1, 1, threads=1, max_qa=4, max_motion=2, steps3=1)
    assert set(rep["table"]) == set(ABLATIONS) and rep["steps3"] == 1 and rep["lr3"] == 1e-3
    for name, (use_3d, stage1) in ABLATIONS.items():
        mc = checkpoint_config(out / f"{name}_seed0" / "s2g" / "final").model
        assert mc.geometry_token and mc.motion_decoding == "expectation" and mc.use_3d == use_3d
        assert mc.geometry_features == "raw"  # the committed checkpoint's encoding (features3's default)
        t = rep["wall_s"][f"{name}_seed0"]
        assert {"stage2_s", "step3_s", "eval_s"} <= set(t) and ("stage1_s" in t) == stage1
        assert all(v > 0 for v in t.values())
        assert rep["table"][name]["traj_ade_cm"]["n"] == 1 and rep["table"][name]["wrist_pointer_error_cm"]["mean"] >= 0
    stamp = (out / "full_seed0" / "s2g" / "final" / "model.safetensors").stat().st_mtime_ns
    again = run_ablations(hand3d_root, out, [0], 1, 1, threads=1, max_qa=4, max_motion=2, steps3=1)
    assert again["table"] == rep["table"] and again["wall_s"] == rep["wall_s"]
    assert (out / "full_seed0" / "s2g" / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    rows = run_ablations(hand3d_root, out, [0], 1, 1, threads=1, max_qa=4, max_motion=2, steps3=1,
                         variants=["no_3d"])  # one row, as a side-by-side process trains it
    assert rows["variants"] == ["no_3d"] and rows["table"] == {"no_3d": rep["table"]["no_3d"]}
    # A phase interrupted after a checkpoint continues from it instead of starting over.
    from safetensors.torch import load_file

    rd = out / "no_3d_no_stage1_seed0"
    ck = sorted((rd / "s2" / "checkpoints").glob("step_*"))[-1]
    shutil.rmtree(rd / "s2" / "final")
    shutil.rmtree(rd / "s2g")
    resumed = run_ablations(hand3d_root, out, [0], 1, 1, threads=1, max_qa=4, max_motion=2, steps3=1,
                            variants=["no_3d_no_stage1"])
    assert resumed["wall_s"]["no_3d_no_stage1_seed0"]["stage2_s_resumed"] is True
    w, w0 = load_file(rd / "s2" / "final" / "model.safetensors"), load_file(ck / "model.safetensors")
    assert w.keys() == w0.keys() and all(torch.equal(w[k], w0[k]) for k in w)
    assert (rd / "s2g" / "final" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="steps3"):
        run_ablations(hand3d_root, out, [0], 1, 1, steps3=-1)
    with pytest.raises(ValueError, match="unknown or no variants.*no_2d"):
        run_ablations(hand3d_root, out, [0], 1, 1, variants=["no_2d"])


def test_ablations_with_the_sample_recipe(hand3d_root, tmp_path, capsys):
    """Rows trained as checkpoints/tiny_sample is: stages 1-2 without dropout or the RGB point head,
    the head fitted alone (3D rows only), step 3 with QA replay and the per-sample text loss; the CLI's
    --recipe sample passes the same, with --steps* overriding the budget."""
    from vipa.cli import main
    from vipa.evaluate import run_ablations
    from vipa.model.checkpoint import checkpoint_config

    out = tmp_path / "abl"
    rep = run_ablations(hand3d_root, out, [0], 1, 1, threads=1, max_qa=4, max_motion=2, steps3=1,
                        features3="fourier", variants=["full", "no_3d"], dropout12=0.0, mono12=False,
                        head_steps=2, replay3=1.0, lm_per_sample3=True)
    s1 = checkpoint_config(out / "full_seed0" / "s1" / "final")
    assert s1.train.pointmap_dropout == 0.0 and not s1.model.mono_points
    head = json.loads((out / "full_seed0" / "s2h" / "config.json").read_text())
    assert head["config"]["model"]["mono_points"] and head["point_head"]["steps"] == 2
    s3 = checkpoint_config(out / "full_seed0" / "s2g" / "final")
    assert s3.model.mono_points and s3.train.lm_per_sample and s3.train.stage2_replay == 1.0
    assert s3.train.pointmap_dropout == 0.3 and s3.model.geometry_features == "fourier"  # dropout in step 3 only
    assert not (out / "no_3d_seed0" / "s2h").exists()  # no 3D encoder, no point head
    assert "head_s" in rep["wall_s"]["full_seed0"] and "head_s" not in rep["wall_s"]["no_3d_seed0"]
    assert rep["head_steps"] == 2 and rep["replay3"] == 1.0 and rep["lm_per_sample3"] is True
    with pytest.raises(ValueError, match="dropout12"):
        run_ablations(hand3d_root, out, [0], 1, 1, dropout12=1.5)

    rc = main(["eval", "--ablations", "--data", str(hand3d_root), "--out", str(tmp_path / "cli"), "--recipe", "sample",
               "--steps1", "1", "--steps2", "1", "--steps3", "1", "--steps4", "1", "--seeds", "0", "--variants", "no_3d",
               "--max-qa", "4", "--max-motion", "2", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    got = json.loads((tmp_path / "cli" / "ablations.json").read_text())
    assert (got["steps1"], got["steps3"], got["features3"], got["head_steps"]) == (1, 1, "fourier", 300)
    s3 = checkpoint_config(tmp_path / "cli" / "no_3d_seed0" / "s2g" / "final")
    assert s3.train.lm_per_sample and s3.train.stage2_replay == 1.0 and not s3.model.use_3d
    s4 = checkpoint_config(tmp_path / "cli" / "no_3d_seed0" / "s2t1" / "final")  # step 4: replay 3, lr 5e-4
    assert got["steps4"] == [1] and s4.train.stage2_replay == 3.0 and s4.train.lr["stage2"] == 5e-4
    assert "step4_1_s" in got["wall_s"]["no_3d_seed0"]
    with pytest.raises(ValueError, match="steps4 needs steps3"):
        run_ablations(hand3d_root, out, [0], 1, 1, steps4=[1])


def test_sample_recipe_matches_the_script():
    """SAMPLE_RECIPE (the ablation table's --recipe sample) and scripts/train_sample_checkpoint.sh
    train the same way: the script's defaults are the recipe's values."""
    import re

    from vipa.evaluate import SAMPLE_RECIPE

    text = (REPO / "scripts" / "train_sample_checkpoint.sh").read_text()
    default = dict(re.findall(r"^(\w+)=\$\{\1:-([^}]*)\}", text, re.M))
    r = SAMPLE_RECIPE
    assert (int(default["STEPS1"]), int(default["STEPS2"]), int(default["STEPS3"])) == (r["steps1"], r["steps2"], r["steps3"])
    assert float(default["LR3"]) == r["lr3"] and float(default["SIGMA"]) == r["sigma3"]
    assert default["GEO_FEATURES"] == r["features3"] and int(default["HEAD_STEPS"]) == r["head_steps"]
    assert float(default["REPLAY3"]) == r["replay3"] and float(default["REPLAY4"]) == r["replay4"]
    assert float(default["LR4"]) == r["lr4"]
    assert [int(n) for n in re.search(r"^STEPS4=\$\{STEPS4-([^}]*)\}", text, re.M).group(1).split()] == r["steps4"]
    assert ("LM3=${LM3---lm-per-sample}" in text) == r["lm_per_sample3"]
    assert r["dropout12"] == 0.0 and not r["mono12"]
    assert text.count("--pointmap-dropout 0") == 2 and "--no-mono-points" in text  # stages 1 and 2


def test_fit_point_head_refuses_what_it_cannot_fit(hand3d_root, tmp_path):
    """The head fit names the problem: a checkpoint without the 3D encoder, one that has the head
    (copied unchanged with keep_if_present), bad step counts."""
    from vipa.cli import main
    from vipa.train.point_head import fit_point_head

    for name, extra in (("no3d", ["--no-3d"]), ("mono", [])):
        assert main(["train", "stage1", "--config", "tiny", "--data", str(hand3d_root), "--out", str(tmp_path / name),
                     "--steps", "1", "--batch-size", "2", "--no-progress", *extra]) == 0
    with pytest.raises(ValueError, match="has no 3D encoder"):
        fit_point_head(tmp_path / "no3d" / "final", hand3d_root, tmp_path / "x", steps=1)
    with pytest.raises(ValueError, match="already has the point head"):
        fit_point_head(tmp_path / "mono" / "final", hand3d_root, tmp_path / "x", steps=1)
    with pytest.raises(ValueError, match="steps and batch_size"):
        fit_point_head(tmp_path / "mono" / "final", hand3d_root, tmp_path / "x", steps=0)
    kept = fit_point_head(tmp_path / "mono" / "final", hand3d_root, tmp_path / "kept", keep_if_present=True)
    assert (kept / "model.safetensors").read_bytes() == (tmp_path / "mono" / "final" / "model.safetensors").read_bytes()
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes_identical_weights(hand3d_root, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "vipa.cli", "train", "stage1", "--config", "tiny", "--data", str(hand3d_root), "--out", str(out),
           "--steps", "3", "--batch-size", "4", "--test-fraction", "0.34", "--no-progress", "--threads", "1"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    sums = next(x["ddp_param_checksums"] for x in recs if "ddp_param_checksums" in x)
    assert len(sums) == 2 and sums[0] == sums[1]
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_sample_checkpoint_recipe_still_runs(tmp_path):
    """scripts/train_sample_checkpoint.sh end to end at a toy budget (the committed checkpoint's recipe)."""
    env = {**os.environ, "PY": sys.executable, "EPISODES": "3", "MAX_EPISODES": "2", "STEPS1": "1", "STEPS2": "1", "STEPS3": "1", "STEPS4": "1 1",
           "HEAD_STEPS": "1", "WORK": str(tmp_path / "work"), "DEST": str(tmp_path / "dest"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(REPO / "scripts" / "train_sample_checkpoint.sh")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    from vipa.infer.predictor import Predictor

    pred = Predictor.load(tmp_path / "dest")
    assert pred.cfg.name == "tiny" and (tmp_path / "dest" / "eval_report.json").is_file()
    assert pred.mcfg.geometry_token and pred.mcfg.motion_decoding == "readout"  # the continuation step ran
    # stages 1-2 without the RGB-only parts, the head fitted before step 3, dropout in step 3 only
    s1 = json.loads((tmp_path / "work" / "s1" / "final" / "config.json").read_text())["config"]
    assert s1["train"]["pointmap_dropout"] == 0.0 and not s1["model"]["mono_points"]
    dest = json.loads((tmp_path / "dest" / "config.json").read_text())["config"]
    assert dest["model"]["mono_points"] and dest["train"]["pointmap_dropout"] == 0.3
    assert dest["model"]["geometry_features"] == "fourier" and dest["train"]["lm_per_sample"]
    assert dest["train"]["stage2_replay"] == 3.0  # step 4's, two runs each from the one before
    s2t1 = json.loads((tmp_path / "work" / "s2t1" / "final" / "config.json").read_text())["config"]
    assert s2t1["train"]["stage2_replay"] == 3.0 and (tmp_path / "work" / "s2t2" / "final").is_dir()
    assert len((tmp_path / "dest" / "metrics.jsonl").read_text().splitlines()) >= 5  # s1, s2, s2g, s2t1, s2t2


class _ToyRobot(torch.utils.data.Dataset):
    """Post-training samples as vipa.train.robot produces them: actions depend on the state."""

    def __init__(self, cfg, tok, n=16):
        from vipa.model.processor import encode_prompt

        g = torch.Generator().manual_seed(0)
        s, m = cfg.model.image_size, cfg.model
        self.items = []
        for _ in range(n):
            state = torch.rand(m.state_dim, generator=g) * 2 - 1
            actions = state[None, :m.action_dim].repeat(m.chunk_len, 1) * torch.linspace(0, 1, m.chunk_len)[:, None]
            self.items.append({"image": torch.rand(3, s, s, generator=g), "xyz": torch.rand(3, s, s, generator=g),
                               "valid": torch.ones(1, s, s), **encode_prompt(tok, "push the puck", m.max_prompt_len),
                               "state": state, "actions": actions, "action_mask": torch.ones(m.chunk_len, dtype=torch.bool)})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_post_stage_paper_groups_and_action_prediction(prepared, small_cfg, tmp_path):
    from vipa.infer.predictor import Predictor
    from vipa.model.checkpoint import load_checkpoint
    from vipa.model.vla import VIPAModel

    caches, tok = prepared
    cfg = get_config("tiny", image_size=32, patch_size=8, fine_stride=4)
    cfg.train.trainable["post"] = get_config("paper").train.trainable["post"]
    cfg.train.log_every = 1
    torch.manual_seed(cfg.train.seed)
    before = _flat(VIPAModel(cfg.model, tok.vocab_size, tok.pad_id), ["semantic", "spatial", "fusion", "llm", "action_head"])
    stats = {k: [0.0] * 4 for k in ("state_mean", "action_mean")} | {k: [1.0] * 4 for k in ("state_std", "action_std")}
    res = train(cfg, "post", _ToyRobot(cfg, tok), tok, tmp_path / "post", steps=3, progress=False, action_stats=stats)
    assert all("flow" in r for r in res.metrics)
    m, *_ = load_checkpoint(res.final)
    after = _flat(m, before)
    for g in before:
        assert (not torch.equal(before[g], after[g])) == (g in ("llm", "action_head")), g
    pred = Predictor.load(res.final)
    img = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    out = pred.predict(img, points=np.full((40, 40, 3), 0.5, np.float32), instruction="push the puck",
                       state=np.zeros(4), flow_steps=3)
    assert out.mode == "action" and out.actions.shape == (cfg.model.chunk_len, cfg.model.action_dim)
    assert np.isfinite(out.actions).all()


def test_device_resolution():
    import torch

    from vipa.train.loop import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_stage2_continuation_adds_the_geometry_token(prepared, small_cfg, tmp_path):
    """A stage-2 run with the geometry token (and the ordinal motion loss) may start from a checkpoint
    without it: every other weight is the init's, the token's embedding starts fresh and trains."""
    import dataclasses

    from vipa.model.checkpoint import load_checkpoint
    from vipa.model.config import init_fits

    caches, tok = prepared
    ds = Hand3DTorchDataset(caches, tok, small_cfg.model, "stage2")
    base = train(small_cfg, "stage2", ds, tok, tmp_path / "base", steps=1, progress=False).final
    m0, c0, *_ = load_checkpoint(base)
    cfg = dataclasses.replace(small_cfg, model=dataclasses.replace(small_cfg.model, geometry_token=True,
                                                                   motion_decoding="expectation"),
                              train=dataclasses.replace(small_cfg.train, motion_label_sigma=8.0))
    assert init_fits(c0.model, cfg.model, "stage2") and not init_fits(cfg.model, c0.model, "stage2")
    assert not init_fits(c0.model, dataclasses.replace(cfg.model, d_vision=64), "stage2")
    res = train(cfg, "stage2", ds, tok, tmp_path / "cont", steps=2, init=base, progress=False)
    m1, c1, *_ = load_checkpoint(res.final)
    assert c1.model.geometry_token and c1.model.motion_decoding == "expectation"
    assert c1.train.motion_label_sigma == 8.0
    assert m1.geo_embed is not None and m1.geo_embed[0].weight.abs().sum() > 0
    # the init's weights, not a fresh start: only the token's embedding is new, the LLM moved two small steps
    s0, s1 = m0.state_dict(), m1.state_dict()
    assert set(s1) - set(s0) == {k for k in s1 if k.startswith("geo_embed.")}
    emb0, emb1 = s0["llm.model.embed_tokens.weight"], s1["llm.model.embed_tokens.weight"]
    assert (emb1 - emb0).abs().max() < 0.05  # two small steps from the init, not a re-initialisation
