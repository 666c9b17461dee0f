"""Objects: manual boxes, geometric grasp proposals, zero-shot detector plumbing (tiny OWLv2)."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest

from annotators import objects as O
from annotators.synthetic import generate_episode
from vipa.conventions import FINGERTIPS, HANDS, NUM_JOINTS
from vipa.data.episode import Episode, HandTrack


@pytest.fixture(scope="module")
def syn():
    return [generate_episode(s, num_frames=48) for s in range(5)]


def test_manual_box_gives_rough_3d_position(syn):
    errs = []
    for ep in syn:
        for g in ep.objects:
            if not np.isfinite(g.box_2d[0]).all():
                continue
            tr = O.object_from_boxes(ep, {0: g.box_2d[0]}, g.name)
            errs.append(float(np.linalg.norm(tr.center[0] - g.center[0])))
            assert tr.provenance == "manual" and np.isnan(tr.center[1:]).all()
            assert np.all(tr.size > 0.3 * g.size) and np.all(tr.size < 2.0 * g.size)
            tr.validate(ep.num_frames)
    print(f"\nmanual 2D box + depth -> 3D centre: median error {np.median(errs) * 100:.1f} cm over {len(errs)} objects")
    assert np.median(errs) < 0.02


def test_manual_box_errors(syn):
    ep = syn[0]
    with pytest.raises(ValueError, match="frame"):
        O.object_from_boxes(ep, {ep.num_frames: (0, 0, 10, 10)}, "cup")
    with pytest.raises(ValueError, match="x0 < x1"):
        O.object_from_boxes(ep, {0: (10, 10, 5, 20)}, "cup")
    no_depth = Episode("n", 10.0, 64, 48, ep.K, {}, 2)
    tr = O.object_from_boxes(no_depth, {0: (5, 5, 20, 20)}, "cup")
    assert np.isnan(tr.center).all() and np.isfinite(tr.box_2d[0]).all()


def _table_scene(t_count: int = 20, grasp: range = range(6, 16)) -> Episode:
    """Table plane at z = 0.6 m, a 6 cm box whose top faces the camera at z = 0.5 m, a hand
    whose fingertips rest on the box's top edge during ``grasp`` and hover 15 cm away otherwise."""
    w, h, f = 160, 120, 150.0
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], np.float32)
    depth = np.full((h, w), 0.6, np.float32)
    u = (np.arange(w) + 0.5 - w / 2) / f
    v = (np.arange(h) + 0.5 - h / 2) / f
    box = (np.abs(v)[:, None] * 0.5 < 0.03) & (np.abs(u)[None, :] * 0.5 < 0.03)
    depth[box] = 0.5
    tr = HandTrack.empty("right", t_count)
    base = np.zeros((NUM_JOINTS, 3), np.float32)
    base[:, 0] = np.linspace(-0.10, -0.02, NUM_JOINTS)  # a hand reaching in from the left, above the box
    base[:, 2] = 0.47
    for k, tip in enumerate(FINGERTIPS):
        base[tip] = [-0.032, -0.02 + 0.01 * k, 0.49]  # along the box's left edge, just above its top
    for t in range(t_count):
        off = np.zeros(3, np.float32) if t in grasp else np.array([-0.15, 0, 0], np.float32)
        tr.joints_3d[t] = base + off
    tr.present[:] = True
    tr.valid[:] = True
    ep = Episode("scene", 10.0, w, h, K, {"right": tr}, t_count, depth_unit=0.001,
                 depth_scale=np.ones(t_count, np.float32), depth_raw=np.tile(depth * 1000, (t_count, 1, 1)))
    return ep.validate()


def test_grasp_proposal_on_a_known_scene():
    ep = _table_scene()
    props = O.propose_grasped_objects(ep)
    assert len(props) == 1
    p = props[0]
    assert p.provenance == "proposal:grasp:right:6-16"
    c = p.center[6]
    assert abs(c[0]) < 0.01 and abs(c[1]) < 0.01 and 0.5 < c[2] < 0.56
    assert np.all((p.size[:2] > 0.04) & (p.size[:2] <= 0.065))  # 6 cm box, partly hidden by the hand
    # static before the grasp, carried with the fingertips (which leave by 15 cm) after it
    assert np.allclose(p.center[0], p.center[6])
    assert np.allclose(p.center[-1], p.center[6])
    assert np.isfinite(p.box_2d[6]).all()
    p.validate(ep.num_frames)


def test_no_proposals_without_depth_or_contact():
    ep = _table_scene(grasp=range(0))
    assert O.propose_grasped_objects(ep) == []
    ep.depth_raw = None
    assert O.propose_grasped_objects(ep) == []


def test_grasp_proposals_on_synthetic_episodes(syn):
    hits, found = 0, 0
    for ep in syn:
        side = next(s for s in HANDS if ep.hands[s].present.any())
        truth = ep.objects
        props = O.propose_grasped_objects(Episode(**{**ep.__dict__, "objects": []}))
        for p in props:
            found += 1
            a = int(p.provenance.rsplit(":", 1)[1].split("-")[0])
            d = min(float(np.linalg.norm(p.center[a] - g.center[a])) for g in truth)
            hits += d < 0.05
            assert p.provenance.startswith(f"proposal:grasp:{side}")
    print(f"\ngrasp proposals on 5 synthetic episodes: {found} proposed, {hits} within 5 cm of a true object")
    assert hits >= 3


def _tiny_owlv2(folder):
    import torch
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    chars = list(string.ascii_lowercase)
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    ids = dict(bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=0)
    cfg = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, **ids),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(cfg)
    with torch.no_grad():  # random box heads saturate; zero the last layer -> boxes on the patch grid
        model.box_head.dense2.weight.zero_()
        model.box_head.dense2.bias.zero_()
    proc = Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tok)
    out = folder / "owlv2-tiny"
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


@pytest.mark.slow  # importing and building transformers models takes ~25 s on the shared CPUs
def test_zero_shot_detector_plumbing_with_tiny_owlv2(tmp_path, syn):
    """Random weights: checks loading from a local folder, pre/post-processing and lifting, not accuracy."""
    path = _tiny_owlv2(tmp_path)
    det = O.ZeroShotDetector(path, threshold=0.0)
    ep = syn[0]
    found = det.detect(ep.rgb[0], ["cube", "ball"])
    assert found and all(lab in ("cube", "ball") for lab, _, _ in found)
    for _, score, (x0, y0, x1, y1) in found:
        assert 0 <= x0 < x1 <= ep.width and 0 <= y0 < y1 <= ep.height and 0 <= score <= 1
    small = Episode(**{**ep.__dict__, "objects": []})
    tracks = O.detect_objects(small, det, ["cube", "ball"], stride=20)
    assert {t.name for t in tracks} <= {"cube", "ball"} and tracks
    for t in tracks:
        t.validate(ep.num_frames)
        boxed = np.flatnonzero(np.isfinite(t.box_2d).all(1))
        assert t.provenance == "detector" and len(boxed) and set(boxed) <= {0, 20, 40}
        assert np.isfinite(t.center[boxed]).all()  # lifted with the synthetic depth


def test_detector_missing_folder_is_a_backend_error(tmp_path):
    from annotators.errors import BackendError

    with pytest.raises(BackendError, match="not a folder"):
        O.ZeroShotDetector(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="cannot load"):
        O.ZeroShotDetector(tmp_path / "empty")
