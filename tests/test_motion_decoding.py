"""Motion-token learning and decoding (#13 item 3): the ordinal (Gaussian) motion-token loss,
expectation decoding over an axis's bins, full-length constrained decoding, and the training
options that reach them through the config and `vipa train`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vipa.conventions import MOTION_BINS
from vipa.infer.constrained import decode_motion, motion_allowed_fn, motion_pick_fn
from vipa.model.config import ConfigError, TrainConfig, VIPAConfig, get_config
from vipa.model.losses import IGNORE, text_cross_entropy
from vipa.model.tokenizer import VIPATokenizer
from vipa.model.vla import VIPAModel

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok() -> VIPATokenizer:
    return VIPATokenizer.train(["Predict the right wrist motion to pick up the red cube.", "left and down, 0.44m"], 400)


def _bump(v: int, start: int, centre: int, width: float = 4.0) -> torch.Tensor:
    """(V,) logits: a Gaussian bump of ``width`` bins at bin ``centre`` of the axis starting at ``start``."""
    g = torch.full((v,), -30.0)
    j = torch.arange(MOTION_BINS).float()
    g[start:start + MOTION_BINS] = -((j - centre) ** 2) / (2 * width ** 2)
    return g


def test_ordinal_loss_is_plain_ce_at_sigma_0_and_credits_near_misses(tok):
    v, m0 = tok.vocab_size, tok.motion_start[0]
    s = tok.motion_start[1]  # y axis
    true = s + 500
    lab = torch.tensor([true, true, tok.eos_id, IGNORE])
    # row 0: a bump 3 bins off; row 1: 300 bins off; row 2: the end token (a text label); row 3 ignored
    lg = torch.stack([_bump(v, s, 503), _bump(v, s, 200), _bump(v, s, 0), _bump(v, s, 9)])
    lg[2, tok.eos_id] = 5.0
    torch.testing.assert_close(text_cross_entropy(lg, lab, m0, 0.0), F.cross_entropy(lg, lab, ignore_index=IGNORE))
    near, far = (text_cross_entropy(lg[i:i + 1], lab[i:i + 1], m0, 4.0) for i in (0, 1))
    assert near < 3.5 < 100 < far  # entropy of the target 2.8 + KL of a 3-bin shift 0.28
    # the minimiser is the Gaussian target itself: the exact bump beats one 3 bins off and a one-hot peak
    exact = text_cross_entropy(_bump(v, s, 500)[None], lab[:1], m0, 4.0)
    onehot = torch.full((1, v), -30.0)
    onehot[0, true] = 0.0
    assert exact < near and exact < text_cross_entropy(onehot, lab[:1], m0, 4.0)
    # a text label is unaffected by sigma
    torch.testing.assert_close(text_cross_entropy(lg[2:3], lab[2:3], m0, 4.0), F.cross_entropy(lg[2:3], lab[2:3]))
    # the target never leaks into another axis: the same bins on the x axis are a far miss
    wrong_axis = text_cross_entropy(_bump(v, tok.motion_start[0], 500)[None], lab[:1], m0, 4.0)
    assert wrong_axis > 20


def test_per_sample_text_loss_weighs_short_and_long_answers_alike(tok):
    """lm_per_sample: a 2-token answer and an 8-token one each count half, whatever their lengths;
    with equal lengths it is the plain token mean; ordinal motion labels go through unchanged."""
    g = torch.Generator().manual_seed(0)
    v, m0 = tok.vocab_size, tok.motion_start[0]
    lg = torch.randn(2, 8, v, generator=g)
    lab = torch.randint(0, v, (2, 8), generator=g)
    lab[0, 2:] = IGNORE  # a short (QA-like) answer beside a long (motion-like) one
    per = [F.cross_entropy(lg[i], lab[i], ignore_index=IGNORE) for i in range(2)]
    torch.testing.assert_close(text_cross_entropy(lg, lab, per_sample=True), (per[0] + per[1]) / 2)
    token = text_cross_entropy(lg, lab)
    torch.testing.assert_close(token, (2 * per[0] + 8 * per[1]) / 10)  # the long answer weighs 4x
    full = torch.randint(0, v, (2, 8), generator=g)
    torch.testing.assert_close(text_cross_entropy(lg, full, per_sample=True), text_cross_entropy(lg, full))
    mot = torch.full((2, 8), IGNORE)
    mot[:, :3] = m0 + 500
    torch.testing.assert_close(text_cross_entropy(lg, mot, m0, 4.0, per_sample=True), text_cross_entropy(lg, mot, m0, 4.0))


def test_expectation_pick_takes_the_expected_bin_and_keeps_the_end_token(tok):
    v = tok.vocab_size
    s = tok.motion_start[2]
    lg = torch.full((3, v), float("-inf"))
    lg[:, s:s + MOTION_BINS] = 0.0
    lg[0, s + 100] = lg[0, s + 110] = 40.0  # two equal modes: greedy takes 100, expectation 105
    lg[1, s + 700] = 40.0
    lg[2, tok.eos_id] = 60.0  # the end token wins: it stays
    assert motion_pick_fn(tok, "greedy") is None
    got = motion_pick_fn(tok, "expectation")(lg).tolist()
    assert got[0] == s + 105 and got[1] == s + 700 and got[2] == tok.eos_id
    with pytest.raises(ValueError, match="motion decoding"):
        motion_pick_fn(tok, "beam")


def test_readout_pick_is_the_product_of_the_llm_and_a_gaussian_around_the_readout(tok):
    """"readout" decoding: the expected bin under p_LLM(i) * N(i; readout bin, prior), per waypoint
    and axis of the model's numeric trajectory; past its horizon, plain expectation; without it, an
    error that says what is missing."""
    from types import SimpleNamespace

    from vipa.data.motion import MotionTokenizer

    v, mt = tok.vocab_size, MotionTokenizer()
    s = tok.motion_start[1]  # y axis: step 1 of waypoint 0, step 4 of waypoint 1
    llm_sd, llm_mode = 200.0, 700
    lg = torch.full((1, v), float("-inf"))
    j = torch.arange(MOTION_BINS).float()
    lg[0, s:s + MOTION_BINS] = -((j - llm_mode) ** 2) / (2 * llm_sd ** 2)
    traj = torch.zeros(1, 2, 3)
    traj[0, 0, 1], traj[0, 1, 1] = -0.2, 0.3  # metres; waypoint 1 is the one step 4 reads
    first = SimpleNamespace(traj=traj)
    pick = motion_pick_fn(tok, "readout", prior_cm=5.0)
    c = (0.3 - mt.ranges[1][0]) / mt.bin_width[1] - 0.5  # the readout's bin coordinate
    sd = 0.05 / mt.bin_width[1]
    want = (llm_mode / llm_sd ** 2 + c / sd ** 2) / (1 / llm_sd ** 2 + 1 / sd ** 2)  # product of two Gaussians
    got = int(pick(lg, 4, first)[0]) - s
    assert abs(got - want) <= 1 and abs(got - c) < 0.1 * abs(llm_mode - c)
    assert pick(lg, 4 + 3 * 2, first).tolist() == motion_pick_fn(tok, "expectation")(lg).tolist()  # past the horizon
    wide = int(motion_pick_fn(tok, "readout", prior_cm=500.0)(lg, 4, first)[0]) - s
    assert abs(wide - llm_mode) < abs(got - llm_mode)  # a wide prior leaves the LLM's choice
    with pytest.raises(ValueError, match="first output"):
        pick(lg, 4, None)
    with pytest.raises(ValueError, match="prior's std"):
        motion_pick_fn(tok, "readout", prior_cm=0.0)


def test_full_length_constrained_decoding_even_when_the_model_wants_to_stop(tok):
    """The model prefers the end token at every step; decoding still gives traj_horizon waypoints,
    each x, y, z in order (Predictor and evaluation both decode through ``decode_motion``)."""
    cfg = get_config("tiny", traj_horizon=4)
    model = VIPAModel(cfg.model, tok.vocab_size).eval()

    def prefer_end(module, inputs, out):  # the end-token logit far above every other
        out = out.clone()
        out[..., tok.eos_id] += 100.0
        return out

    model.llm.lm_head.register_forward_hook(prefer_end)
    s = cfg.model.image_size
    b = (torch.rand(2, 3, s, s), torch.full((2, cfg.model.max_prompt_len), tok.pad_id),
         torch.zeros(2, cfg.model.max_prompt_len, dtype=torch.long), None, None)
    b[2][:, 0] = 1
    ids, _ = model.generate(*b, bos_id=tok.bos_id, eos_id=tok.eos_id, max_new_tokens=13,
                            allowed_fn=motion_allowed_fn(tok, tok.vocab_size, 4))
    assert (ids[:, 3] == tok.eos_id).all()  # min_waypoints 1 lets it stop after one waypoint
    for dec in ("greedy", "expectation", "readout"):
        trajs, _ = decode_motion(model, b, tok, dec)
        assert [t.shape for t in trajs] == [(4, 3), (4, 3)]
        assert np.isfinite(np.stack(trajs)).all()


def test_ordinal_loss_trains_through_compute_loss(tok):
    """``motion_label_sigma`` reaches the model's loss: the same batch and weights give another
    stage-2 LM loss than one-hot, and a model trained with it learns a motion token."""
    from vipa.model.batch import Batch

    cfg = get_config("tiny")
    torch.manual_seed(0)
    model = VIPAModel(cfg.model, tok.vocab_size)
    assert model.motion_start == tok.motion_start[0]
    s = cfg.model.image_size
    tgt = torch.tensor([[tok.bos_id] + tok.motion_ids(np.array([[0.1, -0.2, 0.6]])) + [tok.eos_id]] * 2)
    p = torch.full((2, cfg.model.max_prompt_len), tok.pad_id)
    p[:, :3] = 5
    b = Batch(image=torch.rand(2, 3, s, s), prompt_ids=p, prompt_mask=(p != tok.pad_id).long(),
              xyz=torch.rand(2, 3, s, s), valid=torch.ones(2, 1, s, s), target=tgt, target_mask=torch.ones_like(tgt),
              point_a=torch.zeros(2, 3), point_a_mask=torch.zeros(2), point_b=torch.zeros(2, 3),
              point_b_mask=torch.zeros(2), traj=torch.zeros(2, 8, 3), traj_mask=torch.zeros(2))
    model.eval()
    w0, w8 = TrainConfig(pointmap_dropout=0.0), TrainConfig(pointmap_dropout=0.0, motion_label_sigma=8.0)
    with torch.no_grad():
        l0, l8 = model.compute_loss(b, "stage2", w0)[1]["lm"], model.compute_loss(b, "stage2", w8)[1]["lm"]
    assert not torch.isclose(l0, l8)
    opt = torch.optim.Adam(model.llm.parameters(), 3e-3)
    model.train()
    for _ in range(40):
        loss = model.compute_loss(b, "stage2", w8)[1]["lm"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        lg = model(*b.observation(), target_in=tgt[:, :1]).logits[0, 0]
    sx = tok.motion_start[0]
    assert abs(int(lg[sx:sx + MOTION_BINS].argmax()) - (tgt[0, 1].item() - sx)) <= 8


def test_config_fields_and_cli_reach_the_recipe(tmp_path, capsys):
    cfg = get_config("tiny", geometry_token=True, motion_decoding="expectation")
    cfg.train.motion_label_sigma = 6.0
    back = VIPAConfig.from_dict(cfg.to_dict())
    assert back.model.motion_decoding == "expectation" and back.train.motion_label_sigma == 6.0
    old = cfg.to_dict()
    del old["model"]["motion_decoding"], old["train"]["motion_label_sigma"]
    legacy = VIPAConfig.from_dict(old)  # checkpoints from before the fields
    assert legacy.model.motion_decoding == "greedy" and legacy.train.motion_label_sigma == 0.0
    with pytest.raises(ValueError, match="motion_decoding"):
        get_config("tiny", motion_decoding="beam")
    bad = cfg.to_dict()
    bad["train"]["motion_label_sigma"] = -1.0
    with pytest.raises(ConfigError, match="motion_label_sigma"):
        VIPAConfig.from_dict(bad)
    from vipa.cli import main

    with pytest.raises(SystemExit):
        main(["train", "stage2", "--help"])
    helptext = capsys.readouterr().out
    assert all(f in helptext for f in ("--geometry-token", "--motion-label-sigma", "--motion-decoding"))
    with pytest.raises(SystemExit) as done:
        main(["train", "stage2", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--motion-label-sigma", "-2"])
    assert done.value.code == 2 and "--motion-label-sigma: must be >= 0" in capsys.readouterr().err
