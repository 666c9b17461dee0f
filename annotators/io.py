"""Inputs -> a stream of RGB (and depth) frames with metadata.

Public names
    ``open_source(path, *, fps=None, max_width=None, max_frames=None, K=None, depth_factor=None,
    source_fps=None, fov_deg=DEFAULT_FOV_DEG) -> FrameSource``: opens a video file (mp4 and
    whatever PyAV reads), a single image, a folder of images, or an RGB-D sequence, checks it
    (raising ``annotators.errors.InputError`` with the path and the reason), and returns an
    iterable ``FrameSource`` (also a context manager) with ``.info`` (a ``SourceInfo``).
    ``iter_frames(path, **kw)`` is the one-line generator form. ``detect_kind(path)`` says how
    a path will be read. ``read_intrinsics(path)`` reads a K file.
``Frame``
    ``index`` (0.. in the output stream), ``source_index`` (frame number in the input),
    ``timestamp`` (s from the first output frame of the input), ``rgb`` (H, W, 3) uint8, ``depth`` (H, W) float32
    metres with NaN where the sensor gave no reading (RGB-D inputs only, else None).
``SourceInfo``
    path, kind ("video" | "images" | "rgbd"), fps / source_fps, width x height (output) and
    source_width x source_height, num_frames (output; for videos the container's count, which
    may be an estimate: ``num_frames_exact``), frame_step k (every k-th input frame is kept),
    scale_x / scale_y (output px per input px), K (3x3 float32, for the *output* size) and
    K_is_estimate, depth_factor, rotation. ``to_dict()`` gives the JSON record to store.

Sampling and resizing
    ``fps``: keep every k-th input frame, k = max(1, round(source_fps / fps)); the output fps is
    source_fps / k (never more frames than the input). ``max_width``: frames wider than this
    are downscaled to that width, aspect kept (height rounded to whole pixels); the exact
    per-axis scale factors are recorded and K is scaled with them. Under the pixel convention of
    ``vipa.conventions`` (continuous coordinates, origin at the top-left pixel's corner) a
    resize maps u -> u * scale_x exactly, so fx, cx scale by scale_x and fy, cy by scale_y.
    Colour: swscale bilinear for videos (its filter widens when downscaling, so it averages like
    an area filter, at about half the cost of SWS_AREA), OpenCV INTER_AREA for images. Depth is
    resized with nearest neighbour (no mixing of depths across edges).

Intrinsics
    All K are in the corner convention of ``vipa.conventions`` (a ``K`` argument too). Given
    ``K`` > a K file beside an RGB-D input (Open3D's camera json with a column-major
    ``intrinsic_matrix``, a json with fx/fy/cx/cy, or a K.txt / intrinsics.txt 3x3) > the
    field-of-view default ``vipa.geometry.fov_intrinsics`` (``K_is_estimate=True``). K files are
    read by ``read_intrinsics``, which converts OpenCV-convention files (cx + 0.5, cy + 0.5).
    A K file that states its image size (``width``/``height``, ``image_width``/``image_height``,
    ROS camera_info yaml) is scaled to the input when the aspect ratio matches (a console
    warning says so) and refused with an InputError otherwise; a K whose principal point lies
    outside the input image is refused (it was written for another size).

RGB-D layouts (``rgbd_layout(path)`` names the one recognised; opening prints it)
    ``tum``: ``rgb.txt`` + ``depth.txt`` association files (``timestamp path`` lines, ``#``
    comments; pairs matched by nearest timestamp within 20 ms). ``folders``: ``rgb/`` (or
    ``color/``, ``colour/``, ``image/``) + ``depth/`` folders (paired by timestamp file names,
    else by sorted order when the counts match). ``ycb``: ``NNNNNN-color.png`` +
    ``NNNNNN-depth.png`` in one folder (the YCB-Video / PoseCNN layout) with an optional
    ``NNNNNN-meta.{json,txt,yaml,mat}`` per frame (or ``meta.json`` for all) holding K and the
    depth factor: json/yaml keys ``intrinsic_matrix`` or ``K`` (3x3) or fx/fy/cx/cy, and
    ``factor_depth`` (or ``depth_factor``); txt: the 9 numbers of K, optionally a 10th, the
    depth factor; .mat (scipy): ``intrinsic_matrix`` and ``factor_depth``. ``pair``: a single
    pair in one folder (``*color*``/``*rgb*`` + ``*depth*`` images, e.g. ``samples/rgbd_tum``).
    uint16 depth is converted with metres = value / depth_factor (given > the layout's meta >
    5000, the TUM factor; pass 1000 for millimetre sensors); float depth (.npy, float TIFF) is
    already metres. 0 (and non-finite values) mean no reading -> NaN.

Inputs that lie a little
    A video whose container declares a few more frames than it holds (at most
    ``max(MISSING_FRAMES_TOLERATED, 5 %)``) is read to its end with a console warning giving the
    count found (``info.num_frames`` and ``info.extra["warnings"]`` updated); more missing is a
    truncated file (InputError).

Videos are decoded lazily (a generator): long videos are never held in memory. A video's
display rotation (phone videos) is applied to the pixels and recorded.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from annotators.errors import InputError, warn
from vipa.conventions import DEFAULT_FOV_DEG
from vipa.geometry import fov_intrinsics, scale_intrinsics

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_EXTS = (".png", ".tif", ".tiff", ".npy")
DEFAULT_DEPTH_FACTOR = 5000.0  # TUM: uint16 counts per metre
DEFAULT_IMAGE_FPS = 30.0  # assumed frame rate of an image folder when none is given
TUM_MAX_DT = 0.02  # s, TUM associate.py's default max time difference
K_FILES = ("camera_intrinsics.json", "intrinsics.json", "camera.json", "K.txt", "intrinsics.txt")
MISSING_FRAMES_TOLERATED = 5  # frames a container may overstate (or 5 % of its count) before it is "truncated"
COLOR_DIRS = ("rgb", "color", "colour", "image")
YCB_COLOR = re.compile(r"^(\d+)-colou?r\.(png|jpg|jpeg)$", re.IGNORECASE)
# depth factors (counts per metre) of common sensors and formats, for naming a likely depth unit
KNOWN_DEPTH_FACTORS = {1.0: "metres", 100.0: "centimetres", 1000.0: "millimetres",
                       4000.0: "quarter millimetres", 5000.0: "TUM's 0.2 mm counts",
                       10000.0: "0.1 mm counts (YCB-Video)"}


@dataclass
class Frame:
    """One output frame. ``rgb`` (H, W, 3) uint8; ``depth`` (H, W) float32 metres, NaN = none."""

    index: int
    source_index: int
    timestamp: float
    rgb: np.ndarray
    depth: np.ndarray | None = None


@dataclass
class SourceInfo:
    """What an input is and how it is being read (record ``to_dict()`` with the episode)."""

    path: str
    kind: str  # "video" | "images" | "rgbd"
    fps: float  # output frame rate (after sampling)
    source_fps: float
    width: int  # output size (after resizing)
    height: int
    source_width: int
    source_height: int
    num_frames: int  # output frames (after sampling and max_frames)
    source_num_frames: int
    num_frames_exact: bool = True  # False: the container's count or a duration-based estimate
    frame_step: int = 1
    scale_x: float = 1.0  # output px per source px
    scale_y: float = 1.0
    max_width: int | None = None
    K: np.ndarray | None = None  # (3, 3) float32, for the output size
    K_is_estimate: bool = True
    has_depth: bool = False
    depth_factor: float | None = None  # uint16 counts per metre (RGB-D)
    rotation: int = 0  # degrees counter-clockwise applied to decoded video frames
    codec: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record of the source and the resize/sampling policy."""
        d = asdict(self)
        d["K"] = None if self.K is None else np.asarray(self.K, float).tolist()
        return d


# ----------------------------------------------------------------------------- helpers


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _resized_size(w: int, h: int, max_width: int | None) -> tuple[int, int]:
    if max_width is None or w <= max_width:
        return w, h
    if max_width < 1:
        raise ValueError(f"max_width must be >= 1, got {max_width}")
    return int(max_width), max(1, int(round(h * max_width / w)))


def _read_mapping(path: Path, not_object: str) -> dict:
    """A .json / .yaml / .yml file's top-level object; ``InputError(path, not_object)`` if it holds another type."""
    if path.suffix == ".json":
        d = json.loads(path.read_text())
    else:
        import yaml

        d = yaml.safe_load(path.read_text())
    if not isinstance(d, dict):
        raise InputError(path, not_object)
    return d


def _check_K(K: Any, where: str | Path) -> np.ndarray:
    try:
        K = np.asarray(K, np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(where, f"intrinsics are not numeric: {exc}") from None
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(where, f"intrinsics must be a 3x3 K with positive focal lengths, got {K.tolist()}")
    return K


def read_intrinsics(path: str | Path, convention: str | None = None) -> np.ndarray:
    """Read a 3x3 K (float32, pixels, this project's corner convention); see
    :func:`read_intrinsics_file` (which also returns the image size the file states)."""
    return read_intrinsics_file(path, convention)[0]


def _stated_size(d: dict) -> tuple[int, int] | None:
    for kw, kh in (("width", "height"), ("image_width", "image_height"), ("w", "h")):
        if kw in d and kh in d:
            try:
                return int(d[kw]), int(d[kh])
            except (TypeError, ValueError):
                return None
    for k in ("size", "image_size", "resolution"):
        v = d.get(k)
        if isinstance(v, (list, tuple)) and len(v) == 2:
            return int(v[0]), int(v[1])
    return None


def _K_from_mapping(d: dict, path: Path) -> np.ndarray | None:
    if "intrinsic_matrix" in d:
        m = np.asarray(d["intrinsic_matrix"], np.float32)
        # Open3D writes a flat column-major list; YCB-Video (.mat) a row-major 3x3
        return _check_K(m.reshape(3, 3).T if m.ndim == 1 else m.reshape(3, 3), path)
    if "K" in d:
        return _check_K(np.asarray(d["K"], np.float32).reshape(3, 3), path)
    if "camera_matrix" in d:  # ROS camera_info yaml / OpenCV
        cm = d["camera_matrix"]
        data = cm.get("data") if isinstance(cm, dict) else cm
        return _check_K(np.asarray(data, np.float32).reshape(3, 3), path)
    if all(k in d for k in ("fx", "fy", "cx", "cy")):
        return _check_K([[d["fx"], 0, d["cx"]], [0, d["fy"], d["cy"]], [0, 0, 1]], path)
    return None


def read_intrinsics_file(path: str | Path, convention: str | None = None) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(K, (width, height) the file states or None) from an Open3D camera json (column-major
    ``intrinsic_matrix``, ``width``/``height``), a json or yaml with ``K``, ``camera_matrix``
    (ROS camera_info, ``image_width``/``image_height``) or fx, fy, cx, cy, or a text/npy file
    holding 3x3 numbers.

    Files written by OpenCV, Open3D, ROS and the TUM/most calibration tools put pixel centres at
    integers, so by default (``convention=None`` -> the file's ``"convention"`` key, else
    ``"opencv"``) cx and cy are shifted by +0.5 px into the corner convention of
    ``vipa.conventions`` (TUM's 319.5, 239.5 for 640x480 becomes 320, 240: the image centre).
    Pass ``convention="corner"`` (or store it in the file) for a K already in that convention."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "intrinsics file does not exist")
    d: dict = {}
    try:
        if path.suffix == ".npy":
            K = _check_K(np.load(path, allow_pickle=False), path)
        elif path.suffix in (".json", ".yaml", ".yml"):
            d = _read_mapping(path, f"{path.suffix[1:]} must hold an object")
            K = _K_from_mapping(d, path)
            if K is None:
                raise InputError(path, "file has none of intrinsic_matrix, K, camera_matrix, fx/fy/cx/cy")
        else:
            K = _check_K(np.loadtxt(path, dtype=np.float32).reshape(3, 3), path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - json, yaml and numpy parse errors alike
        raise InputError(path, f"cannot read intrinsics: {exc}") from None
    convention = convention or d.get("convention", "opencv")
    if convention not in ("opencv", "corner"):
        raise InputError(path, f"convention must be 'opencv' or 'corner', got {convention!r}")
    if convention == "opencv":
        K = K.copy()
        K[0, 2] += 0.5
        K[1, 2] += 0.5
    size = _stated_size(d)
    if size is not None and (size[0] <= 0 or size[1] <= 0):
        raise InputError(path, f"width/height: must be positive, got {size[0]}x{size[1]}")
    return K, size


def fit_intrinsics(K: np.ndarray, where: str | Path, size: tuple[int, int] | None, width: int, height: int,
                   sink: list | None = None) -> np.ndarray:
    """K (corner convention) for an input of ``width`` x ``height`` px from a K stated for ``size``.

    Same size or no size: K as is, unless its principal point lies outside the image (then it
    was written for another size: InputError). Another size with the same aspect ratio (1 %):
    K scaled by the size ratio, with a console warning. Another aspect ratio: InputError."""
    K = _check_K(K, where)
    if size is not None and tuple(size) != (width, height):
        sx, sy = width / size[0], height / size[1]
        if abs(sx / sy - 1.0) > 0.01:
            raise InputError(where, f"intrinsics are for a {size[0]}x{size[1]} image but the input is {width}x{height} "
                                    f"(another aspect ratio): they cannot be scaled; give a K for {width}x{height}")
        warn(where, f"intrinsics stated for {size[0]}x{size[1]} scaled by {sx:.4g} to the {width}x{height} input", sink)
        return scale_intrinsics(K, sx, sy)
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if not (0.0 < cx < width and 0.0 < cy < height):
        raise InputError(where, f"intrinsics' principal point ({cx:.1f}, {cy:.1f}) lies outside the {width}x{height} "
                                f"input: they were written for another image size (state width/height in the file "
                                f"to have them scaled)")
    return K


def _find_K_file(folder: Path) -> Path | None:
    for name in K_FILES:
        if (folder / name).is_file():
            return folder / name
    for p in sorted(folder.glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict) and ("intrinsic_matrix" in d or all(k in d for k in ("fx", "fy", "cx", "cy"))):
            return p
    return None


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # camera orientation tag -> upright pixels
            return np.asarray(im.convert("RGB"), np.uint8)
    except FileNotFoundError:
        raise InputError(path, "image file does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable image ({exc})") from None


def _depth_is_counts(path: Path) -> bool:
    """True when the depth file holds integer counts (converted with the depth factor), False for float metres."""
    if path.suffix == ".npy":
        return bool(np.issubdtype(np.load(path, mmap_mode="r", allow_pickle=False).dtype, np.integer))
    import cv2

    d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    return d is None or bool(np.issubdtype(d.dtype, np.integer))


def _read_depth(path: Path, depth_factor: float) -> np.ndarray:
    """(H, W) float32 metres, NaN where there is no reading."""
    try:
        if path.suffix == ".npy":
            d = np.load(path, allow_pickle=False)
        else:
            import cv2

            d = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
            if d is None:
                raise InputError(path, "not a readable depth image")
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable depth image ({exc})") from None
    if d.ndim == 3:
        if d.shape[2] != 1:
            raise InputError(path, f"depth must have one channel, got shape {d.shape}")
        d = d[..., 0]
    if d.ndim != 2:
        raise InputError(path, f"depth must be 2D, got shape {d.shape}")
    if np.issubdtype(d.dtype, np.integer):
        if d.dtype == np.uint8:
            raise InputError(path, "8-bit depth cannot be metric; expected uint16 or float")
        out = d.astype(np.float32) / np.float32(depth_factor)
    else:
        out = d.astype(np.float32)
    out[~(out > 0) | ~np.isfinite(out)] = np.nan
    return out


def likely_depth_factor(ratio: float, depth_factor: float) -> tuple[float, str]:
    """(counts per metre, unit name) that would make the sensor agree with the hands, from
    ``ratio`` = sensor depth / hand depth read with ``depth_factor`` counts per metre."""
    f = float(depth_factor) * float(ratio)
    best = min(KNOWN_DEPTH_FACTORS, key=lambda k: abs(np.log(f / k)))
    if abs(np.log(f / best)) <= np.log(1.3):
        return best, KNOWN_DEPTH_FACTORS[best]
    return round(f, 3 - int(np.floor(np.log10(abs(f))))), f"about {f:.4g} counts per metre"


def _resize_rgb(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (img.shape[1], img.shape[0]) == size:
        return img
    import cv2

    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _resize_depth(d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (d.shape[1], d.shape[0]) == size:
        return d
    import cv2

    return cv2.resize(d, size, interpolation=cv2.INTER_NEAREST_EXACT)


def detect_kind(path: str | Path) -> str:
    """"video", "image", "images" or "rgbd" for a path (raises InputError if it does not exist)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if path.is_file():
        return "image" if path.suffix.lower() in IMAGE_EXTS else "video"
    if not path.is_dir():
        raise InputError(path, "neither a file nor a folder")
    return "rgbd" if rgbd_layout(path) is not None else "images"


def _color_dir(path: Path) -> Path | None:
    if not (path / "depth").is_dir():
        return None
    return next((path / n for n in COLOR_DIRS if (path / n).is_dir()), None)


def _ycb_frames(folder: Path) -> list[tuple[str, Path, Path]]:
    """(frame id, colour, depth) of the ``NNNNNN-color.png`` / ``NNNNNN-depth.png`` files, sorted."""
    out = []
    for p in folder.iterdir():
        m = YCB_COLOR.match(p.name)
        if m and p.is_file():
            d = folder / f"{m.group(1)}-depth.png"
            if d.is_file():
                out.append((m.group(1), p, d))
    return sorted(out, key=lambda x: int(x[0]))


def rgbd_layout(path: str | Path) -> str | None:
    """The RGB-D layout of a folder: "tum", "folders", "ycb", "pair", or None (not RGB-D)."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "rgb.txt").is_file() and (path / "depth.txt").is_file():
        return "tum"
    if _color_dir(path) is not None:
        return "folders"
    if _ycb_frames(path):
        return "ycb"
    if _single_pair(path) is not None:
        return "pair"
    return None


def _single_pair(folder: Path) -> tuple[Path, Path] | None:
    imgs = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS + (".npy",)]
    depth = [p for p in imgs if "depth" in p.stem.lower()]
    color = [p for p in imgs if p not in depth and re.search(r"colou?r|rgb|image", p.stem.lower())]
    if len(depth) == 1 and len(color) == 1:
        return color[0], depth[0]
    return None


# ----------------------------------------------------------------------------- the source


class FrameSource:
    """An opened, checked input. Iterate it for ``Frame``s (a generator: one frame in memory at
    a time); ``info`` describes it. Iterating again starts again from the first frame."""

    def __init__(self, info: SourceInfo, make_iter, close=None) -> None:
        self.info = info
        self._make_iter = make_iter
        self._close = close

    def __iter__(self) -> Iterator[Frame]:
        return self._make_iter()

    def __len__(self) -> int:
        return self.info.num_frames

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_source(
    path: str | Path,
    *,
    fps: float | None = None,
    max_width: int | None = None,
    max_frames: int | None = None,
    K: np.ndarray | None = None,
    depth_factor: float | None = None,
    source_fps: float | None = None,
    fov_deg: float = DEFAULT_FOV_DEG,
    K_size: tuple[int, int] | None = None,
) -> FrameSource:
    """Open and check an input (see the module docstring). ``fps``: target frame rate (keep every
    k-th frame); ``max_width``: downscale wider frames (aspect kept); ``max_frames``: stop after
    this many output frames; ``K``: intrinsics of the *input* size (scaled with the frames), or
    of ``K_size`` (width, height) when given (scaled to the input, or refused: ``fit_intrinsics``);
    ``source_fps``: frame rate of an image folder / RGB-D sequence without timestamps (default
    30). Raises InputError for anything that cannot be read."""
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0, got {max_frames}")
    path = Path(path)
    kind = detect_kind(path)
    opts = dict(fps=fps, max_width=max_width, max_frames=max_frames, K=K, fov_deg=fov_deg,
                K_size=None if K_size is None else (int(K_size[0]), int(K_size[1])))
    if kind == "video":
        return _open_video(path, **opts)
    if kind in ("images", "image"):
        return _open_images(path, source_fps=source_fps, **opts)
    return _open_rgbd(path, depth_factor=depth_factor, source_fps=source_fps, **opts)


def iter_frames(path: str | Path, **kwargs: Any) -> Iterator[Frame]:
    """Generator over the frames of ``open_source(path, **kwargs)``; closes the input at the end."""
    with open_source(path, **kwargs) as src:
        yield from src


def _step(source_fps: float, fps: float | None) -> int:
    if fps is None or fps >= source_fps:
        return 1
    return max(1, int(round(source_fps / fps)))


def _n_out(n_src: int, step: int, max_frames: int | None) -> int:
    n = (n_src + step - 1) // step
    return n if max_frames is None else min(n, max_frames)


def _intrinsics(K, where, src_w, src_h, sx, sy, out_w, out_h, fov_deg, K_size=None,
                sink: list | None = None) -> tuple[np.ndarray, bool]:
    if K is not None:
        return scale_intrinsics(fit_intrinsics(K, where, K_size, src_w, src_h, sink), sx, sy), False
    return fov_intrinsics(out_w, out_h, fov_deg), True


# ----------------------------------------------------------------------------- video


def _open_video(path: Path, *, fps, max_width, max_frames, K, fov_deg, K_size) -> FrameSource:
    import av

    if path.stat().st_size == 0:
        raise InputError(path, "zero-length file (0 bytes), not a video")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise InputError(path, f"not a readable video (truncated or not a video container): {exc}") from None
    try:
        if not container.streams.video:
            raise InputError(path, "no video stream in the file (a zero-length video, or audio only)")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        src_fps = float(rate) if rate else 0.0
        first = None
        try:
            for first in container.decode(stream):
                break
        except av.FFmpegError as exc:
            raise InputError(path, f"cannot decode the first frame (corrupt or truncated): {exc}") from None
        if first is None:
            raise InputError(path, "zero-length video: no frame could be decoded")
        if not src_fps > 0:
            raise InputError(path, "video has no frame rate")
        rot = first.rotation or 0  # degrees counter-clockwise of the display matrix
        rotation = int(round(rot / 90.0)) * 90 % 360 if abs(rot) <= 360 and rot % 90 == 0 else 0
        w0, h0 = first.width, first.height
        src_w, src_h = (h0, w0) if rotation in (90, 270) else (w0, h0)
        n_src = int(stream.frames or 0)
        exact = n_src > 0
        if not exact:
            dur = (float(stream.duration * stream.time_base) if stream.duration else
                   (container.duration or 0) / 1e6)
            n_src = max(1, int(round(dur * src_fps)))
        codec = stream.codec_context.name
    except BaseException:
        container.close()
        raise
    container.close()

    out_w, out_h = _resized_size(src_w, src_h, max_width)
    sx, sy = out_w / src_w, out_h / src_h
    step = _step(src_fps, fps)
    notes: list[str] = []
    K_out, est = _intrinsics(K, path, src_w, src_h, sx, sy, out_w, out_h, fov_deg, K_size, notes)
    info = SourceInfo(
        path=str(path), kind="video", fps=src_fps / step, source_fps=src_fps, width=out_w,
        height=out_h, source_width=src_w, source_height=src_h,
        num_frames=_n_out(n_src, step, max_frames), source_num_frames=n_src,
        num_frames_exact=exact, frame_step=step, scale_x=sx, scale_y=sy, max_width=max_width,
        K=K_out, K_is_estimate=est, rotation=rotation, codec=codec,
        extra={"warnings": notes} if notes else {},
    )
    # decode size before rotation
    dec_w, dec_h = (out_h, out_w) if rotation in (90, 270) else (out_w, out_h)
    return FrameSource(info, lambda: _video_frames(path, info, dec_w, dec_h, max_frames))


def _video_frames(path: Path, info: SourceInfo, dec_w: int, dec_h: int, max_frames) -> Iterator[Frame]:
    import av

    step, k_rot = info.frame_step, info.rotation // 90
    coded = (info.source_height, info.source_width) if k_rot % 2 else (info.source_width, info.source_height)
    n_out = n_src = 0
    t0: float | None = None
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise InputError(path, f"not a readable video: {exc}") from None
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                i = n_src
                n_src += 1
                if i % step:
                    continue
                if max_frames is not None and n_out >= max_frames:
                    return
                if (dec_w, dec_h) != coded or (frame.width, frame.height) != coded:  # also mid-stream size changes
                    rgb = frame.to_ndarray(format="rgb24", width=dec_w, height=dec_h, interpolation="BILINEAR")
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                if k_rot:
                    rgb = np.ascontiguousarray(np.rot90(rgb, k_rot))
                t = float(frame.time) if frame.time is not None else i / info.source_fps
                t0 = t if t0 is None else t0  # streams may start at a non-zero time
                yield Frame(index=n_out, source_index=i, timestamp=t - t0, rgb=rgb)
                n_out += 1
        except av.FFmpegError as exc:
            raise InputError(path, f"decoding failed after {n_src} frames (corrupt or truncated): {exc}") from None
    finally:
        container.close()
    declared = info.source_num_frames
    if info.num_frames_exact and n_src < declared - 1:
        if declared - n_src > max(MISSING_FRAMES_TOLERATED, 0.05 * declared):
            raise InputError(path, f"truncated video: decoded {n_src} of the {declared} frames the container declares")
        warn(path, f"the container declares {declared} frames but holds {n_src}: annotated the {n_src} found",
             info.extra.setdefault("warnings", []))
        info.extra["declared_frames"] = declared
        info.source_num_frames = n_src
        info.num_frames = n_out


# ----------------------------------------------------------------------------- images


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS), key=_natural_key)


def _open_images(path: Path, *, fps, max_width, max_frames, K, fov_deg, source_fps, K_size) -> FrameSource:
    files = [path] if path.is_file() else _image_files(path)
    if not files:
        raise InputError(path, f"folder holds no images ({', '.join(IMAGE_EXTS)})")
    first = _read_rgb(files[0])
    src_h, src_w = first.shape[:2]
    src_fps = float(source_fps or DEFAULT_IMAGE_FPS)
    step = _step(src_fps, fps)
    out_w, out_h = _resized_size(src_w, src_h, max_width)
    sx, sy = out_w / src_w, out_h / src_h
    where: Path = path
    if K is None and path.is_dir() and (kf := _find_K_file(path)) is not None:
        (K, K_size), where = read_intrinsics_file(kf), kf
    notes: list[str] = []
    K_out, est = _intrinsics(K, where, src_w, src_h, sx, sy, out_w, out_h, fov_deg, K_size, notes)
    info = SourceInfo(
        path=str(path), kind="images", fps=src_fps / step, source_fps=src_fps, width=out_w,
        height=out_h, source_width=src_w, source_height=src_h,
        num_frames=_n_out(len(files), step, max_frames), source_num_frames=len(files),
        frame_step=step, scale_x=sx, scale_y=sy, max_width=max_width, K=K_out, K_is_estimate=est,
        extra={"files_sorted": "natural", **({"warnings": notes} if notes else {})},
    )

    def gen() -> Iterator[Frame]:
        for n, i in enumerate(range(0, len(files), step)):
            if n >= info.num_frames:
                return
            rgb = _read_rgb(files[i])
            if rgb.shape[:2] != (src_h, src_w):
                raise InputError(files[i], f"image is {rgb.shape[1]}x{rgb.shape[0]}, the sequence is {src_w}x{src_h}")
            yield Frame(index=n, source_index=i, timestamp=i / src_fps, rgb=_resize_rgb(rgb, (out_w, out_h)))

    return FrameSource(info, gen)


# ----------------------------------------------------------------------------- RGB-D


def _read_assoc(txt: Path) -> list[tuple[float, Path]]:
    out = []
    try:
        lines = txt.read_text().splitlines()
    except OSError as exc:
        raise InputError(txt, f"cannot read: {exc}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            out.append((float(parts[0]), txt.parent / parts[1]))
        except (ValueError, IndexError):
            raise InputError(txt, f"line {n}: expected 'timestamp path', got {line!r}") from None
    return out


def _associate(a: list[tuple[float, Path]], b: list[tuple[float, Path]], max_dt: float):
    """Greedy nearest-timestamp matching (TUM associate.py): list of (t_a, path_a, path_b)."""
    if not a or not b:
        return []
    tb = np.array([t for t, _ in b])
    order = np.argsort(tb)
    tb = tb[order]
    used: set[int] = set()
    pairs = []
    for t, pa in a:
        j = int(np.searchsorted(tb, t))
        cands = [k for k in (j - 1, j) if 0 <= k < len(tb) and k not in used]
        if not cands:
            continue
        k = min(cands, key=lambda c: abs(tb[c] - t))
        if abs(tb[k] - t) <= max_dt:
            used.add(k)
            pairs.append((t, pa, b[order[k]][1]))
    return pairs


def _stamp(p: Path) -> float | None:
    try:
        return float(p.stem)
    except ValueError:
        return None


def _read_meta(path: Path) -> tuple[np.ndarray | None, float | None, tuple[int, int] | None]:
    """(K or None, depth factor or None, stated size or None) of a YCB-style meta file."""
    d: dict = {}
    try:
        if path.suffix == ".mat":
            try:
                from scipy.io import loadmat
            except ImportError:
                raise InputError(path, "reading .mat metadata needs scipy (pip install scipy), or give a -meta.json") from None
            d = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
            d = {k: (np.asarray(v).squeeze().tolist() if np.asarray(v).size > 1 else np.asarray(v).item())
                 for k, v in d.items() if k in ("intrinsic_matrix", "factor_depth", "K", "depth_factor")}
        elif path.suffix in (".json", ".yaml", ".yml"):
            d = _read_mapping(path, "metadata must hold an object")
        else:  # txt: 9 numbers of K, optionally a 10th, the depth factor
            vals = np.loadtxt(path, dtype=np.float64).reshape(-1)
            if vals.size not in (9, 10):
                raise InputError(path, f"expected the 9 numbers of K and optionally the depth factor, got {vals.size} numbers")
            d = {"K": vals[:9].reshape(3, 3).tolist()}
            if vals.size == 10:
                d["factor_depth"] = float(vals[9])
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - json / yaml / numpy / scipy parse errors alike
        raise InputError(path, f"cannot read the metadata: {exc}") from None
    K = _K_from_mapping(d, path)
    if K is not None and d.get("convention", "opencv") == "opencv":  # YCB-Video: OpenCV pixel centres
        K = K.copy()
        K[0, 2] += 0.5
        K[1, 2] += 0.5
    factor = d.get("factor_depth", d.get("depth_factor"))
    if factor is not None:
        try:
            factor = float(factor)
        except (TypeError, ValueError):
            raise InputError(path, f"factor_depth: expected a number, got {factor!r}") from None
        if not factor > 0:
            raise InputError(path, f"factor_depth: must be > 0, got {factor}")
    return K, factor, _stated_size(d)


def _ycb_meta(folder: Path, frame_id: str) -> Path | None:
    for ext in (".json", ".yaml", ".yml", ".txt", ".mat"):
        p = folder / f"{frame_id}-meta{ext}"
        if p.is_file():
            return p
    for name in ("meta.json", "meta.yaml", "meta.txt"):
        if (folder / name).is_file():
            return folder / name
    return None


def _rgbd_pairs(path: Path) -> tuple[list[tuple[float | None, Path, Path]], bool, str, Path | None]:
    """(timestamp or None, colour path, depth path) pairs, whether timestamps are real, the layout's
    description, and its metadata file (YCB) or None."""
    layout = rgbd_layout(path)
    if layout == "tum":
        pairs = _associate(_read_assoc(path / "rgb.txt"), _read_assoc(path / "depth.txt"), TUM_MAX_DT)
        if not pairs:
            raise InputError(path, f"no colour/depth pair within {TUM_MAX_DT * 1000:.0f} ms in rgb.txt/depth.txt")
        return [(t, c, d) for t, c, d in pairs], True, f"TUM (rgb.txt + depth.txt, {len(pairs)} pairs by timestamp)", None
    if layout == "folders":
        cdir = _color_dir(path)
        rgb = _image_files(cdir)
        depth = sorted((p for p in (path / "depth").iterdir() if p.suffix.lower() in DEPTH_EXTS), key=_natural_key)
        if not rgb or not depth:
            raise InputError(path, f"{cdir.name}/ has {len(rgb)} images and depth/ {len(depth)} depth files")
        ta, tb = [_stamp(p) for p in rgb], [_stamp(p) for p in depth]
        what = f"{cdir.name}/ + depth/ folders"
        if None not in ta and None not in tb:
            pairs = _associate(list(zip(ta, rgb)), list(zip(tb, depth)), TUM_MAX_DT)
            if pairs:
                return [(t, c, d) for t, c, d in pairs], True, f"{what} ({len(pairs)} pairs by timestamp)", None
        if len(rgb) != len(depth):
            raise InputError(path, f"{cdir.name}/ has {len(rgb)} images but depth/ has {len(depth)}, and their names are not timestamps")
        return [(None, c, d) for c, d in zip(rgb, depth)], False, f"{what} ({len(rgb)} pairs by sorted name)", None
    if layout == "ycb":
        frames = _ycb_frames(path)
        meta = _ycb_meta(path, frames[0][0])
        what = f"YCB/PoseCNN (NNNNNN-color.png + NNNNNN-depth.png, {len(frames)} frames"
        what += f", metadata {meta.name})" if meta is not None else ", no metadata)"
        return [(None, c, d) for _, c, d in frames], False, what, meta
    pair = _single_pair(path) if layout == "pair" else None
    if pair is None:
        raise InputError(path, "not an RGB-D layout (rgb.txt+depth.txt, rgb/+depth/, NNNNNN-color.png+NNNNNN-depth.png, "
                               "or one colour+depth pair)")
    return [(None, pair[0], pair[1])], False, f"single colour + depth pair ({pair[0].name}, {pair[1].name})", None


def _open_rgbd(path: Path, *, fps, max_width, max_frames, K, fov_deg, depth_factor, source_fps, K_size) -> FrameSource:
    pairs, stamped, layout, meta = _rgbd_pairs(path)
    where: Path = path
    factor_from = "given" if depth_factor else "default (TUM)"
    if meta is not None:
        mK, mfactor, msize = _read_meta(meta)
        if K is None and mK is not None:
            K, K_size, where = mK, msize, meta
        if not depth_factor and mfactor is not None:
            depth_factor, factor_from = mfactor, meta.name
    print(f"{path}: RGB-D layout: {layout}", file=sys.stderr, flush=True)
    depth_factor = float(depth_factor or DEFAULT_DEPTH_FACTOR)
    c0 = _read_rgb(pairs[0][1])
    d0 = _read_depth(pairs[0][2], depth_factor)
    src_h, src_w = c0.shape[:2]
    if d0.shape != (src_h, src_w):
        raise InputError(path, f"depth {pairs[0][2].name} is {d0.shape[1]}x{d0.shape[0]} but colour "
                               f"{pairs[0][1].name} is {src_w}x{src_h}; they must be registered and the same size")
    if stamped and len(pairs) > 1:
        ts = np.array([p[0] for p in pairs], float)
        src_fps = float(source_fps or (len(ts) - 1) / max(ts[-1] - ts[0], 1e-9))
        t0 = ts[0]
    else:
        src_fps, t0 = float(source_fps or DEFAULT_IMAGE_FPS), 0.0
    step = _step(src_fps, fps)
    out_w, out_h = _resized_size(src_w, src_h, max_width)
    sx, sy = out_w / src_w, out_h / src_h
    if K is None and (kf := _find_K_file(path)) is not None:
        (K, K_size), where = read_intrinsics_file(kf), kf
    notes: list[str] = []
    K_out, est = _intrinsics(K, where, src_w, src_h, sx, sy, out_w, out_h, fov_deg, K_size, notes)
    info = SourceInfo(
        path=str(path), kind="rgbd", fps=src_fps / step, source_fps=src_fps, width=out_w,
        height=out_h, source_width=src_w, source_height=src_h,
        num_frames=_n_out(len(pairs), step, max_frames), source_num_frames=len(pairs),
        frame_step=step, scale_x=sx, scale_y=sy, max_width=max_width, K=K_out, K_is_estimate=est,
        has_depth=True, depth_factor=depth_factor,
        extra={"timestamps": "file" if stamped else "index/fps", "layout": layout, "depth_factor_from": factor_from,
               "depth_counts": _depth_is_counts(pairs[0][2]),
               **({"warnings": notes} if notes else {})},
    )

    def gen() -> Iterator[Frame]:
        for n, i in enumerate(range(0, len(pairs), step)):
            if n >= info.num_frames:
                return
            t, cp, dp = pairs[i]
            rgb = c0 if i == 0 else _read_rgb(cp)
            depth = d0 if i == 0 else _read_depth(dp, depth_factor)
            if rgb.shape[:2] != (src_h, src_w):
                raise InputError(cp, f"colour is {rgb.shape[1]}x{rgb.shape[0]}, the sequence is {src_w}x{src_h}")
            if depth.shape != (src_h, src_w):
                raise InputError(dp, f"depth is {depth.shape[1]}x{depth.shape[0]} but colour {cp.name} is {src_w}x{src_h}")
            ts = (t - t0) if t is not None else i / src_fps
            yield Frame(index=n, source_index=i, timestamp=float(ts), rgb=_resize_rgb(rgb, (out_w, out_h)),
                        depth=_resize_depth(depth, (out_w, out_h)))

    return FrameSource(info, gen)


# ----------------------------------------------------------------------------- decode ahead

PREFETCH_FRAMES = 8  # frames decoded ahead of the consumer: 8 x 640x360 RGB = 5.5 MB


class Prefetch:
    """Iterate ``iterable`` in a background thread, at most ``depth`` items ahead of the caller.

    Decoding (PyAV, OpenCV, PNG reads) releases the GIL, so a reader in front of a detector that
    also releases it (MediaPipe) takes decoding off the detector's critical path. Items come out in
    order; at most ``depth`` items wait in the queue (plus the one the thread holds while the queue
    is full). An exception raised by the iterable is re-raised in the caller, unchanged (the same
    object: type, message and the thread's traceback), at the point where the item would have come.
    ``close()`` (also on leaving a ``with`` block, or when the caller stops early) stops the thread
    and closes the iterable in it (a generator's ``finally`` runs: files and containers are closed).

    ``wait_s``: seconds the caller spent waiting for an item (the decoder was behind);
    ``produced``: items the thread has taken from the iterable; ``worker_cpu_s``: CPU time of the
    thread itself (not of threads the decoder starts, e.g. FFmpeg's frame threads).
    """

    _ITEM, _END, _ERROR = 0, 1, 2

    def __init__(self, iterable, depth: int = PREFETCH_FRAMES, name: str = "vipa-prefetch") -> None:
        import queue
        import threading

        if depth < 1:
            raise ValueError(f"Prefetch depth must be >= 1, got {depth}")
        self.depth = int(depth)
        self.wait_s = 0.0
        self.produced = 0
        self.worker_cpu_s = 0.0
        self._queue: "queue.Queue" = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._work, args=(iterable,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, iterable) -> None:
        import time

        c0 = time.thread_time()
        it = None
        try:
            it = iter(iterable)
            for item in it:
                self.produced += 1
                if not self._put((self._ITEM, item)):
                    break
            else:
                self._put((self._END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            self._put((self._ERROR, exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()  # a generator's finally (container.close()) runs in the thread that ran it
                except Exception:  # noqa: BLE001 - closing after an error must not hide that error
                    pass
            self.worker_cpu_s = time.thread_time() - c0

    def __iter__(self) -> "Prefetch":
        return self

    def __next__(self):
        import time

        if self._done:
            raise StopIteration
        t0 = time.perf_counter()
        kind, value = self._queue.get()
        self.wait_s += time.perf_counter() - t0
        if kind == self._ITEM:
            return value
        self._done = True
        self._thread.join()
        if kind == self._ERROR:
            raise value
        raise StopIteration

    @property
    def buffered(self) -> int:
        """Items decoded and waiting for the caller."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread (it finishes the item it is reading) and drop what it decoded ahead."""
        import queue

        self._stop.set()
        self._done = True
        while True:  # unblock a put in progress
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameStream:
    """The frames of a ``FrameSource``, decoded ahead by a ``Prefetch`` thread and kept as they arrive.

    Array-like over the frames seen so far: iterating yields each frame's RGB (H, W, 3) uint8 in
    order (first the ones already kept, then new ones as the thread delivers them); ``len()`` is the
    number seen so far and ``frames[t]`` the RGB of seen frame t, so a later pass reads the same frames
    again without decoding. ``depth`` / ``timestamps``: lists for the seen frames. ``read_all()``
    reads to the end; ``done`` says whether the source is exhausted. ``info`` is the source's
    (a video that holds fewer frames than declared updates it at the end, with its warning).
    ``close()`` stops the thread early; the frames seen stay readable.
    """

    def __init__(self, source: "FrameSource", depth: int = PREFETCH_FRAMES) -> None:
        self.source = source
        self.info = source.info
        self.rgb: list[np.ndarray] = []
        self.depth: list[np.ndarray] = []
        self.timestamps: list[float] = []
        self.done = False
        self._prefetch = Prefetch(source, depth, name=f"vipa-decode:{Path(str(source.info.path)).name}")

    @property
    def prefetch(self) -> Prefetch:
        return self._prefetch

    def _pull(self) -> bool:
        """Take the next frame from the thread; False at the end."""
        if self.done:
            return False
        try:
            fr = next(self._prefetch)
        except StopIteration:
            self.done = True
            self.source.close()
            return False
        except BaseException:
            self.done = True
            self.close()
            raise
        self.rgb.append(fr.rgb)
        if fr.depth is not None:
            self.depth.append(fr.depth)
        self.timestamps.append(fr.timestamp)
        return True

    def __iter__(self) -> Iterator[np.ndarray]:
        t = 0
        while t < len(self.rgb) or self._pull():
            yield self.rgb[t]
            t += 1

    def __len__(self) -> int:
        return len(self.rgb)

    def __getitem__(self, t):
        return self.rgb[t]

    def read_all(self) -> "FrameStream":
        while self._pull():
            pass
        return self

    def close(self) -> None:
        self._prefetch.close()
        self.source.close()

    def __enter__(self) -> "FrameStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
