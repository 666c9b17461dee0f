"""Depth backends: sensor, hf:PATH (tiny random-weight models saved locally, no download), none."""

from __future__ import annotations

import numpy as np
import pytest

from annotators.depth import HFDepth, NoDepth, SensorDepth, parse
from annotators.errors import BackendError
from annotators.io import open_source
from vipa.resources import SAMPLE_RGBD

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _save_tiny_depth_anything(folder) -> None:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=70, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                              head_hidden_size=8, reassemble_hidden_size=32)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(folder)
    DPTImageProcessor(size={"height": 70, "width": 70}, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(folder)


def _save_tiny_dpt(folder) -> None:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
                    patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32],
                    fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1)
    DPTForDepthEstimation(cfg).save_pretrained(folder)
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth_models")
    _save_tiny_depth_anything(root / "da")
    _save_tiny_dpt(root / "dpt")
    return root


@pytest.fixture(scope="module")
def tum_frame():
    with open_source(SAMPLE_RGBD) as src:
        return next(iter(src))


@pytest.mark.parametrize("name", ["da", "dpt"])
def test_hf_backend_from_local_folder_matches_frame_size(tiny_models, name):
    rgb = np.random.default_rng(0).integers(0, 256, (75, 131, 3), dtype=np.uint8)  # odd, non-square size
    with parse(f"hf:{tiny_models / name}") as backend:
        assert isinstance(backend, HFDepth) and backend.metric is False
        assert backend.output == "disparity"  # both are relative (inverse-depth) models
        d = backend.predict(rgb)
        assert d.shape == (75, 131) and d.dtype == np.float32
        assert np.isfinite(d).any()
        assert np.all(d[np.isfinite(d)] > 0)
        assert backend.describe()["model_type"] in ("depth_anything", "dpt")


def test_hf_disparity_is_inverted_into_depth(tiny_models):
    rgb = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    disp_as_depth = HFDepth(tiny_models / "da", output="disparity").predict(rgb)
    raw = HFDepth(tiny_models / "da", output="depth").predict(rgb)  # the model's own output, masked <= 0
    both = np.isfinite(raw) & np.isfinite(disp_as_depth)
    assert both.any()
    np.testing.assert_allclose(disp_as_depth[both], 1.0 / raw[both], rtol=1e-5)


def test_hf_batch_equals_single(tiny_models):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    b = HFDepth(tiny_models / "dpt", output="depth")  # compare raw outputs (1/x amplifies float noise)
    batch = b.predict_batch(frames)
    for f, d in zip(frames, batch):
        np.testing.assert_allclose(d, b.predict(f), rtol=1e-3, atol=1e-6, equal_nan=True)


def test_hf_missing_or_wrong_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="does not exist") as ei:
        parse(f"hf:{tmp_path / 'nope'}")
    assert str(tmp_path / "nope") in str(ei.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="config.json"):
        parse(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(BackendError, match="local model folder"):
        parse("hf:")


def test_hf_folder_without_processor_is_a_clear_error(tiny_models, tmp_path):
    import shutil

    shutil.copytree(tiny_models / "dpt", tmp_path / "m")
    (tmp_path / "m" / "preprocessor_config.json").unlink()
    with pytest.raises(BackendError, match="cannot load"):
        parse(f"hf:{tmp_path / 'm'}")


def test_sensor_backend_returns_the_rgbd_depth_in_metres(tum_frame):
    backend = parse("sensor")
    assert isinstance(backend, SensorDepth) and backend.metric
    d = backend(tum_frame)
    assert d.shape == tum_frame.rgb.shape[:2] and d.dtype == np.float32
    valid = np.isfinite(d)
    assert 0.5 < valid.mean() < 1.0  # the Kinect frame has holes (0 -> NaN)
    assert 0.3 < np.nanmin(d) and np.nanmax(d) < 10.0  # metres, indoor table scene
    with pytest.raises(BackendError, match="no depth"):
        backend.predict(tum_frame.rgb, None)


def test_none_and_unknown_specs():
    assert isinstance(parse("none"), NoDepth)
    assert parse("none").predict(np.zeros((4, 4, 3), np.uint8)) is None
    for bad in ("lidar", "", "hf"):
        with pytest.raises(BackendError):
            parse(bad)
