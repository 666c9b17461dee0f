"""scripts/loco_real_clips.py on a tiny setting: two real clips cut to 40 frames, 3 small synthetic
episodes, 2 stage-2 steps per fold from checkpoints/tiny_sample; then resumed (nothing redone); then
the synthetic-only control (--real-weight 0) on the same annotation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLIPS = [REPO / "samples/real_clips/mediapipe_samples/hand_reach.mp4", REPO / "samples/real_clips/mediapipe_samples/typing.mp4"]


def _script():
    spec = importlib.util.spec_from_file_location("loco_real_clips", REPO / "scripts" / "loco_real_clips.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_loco_two_short_clips(tmp_path, monkeypatch):
    monkeypatch.setenv("VIPA_CACHE_DIR", str(tmp_path / "frame_cache"))
    work = tmp_path / "loco"
    argv = ["--work", str(work), "--clips", *map(str, CLIPS), "--max-frames", "40", "--steps", "2",
            "--batch-size", "4", "--synthetic", "3", "--synthetic-size", "48", "--synthetic-frames", "12", "--every", "4", "--seen"]
    loco = _script()
    assert loco.main(argv) == 0
    rep = json.loads((work / "report.json").read_text())
    assert set(rep["per_clip"]) == {"hand_reach", "typing"} and rep["inputs"] == "RGB only"
    assert rep["init"]["copied_from"].endswith("tiny_sample") and (work / "init" / "model.safetensors").is_file()
    for eid, r in rep["per_clip"].items():
        z, f = r["zero_shot"], r["loco"]
        assert z["n"] == f["n"] > 0
        # Same samples: holding still is the same figure for both.
        assert (z["hold_ade"], z["hold_fde"]) == (f["hold_ade"], f["hold_fde"])
        assert all(f[k] >= 0 for k in ("ade", "fde", "motion_ade", "motion_fde", "pointer"))
        ev = json.loads((work / "folds" / eid / "eval.json").read_text())
        assert ev["trained_on"] == [e for e in ("hand_reach", "typing") if e != eid] and ev["train"]["steps"] == 2
        info = json.loads((work / "folds" / eid / "run" / "final" / "config.json").read_text())
        assert info["real_episodes"] == ev["trained_on"] and eid not in info["real_episodes"]
    assert rep["pooled"]["loco"]["n"] == sum(r["loco"]["n"] for r in rep["per_clip"].values())
    # --seen: each fold's model on the clip it trained on (the other one here)
    assert rep["per_clip"]["hand_reach"]["seen"]["n"] == rep["per_clip"]["typing"]["loco"]["n"]
    assert rep["pooled"]["seen"]["n"] == rep["pooled"]["loco"]["n"]
    assert "| **pooled (all samples)** |" in (work / "table.md").read_text()
    # The displacement scale fitted on the training clips: scale 1 is the motion figure, 0 holding still.
    for eid, r in rep["per_clip"].items():
        rows = json.loads((work / "folds" / eid / "eval.json").read_text())["samples"]
        one, zero = loco.scaled_motion(rows, 1.0), loco.scaled_motion(rows, 0.0)
        assert abs(one["motion_ade"] - r["loco"]["motion_ade"]) < 0.02 and abs(zero["motion_ade"] - r["loco"]["hold_ade"]) < 0.02
        assert r["loco_scaled"]["scale"] in loco.SCALES
    assert rep["pooled"]["loco_scaled"]["n"] == rep["pooled"]["loco"]["n"]
    # Resumable: finished folds and zero-shot evaluations are not redone.
    stamps = {p: p.stat().st_mtime_ns for p in work.glob("*/*.json") if p.parent.name in ("zero_shot",)}
    stamps |= {p: p.stat().st_mtime_ns for p in work.glob("folds/*/*.json")}
    assert loco.main(argv) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert json.loads((work / "report.json").read_text())["per_clip"] == rep["per_clip"]
    # The synthetic-only control: one continuation without real clips, evaluated on the same samples.
    ctrl = tmp_path / "control"
    ctrl.mkdir()
    for name in ("ds", "syn", "zero_shot"):
        (ctrl / name).symlink_to(work / name)
    assert loco.main([*argv[:1], str(ctrl), *argv[2:], "--real-weight", "0"]) == 0
    rc = json.loads((ctrl / "report.json").read_text())
    assert json.loads((ctrl / "synthetic_only" / "train.json").read_text())["steps"] == 2
    assert not (ctrl / "folds" / "hand_reach" / "run").exists()
    for eid, r in rc["per_clip"].items():
        assert json.loads((ctrl / "folds" / eid / "eval.json").read_text())["trained_on"] == []
        assert r["loco"]["n"] == rep["per_clip"][eid]["loco"]["n"]
        assert r["loco"]["hold_ade"] == rep["per_clip"][eid]["loco"]["hold_ade"]
    info = json.loads((ctrl / "synthetic_only" / "run" / "final" / "config.json").read_text())
    assert "real_episodes" not in info


def test_fit_scale_finds_the_displacement_factor():
    """fit_scale picks the grid factor that turns the predicted displacement into the true one."""
    import numpy as np

    loco = _script()
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(20):
        disp = rng.normal(0, 0.05, (8, 3))
        rows.append({"disp": disp.tolist(), "future": (0.35 * disp + rng.normal(0, 0.002, (8, 3))).tolist()})
    assert loco.fit_scale(rows) == pytest.approx(0.35)
    assert loco.scaled_motion(rows, 0.35)["motion_ade"] < loco.scaled_motion(rows, 0.0)["motion_ade"]
    assert loco.fit_scale([{"disp": r["disp"], "future": np.zeros((8, 3)).tolist()} for r in rows]) == 0.0
