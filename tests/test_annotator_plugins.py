"""Annotator plug-ins (annotators.registry): a new hand backend in one new file plus one
registration line reaches `vipa annotate --hands NAME` and its --help; a plug-in derive stage
is written by write_annotation and recomputed by the workbench's re-derive path.

Files a new hand backend needs (measured here): the backend's own module (which calls
``register_hand_backend``) and one line that imports it (an entry point in the group
``vipa.annotators``, here a stand-in distribution's entry_points.txt, or an import in
annotators/backends/__init__.py). Before the registry: that module, plus annotators/hands.py
(``create_hand_backend``, for a name), annotators/cli.py (a flag and its options) and
annotators/pipeline.py (AnnotateConfig and the stage's call).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from annotators import registry
from annotators.pipeline import AnnotateConfig, derive_products, run_pipeline, write_annotation
from annotators.synthetic import generate_episode
from vipa.conventions import HANDS
from vipa.data.dataset import Hand3DDataset

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A hand backend that replays recorded detections (.npz: uv (T, 21, 2) px, world (T, 21, 3) m, present (T,))."""
import numpy as np

from annotators.hands import HandBackend, HandDetection
from annotators.registry import register_hand_backend


class ReplayHands(HandBackend):
    """Replays detections from an .npz file."""

    name = "replay"

    def __init__(self, *, truth: str = "", side: str = "right", confidence: float = 0.9) -> None:
        if not truth:
            raise ValueError("replay: give --hands-opt truth=FILE")
        data = np.load(truth)
        self.uv, self.world, self.present = data["uv"], data["world"], data["present"]
        self.side, self.conf, self.t = side, float(confidence), 0

    def reset(self) -> None:
        self.t = 0

    def describe(self) -> dict:
        return {"name": self.name, "side": self.side}

    def detect(self, frame_rgb):
        t, self.t = self.t, self.t + 1
        if not self.present[t]:
            return []
        conf = np.full(21, self.conf, np.float32)
        return [HandDetection(self.side, self.uv[t].astype(np.float32), self.world[t].astype(np.float32),
                              conf, self.conf, np.ones(21, bool))]


register_hand_backend("replay", ReplayHands, description="replays recorded hand detections from an .npz file")
'''


def _write_input(ep, folder: Path) -> Path:
    """A synthetic episode as a TUM-style RGB-D folder (rgb/, depth/ uint16 mm, K.txt)."""
    import cv2

    from vipa.geometry import intrinsics_to_opencv

    (folder / "rgb").mkdir(parents=True)
    (folder / "depth").mkdir()
    for t in range(ep.num_frames):
        stamp = f"{t / ep.fps:.6f}"
        cv2.imwrite(str(folder / "rgb" / f"{stamp}.png"), ep.rgb[t][..., ::-1])
        mm = np.nan_to_num(ep.depth_raw[t] * (ep.depth_unit / 0.001), nan=0.0)
        cv2.imwrite(str(folder / "depth" / f"{stamp}.png"), np.clip(np.round(mm), 0, 65535).astype(np.uint16))
    np.savetxt(folder / "K.txt", intrinsics_to_opencv(ep.K))
    return folder


@pytest.fixture(scope="module")
def episode():
    return generate_episode(5, width=160, height=160, num_frames=12)


def _side(ep) -> str:
    return next(s for s in HANDS if ep.hands[s].present.any())


def test_new_hand_backend_from_a_plugin_file_reaches_the_cli(tmp_path, episode):
    side = _side(episode)
    tr = episode.hands[side]
    truth = tmp_path / "truth.npz"
    np.savez(truth, uv=tr.joints_2d, world=tr.joints_3d - np.nanmean(tr.joints_3d, axis=1, keepdims=True),
             present=tr.present)
    src = _write_input(episode, tmp_path / "clip")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "replay_hands.py").write_text(textwrap.dedent(PLUGIN))  # file 1: the backend
    dist = plugins / "replay_hands-0.1.dist-info"  # what `pip install` of a package declaring the entry point leaves
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: replay-hands\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[vipa.annotators]\nreplay = replay_hands\n")  # the one registration line
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(plugins)])}

    help_text = subprocess.run([sys.executable, "-m", "annotators.cli", "--help"], env=env, capture_output=True,
                               text=True, timeout=300)
    assert help_text.returncode == 0, help_text.stderr[-2000:]
    assert "replays recorded hand detections from an .npz file" in help_text.stdout
    assert "truth=''" in help_text.stdout and "side='right'" in help_text.stdout and "confidence=0.9" in help_text.stdout

    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "annotators.cli", str(src), "--out", str(out), "--hands", "replay",
           "--hands-opt", f"truth={truth}", "--hands-opt", f"side={side}", "--hands-opt", "confidence=0.8",
           "--depth", "sensor", "--depth-factor", "1000", "--quiet"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ds = Hand3DDataset.open(out)
    ep = ds.load_episode("clip")
    got = ep.hands[side]
    assert (got.present == tr.present).all()
    assert ep.extra["hands_backend"] == {"name": "replay", "side": side}  # the backend's describe()
    assert np.allclose(got.confidence[got.present], 0.8)
    err = np.linalg.norm(got.joints_3d - tr.joints_3d, axis=-1)[tr.present]
    assert np.nanmedian(err) < 0.05  # replayed exact 2D + metric sensor depth: the lift lands on the hand (160 px)
    assert ep.extra["annotate_config"]["stages"]["hands"] == {
        "backend": "replay", "options": {"truth": str(truth), "side": side, "confidence": 0.8}, "require_hands": True}

    bad = subprocess.run(cmd[:-1] + ["--hands-opt", "colour=red", "--quiet"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "unknown option 'colour'" in bad.stderr
    unknown = subprocess.run(cmd[:6] + ["--hands", "hamer", "--quiet"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert unknown.returncode == 2 and "registered: mediapipe" in unknown.stderr


@dataclass
class ReachConfig:
    """Settings of the test's derive stage."""

    enabled: bool = True
    every: int = 2


def _reach(ep, cfg: ReachConfig, seed: int) -> list[dict]:
    """Wrist distance from the camera every ``cfg.every`` frames."""
    if not cfg.enabled:
        return []
    side = _side(ep)
    wrist = ep.hands[side].joints_3d[:, 0]
    return [{"frame": t, "side": side, "reach_m": round(float(np.linalg.norm(wrist[t])), 6)}
            for t in range(0, ep.num_frames, cfg.every) if np.isfinite(wrist[t]).all()]


def test_plugin_derive_stage_is_written_and_rederived(tmp_path, episode):
    from tests.test_pipeline import GroundTruthHands

    registry.register_stage("reach", None, ReachConfig, after="motion", derive=_reach, product="reach")
    try:
        names = [s.name for s in registry.stages()]
        assert names.index("reach") == names.index("motion") + 1
        src = _write_input(episode, tmp_path / "clip")
        cfg = AnnotateConfig(depth={"backend": "sensor"}, decode={"depth_factor": 1000.0}, reach={"every": 3},
                             objects={"backends": ()})
        ann = run_pipeline(src, cfg, hand_backend=GroundTruthHands(episode, noise_px=0.0))
        assert ann.products["reach"] and all(r["frame"] % 3 == 0 for r in ann.products["reach"])
        assert "reach" in ann.timings
        ds = Hand3DDataset.create(tmp_path / "ds")
        write_annotation(ds, ann)
        assert ds.read_derived("clip", "reach") == ann.products["reach"]
        assert set(derive_products(ds.load_episode("clip"))) == {"qa", "motion", "reach"}
        from app.workbench import Workbench

        Workbench(tmp_path / "ds").rederive("clip")  # after corrections: every derive stage, default configs
        frames = [r["frame"] for r in ds.read_derived("clip", "reach")]
        assert frames and all(f % 2 == 0 for f in frames) and frames != [r["frame"] for r in ann.products["reach"]]
        assert ds.read_derived("clip", "qa") == derive_products(ds.load_episode("clip"))["qa"]
    finally:
        registry.unregister_stage("reach")
    assert "reach" not in AnnotateConfig().stages


def _cli_config(argv: list[str]) -> AnnotateConfig:
    import argparse

    from annotators import cli

    parser = argparse.ArgumentParser(prog="vipa")
    cli.register(parser.add_subparsers(dest="command"))
    return cli.build_config(parser.parse_args(["annotate", "in.mp4", "--out", "ds", *argv]))


def test_cli_flags_build_the_stage_configs():
    cfg = _cli_config([])
    assert cfg == AnnotateConfig().validate()  # the CLI's defaults are the library's
    cfg = _cli_config(["--objects", "grasp,boxes:b.json", "--objects-opt", "grasp.stride=3", "--detector", "/m/owl",
                       "--labels", "cup, box", "--depth", "hf:/m/dpt", "--depth-opt", "output=disparity",
                       "--hands-opt", "max_num_hands=1", "--hands-opt", "mirrored_input=yes", "--gamma", "0.2",
                       "--set", "calibrate.mode=frame", "--set", "lift.max_reproj_px=none", "--no-smooth"])
    assert cfg.objects.backends == ("grasp", "boxes:b.json", "detector:/m/owl")
    assert cfg.objects.options == {"grasp": {"stride": 3}, "detector": {"labels": ("cup", "box")}}
    assert cfg.depth.backend == "hf:/m/dpt" and cfg.depth.options == {"output": "disparity"}
    assert cfg.hands.options == {"max_num_hands": 1, "mirrored_input": True}
    assert cfg.qa.gamma == cfg.motion.gamma == 0.2
    assert cfg.calibrate.mode == "frame" and cfg.lift.max_reproj_px is None and not cfg.smooth.enabled
    assert _cli_config(["--no-objects"]).objects.backends == ()
    for argv, msg in ((["--hands-opt", "max_num_hands=two"], "max_num_hands"),
                      (["--objects-opt", "stride=3"], "NAME.KEY=VALUE"),
                      (["--labels", "cup"], "not selected"),
                      (["--set", "calibrate.mode=sometimes"], "calibrate.mode"),
                      (["--set", "nowhere.x=1"], "STAGE.FIELD")):
        with pytest.raises(ValueError, match=msg):
            _cli_config(argv)


def test_boxes_backend_lifts_file_boxes(tmp_path, episode):
    import json

    o = episode.objects[0]
    frames = [t for t in range(episode.num_frames) if np.isfinite(o.box_2d[t]).all()][:3]
    (tmp_path / "b.json").write_text(json.dumps({"mug": {str(t): o.box_2d[t].tolist() for t in frames}}))
    tracks = registry.build_backend("objects", f"boxes:{tmp_path / 'b.json'}")(episode)
    assert [(t.name, t.provenance) for t in tracks] == [("mug", "manual")]
    assert np.isfinite(tracks[0].center[frames]).all()
    assert np.nanmedian(np.linalg.norm(tracks[0].center[frames] - o.center[frames], axis=-1)) < 0.05
    (tmp_path / "bad.json").write_text(json.dumps({"mug": {"x": [1, 2, 3, 4]}}))
    with pytest.raises(ValueError, match="bad.json"):
        registry.build_backend("objects", f"boxes:{tmp_path / 'bad.json'}")
