"""VIPA-VLA model: shapes, the paper's fusion, motion tokens and constrained decoding, the
flow-matching head, checkpoints and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vipa.model.action_head import FlowMatchingDiT
from vipa.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vipa.model.config import REGISTRY, ConfigError, get_config
from vipa.model.encoders import PointMapEncoder, SemanticEncoder, SpatialFusion
from vipa.model.processor import point_map_from_depth, resize_point_map
from vipa.model.tokenizer import VIPATokenizer
from vipa.model.vla import VIPAModel

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok() -> VIPATokenizer:
    return VIPATokenizer.train(["Where is the red cube relative to the right hand?", "left and down, 0.44m",
                                "pick up the red cube and place it to the left of the blue ball"], 400)


@pytest.fixture(scope="module")
def cfg():
    return get_config("tiny")


def make_batch(cfg, tok, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.model.image_size
    ids = tok.encode("Where is the red cube relative to the right hand?")
    p = torch.full((b, cfg.model.max_prompt_len), tok.pad_id)
    p[:, : len(ids)] = torch.tensor(ids)
    m = (p != tok.pad_id).long()
    xyz = torch.rand(b, 3, s, s, generator=g) * torch.tensor([0.4, 0.4, 0.5]).view(1, 3, 1, 1) + \
        torch.tensor([-0.2, -0.2, 0.3]).view(1, 3, 1, 1)
    return dict(image=torch.rand(b, 3, s, s, generator=g), prompt_ids=p, prompt_mask=m, xyz=xyz,
                valid=torch.ones(b, 1, s, s))


def test_registry(cfg):
    assert set(REGISTRY) >= {"tiny", "small", "paper"}
    with pytest.raises(KeyError, match="known"):
        get_config("huge")
    assert get_config("paper").train.trainable["stage1"] == ["fusion", "readout"]
    assert "llm" in get_config("paper").train.trainable["post"]
    with pytest.raises(FileNotFoundError, match="vlm_path is not set"):
        get_config("paper").model.check_local_weights()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        get_config("paper", vlm_path="/nonexistent/internvl", encoder3d_path="/nonexistent/cut3r").model.check_local_weights()
    with pytest.raises(FileNotFoundError, match="vlm_path"):
        VIPAModel(get_config("paper").model, 100)
    small = get_config("small")
    assert small.model.llm.hidden_size > cfg.model.llm.hidden_size


def test_encoder_and_fusion_shapes(cfg):
    mc = cfg.model
    b, s, n, d = 2, mc.image_size, mc.num_visual_tokens, mc.d_vision
    fine, v_sem = SemanticEncoder(mc)(torch.rand(b, 3, s, s))
    assert v_sem.shape == (b, n, d) and fine.shape[-1] == mc.fine_grid
    fine3, v_spa = PointMapEncoder(mc)(None, torch.rand(b, 3, s, s), torch.ones(b, 1, s, s))
    assert v_spa.shape == (b, n, d) and fine3.shape == fine.shape
    fusion = SpatialFusion(d, mc.fusion_heads, 0.0)
    assert fusion(v_sem, v_spa).shape == (b, n, d)


def test_alpha_init_and_gradient(cfg, tok):
    model = VIPAModel(cfg.model, tok.vocab_size)
    assert model.fusion.alpha.item() == pytest.approx(0.5)
    out = model(**make_batch(cfg, tok))
    (out.point_a.sum() + out.queries.pow(2).mean()).backward()
    assert model.fusion.alpha.grad is not None and float(model.fusion.alpha.grad.abs()) > 0


def test_vla_forward_shapes(cfg, tok):
    mc = cfg.model
    model = VIPAModel(mc, tok.vocab_size)
    b = make_batch(cfg, tok, b=2)
    tgt = torch.tensor([[tok.bos_id] + tok.encode("left, 0.1m")] * 2)
    out = model(**b, target_in=tgt)
    assert out.logits.shape == (2, tgt.shape[1], tok.vocab_size)
    assert out.point_a.shape == (2, 3) and out.point_b.shape == (2, 3)
    assert out.traj.shape == (2, mc.traj_horizon, 3)
    assert out.queries.shape == (2, mc.num_queries, mc.llm.hidden_size)
    assert torch.allclose(out.attn_a.sum(-1), torch.ones(2), atol=1e-5)
    # Pointer A pools the point map: with zero offsets it lies inside the map's bounding box.
    lo, hi = b["xyz"].amin((0, 2, 3)), b["xyz"].amax((0, 2, 3))
    assert ((out.point_a >= lo - 1e-4) & (out.point_a <= hi + 1e-4)).all()


def test_no_3d_variant(cfg, tok):
    mc = get_config("tiny", use_3d=False).model
    model = VIPAModel(mc, tok.vocab_size)
    assert model.spatial is None and model.param_groups()["spatial"] == []
    b = make_batch(cfg, tok)
    out = model(b["image"], b["prompt_ids"], b["prompt_mask"])
    assert out.point_a.shape == (3, 3)


def test_action_head_shapes_and_sampling():
    head = FlowMatchingDiT(cond_dim=32, action_dim=4, state_dim=5, chunk_len=16, d=32, layers=2, heads=4)
    cond = torch.randn(3, 4, 32)
    state = torch.randn(3, 5)
    assert head.velocity(torch.randn(3, 16, 4), torch.rand(3), state, cond).shape == (3, 16, 4)
    assert head.sample(state, cond, steps=3).shape == (3, 16, 4)
    with pytest.raises(ValueError, match="action chunk"):
        head.velocity(torch.randn(3, 8, 4), torch.rand(3), state, cond)
    with pytest.raises(ValueError, match="robot state"):
        head.sample(torch.randn(3, 2), cond)


def test_flow_matching_learns_toy_problem():
    """Actions are a deterministic function of the state: the loss must fall and sampling must
    reproduce the chunk far better than the unconditional spread."""
    torch.manual_seed(0)
    head = FlowMatchingDiT(cond_dim=8, action_dim=2, state_dim=2, chunk_len=16, d=32, layers=1, heads=2)
    opt = torch.optim.AdamW(head.parameters(), 5e-3)
    t = torch.linspace(0, 1, 16)

    def data(n):
        s = torch.rand(n, 2) * 2 - 1
        a = torch.stack([s[:, :1] * t, s[:, 1:] * (1 - t)], -1)
        return s, a

    cond = torch.zeros(1, 1, 8)
    losses = []
    for _ in range(150):
        s, a = data(32)
        loss = head.loss(a, s, cond.expand(32, -1, -1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    s, a = data(32)
    pred = head.sample(s, cond.expand(32, -1, -1), steps=10, generator=torch.Generator().manual_seed(0))
    assert (pred - a).abs().mean() < 0.5 * (a - a.mean(0)).abs().mean()


def test_motion_tokens_round_trip(tok):
    xyz = np.array([[0.1, -0.2, 0.5], [-0.49, 0.49, 0.01]], np.float32)
    ids = tok.motion_ids(xyz)
    assert len(ids) == 6 and all(tok.is_motion(i) for i in ids)
    assert np.abs(tok.ids_to_waypoints(ids) - xyz).max() < 1e-3
    assert tok.decode(tok.encode("left and down, 0.44m")) == "left and down, 0.44m"
    with pytest.raises(ValueError, match="not a y motion token"):
        tok.ids_to_waypoints([ids[0], ids[0], ids[2]])


def test_digit_tokens_split_every_number_into_single_digits(tmp_path):
    from vipa.data.qa import encode_direction_distance

    texts = [encode_direction_distance(v) for v in np.random.default_rng(0).normal(0, 0.2, (500, 3))]
    merged, digits = VIPATokenizer.train(texts, 400), VIPATokenizer.train(texts, 400, digits=True)
    s = "left and up, 0.28m"
    pieces = lambda t, text: [t.tok.id_to_token(i) for i in t.encode(text)]
    assert "28" in pieces(merged, s)  # BPE learns digit pairs from the answers
    assert [p for p in pieces(digits, s) if any(c.isdigit() for c in p)] == ["0", "2", "8"]
    assert digits.decode(digits.encode(s)) == s
    digits.save(tmp_path / "t.json")  # the rule travels with the tokenizer file
    assert pieces(VIPATokenizer.load(tmp_path / "t.json"), "right, 1.05m")[-5:] == ["1", ".", "0", "5", "m"]
    cfg = get_config("tiny", digit_tokens=True)
    assert pieces(VIPATokenizer.for_config(cfg, texts), s) == pieces(digits, s)


def test_constrained_decoding_always_valid_waypoints(cfg, tok):
    from vipa.infer.constrained import motion_allowed_fn, split_motion

    model = VIPAModel(cfg.model, tok.vocab_size).eval()
    for seed in range(2):
        torch.manual_seed(seed)
        for p in model.llm.lm_head.parameters():  # random logits: the constraint alone must keep it valid
            p.data.normal_(0, 1)
        b = make_batch(cfg, tok, b=4, seed=seed)
        for n in (1, 3):
            ids, _ = model.generate(**b, bos_id=tok.bos_id, eos_id=tok.eos_id, max_new_tokens=3 * n + 1,
                                    allowed_fn=motion_allowed_fn(tok, tok.vocab_size, n))
            for row in ids.tolist():
                mot = split_motion(tok, row)
                assert len(mot) % 3 == 0 and 3 <= len(mot) <= 3 * n
                assert all(row[k] == tok.eos_id for k in range(len(mot), len(row)))
                wp = tok.ids_to_waypoints(mot)  # raises on a wrong axis
                assert wp.shape[1] == 3


def test_checkpoint_round_trip_and_bad_checkpoints(tmp_path, cfg, tok):
    model = VIPAModel(cfg.model, tok.vocab_size).eval()
    b = make_batch(cfg, tok)
    ck = save_checkpoint(tmp_path / "ck", model, cfg, tok, {"stage": "stage1", "step": 0})
    m2, cfg2, tok2, info = load_checkpoint(ck)
    with torch.no_grad():
        o1, o2 = model(**b), m2(**b)
    assert torch.equal(o1.point_a, o2.point_a) and torch.equal(o1.traj, o2.traj)
    assert cfg2.to_dict() == cfg.to_dict() and tok2.vocab_size == tok.vocab_size and info["stage"] == "stage1"
    with pytest.raises(CheckpointError, match="trained with config 'tiny', not 'small'"):
        load_checkpoint(ck, expect_config="small")
    # Weights from another architecture under this config name.
    other = get_config("tiny", d_vision=64)
    save_checkpoint(tmp_path / "other", VIPAModel(other.model, tok.vocab_size), other, tok)
    (tmp_path / "other" / "config.json").write_text((ck / "config.json").read_text())
    with pytest.raises(ConfigError, match=r"config\.json: config\.model\.d_vision: vision width 128 disagrees"):
        load_checkpoint(tmp_path / "other")
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[:100] + b"\x00garbage" + data[120:1000])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(ck)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope")


def test_bad_inputs(cfg, tok):
    model = VIPAModel(cfg.model, tok.vocab_size)
    b = make_batch(cfg, tok)
    with pytest.raises(ValueError, match="image: expected"):
        model(**{**b, "image": torch.rand(3, 3, 32, 32)})
    xyz = b["xyz"].clone()
    xyz[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(**{**b, "xyz": xyz})
    with pytest.raises(ValueError, match="both xyz and valid"):
        model(b["image"], b["prompt_ids"], b["prompt_mask"], b["xyz"])
    K = np.array([[10, 0, 2], [0, 10, 2], [0, 0, 1]], np.float32)
    assert np.isnan(point_map_from_depth(np.full((4, 4), np.inf), K)).all()  # inf depth = missing
    with pytest.raises(ValueError, match="inf"):
        resize_point_map(np.full((4, 4, 3), np.inf, np.float32), 2)
    with pytest.raises(ValueError, match="K"):
        point_map_from_depth(np.ones((4, 4)), np.zeros((3, 3)))


def assert_cached_generation_matches(model, b: dict, bos_id: int, steps: int = 6) -> None:
    """Greedy KV-cached generation equals recomputing the whole sequence at every step."""
    n = b["prompt_ids"].shape[0]
    with torch.no_grad():
        ids, _ = model.generate(**b, bos_id=bos_id, eos_id=-1, max_new_tokens=steps)
        cur = torch.full((n, 1), bos_id)
        for _ in range(steps):
            nxt = model(**b, target_in=cur).logits[:, -1].argmax(-1)
            cur = torch.cat([cur, nxt[:, None]], 1)
    assert torch.equal(ids, cur[:, 1:])


def test_cached_generation_matches_full_recompute(cfg, tok):
    model = VIPAModel(cfg.model, tok.vocab_size).eval()
    torch.manual_seed(1)
    for p in model.llm.parameters():  # spread the logits so greedy choices differ per step
        p.data.normal_(0, 0.5)
    b = make_batch(cfg, tok, b=2)
    assert_cached_generation_matches(model, b, tok.bos_id)


@pytest.mark.parametrize("features", ["raw", "fourier"])
def test_geometry_token_carries_the_readout_into_the_text(tok, features):
    """With ``geometry_token`` the text target attends to one token made from the readout (the
    queries and readout are unchanged by it); cached generation still equals full recompute;
    the text loss does not reach the readout; changing the readout changes the text logits."""
    cfg = get_config("tiny", geometry_token=True, geometry_features=features)
    torch.manual_seed(0)
    model = VIPAModel(cfg.model, tok.vocab_size).eval()
    for p in model.llm.parameters():
        p.data.normal_(0, 0.5)
    b = make_batch(cfg, tok, b=2)
    tgt = torch.tensor([[tok.bos_id] + tok.encode("left and down, 0.44m")] * 2)
    with torch.no_grad():
        plain = model(**b)
        out = model(**b, target_in=tgt)
    assert out.logits.shape == (2, tgt.shape[1], tok.vocab_size)
    torch.testing.assert_close(out.point_a, plain.point_a)
    torch.testing.assert_close(out.traj, plain.traj)
    assert_cached_generation_matches(model, b, tok.bos_id)
    with torch.no_grad():
        model.offset[-1].bias.add_(0.3)  # move the pointers: the geometry token, so the text, changes
        moved = model(**b, target_in=tgt)
    assert not torch.allclose(moved.logits, out.logits)
    model.train()
    model.zero_grad()
    model(**b, target_in=tgt).logits.sum().backward()
    assert model.geo_embed[0].weight.grad.abs().sum() > 0
    assert model.offset[-1].weight.grad is None or model.offset[-1].weight.grad.abs().sum() == 0


def test_fourier_geometry_features_resolve_centimetres(tok):
    """The "fourier" encoding gives the token's MLP inputs that move by O(1) for the 1 cm the text
    answers are written to (raw metres move by 0.01); "raw" is the geometry as it is."""
    from vipa.model.config import GEOMETRY_FREQS

    g = torch.tensor([[0.10] * 34, [0.11] + [0.10] * 33])
    four = VIPAModel(get_config("tiny", geometry_token=True).model, tok.vocab_size).geometry_input(g)
    raw = VIPAModel(get_config("tiny", geometry_token=True, geometry_features="raw").model,
                    tok.vocab_size).geometry_input(g)
    assert four.shape == (2, 34 * (1 + 2 * len(GEOMETRY_FREQS))) and torch.equal(raw, g)
    assert (four[0] - four[1]).norm() > 1.0 > 100 * (raw[0] - raw[1]).norm() - 0.01
    assert four[:, :34].abs().max() <= 1.1  # the linear part, 10 x metres
    with pytest.raises(ValueError, match="geometry_features: expected one of raw, fourier, got 'sine'"):
        get_config("tiny", geometry_features="sine").model.validate()


def test_processor_observation_and_collate(cfg, tok):
    from vipa.geometry import unproject
    from vipa.model.batch import Batch
    from vipa.model.processor import Processor, collate

    proc = Processor(cfg.model, tok)
    s = cfg.model.image_size
    rgb = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    K = np.array([[50, 0, 32], [0, 50, 24], [0, 0, 1]], np.float32)
    depth = np.full((48, 64), 0.7, np.float32)
    depth[:10] = np.nan
    b = proc(rgb, "Where is the red cube relative to the right hand?", depth=depth, K=K)
    assert isinstance(b, Batch) and len(b) == 1 and b.target is None
    assert b.image.shape == (1, 3, s, s) and b.xyz.shape == (1, 3, s, s) and b.valid.shape == (1, 1, s, s)
    # depth + K and the point map made by vipa.geometry give the same tensors
    same = proc(rgb, "Where is the red cube relative to the right hand?", points=unproject(depth, K))
    assert torch.equal(same.xyz, b.xyz) and torch.equal(same.valid, b.valid)
    assert 0 < b.valid.mean() < 1 and b.prompt_mask.sum() == len(tok.encode("Where is the red cube relative to the right hand?"))
    with pytest.raises(ValueError, match="without intrinsics K"):
        proc.observation(rgb, depth=depth)
    with pytest.raises(ValueError, match="instruction: empty"):
        proc.prompt("  ")
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        collate([{**proc.observation(rgb, depth=depth, K=K), "colour": torch.zeros(3)}])
    moved = b.to("cpu")
    assert moved is not b and torch.equal(moved.image, b.image)


def test_compute_loss_per_stage(cfg, tok):
    from vipa.model.processor import collate

    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id)
    obs = make_batch(cfg, tok, b=2)
    h = cfg.model.traj_horizon
    items = [{**{k: v[i] for k, v in obs.items()}, "target": torch.tensor([tok.bos_id, 7, 8, tok.eos_id][: 3 + i]),
              "point_a": torch.zeros(3), "point_a_mask": torch.tensor(1.0), "point_b": torch.ones(3),
              "point_b_mask": torch.tensor(float(i)), "traj": torch.zeros(h, 3), "traj_mask": torch.tensor(0.0)}
             for i in range(2)]
    batch = collate(items, tok.pad_id)
    assert batch.target_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    loss, parts = model.compute_loss(batch, "stage1", cfg.train)
    assert set(parts) == {"lm", "point_a", "point_b", "vector", "traj", "mono"} and parts["traj"].item() == 0.0
    t = cfg.train
    expect = t.w_lm * parts["lm"] + t.w_point * (parts["point_a"] + parts["point_b"] + parts["vector"]) + \
        t.w_mono * parts["mono"]
    assert torch.allclose(loss, expect)
    with pytest.raises(ValueError, match="stage: expected one of"):
        model.compute_loss(batch, "stage3")
    with pytest.raises(ValueError, match="no text target"):
        model.compute_loss(collate([{k: v[0] for k, v in obs.items()}]), "stage2")


def test_motion_loss_is_the_displacement_from_pointer_a(cfg, tok):
    """w_motion > 0 adds the L1 (metres) of the trajectory relative to pointer A against the
    demonstrated displacement: a wrist estimate that is off shifts the absolute trajectory loss,
    not this one; samples without a trajectory or a wrist are left out."""
    import copy

    from vipa.model.processor import collate

    torch.manual_seed(0)
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id).eval()
    obs = make_batch(cfg, tok, b=2)
    h = cfg.model.traj_horizon
    items = [{**{k: v[i] for k, v in obs.items()}, "target": torch.tensor([tok.bos_id, 7, 8, tok.eos_id]),
              "point_a": torch.tensor([0.1, 0.0, 0.5]), "point_a_mask": torch.tensor(1.0), "point_b": torch.zeros(3),
              "point_b_mask": torch.tensor(0.0), "traj": torch.tensor([0.1, 0.0, 0.5]) + torch.rand(h, 3) * 0.1,
              "traj_mask": torch.tensor(float(i == 0))} for i in range(2)]
    batch = collate(items, tok.pad_id)
    t = copy.deepcopy(cfg.train)
    t.pointmap_dropout = 0.0
    _, off = model.compute_loss(batch, "stage2", t)
    assert "motion" not in off
    t.w_motion = 3.0
    loss, parts = model.compute_loss(batch, "stage2", t)
    with torch.no_grad():
        out = model(*batch.observation())
    disp = (out.traj - out.point_a[:, None])[0]
    want = (disp - (batch.traj - batch.point_a[:, None])[0]).abs().sum(-1).mean()
    assert torch.allclose(parts["motion"], want, atol=1e-5)  # sample 1 has no trajectory: masked out
    assert torch.allclose(loss, _weighted(t, parts) + 3.0 * parts["motion"])
    moved = collate([{**it, "point_a": it["point_a"] + 0.2, "traj": it["traj"] + 0.2} for it in items], tok.pad_id)
    _, p2 = model.compute_loss(moved, "stage2", t)
    assert torch.allclose(p2["motion"], parts["motion"], atol=1e-5) and not torch.allclose(p2["traj"], parts["traj"])


def _weighted(t, parts):
    return t.w_lm * parts["lm"] + t.w_point * (parts["point_a"] + parts["point_b"] + parts["vector"]) + \
        t.w_traj * parts["traj"] + t.w_mono * parts.get("mono", 0.0)


def test_every_3d_encoder_has_one_signature(cfg, tok, tmp_path):
    """The tiny point-map encoder and the pretrained wrapper both map (image, xyz, valid) to (fine map,
    spatial tokens on the patch grid); the model calls them the same way."""
    from vipa.model.pretrained import PointMapFolderEncoder, Spatial3DEncoder, save_pointmap_encoder

    mc = cfg.model
    s, b = mc.image_size, 2
    x = make_batch(cfg, tok, b=b)
    tiny = PointMapEncoder(mc)
    save_pointmap_encoder(tmp_path, tiny, mc)
    conf = {"image_size": s, "patch_size": mc.patch_size, "fine_stride": mc.fine_stride,
            "stem_channels": list(mc.stem_channels), "d_vision": mc.d_vision}
    wrapped = Spatial3DEncoder(PointMapFolderEncoder(tmp_path, conf), mc)
    for enc in (tiny, wrapped):
        fine, tokens = enc(x["image"], x["xyz"], x["valid"])
        assert fine.shape == (b, enc.fine_ch, mc.fine_grid, mc.fine_grid)
        assert tokens.shape == (b, mc.num_visual_tokens, enc.out_dim)
    with torch.no_grad():  # same weights -> same tokens through either path
        args = (x["image"], x["xyz"], x["valid"])
        assert torch.allclose(tiny(*args)[1], wrapped(*args)[1], atol=1e-5)


def test_load_with_new_part_keeps_every_old_weight_and_refuses_others(cfg, tok):
    import dataclasses

    from vipa.model.checkpoint import load_with_new_part

    torch.manual_seed(0)
    old = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id)
    new = VIPAModel(dataclasses.replace(cfg.model, geometry_token=True), tok.vocab_size, tok.pad_id)
    fresh = {k: v.clone() for k, v in new.state_dict().items() if k.startswith("geo_embed.")}
    load_with_new_part(new, old.state_dict(), "geo_embed.", "old.ckpt")
    for k, v in old.state_dict().items():
        assert torch.equal(new.state_dict()[k], v), k
    for k, v in fresh.items():  # the new part stays as initialised
        assert torch.equal(new.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"old.ckpt: weights do not fit .*missing \['geo_embed"):
        load_with_new_part(new, old.state_dict(), "point_head.", "old.ckpt")  # geo_embed.* missing too
    extra = {**old.state_dict(), "bogus.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected \\['bogus.weight'\\]"):
        load_with_new_part(new, extra, "geo_embed.", "old.ckpt")
