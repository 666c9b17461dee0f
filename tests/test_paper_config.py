"""The ``paper`` config end to end on a TINY LLaVA-family VLM built from config with random weights
(saved with save_pretrained beside a tiny project-trained tokenizer.json) and a tiny point-map 3D
encoder folder: loading, stage-1 freezing, Predictor, checkpoint round trip, bad folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from test_model import assert_cached_generation_matches
from vipa.model.processor import encode_prompt
from vipa.infer.predictor import Predictor
from vipa.model.checkpoint import load_checkpoint
from vipa.model.config import ModelConfig, get_config
from vipa.model.encoders import PointMapEncoder
from vipa.model.pretrained import PretrainedFolderError, save_pointmap_encoder
from vipa.model.tokenizer import VIPATokenizer
from vipa.model.vla import VIPAModel
from vipa.train.loop import seed_everything, train

torch.set_num_threads(1)
PROMPT = "Where is the red cube relative to the right hand?"


def tiny_vlm(family: str, vocab: int, image_token: int):
    """A tiny VLM of ``family`` built from config (random weights, hidden size 48)."""
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                              Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration)

    if family == "llava":
        conf = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=32, patch_size=8).to_dict(),
            text_config=LlamaConfig(vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2).to_dict(),
            image_token_index=image_token)
        return LlavaForConditionalGeneration(conf)
    conf = Qwen2_5_VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=48,
                           patch_size=4, spatial_merge_size=2, temporal_patch_size=2, window_size=16,
                           fullatt_block_indexes=[1]),
        text_config=dict(vocab_size=vocab, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 2, 2]}),
        image_token_id=image_token, video_token_id=image_token)
    return Qwen2_5_VLForConditionalGeneration(conf)


def save_tiny_vlm(folder, family: str):
    """A tiny ``family`` VLM with random weights and a tiny BPE tokenizer.json, saved into ``folder``."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<image>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([PROMPT, "left and down, 0.44m", "pick up the red cube"], trainer=trainer)
    torch.manual_seed(0)
    tiny_vlm(family, tok.get_vocab_size(), tok.token_to_id("<image>")).save_pretrained(str(folder))
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module", params=["llava", "qwen2_5_vl"])
def folders(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    vlm = save_tiny_vlm(root / f"tiny-{request.param}", request.param)
    ecfg = ModelConfig(name="enc", image_size=32, patch_size=8, fine_stride=4, stem_channels=(8, 8, 16), d_vision=16)
    enc3d = save_pointmap_encoder(root / "pointmap3d", PointMapEncoder(ecfg), ecfg)
    return vlm, enc3d


def paper_cfg(folders):
    vlm, enc3d = folders
    cfg = get_config("paper", vlm_path=str(vlm), encoder3d_path=str(enc3d), image_size=32, patch_size=8,
                     fine_stride=4, fusion_heads=4, max_prompt_len=40, max_target_len=16, traj_horizon=4,
                     dit_dim=32, dit_layers=1, dit_heads=2)
    for stage in ("stage1", "stage2", "post"):
        cfg.train.batch_size[stage] = 2
        cfg.train.lr[stage] = 1e-2
    cfg.train.ckpt_every = 0
    return cfg


def samples(tok, cfg, n=4):
    g = torch.Generator().manual_seed(0)
    s, out = cfg.model.image_size, []
    for _ in range(n):
        tgt = [tok.bos_id] + tok.encode("left and down, 0.44m") + [tok.eos_id]
        xyz = torch.rand(3, s, s, generator=g) * 0.4 + torch.tensor([-0.2, -0.2, 0.3]).view(3, 1, 1)
        out.append(dict(image=torch.rand(3, s, s, generator=g), xyz=xyz, valid=torch.ones(1, s, s),
                        target=torch.tensor(tgt), point_a=torch.rand(3, generator=g), point_a_mask=torch.tensor(1.0),
                        point_b=torch.rand(3, generator=g), point_b_mask=torch.tensor(1.0),
                        traj=torch.rand(cfg.model.traj_horizon, 3, generator=g), traj_mask=torch.tensor(1.0),
                        **encode_prompt(tok, PROMPT, cfg.model.max_prompt_len)))
    return out


def scene(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    depth = rng.uniform(0.4, 0.9, (48, 64)).astype(np.float32)
    K = np.array([[60, 0, 32], [0, 60, 24], [0, 0, 1]], np.float32)
    return img, depth, K


def test_paper_loads_pretrained_parts_and_adds_motion_tokens(folders):
    cfg = paper_cfg(folders)
    tok = VIPATokenizer.for_config(cfg, [])
    base = Tokenizer.from_file(str(folders[0] / "tokenizer.json"))
    # <pad>, <bos>, <eos> are new (the base already has <unk>), then the 3 x 1024 motion tokens.
    assert tok.vocab_size == base.get_vocab_size() + 3 + 3 * 1024
    assert tok.unk_id == base.token_to_id("<unk>")
    assert tok.encode(PROMPT) == base.encode(PROMPT).ids  # pretrained text tokenisation unchanged
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id)
    from vipa.model.pretrained import _vlm_class

    family = json.loads((folders[0] / "config.json").read_text())["model_type"]
    ref = _vlm_class(family).from_pretrained(str(folders[0]), local_files_only=True)
    assert model.llm.get_input_embeddings().weight.shape == (tok.vocab_size, 48)
    assert model.llm.lm_head.weight.shape[0] == tok.vocab_size
    n_old = base.get_vocab_size()
    assert torch.equal(model.llm.get_input_embeddings().weight[:n_old], ref.get_input_embeddings().weight)
    ref_tower = (ref.model.vision_tower if family == "llava" else ref.model.visual).state_dict()
    ours = model.semantic.tower if family == "llava" else model.semantic.visual
    assert ref_tower and all(torch.equal(v, ref_tower[k]) for k, v in ours.state_dict().items())
    assert model.fusion.alpha.item() == pytest.approx(0.5)
    assert model.fusion.norm.normalized_shape == (48,)  # fusion in the VLM's hidden size
    assert model.action_head is not None and model.query_embed.shape[1] == 48


def test_stage1_step_trains_only_fusion_and_round_trips(folders, tmp_path):
    cfg = paper_cfg(folders)
    tok = VIPATokenizer.for_config(cfg, [])
    seed_everything(cfg.train.seed)  # the same initial weights as the training run's
    before = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id)
    res = train(cfg, "stage1", samples(tok, cfg), tok, tmp_path / "run", steps=1, progress=False,
                num_threads=1, device="cpu")
    model, cfg2, tok2, _ = load_checkpoint(res.final, expect_config="paper")
    assert tok2.vocab_size == tok.vocab_size and cfg2.model.vlm_path == cfg.model.vlm_path
    new, old = model.param_groups(), before.param_groups()
    for group in ("semantic", "spatial", "llm", "action_head"):
        assert all(torch.equal(a, b) for a, b in zip(new[group], old[group])), f"{group} changed in stage 1"
    assert not all(torch.equal(a, b) for a, b in zip(new["fusion"], old["fusion"])), "fusion did not train"
    assert model.fusion.alpha.item() != pytest.approx(0.5, abs=1e-6)

    img, depth, K = scene()
    p1 = Predictor.load(res.final)
    a = p1.predict(img, depth, K, PROMPT, mode="answer")
    t = p1.predict(img, depth, K, "pick up the red cube", mode="trajectory")
    assert isinstance(a.text, str) and a.wrist.shape == (3,)
    assert t.trajectory.shape == (cfg.model.traj_horizon, 3) and t.trajectory_tokens.shape[1] == 3
    moved = tmp_path / "moved-vlm"  # the pretrained folder moved after training
    folders[0].rename(moved)
    try:
        with pytest.raises(FileNotFoundError, match="vlm_path"):
            Predictor.load(res.final)
        p2 = Predictor.load(res.final, vlm_path=moved)
    finally:
        moved.rename(folders[0])
    b = p2.predict(img, depth, K, PROMPT, mode="answer")
    t2 = p2.predict(img, depth, K, "pick up the red cube", mode="trajectory")
    assert a.text == b.text and a.lm_text == b.lm_text
    np.testing.assert_array_equal(a.wrist, b.wrist)
    np.testing.assert_array_equal(t.trajectory, t2.trajectory)
    np.testing.assert_array_equal(t.trajectory_tokens, t2.trajectory_tokens)


def test_wrong_folders_give_clear_errors(folders, tmp_path):
    vlm, enc3d = folders
    base = dict(image_size=32, patch_size=8, fine_stride=4, fusion_heads=4)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        VIPAModel(get_config("paper", vlm_path=str(tmp_path / "missing"), encoder3d_path=str(enc3d), **base).model, 10)
    with pytest.raises(PretrainedFolderError, match=r"no config\.json.*LLaVA"):
        VIPAModel(get_config("paper", vlm_path=str(tmp_path), encoder3d_path=str(enc3d), **base).model, 10)
    wrong = tmp_path / "qwen"
    wrong.mkdir()
    (wrong / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(PretrainedFolderError, match=r"model_type 'qwen2' is not supported"):
        VIPAModel(get_config("paper", vlm_path=str(wrong), encoder3d_path=str(enc3d), **base).model, 10)
    with pytest.raises(PretrainedFolderError, match=r"no encoder3d\.json"):
        VIPAModel(get_config("paper", vlm_path=str(vlm), encoder3d_path=str(tmp_path), **base).model, 10)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        VIPATokenizer.from_pretrained_folder(tmp_path)


def test_paper_without_3d_encoder_needs_no_3d_folder(folders):
    cfg = paper_cfg(folders)
    cfg.model.use_3d, cfg.model.encoder3d_path = False, None
    tok = VIPATokenizer.for_config(cfg, [])
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id).eval()
    b = torch.utils.data.default_collate([{k: v for k, v in s.items() if k not in ("target", "xyz", "valid")}
                                          for s in samples(tok, cfg, 2)])
    out = model(b["image"], b["prompt_ids"], b["prompt_mask"])
    assert model.spatial is None and out.point_a.shape == (2, 3) and out.traj.shape == (2, cfg.model.traj_horizon, 3)


def test_qwen_patches_match_the_image_processor():
    """The Qwen2.5-VL patchification equals Qwen2VLImageProcessor's (built offline, no resize)."""
    from transformers import Qwen2VLImageProcessor

    from vipa.model.pretrained import QwenVLSemanticEncoder

    proc = Qwen2VLImageProcessor()
    img = np.random.default_rng(0).integers(0, 255, (56, 56, 3), dtype=np.uint8)
    ref = proc(images=[img], do_resize=False, return_tensors="pt")
    seen = {}

    def visual(flat, grid_thw):
        seen["flat"], seen["thw"] = flat, grid_thw
        return torch.zeros(flat.shape[0] // 4, 8)

    cfg = ModelConfig(name="paper", image_size=56, patch_size=28, fine_stride=14)
    enc = QwenVLSemanticEncoder(visual, cfg, 14, 2, 2, 8, tuple(proc.image_mean), tuple(proc.image_std))
    fine, tokens = enc(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    assert torch.equal(seen["thw"], ref["image_grid_thw"]) and tokens.shape == (1, 4, 8) and fine.shape == (1, 8, 4, 4)
    torch.testing.assert_close(seen["flat"], ref["pixel_values"].float(), atol=1e-5, rtol=0)


ADAPTER = '''
import torch
from torch import nn
from vipa.model.pretrained import Encoder3DAdapter


class DepthOnly3D(Encoder3DAdapter):
    """Stands for a Cut3R/VGGT wrapper: image -> a feature map at stride 4 and a token map at stride 8."""

    def __init__(self, folder, width=12):
        super().__init__(folder)
        self.out_dim, self.fine_ch = width, 6
        self.fine = nn.Conv2d(3, 6, 4, stride=4)
        self.tok = nn.Conv2d(3, width, 8, stride=8)

    def forward(self, image, xyz, valid):
        return self.fine(image), self.tok(image)
'''


def test_adapter_3d_encoder_folder(folders, tmp_path, monkeypatch):
    (tmp_path / "my_cut3r_adapter.py").write_text(ADAPTER)
    monkeypatch.syspath_prepend(str(tmp_path))
    enc = tmp_path / "cut3r"
    enc.mkdir()
    (enc / "encoder3d.json").write_text(json.dumps({"format": "adapter", "class": "my_cut3r_adapter:DepthOnly3D",
                                                     "kwargs": {"width": 12}}))
    cfg = paper_cfg(folders)
    cfg.model.encoder3d_path = str(enc)
    tok = VIPATokenizer.for_config(cfg, [])
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id).eval()
    b = torch.utils.data.default_collate([{k: v for k, v in s.items() if k != "target"} for s in samples(tok, cfg, 2)])
    out = model(b["image"], b["prompt_ids"], b["prompt_mask"], b["xyz"], b["valid"])
    assert out.point_a.shape == (2, 3) and model.spatial_proj.in_features == 12
    groups = model.param_groups()
    for stage, train_groups in cfg.train.trainable.items():  # the paper: encoders frozen in every stage
        model.set_trainable(train_groups)
        assert not any(p.requires_grad for g in ("semantic", "spatial") for p in groups[g]), stage
        assert all(p.requires_grad for g in train_groups for p in groups[g]), stage
        model.train()  # frozen pretrained encoders stay in eval mode (dropout, BN statistics)
        assert not model.semantic.training and not model.spatial.training and model.fusion.training
    (enc / "encoder3d.json").write_text(json.dumps({"format": "adapter", "class": "json:JSONDecoder"}))
    with pytest.raises(PretrainedFolderError, match="not an Encoder3DAdapter subclass"):
        VIPAModel(cfg.model, tok.vocab_size, tok.pad_id)


@pytest.mark.parametrize("stage", ["stage2", "post"])
def test_later_stages_train_only_their_groups(folders, tmp_path, stage):
    """Stage 2 trains LLM + fusion, post-training LLM + action head; the encoders never change."""
    cfg = paper_cfg(folders)
    tok = VIPATokenizer.for_config(cfg, [])
    data = samples(tok, cfg)
    if stage == "post":
        g = torch.Generator().manual_seed(1)
        m = cfg.model
        data = [{k: v for k, v in s.items() if k in ("image", "xyz", "valid", "prompt_ids", "prompt_mask")}
                | {"actions": torch.randn(m.chunk_len, m.action_dim, generator=g),
                   "state": torch.randn(m.state_dim, generator=g)} for s in data]
    seed_everything(cfg.train.seed)
    before = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id).param_groups()
    res = train(cfg, stage, data, tok, tmp_path / "run", steps=1, progress=False, num_threads=1, device="cpu")
    after = load_checkpoint(res.final)[0].param_groups()
    trained = set(cfg.train.trainable[stage])
    for group in before:
        same = all(torch.equal(a, b) for a, b in zip(after[group], before[group]))
        if group not in trained:
            assert same, f"{stage}: frozen group {group} changed"
        elif group != "readout":
            assert not same, f"{stage}: group {group} did not train"


def test_export_pointmap_encoder_from_tiny_checkpoint(tmp_path):
    """The bundled tiny checkpoint's 3D encoder exported as a 3D-encoder folder reproduces its tokens."""
    from vipa.model.checkpoint import export_pointmap_encoder
    from vipa.model.pretrained import load_encoder3d
    from vipa.resources import REPO_ROOT

    ck = REPO_ROOT / "checkpoints" / "tiny_sample"
    folder = export_pointmap_encoder(ck, tmp_path / "enc3d")
    enc = load_encoder3d(folder).eval()
    model = load_checkpoint(ck)[0]
    s = model.cfg.image_size
    xyz, valid = torch.rand(1, 3, s, s) + torch.tensor([0, 0, 0.3]).view(1, 3, 1, 1), torch.ones(1, 1, s, s)
    with torch.no_grad():
        fine, tokens = model.spatial(None, xyz, valid)
        fine2, tmap = enc(torch.rand(1, 3, s, s), xyz, valid)
    torch.testing.assert_close(fine2, fine)
    torch.testing.assert_close(tmap.flatten(2).transpose(1, 2), tokens)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PretrainedFolderError, match="does not fit"):
        load_encoder3d(folder)


def test_cached_generation_matches_full_recompute(folders):
    """The pretrained LLM's KV-cached decoding (Qwen2.5-VL: text positions on all mRoPE sections)
    equals recomputing the whole sequence each step."""
    cfg = paper_cfg(folders)
    tok = VIPATokenizer.for_config(cfg, [])
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id).eval()
    torch.manual_seed(1)
    for p in model.llm.parameters():  # spread the logits so greedy choices differ per step
        p.data.normal_(0, 0.5)
    b = torch.utils.data.default_collate([{k: v for k, v in s.items() if k in ("image", "xyz", "valid", "prompt_ids",
                                                                              "prompt_mask")} for s in samples(tok, cfg, 2)])
    assert_cached_generation_matches(model, b, tok.bos_id)


def test_llava_with_siglip_tower_and_several_feature_layers(tmp_path, folders):
    """LLaVA variants with a SigLIP tower (no CLS token, "full" strategy) and concatenated layers."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    base = Tokenizer.from_file(str(folders[0] / "tokenizer.json"))
    conf = LlavaConfig(
        vision_config=SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=24, patch_size=6).to_dict(),
        text_config=LlamaConfig(vocab_size=base.get_vocab_size(), hidden_size=48, intermediate_size=96,
                                num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2).to_dict(),
        image_token_index=3, vision_feature_select_strategy="full", vision_feature_layer=[-2, -1])
    vlm = tmp_path / "tiny-llava-siglip"
    LlavaForConditionalGeneration(conf).save_pretrained(str(vlm))
    base.save(str(vlm / "tokenizer.json"))
    cfg = paper_cfg(folders)
    cfg.model.vlm_path = str(vlm)
    tok = VIPATokenizer.for_config(cfg, [])
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id).eval()
    assert model.semantic.fine_ch == 64 and not model.semantic.drop_cls
    b = torch.utils.data.default_collate([{k: v for k, v in s.items() if k != "target"} for s in samples(tok, cfg, 2)])
    out = model(b["image"], b["prompt_ids"], b["prompt_mask"], b["xyz"], b["valid"])
    assert out.hidden.shape[:2] == (2, cfg.model.max_seq_len - cfg.model.max_target_len - 1) and out.point_a.shape == (2, 3)


def test_cli_trains_paper_config_from_local_folders(tmp_path):
    """`vipa train stage1 --config paper --vlm-path --encoder3d-path` with the paper's own geometry
    (448 px, patch 28, fine stride 14: the point-map stem's power-of-two strides are resampled)."""
    from annotators.synthetic import generate_episode
    from vipa.cli import main
    from vipa.data.dataset import Hand3DDataset

    vlm = save_tiny_vlm(tmp_path / "tiny-llava", "llava")
    pc = get_config("paper").model
    ecfg = ModelConfig(name="enc", image_size=pc.image_size, patch_size=pc.patch_size, fine_stride=pc.fine_stride,
                       stem_channels=(8, 8, 16), d_vision=16)
    enc = save_pointmap_encoder(tmp_path / "enc3d", PointMapEncoder(ecfg), ecfg)
    ds = Hand3DDataset.create(tmp_path / "data", fps=15.0)
    for s in range(3):
        ds.write_episode(generate_episode(s, width=64, height=64, num_frames=8))
    common = ["--data", str(tmp_path / "data"), "--steps", "1", "--batch-size", "2", "--test-fraction", "0.34",
              "--no-progress"]
    assert main(["train", "stage1", "--config", "paper", "--out", str(tmp_path / "x"), *common]) == 2  # no folders
    rc = main(["train", "stage1", "--config", "paper", "--vlm-path", str(vlm), "--encoder3d-path", str(enc),
               "--out", str(tmp_path / "run"), *common])
    assert rc == 0
    info = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert info["config"]["name"] == "paper" and info["config"]["model"]["vlm_path"] == str(vlm)
    rec = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert rec["step"] == 1 and np.isfinite(rec["loss"])
