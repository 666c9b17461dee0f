"""Input readers: the bundled real video and RGB-D frame, image folders, TUM layouts, and the bad
inputs of issue 3 (made here, in tmp_path)."""

from __future__ import annotations

import inspect
import json
import shutil
import struct

import av
import cv2
import numpy as np
import pytest

from annotators.errors import InputError
from annotators.io import SourceInfo, detect_kind, iter_frames, open_source, read_intrinsics
from vipa.geometry import fov_intrinsics
from vipa.resources import SAMPLE_RGBD, SAMPLE_VIDEO

# ----------------------------------------------------------------------------- real video


def test_sample_video_info_and_resize_policy():
    with open_source(SAMPLE_VIDEO, max_width=640) as src:
        info = src.info
    assert isinstance(info, SourceInfo) and info.kind == "video"
    assert (info.source_width, info.source_height, info.source_fps) == (1280, 720, 30.0)
    assert info.source_num_frames == 621 and info.num_frames_exact
    assert (info.width, info.height) == (640, 360) and info.scale_x == info.scale_y == 0.5
    assert info.K_is_estimate
    np.testing.assert_allclose(info.K, fov_intrinsics(640, 360))
    d = json.loads(json.dumps(info.to_dict()))  # the recorded policy is JSON
    assert d["max_width"] == 640 and d["scale_x"] == 0.5 and d["frame_step"] == 1


def test_sample_video_frames_are_streamed():
    gen = iter_frames(SAMPLE_VIDEO, max_width=640, max_frames=150)
    assert inspect.isgenerator(gen)
    frames = list(gen)
    assert len(frames) == 150
    assert all(f.rgb.shape == (360, 640, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert [f.source_index for f in frames] == list(range(150))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(150) / 30.0, atol=1e-3)
    assert frames[0].depth is None
    assert frames[0].rgb.std() > 10  # real content, not a blank frame


def test_fps_sampling_keeps_every_kth_frame():
    with open_source(SAMPLE_VIDEO, fps=10, max_width=320, max_frames=20) as src:
        assert src.info.frame_step == 3 and src.info.fps == 10.0 and src.info.num_frames == 20
        frames = list(src)
        again = list(src)  # iterating again restarts
    assert [f.source_index for f in frames] == list(range(0, 60, 3))
    assert [f.index for f in frames] == list(range(20))
    np.testing.assert_array_equal(frames[5].rgb, again[5].rgb)


def test_given_K_is_scaled_with_the_frames():
    K = np.array([[1000, 0, 640], [0, 1000, 360], [0, 0, 1]], np.float32)
    info = open_source(SAMPLE_VIDEO, max_width=640, K=K).info
    assert not info.K_is_estimate
    np.testing.assert_allclose(info.K, [[500, 0, 320], [0, 500, 180], [0, 0, 1]])
    with pytest.raises(InputError, match="intrinsics"):
        open_source(SAMPLE_VIDEO, K=np.eye(2))


def test_phone_video_rotation_is_applied(tmp_path):
    """A portrait phone clip stores landscape pixels + a display matrix (tkhd); frames come out upright."""
    path = tmp_path / "portrait.mp4"
    w, h = 64, 48
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for _ in range(3):
            img = np.zeros((h, w, 3), np.uint8)
            img[: h // 2, : w // 2] = 255  # bright top-left quadrant
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    off = i + 8 + (20 if data[i + 4] == 0 else 32) + 16  # the tkhd matrix
    data[off:off + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # iPhone portrait
    path.write_bytes(bytes(data))
    with open_source(path) as src:
        assert src.info.rotation == 270  # display matrix says -90: rotate 90 degrees clockwise
        assert (src.info.width, src.info.height) == (48, 64)
        rgb = next(iter(src)).rgb
    assert rgb.shape == (64, 48, 3)
    assert rgb[:28, 28:].mean() > 200 and rgb[:28, :20].mean() < 30  # top-left went to top-right
    assert rgb[36:].mean() < 30


# ----------------------------------------------------------------------------- bad videos


def _faststart_copy(src, dst) -> None:
    """Remux with the index (moov) at the front, so a truncated copy still opens."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        s = i.streams.video[0]
        out = o.add_stream_from_template(s)
        for p in i.demux(s):
            if p.dts is None:
                continue
            p.stream = out
            o.mux(p)


def test_truncated_mp4_index_lost(tmp_path):
    data = SAMPLE_VIDEO.read_bytes()
    bad = tmp_path / "truncated.mp4"
    bad.write_bytes(data[: len(data) // 2])  # the sample's index is at the end: cut off
    with pytest.raises(InputError, match="truncated") as ei:
        open_source(bad)
    assert ei.value.path == str(bad)


def test_truncated_mp4_frames_lost(tmp_path):
    fs = tmp_path / "faststart.mp4"
    _faststart_copy(SAMPLE_VIDEO, fs)
    data = fs.read_bytes()
    bad = tmp_path / "truncated_fs.mp4"
    bad.write_bytes(data[: len(data) // 2])
    src = open_source(bad, max_width=160)  # opens: the index is intact
    assert src.info.source_num_frames == 621
    with pytest.raises(InputError, match=r"truncated video: decoded \d+ of the 621"):
        for _ in src:
            pass


def test_text_file_named_mp4(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 10)
    with pytest.raises(InputError, match="not a readable video") as ei:
        open_source(bad)
    assert str(bad) in str(ei.value)


def test_zero_length_videos(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="zero-length"):
        open_source(empty)
    no_frames = tmp_path / "no_frames.mp4"
    with av.open(str(SAMPLE_VIDEO)) as i, av.open(str(no_frames), "w") as o:
        o.add_stream_from_template(i.streams.video[0])
        o.start_encoding()  # a valid container that holds no frame
    assert no_frames.stat().st_size > 0
    with pytest.raises(InputError, match="zero-length"):
        open_source(no_frames)


def test_missing_paths(tmp_path):
    with pytest.raises(InputError, match="does not exist") as ei:
        open_source(tmp_path / "no_such_folder")
    assert ei.value.path == str(tmp_path / "no_such_folder")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no images"):
        open_source(tmp_path / "empty_dir")


# ----------------------------------------------------------------------------- image folders


def _write_images(folder, n, size=(96, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size[1], size[0], 3), i * 10, np.uint8)
        cv2.imwrite(str(folder / f"frame{i}.png"), img)  # frame2 < frame10: natural order


def test_image_folder_natural_order_sampling_and_resize(tmp_path):
    _write_images(tmp_path / "imgs", 12)
    assert detect_kind(tmp_path / "imgs") == "images"
    with open_source(tmp_path / "imgs", source_fps=12, fps=6, max_width=48) as src:
        info = src.info
        frames = list(src)
    assert info.kind == "images" and info.frame_step == 2 and info.fps == 6.0 and info.num_frames == 6
    assert (info.width, info.height) == (48, 32)
    assert [f.source_index for f in frames] == [0, 2, 4, 6, 8, 10]
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [0, 20, 40, 60, 80, 100]
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(0, 12, 2) / 12.0)


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    img = np.zeros((40, 60, 3), np.uint8)
    img[:20, :30] = 255  # bright top-left of the stored (sensor) pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as phones write it
    (tmp_path / "imgs").mkdir()
    Image.fromarray(img).save(tmp_path / "imgs" / "a.jpg", exif=exif, quality=95)
    with open_source(tmp_path / "imgs") as src:
        assert (src.info.width, src.info.height) == (40, 60)
        rgb = next(iter(src)).rgb
    assert rgb.shape == (60, 40, 3) and rgb[:30, 20:].mean() > 200 and rgb[:30, :20].mean() < 30


def test_image_folder_bad_members(tmp_path):
    _write_images(tmp_path / "imgs", 3)
    cv2.imwrite(str(tmp_path / "imgs" / "frame3.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="the sequence is 96x64"):
        list(open_source(tmp_path / "imgs"))
    (tmp_path / "imgs" / "frame4.png").write_text("not a png")
    (tmp_path / "imgs" / "frame3.png").unlink()
    with pytest.raises(InputError, match="not a readable image") as ei:
        list(open_source(tmp_path / "imgs"))
    assert ei.value.path.endswith("frame4.png")


# ----------------------------------------------------------------------------- RGB-D


def test_tum_sample_loads_with_its_K():
    assert detect_kind(SAMPLE_RGBD) == "rgbd"
    with open_source(SAMPLE_RGBD) as src:
        info = src.info
        (frame,) = list(src)
    assert info.kind == "rgbd" and info.has_depth and info.depth_factor == 5000.0
    assert not info.K_is_estimate
    # camera_primesense.json: column-major 525/525/319.5/239.5 in OpenCV's convention -> +0.5
    np.testing.assert_allclose(info.K, [[525, 0, 320], [0, 525, 240], [0, 0, 1]])
    assert frame.rgb.shape == (480, 640, 3) and frame.depth.shape == (480, 640)
    assert frame.depth.dtype == np.float32
    raw = cv2.imread(str(SAMPLE_RGBD / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(np.isnan(frame.depth), raw == 0)
    np.testing.assert_allclose(frame.depth[raw > 0], raw[raw > 0] / 5000.0, rtol=1e-6)


def test_rgbd_resize_scales_K_and_keeps_depth_values():
    with open_source(SAMPLE_RGBD, max_width=320) as src:
        info = src.info
        (frame,) = list(src)
    np.testing.assert_allclose(info.K, [[262.5, 0, 160], [0, 262.5, 120], [0, 0, 1]])
    assert frame.depth.shape == (240, 320) and frame.rgb.shape == (240, 320, 3)
    raw = cv2.imread(str(SAMPLE_RGBD / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
    counts = np.round(frame.depth[np.isfinite(frame.depth)] * 5000.0).astype(np.int64)
    assert set(np.unique(counts)) <= set(np.unique(raw).tolist())  # nearest: no depths mixed across edges


def _tum_sequence(root, n=6, dt=1 / 30, with_txt=True):
    """A TUM-layout sequence made from the sample frame (rgb/, depth/, rgb.txt, depth.txt)."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines = ["# color images"], ["# depth maps"]
    for i in range(n):
        t = 1305031102.0 + i * dt
        shutil.copy(SAMPLE_RGBD / "TUM_color.png", root / "rgb" / f"{t:.6f}.png")
        shutil.copy(SAMPLE_RGBD / "TUM_depth.png", root / "depth" / f"{t + 0.004:.6f}.png")
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.004:.6f} depth/{t + 0.004:.6f}.png")
    if with_txt:
        (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
        (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    shutil.copy(SAMPLE_RGBD / "camera_primesense.json", root / "camera.json")


@pytest.mark.parametrize("with_txt", [True, False])
def test_tum_layout_sequences(tmp_path, with_txt):
    _tum_sequence(tmp_path / "seq", with_txt=with_txt)
    with open_source(tmp_path / "seq", max_width=160) as src:
        info = src.info
        frames = list(src)
    assert info.kind == "rgbd" and info.num_frames == 6
    assert info.source_fps == pytest.approx(30.0, rel=1e-3)
    assert not info.K_is_estimate
    np.testing.assert_allclose(info.K, [[131.25, 0, 80], [0, 131.25, 60], [0, 0, 1]])
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(6) / 30, atol=1e-4)
    assert all(f.depth.shape == (120, 160) for f in frames)


def test_depth_and_colour_of_different_sizes(tmp_path):
    folder = tmp_path / "pair"
    folder.mkdir()
    shutil.copy(SAMPLE_RGBD / "TUM_color.png", folder / "color.png")
    depth = cv2.imread(str(SAMPLE_RGBD / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(folder / "depth.png"), depth[:240, :320])
    with pytest.raises(InputError, match=r"320x240 but colour color.png is 640x480") as ei:
        open_source(folder)
    assert ei.value.path == str(folder)


def test_mismatch_later_in_a_sequence_and_8bit_depth(tmp_path):
    _tum_sequence(tmp_path / "seq", n=3)
    later = sorted((tmp_path / "seq" / "depth").iterdir())[2]
    cv2.imwrite(str(later), np.ones((100, 100), np.uint16))
    with pytest.raises(InputError, match="depth is 100x100") as ei:
        list(open_source(tmp_path / "seq"))
    assert ei.value.path == str(later)
    cv2.imwrite(str(later), np.ones((480, 640), np.uint8))
    with pytest.raises(InputError, match="8-bit depth"):
        list(open_source(tmp_path / "seq"))


def test_float_depth_npy_is_metres(tmp_path):
    folder = tmp_path / "pair"
    folder.mkdir()
    shutil.copy(SAMPLE_RGBD / "TUM_color.png", folder / "rgb.png")
    d = np.full((480, 640), 1.25, np.float32)
    d[0, 0] = 0.0
    np.save(folder / "depth.npy", d)
    (frame,) = list(open_source(folder))
    assert np.isnan(frame.depth[0, 0]) and frame.depth[1, 1] == np.float32(1.25)


def test_read_intrinsics_formats(tmp_path):
    (tmp_path / "k.json").write_text(json.dumps({"fx": 500, "fy": 501, "cx": 319.5, "cy": 239.5}))
    np.testing.assert_allclose(read_intrinsics(tmp_path / "k.json"), [[500, 0, 320], [0, 501, 240], [0, 0, 1]])
    (tmp_path / "c.json").write_text(json.dumps({"K": [[500, 0, 320], [0, 500, 240], [0, 0, 1]], "convention": "corner"}))
    np.testing.assert_allclose(read_intrinsics(tmp_path / "c.json")[:2, 2], [320, 240])
    np.savetxt(tmp_path / "K.txt", [[500, 0, 319.5], [0, 500, 239.5], [0, 0, 1]])
    np.testing.assert_allclose(read_intrinsics(tmp_path / "K.txt")[:2, 2], [320, 240])
    (tmp_path / "bad.json").write_text(json.dumps({"fx": 0, "fy": 500, "cx": 1, "cy": 1}))
    with pytest.raises(InputError, match="positive focal"):
        read_intrinsics(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read intrinsics"):
        read_intrinsics(tmp_path / "junk.json")
