"""Inputs that lie a little, hand-free RGB-D scenes in every layout, and batches that lose nothing.

Every input is made here: unicode file names, an mp4 whose container declares more frames than
it holds (its ``stts`` count patched), intrinsics files written for another image size, hand-free
tabletop RGB-D folders in the TUM, folders, YCB/PoseCNN (json, txt, mat metadata) and
single-pair layouts (the scene from ``test_tabletop.render_tabletop``), a process killed between
an episode's files and its completion marker, and a parent killed with its workers running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from annotators.batch import annotate_to_dataset, plan_episodes, readable_name, source_hash
from annotators.errors import BackendError, InputError
from annotators.io import fit_intrinsics, likely_depth_factor, open_source, read_intrinsics_file, rgbd_layout
from annotators.pipeline import AnnotateConfig, decode
from vipa.data.dataset import Hand3DDataset
from vipa.geometry import intrinsics_to_opencv
from vipa.resources import REPO_ROOT, SAMPLE_VIDEO

FAST = {"decode": {"max_frames": 2, "max_width": 320}}
ROOT = str(REPO_ROOT)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ------------------------------------------------------------------ videos that overstate their length


def _encode(path: Path, n: int, size=(64, 48), fps: int = 10) -> Path:
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=fps)
        st.width, st.height = size
        st.pix_fmt = "yuv420p"
        for i in range(n):
            f = np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8)
            for pk in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    return path


def _declare_extra_frames(src: Path, dst: Path, extra: int) -> Path:
    """Copy an mp4, raising the sample count of its last ``stts`` entry (what the container declares)."""
    b = bytearray(src.read_bytes())
    i = b.find(b"stts")
    n = struct.unpack(">I", b[i + 8:i + 12])[0]
    at = i + 12 + 8 * (n - 1)
    count = struct.unpack(">I", b[at:at + 4])[0]
    b[at:at + 4] = struct.pack(">I", count + extra)
    dst.write_bytes(bytes(b))
    return dst


def test_container_declaring_extra_frames_is_annotated_with_a_warning(tmp_path, capsys):
    plain = _encode(tmp_path / "plain.mp4", 30)
    lying = _declare_extra_frames(plain, tmp_path / "lying.mp4", 2)
    with av.open(str(lying)) as c:
        assert c.streams.video[0].frames == 32  # the container now declares 32
    with open_source(lying) as src:
        assert src.info.num_frames == 32
        frames = list(src)
        assert len(frames) == 30 and src.info.num_frames == 30 and src.info.extra["declared_frames"] == 32
    err = capsys.readouterr().err
    assert "WARNING:" in err and "declares 32 frames but holds 30" in err and str(lying) in err
    dec = decode(lying, AnnotateConfig(decode={"max_width": None}).decode)
    assert len(dec.rgb) == 30 and any("holds 30" in w for w in dec.info.extra["warnings"])
    # far more declared than held is still a truncated file
    truncated = _declare_extra_frames(plain, tmp_path / "truncated.mp4", 30)
    with pytest.raises(InputError, match="truncated video: decoded 30 of the 60"):
        list(open_source(truncated))


def test_warning_reaches_the_episode_and_the_batch_report(tmp_path, capsys):
    lying = _declare_extra_frames(_encode(tmp_path / "plain.mp4", 12), tmp_path / "lying.mp4", 2)
    report = annotate_to_dataset([lying], tmp_path / "ds", AnnotateConfig(decode={"max_width": None}))
    (o,) = report.outcomes
    assert o.status == "ok" and o.num_frames == 12 and any("holds 12" in w for w in o.warnings)
    ep = Hand3DDataset.open(tmp_path / "ds").load_episode(o.episode_id)
    assert any("declares 14 frames" in w for w in ep.extra["warnings"])


# ------------------------------------------------------------------ intrinsics for another image size


def _image_folder(folder: Path, size=(160, 120), n: int = 2) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.full((size[1], size[0], 3), 90 + i, np.uint8))
    return folder


def _o3d_camera(path: Path, w: int, h: int, fx: float, cx: float, cy: float) -> Path:
    K = [fx, 0, 0, 0, fx, 0, cx, cy, 1]  # Open3D: column-major, OpenCV pixel centres
    path.write_text(json.dumps({"width": w, "height": h, "intrinsic_matrix": K}))
    return path


def test_intrinsics_for_another_size_are_scaled_or_refused(tmp_path, capsys):
    cam = _o3d_camera(tmp_path / "cam_320x240.json", 320, 240, 300.0, 159.5, 119.5)
    K, size = read_intrinsics_file(cam)
    assert size == (320, 240) and K[0, 2] == pytest.approx(160.0)
    # the same aspect ratio: scaled to the 160x120 input, with a warning naming both sizes
    folder = _image_folder(tmp_path / "imgs")
    shutil.copy(cam, folder / "camera.json")
    with open_source(folder) as src:
        assert not src.info.K_is_estimate
        assert np.allclose(src.info.K, [[150, 0, 80], [0, 150, 60], [0, 0, 1]], atol=1e-4)
    assert "stated for 320x240 scaled by 0.5 to the 160x120 input" in capsys.readouterr().err
    # another aspect ratio: refused, naming the file and both sizes
    wide = _o3d_camera(tmp_path / "cam_320x180.json", 320, 180, 300.0, 159.5, 89.5)
    with pytest.raises(InputError, match=r"cam_320x180.json: intrinsics are for a 320x180 image but the input is 160x120"):
        fit_intrinsics(read_intrinsics_file(wide)[0], wide, (320, 180), 160, 120)
    folder2 = _image_folder(tmp_path / "imgs2")
    shutil.copy(wide, folder2 / "camera.json")
    with pytest.raises(InputError, match="another aspect ratio"):
        open_source(folder2)
    # no size stated, principal point outside the image: written for another size, refused
    with pytest.raises(InputError, match=r"principal point \(320.0, 240.0\) lies outside the 160x120 input"):
        open_source(folder, K=np.array([[500, 0, 320], [0, 500, 240], [0, 0, 1]], np.float32))


def test_cli_intrinsics_file_keeps_its_size(tmp_path):
    import argparse

    from annotators import cli

    cam = _o3d_camera(tmp_path / "cam.json", 320, 240, 300.0, 159.5, 119.5)
    parser = argparse.ArgumentParser(prog="vipa")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["annotate", "x", "--out", str(tmp_path / "ds"), "--intrinsics", str(cam)])
    cfg = cli.build_config(args)
    assert cfg.decode.K_size == [320, 240]
    dec = decode(_image_folder(tmp_path / "imgs"), cfg.decode)
    assert np.allclose(dec.info.K[:2, 2], [80, 60]) and dec.info.K[0, 0] == pytest.approx(150)


# ------------------------------------------------------------------ depth unit that disagrees with the hands


def test_likely_depth_factor_names_the_unit():
    assert likely_depth_factor(0.2, 5000) == (1000.0, "millimetres")
    assert likely_depth_factor(5.0, 1000) == (5000.0, "TUM's 0.2 mm counts")
    assert likely_depth_factor(10.0, 1000)[1].startswith("0.1 mm")
    assert likely_depth_factor(0.73, 1000)[1] == "about 730 counts per metre"


def test_depth_in_millimetres_read_with_the_tum_factor_warns_on_the_console(tmp_path, capsys):
    from test_pipeline import GroundTruthHands, write_rgbd_folder

    from annotators.pipeline import run_pipeline
    from annotators.synthetic import generate_episode

    gt = generate_episode(3, num_frames=12)
    src = write_rgbd_folder(gt, tmp_path / "clip_mm")  # uint16 millimetres
    cfg = dict(depth={"backend": "sensor"}, objects={"backends": ()}, qa={"enabled": False}, motion={"enabled": False})
    ep = run_pipeline(src, AnnotateConfig(**cfg), hand_backend=GroundTruthHands(gt)).episode  # TUM's 5000
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("WARNING:"))
    assert "millimetres (--depth-factor 1000)" in line and "depth factor 5000" in line and str(src) in line
    assert ep.extra["warnings"] and "millimetres" in ep.extra["warnings"][0]
    ep = run_pipeline(src, AnnotateConfig(decode={"depth_factor": 1000.0}, **cfg), hand_backend=GroundTruthHands(gt)).episode
    assert "WARNING" not in capsys.readouterr().err and not ep.extra["warnings"]
    # float depth files hold metres: millimetres stored as floats are named as such
    for png in sorted((src / "depth").glob("*.png")):
        np.save(png.with_suffix(".npy"), cv2.imread(str(png), cv2.IMREAD_UNCHANGED).astype(np.float32))
        png.unlink()
    run_pipeline(src, AnnotateConfig(**cfg), hand_backend=GroundTruthHands(gt))
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("WARNING:"))
    assert "float depth files look like millimetres (divide by 1000 for metres)" in line


# ------------------------------------------------------------------ hand-free RGB-D scenes, every layout


@pytest.fixture(scope="module")
def scene():
    from test_tabletop import render_tabletop

    return render_tabletop(5)


def _mm(depth: np.ndarray, factor: float = 1000.0) -> np.ndarray:
    return np.clip(np.round(np.nan_to_num(depth, nan=0.0) * factor), 0, 65535).astype(np.uint16)


def _write_layout(scene, folder: Path, layout: str, n: int = 2) -> Path:
    """The scene (static, ``n`` frames) as an RGB-D folder in ``layout``."""
    folder.mkdir(parents=True)
    bgr = scene.rgb[..., ::-1]
    K_cv = intrinsics_to_opencv(scene.K)
    if layout == "tum":
        (folder / "rgb").mkdir()
        (folder / "depth").mkdir()
        rgb_lines, depth_lines = ["# color images"], ["# depth maps"]
        for i in range(n):
            tc, td = 1305031102.175304 + i / 30, 1305031102.160407 + i / 30 + 0.003  # Kinect: offset clocks
            cv2.imwrite(str(folder / "rgb" / f"{tc:.6f}.png"), bgr)
            cv2.imwrite(str(folder / "depth" / f"{td:.6f}.png"), _mm(scene.depth, 5000))
            rgb_lines.append(f"{tc:.6f} rgb/{tc:.6f}.png")
            depth_lines.append(f"{td:.6f} depth/{td:.6f}.png")
        (folder / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
        (folder / "depth.txt").write_text("\n".join(depth_lines) + "\n")
        np.savetxt(folder / "K.txt", K_cv)
    elif layout == "folders":
        (folder / "color").mkdir()
        (folder / "depth").mkdir()
        for i in range(n):
            cv2.imwrite(str(folder / "color" / f"{i:06d}.jpg"), bgr)
            cv2.imwrite(str(folder / "depth" / f"{i:06d}.png"), _mm(scene.depth, 5000))
        np.savetxt(folder / "K.txt", K_cv)
    elif layout.startswith("ycb"):
        for i in range(n):
            cv2.imwrite(str(folder / f"{i:06d}-color.png"), bgr)
            cv2.imwrite(str(folder / f"{i:06d}-depth.png"), _mm(scene.depth, 10000))  # YCB-Video: 10000 counts/m
            meta = folder / f"{i:06d}-meta"
            if layout == "ycb_json":
                meta.with_suffix(".json").write_text(json.dumps({"intrinsic_matrix": K_cv.tolist(), "factor_depth": 10000}))
            elif layout == "ycb_txt":
                np.savetxt(meta.with_suffix(".txt"), np.append(K_cv.reshape(-1), 10000.0)[None])
            else:
                from scipy.io import savemat

                savemat(str(meta.with_suffix(".mat")), {"intrinsic_matrix": K_cv, "factor_depth": np.array([[10000.0]]),
                                                        "poses": np.zeros((3, 4, 1))})
    elif layout == "pair":
        cv2.imwrite(str(folder / "scene_color.png"), bgr)
        cv2.imwrite(str(folder / "scene_depth.png"), _mm(scene.depth, 5000))
        (folder / "camera.json").write_text(json.dumps(
            {"fx": float(K_cv[0, 0]), "fy": float(K_cv[1, 1]), "cx": float(K_cv[0, 2]), "cy": float(K_cv[1, 2])}))
    return folder


LAYOUTS = {"tum": "tum", "folders": "folders", "ycb_json": "ycb", "ycb_txt": "ycb", "ycb_mat": "ycb", "pair": "pair"}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_hand_free_rgbd_folder_in_each_layout_is_read(tmp_path, scene, layout, capsys):
    folder = _write_layout(scene, tmp_path / layout, layout)
    assert rgbd_layout(folder) == LAYOUTS[layout]
    with open_source(folder) as src:
        frames = list(src)
        info = src.info
    said = capsys.readouterr().err
    assert f"{folder}: RGB-D layout: " in said
    assert info.kind == "rgbd" and info.extra["layout"] == said.split("RGB-D layout: ")[1].strip()
    assert len(frames) == (1 if layout == "pair" else 2) and not info.K_is_estimate
    assert np.allclose(info.K, scene.K, atol=1e-3)
    if layout.startswith("ycb"):
        assert info.depth_factor == 10000.0 and info.extra["depth_factor_from"].endswith(layout.split("_")[1])
    d = frames[0].depth
    ok = np.isfinite(scene.depth) & np.isfinite(d)
    assert ok.mean() > 0.95 and np.abs(d[ok] - scene.depth[ok]).max() < 0.0012


def test_ycb_folder_is_no_longer_read_as_colour_frames(tmp_path, scene):
    folder = _write_layout(scene, tmp_path / "ycb", "ycb_json", n=3)
    with open_source(folder) as src:
        assert src.info.kind == "rgbd" and src.info.num_frames == 3  # not 6 "images", depth PNGs included


@pytest.fixture(scope="module")
def hand_free_batch(tmp_path_factory, scene):
    d = tmp_path_factory.mktemp("handfree")
    inputs = [_write_layout(scene, d / name, name) for name in ("tum", "ycb_json")]
    out = d / "ds"
    report = annotate_to_dataset(inputs, out, AnnotateConfig(decode={"max_frames": 2, "max_width": None}))
    return inputs, out, report


def test_hand_free_episode_gets_cloud_objects_and_quality(hand_free_batch, scene):
    inputs, out, report = hand_free_batch
    assert [o.status for o in report.outcomes] == ["ok", "ok"], report.to_dict()
    ds = Hand3DDataset.open(out)
    for o in report.outcomes:
        assert ds.is_finished(o.episode_id)
        ep = ds.load_episode(o.episode_id, media=True)
        assert ep.extra["hand_free"] and ep.frame_valid.all() and ds.has_depth(o.episode_id)
        assert np.allclose(ep.depth_scale, 1.0)
        depth = ds.depth_frame(o.episode_id, 0)
        ok = np.isfinite(depth) & np.isfinite(scene.depth)
        assert ok.mean() > 0.9 and np.median(np.abs(depth[ok] - scene.depth[ok])) < 0.002
        assert ep.quality["detection_rate"] == 0.0 and "dropped_fraction" in ep.quality
        centers = np.array([obj.center[0] for obj in ep.objects])
        assert all(obj.provenance == "tabletop" for obj in ep.objects)
        hit = (np.linalg.norm(scene.centers[:, None] - centers[None], axis=-1).min(1) <= 0.05).sum()
        assert hit >= 7, (o.episode_id, hit, len(ep.objects))


def test_require_hands_makes_a_hand_free_input_an_error(tmp_path, scene):
    folder = _write_layout(scene, tmp_path / "scene", "pair")
    report = annotate_to_dataset([folder], tmp_path / "ds", AnnotateConfig(hands={"require_hands": True}, **FAST))
    (o,) = report.outcomes
    assert o.status == "failed" and "no hands found" in o.error


# ------------------------------------------------------------------ episode ids


def test_unicode_names_get_their_own_episodes(tmp_path):
    a, b = tmp_path / "日本.mp4", tmp_path / "中国.mp4"
    shutil.copy(SAMPLE_VIDEO, a)
    shutil.copy(SAMPLE_VIDEO, b)
    (ia, _), (ib, _) = plan_episodes([a, b])
    assert ia != ib and ia.startswith("日本") and ib.startswith("中国")
    out = tmp_path / "ds"
    r1 = annotate_to_dataset([a], out, AnnotateConfig(**FAST))
    r2 = annotate_to_dataset([b], out, AnnotateConfig(**FAST))  # a separate run: not skipped as "the same"
    assert [o.status for o in r1.outcomes + r2.outcomes] == ["ok", "ok"]
    ds = Hand3DDataset.open(out)
    assert sorted(ds.episode_ids()) == sorted([ia, ib])
    assert {ds.load_episode(i).source for i in (ia, ib)} == {str(a), str(b)}


def test_ids_unique_per_input_and_stable(tmp_path):
    a, b = tmp_path / "x" / "clip.mp4", tmp_path / "y" / "clip.mp4"
    assert plan_episodes([tmp_path / "good.mp4"]) == [("good", str(tmp_path / "good.mp4"))]  # safe names stay
    assert plan_episodes([tmp_path / "my clip.mp4"])[0][0] == f"my_clip-{source_hash(tmp_path / 'my clip.mp4')}"
    assert readable_name("/v/Café au lait.mov") == "Café_au_lait"
    ds = Hand3DDataset.create(tmp_path / "ds")
    ds.record_failure("clip", str(a), "an earlier run")  # the dataset knows x/clip.mp4 as "clip"
    assert plan_episodes([a], ds) == [("clip", str(a))]  # resumed under its id
    (eid, _), = plan_episodes([b], ds)  # another file with that name: its own id, not "clip"
    assert eid == f"clip-{source_hash(b)}"
    assert dict(plan_episodes([a, b], ds)) == {"clip": str(a), eid: str(b)}
    assert plan_episodes([a, a, b], ds) == plan_episodes([a, b], ds)  # one input given twice: planned once


def test_depth_model_path_checked_before_any_input_is_decoded(tmp_path, monkeypatch, capsys):
    import argparse

    import annotators.io
    from annotators import cli

    def no_decoding(*a, **k):
        raise AssertionError("an input was opened before the options were checked")

    monkeypatch.setattr(annotators.io, "open_source", no_decoding)
    parser = argparse.ArgumentParser(prog="vipa")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["annotate", str(SAMPLE_VIDEO), "--out", str(tmp_path / "ds"),
                              "--depth", "hf:/missing/folder", "--quiet"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "hf:/missing/folder" in err and "does not exist" in err
    assert not (tmp_path / "ds").exists()
    with pytest.raises(BackendError, match="no config.json"):
        (tmp_path / "empty_model").mkdir()
        annotate_to_dataset([SAMPLE_VIDEO], tmp_path / "ds2", AnnotateConfig(depth={"backend": f"hf:{tmp_path / 'empty_model'}"}))
    with pytest.raises(BackendError, match="detector"):
        annotate_to_dataset([SAMPLE_VIDEO], tmp_path / "ds2", AnnotateConfig(objects={"backends": (f"detector:{tmp_path / 'nowhere'}",)}))
    assert not (tmp_path / "ds2").exists()


# ------------------------------------------------------------------ completion marker


def test_kill_between_episode_files_and_completion_marker_is_redone(tmp_path):
    video = tmp_path / "clip.mp4"
    shutil.copy(SAMPLE_VIDEO, video)
    out = tmp_path / "ds"
    script = (
        "import os, signal, sys\n"
        "from vipa.data.reader import Hand3DDataset\n"
        "Hand3DDataset.mark_complete = lambda self, eid: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from annotators.batch import annotate_to_dataset\n"
        "from annotators.pipeline import AnnotateConfig\n"
        f"annotate_to_dataset([{str(video)!r}], {str(out)!r}, AnnotateConfig(decode={{\"max_frames\": 2, \"max_width\": 320}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ds = Hand3DDataset.open(out)
    folder = out / "episodes" / "clip"
    # the episode and its derived files are there, its marker is not: not finished
    assert ds.status("clip") == "ok" and (folder / "derived" / "qa.jsonl").is_file()
    assert not (folder / "complete.json").exists() and not ds.is_finished("clip")
    report = annotate_to_dataset([video], out, AnnotateConfig(**FAST))  # the resume redoes it
    assert [(o.episode_id, o.status) for o in report.outcomes] == [("clip", "ok")]
    assert ds.is_finished("clip")
    marker = json.loads((folder / "complete.json").read_text())
    assert {"episode.json", "frames.parquet", "rgb.mp4", "derived/qa.jsonl"} <= set(marker["files"])
    again = annotate_to_dataset([video], out, AnnotateConfig(**FAST))
    assert [o.status for o in again.outcomes] == ["skipped"]


def test_completion_marker_rules(tmp_path):
    from annotators.synthetic import generate_episode

    ep = generate_episode(1, num_frames=4, width=32, height=32)
    ep.episode_id = "e"
    ds = Hand3DDataset.create(tmp_path / "ds")
    ds.write_episode(ep)  # complete=True: the marker comes with the folder
    folder = tmp_path / "ds" / "episodes" / "e"
    assert (folder / "complete.json").is_file() and ds.is_finished("e")
    (folder / "frames.parquet").rename(folder / "frames.bak")  # a listed file missing: not finished
    assert not ds.is_finished("e")
    (folder / "frames.bak").rename(folder / "frames.parquet")
    ds.write_derived("e", "qa", [{"q": "later"}])  # derived products rewritten later keep it finished
    assert ds.is_finished("e")
    (folder / "complete.json").unlink()
    assert not ds.is_finished("e")
    meta = json.loads((folder / "episode.json").read_text())
    del meta["completion_marker"]  # a folder written before markers existed counts as finished
    (folder / "episode.json").write_text(json.dumps(meta))
    assert ds.is_finished("e")


# ------------------------------------------------------------------ workers and interrupts


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(p.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _clips(tmp_path: Path, n: int) -> list[str]:
    clips = []
    for k in range(n):
        p = tmp_path / f"clip{k}.mp4"
        p.symlink_to(SAMPLE_VIDEO)
        clips.append(str(p))
    return clips


@pytest.mark.slow
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "annotators.cli", *_clips(tmp_path, 4), "--out", str(out), "--workers", "2",
           "--max-frames", "300", "--max-width", "320", "--quiet"]
    parent = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    everyone: list[int] = []
    try:
        deadline = time.time() + 180
        workers: list[int] = []
        while time.time() < deadline and len(workers) < 2:  # two workers busy decoding / detecting
            workers = [c for c in _children(parent.pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
            time.sleep(0.3)
        assert len(workers) >= 2, parent.stderr.read().decode()[-2000:] if parent.poll() is not None else workers
        time.sleep(6)  # past their start-up: inside an episode
        everyone = _children(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        t0 = time.time()
        while time.time() - t0 < 15 and any(_alive(c) for c in everyone):
            time.sleep(0.2)
        left = [c for c in everyone if _alive(c)]
        print(f"\nworkers gone {time.time() - t0:.1f} s after kill -9 of the parent ({len(everyone)} children)")
        assert not left, left
        assert time.time() - t0 < 8
    finally:  # never leave processes behind, whatever failed (orphans are no longer the parent's children)
        for c in set(everyone) | set(_children(parent.pid)):
            if _alive(c):
                os.kill(c, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
    ds = Hand3DDataset.open(out)  # still readable; nothing half-listed
    for eid in ds.episode_ids():
        ds.load_episode(eid)


@pytest.mark.slow
def test_report_counts_match_the_dataset_after_an_interrupt(tmp_path):
    out = tmp_path / "ds"
    report_path = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "annotators.cli", *_clips(tmp_path, 6), "--out", str(out), "--workers", "2",
           "--max-frames", "40", "--max-width", "320", "--quiet", "--report", str(report_path)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any((out / "episodes" / f"clip{k}" / "complete.json").exists() for k in range(6)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)  # to the parent only: its workers are stopped by it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    report = json.loads(report_path.read_text())
    ds = Hand3DDataset.open(out)
    finished = [e for e in ds.episode_ids() if ds.is_finished(e)]
    incomplete = [e for e in ds.episode_ids() if not ds.is_finished(e)]
    counts = report["counts"]
    print(f"\nafter Ctrl-C: report {counts}, dataset {len(finished)} finished, {len(incomplete)} incomplete")
    assert counts.get("ok", 0) + counts.get("skipped", 0) == len(finished) >= 1
    assert counts.get("incomplete", 0) == len(incomplete)
    assert not [c for c in _children(proc.pid) if _alive(c)]


def test_interrupted_batch_reports_what_the_dataset_holds(tmp_path):
    """An episode another process half-wrote (folder and index row, no marker) while the batch was
    being interrupted is reported "incomplete", not left out; finished ones "ok"."""
    from annotators.synthetic import generate_episode

    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    shutil.copy(SAMPLE_VIDEO, first)
    shutil.copy(SAMPLE_VIDEO, second)
    out = tmp_path / "ds"
    ds = Hand3DDataset.create(out)
    half = generate_episode(2, num_frames=4, width=32, height=32)
    half.episode_id, half.source = "second", str(second)
    ds.write_episode(half, complete=False)  # as a worker stopped before its derived files and marker

    def stop(outcome, done, total):
        if done == 1:
            raise KeyboardInterrupt

    report = annotate_to_dataset([first, second], out, AnnotateConfig(**FAST), progress=stop)
    assert report.interrupted
    assert {o.episode_id: o.status for o in report.outcomes} == {"first": "ok", "second": "incomplete"}
    assert "1 incomplete (redone on resume)" in report.summary()
    assert ds.is_finished("first") and not ds.is_finished("second")


def test_a_folder_of_rgbd_sequences_expands_to_them(tmp_path, scene):
    from annotators.cli import expand_inputs

    root = tmp_path / "recordings"
    for name, layout in [("a_tum", "tum"), ("b_ycb", "ycb_json"), ("c_pair", "pair")]:
        _write_layout(scene, root / name, layout, n=1)
    (root / "notes").mkdir()  # not a sequence: left out
    assert expand_inputs([str(root)]) == [str(root / n) for n in ("a_tum", "b_ycb", "c_pair")]
    assert expand_inputs([str(root / "b_ycb")]) == [str(root / "b_ycb")]  # a sequence stays one input
