"""Real RGB clips in stage 2: episodes without depth are read RGB only (all-zero point map), their
samples carry the annotation's trajectory / motion-token / pointer targets and no point-map loss,
and ``WeightedMix`` / ``vipa train stage2 --real-data`` mix them with synthetic episodes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from vipa.model.config import get_config
from vipa.model.processor import collate
from vipa.model.vla import VIPAModel
from vipa.train.data import WeightedMix, build_tokenizer, load_real, mix_real, real_stage2_dataset, task_params
from vipa.train.datasets import Hand3DTorchDataset, cache_from_dataset

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _frame_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPA_CACHE_DIR", str(tmp_path / "frame_cache"))


@pytest.fixture(scope="module")
def cfg():
    c = get_config("tiny", image_size=32, patch_size=8, fine_stride=4, traj_horizon=3, past_horizon=2)
    c.train.warmup_steps, c.train.log_every, c.train.ckpt_every = 1, 1, 0
    return c


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """(synthetic dataset with depth, 'real' dataset: the same kind of episodes with depth dropped)."""
    from annotators.synthetic import generate_episode
    from vipa.data.dataset import Hand3DDataset

    base = tmp_path_factory.mktemp("real")
    syn = Hand3DDataset.create(base / "syn", fps=15.0)
    real = Hand3DDataset.create(base / "real", fps=15.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(3):
            syn.write_episode(generate_episode(200 + i, width=48, height=48, num_frames=12))
        for i in range(2):
            ep = generate_episode(300 + i, width=48, height=48, num_frames=12)
            ep.episode_id = f"clip_{i}"
            ep.depth_raw = None
            real.write_episode(ep)
    return base / "syn", base / "real"


@pytest.fixture(scope="module")
def real_set(roots, cfg, tmp_path_factory):
    from vipa.data.dataset import Hand3DDataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIPA_CACHE_DIR", str(tmp_path_factory.mktemp("fc")))
        syn = Hand3DDataset.open(roots[0])
        syn_caches = cache_from_dataset(syn, syn.episode_ids(), 32, params=task_params(cfg.model))
        tok = build_tokenizer(syn_caches, cfg)
        caches, _ = load_real(roots[1], cfg)
    return syn_caches, caches, tok, real_stage2_dataset(caches, tok, cfg)


def test_no_depth_episode_needs_rgb_only(roots, cfg):
    from vipa.data.dataset import Hand3DDataset

    ds = Hand3DDataset.open(roots[1])
    assert not ds.has_depth("clip_0")
    with pytest.raises(ValueError, match="clip_0: no depth"):
        cache_from_dataset(ds, ["clip_0"], 32, params=task_params(cfg.model))
    with pytest.raises(ValueError, match="no finished episodes"):
        load_real(roots[1], cfg, ["nope"])


def test_real_samples_have_annotation_targets_and_no_point_map(real_set, cfg):
    _, caches, tok, ds = real_set
    c = caches[0]
    assert c.usable.any() and float(c.valid.abs().sum()) == 0 and float(c.xyz.abs().sum()) == 0
    assert c.images[np.flatnonzero(c.usable)[0]].float().std() > 0  # the RGB frame is there
    kinds = {s.kind for s in ds.samples}
    assert {"gen", "translate"} <= kinds
    i = next(k for k, s in enumerate(ds.samples) if s.kind == "gen")
    s, item = ds.samples[i], ds[i]
    cache = caches[s.cache]
    assert float(item["valid"].sum()) == 0 and item["traj_mask"] == 1 and item["point_a_mask"] == 1
    # Pointer target: the annotated wrist now; trajectory and motion tokens: its future (camera frame, metres).
    np.testing.assert_allclose(item["point_a"].numpy(), cache.wrist[s.frame], atol=1e-6)
    wp = tok.ids_to_waypoints(tok.encode(s.target))
    assert wp.shape == (cfg.model.traj_horizon, 3) and np.abs(wp - item["traj"].numpy()).max() < 2e-3
    assert item["target"][0] == tok.bos_id and item["target"][-1] == tok.eos_id


def test_real_sample_loss_has_no_point_map_term(real_set, cfg):
    syn_caches, _, tok, real = real_set
    syn = Hand3DTorchDataset(syn_caches, tok, cfg.model, "stage2")
    torch.manual_seed(0)
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id).eval()  # eval: no dropout, same per-sample outputs
    assert model.point_head is not None
    w = cfg.train
    w.pointmap_dropout = 0.0
    _, p_real = model.compute_loss(collate([real[0], real[1]], tok.pad_id), "stage2", w)
    assert p_real["mono"].item() == 0.0  # no depth: nothing supervises the point estimate
    assert min(p_real[k].item() for k in ("traj", "point_a", "lm")) > 0
    # Mixed batch: the point-map loss is the synthetic sample's alone.
    _, p_syn = model.compute_loss(collate([syn[0]], tok.pad_id), "stage2", w)
    _, p_mix = model.compute_loss(collate([syn[0], real[0]], tok.pad_id), "stage2", w)
    assert p_syn["mono"].item() > 0 and p_mix["mono"].item() == pytest.approx(p_syn["mono"].item(), rel=1e-5)
    # The real sample still trains: its losses have gradients into the readout and the point-estimate head.
    model.zero_grad()
    total, _ = model.compute_loss(collate([real[0]], tok.pad_id), "stage2", w)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.point_head.parameters())


def test_weighted_mix_draws_in_proportion():
    a, b = list(range(10)), list(range(100, 103))
    mix = WeightedMix([a, b], [0.5, 0.5], seed=1, length=4000)
    got = np.array([mix[i] for i in range(len(mix))])
    assert abs((got >= 100).mean() - 0.5) < 0.03 and set(got[got >= 100]) == set(b) and set(got[got < 100]) == set(a)
    assert [mix[i] for i in range(50)] == [WeightedMix([a, b], [0.5, 0.5], seed=1, length=4000)[i] for i in range(50)]
    only = mix_real(a, b, 0.0)
    assert all(only[i] < 100 for i in range(len(only)))
    with pytest.raises(ValueError, match="real_weight"):
        mix_real(a, b, 1.5)
    with pytest.raises(ValueError, match="empty"):
        WeightedMix([a, []], [1, 1])


def test_cli_stage2_with_real_clips(roots, tmp_path):
    from vipa.cli import main

    s1 = tmp_path / "s1"
    assert main(["train", "stage1", "--config", "tiny", "--data", str(roots[0]), "--out", str(s1), "--steps", "1",
                 "--batch-size", "4", "--no-progress"]) == 0
    out = tmp_path / "s2"
    rc = main(["train", "stage2", "--config", "tiny", "--data", str(roots[0]), "--out", str(out), "--steps", "2",
               "--batch-size", "4", "--init", str(s1 / "final"), "--real-data", str(roots[1]),
               "--real-episodes", "clip_1", "--real-weight", "0.5", "--no-progress"])
    assert rc == 0
    info = json.loads((out / "final" / "config.json").read_text())
    assert info["real_episodes"] == ["clip_1"] and info["real_weight"] == 0.5 and info["real_samples"] > 0
    assert main(["train", "stage1", "--config", "tiny", "--data", str(roots[0]), "--out", str(tmp_path / "x"),
                 "--real-data", str(roots[1])]) == 2
