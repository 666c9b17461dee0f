"""Camera geometry: intrinsics, projection, depth to points, PnP hand lifting, the paper's scale
calibration, rigid transforms and relative camera motion.

Conventions (see ``vipa.conventions``): OpenCV camera frame (x right, y down, z forward),
metres, float32 outputs. Pixel coordinates (u, v) have their origin at the top-left *corner* of
the top-left pixel, so the centre of pixel (row i, column j) is (j + 0.5, i + 0.5). OpenCV (and
Open3D) put pixel centres at integers; ``intrinsics_to_opencv`` / ``intrinsics_from_opencv``
convert a K between the two (cx, cy shift by 0.5 px), and every call into OpenCV here goes
through them. With the corner convention, resizing an image by (sx, sy) scales K's first row by
sx and its second by sy exactly (``scale_intrinsics``).

Depth maps are z-depth (distance along the optical axis, not along the ray), metres unless a
``depth_unit`` is given. A depth value that is NaN, +-inf, zero or negative means "no reading":
such pixels come out as NaN (``unproject``, ``sample_depth``) or are dropped
(``depth_to_points``); they never produce a point.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from vipa.conventions import DEFAULT_FOV_DEG, NUM_JOINTS

__all__ = [
    "LiftResult",
    "RelativeMotion",
    "ScaleResult",
    "axis_angle_to_matrix",
    "calibrate_scale",
    "depth_to_points",
    "fov_intrinsics",
    "intrinsics_from_opencv",
    "intrinsics_to_opencv",
    "invert_transform",
    "lift_hand",
    "make_transform",
    "matrix_to_axis_angle",
    "pixel_centers",
    "project",
    "relative_motion",
    "sample_depth",
    "scale_intrinsics",
    "transform_points",
    "unproject",
    "unproject_pixels",
    "validate_intrinsics",
]


# ----------------------------------------------------------------------------------------------
# Intrinsics
# ----------------------------------------------------------------------------------------------


def validate_intrinsics(K: np.ndarray, name: str = "K") -> np.ndarray:
    """Check a pinhole intrinsic matrix and return it as a (3, 3) float32 array.

    Accepts (3, 3) or a batch (..., 3, 3). Raises ValueError naming the problem: wrong shape,
    non-finite entries, focal length fx or fy zero / negative, or a last row other than (0, 0, 1).
    A skew term K[0, 1] is allowed.
    """
    try:
        arr = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: not a numeric 3x3 matrix ({exc})") from None
    if arr.ndim < 2 or arr.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected a 3x3 intrinsic matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf")
    fx, fy = arr[..., 0, 0], arr[..., 1, 1]
    if np.any(fx <= 0) or np.any(fy <= 0):
        raise ValueError(f"{name}: focal length must be > 0, got fx={_fmt(fx)}, fy={_fmt(fy)}")
    if np.any(np.abs(arr[..., 1, 0]) > 1e-6) or np.any(np.abs(arr[..., 2, :] - (0.0, 0.0, 1.0)) > 1e-6):
        raise ValueError(f"{name}: expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {arr.tolist()}")
    return arr.astype(np.float32)


def _fmt(a: np.ndarray) -> str:
    a = np.asarray(a)
    return f"{float(a):g}" if a.ndim == 0 else np.array2string(a, precision=4)


def pinhole_intrinsics(fx: float, fy: float, cx: float, cy: float, name: str = "K") -> np.ndarray:
    """A (3, 3) float32 K from focal lengths and principal point (pixels), checked by
    ``validate_intrinsics`` (ValueError naming ``name``)."""
    return validate_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64), name)


def fov_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """A (3, 3) float32 K for a ``width`` x ``height`` image with horizontal field of view
    ``fov_deg`` degrees, square pixels and the principal point at the image centre."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1]], np.float32)


def intrinsics_to_opencv(K: np.ndarray) -> np.ndarray:
    """K in this project's corner convention -> K in OpenCV's (pixel centres at integers)."""
    out = validate_intrinsics(K).copy()
    out[..., 0, 2] -= 0.5
    out[..., 1, 2] -= 0.5
    return out


def intrinsics_from_opencv(K: np.ndarray) -> np.ndarray:
    """K from OpenCV / Open3D / most calibration tools (pixel centres at integers) -> this
    project's corner convention (cx, cy + 0.5)."""
    out = validate_intrinsics(K).copy()
    out[..., 0, 2] += 0.5
    out[..., 1, 2] += 0.5
    return out


def scale_intrinsics(K: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """K of the same camera after resizing the image by factors (sx, sy) (new / old size)."""
    sy = sx if sy is None else sy
    out = validate_intrinsics(K).copy()
    out[..., 0, :] *= sx
    out[..., 1, :] *= sy
    return out


# ----------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) metres -> pixels (..., 2) (corner convention).

    ``K`` is (3, 3), or (B..., 3, 3) per frame whose batch dims are the leading dims of
    ``points`` (e.g. K (T, 3, 3) with points (T, 21, 3)). Points with z <= 0 (behind or on the
    camera plane) or non-finite coordinates project to NaN.
    """
    K = validate_intrinsics(K)
    p = np.asarray(points, dtype=np.float32)
    if p.shape[-1:] != (3,):
        raise ValueError(f"points: expected shape (..., 3), got {p.shape}")
    kb = K.ndim - 2
    if kb:
        extra = p.ndim - 1 - kb
        if extra < 0 or p.shape[:kb] != K.shape[:-2]:
            raise ValueError(
                f"K {K.shape} and points {p.shape}: K's batch dims must be the leading dims of points"
            )
        K = K.reshape(K.shape[:-2] + (1,) * extra + (3, 3))
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (z > 0) & np.isfinite(x) & np.isfinite(y) & (z < np.inf)
        zi = np.where(ok, 1.0 / z, np.nan).astype(np.float32)
    xn, yn = x * zi, y * zi
    u = K[..., 0, 0] * xn + K[..., 0, 1] * yn + K[..., 0, 2]
    v = K[..., 1, 1] * yn + K[..., 1, 2]
    return np.stack([u, v], axis=-1).astype(np.float32)


def pixel_centers(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) float32 grids (H, W) of pixel centres: u[i, j] = j + 0.5, v[i, j] = i + 0.5."""
    u = np.arange(width, dtype=np.float32) + 0.5
    v = np.arange(height, dtype=np.float32) + 0.5
    return np.broadcast_to(u[None, :], (height, width)), np.broadcast_to(v[:, None], (height, width))


_RAY_CACHE: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_RAY_CACHE_SIZE = 16


def _ray_grids(K: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y (H, W) float32 of the rays with z = 1 through the pixel centres, contiguous for
    fast masked gathers; cached per (K, H, W), read-only."""
    key = (K.astype(np.float32).tobytes(), height, width)
    hit = _RAY_CACHE.get(key)
    if hit is not None:
        _RAY_CACHE.move_to_end(key)
        return hit
    k = K.astype(np.float64)
    fx, s, cx, fy, cy = k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2]
    yn = (np.arange(height, dtype=np.float64) + 0.5 - cy) / fy
    xn = (np.arange(width, dtype=np.float64) + 0.5 - cx) / fx
    rx = np.empty((height, width), np.float32)
    rx[...] = xn[None, :]
    if s != 0.0:
        rx -= (s / fx * yn).astype(np.float32)[:, None]
    ry = np.empty((height, width), np.float32)
    ry[...] = yn.astype(np.float32)[:, None]
    rx.flags.writeable = False
    ry.flags.writeable = False
    _RAY_CACHE[key] = (rx, ry)
    while len(_RAY_CACHE) > _RAY_CACHE_SIZE:
        _RAY_CACHE.popitem(last=False)
    return rx, ry


def _metric_depth(depth: np.ndarray, depth_unit: float | None, name: str = "depth") -> np.ndarray:
    d = np.asarray(depth)
    if d.ndim < 2:
        raise ValueError(f"{name}: expected a depth map (H, W) or (..., H, W), got shape {d.shape}")
    if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
        raise ValueError(f"{name}: expected a numeric array, got dtype {d.dtype}")
    if depth_unit is not None:
        if not (np.isfinite(depth_unit) and depth_unit > 0):
            raise ValueError(f"depth_unit must be a positive number of metres per count, got {depth_unit}")
        return d.astype(np.float32) * np.float32(depth_unit)
    return d.astype(np.float32, copy=False)


def _valid_depth(d: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (d > 0) & (d < np.inf)  # False for NaN, inf, zero and negative


def unproject(depth: np.ndarray, K: np.ndarray, depth_unit: float | None = None) -> np.ndarray:
    """Depth map (H, W) or batch (T, H, W) -> camera-frame point map (..., H, W, 3), metres.

    The point of pixel (i, j) lies on the ray through its centre (j + 0.5, i + 0.5) at z-depth
    ``depth[i, j]``. Invalid depth (NaN, inf, <= 0) gives NaN in all three coordinates.
    ``depth_unit`` converts raw sensor counts to metres (e.g. 1/5000 for TUM, 1e-3 for mm).
    """
    K = validate_intrinsics(K)
    if K.ndim != 2:
        raise ValueError(f"K: unproject takes one (3, 3) K, got shape {K.shape}")
    d = _metric_depth(depth, depth_unit)
    h, w = d.shape[-2:]
    rx, ry = _ray_grids(K, h, w)
    out = np.empty(d.shape + (3,), np.float32)
    z = out[..., 2]
    np.copyto(z, d)
    z[~_valid_depth(d)] = np.nan
    np.multiply(rx, z, out=out[..., 0])
    np.multiply(ry, z, out=out[..., 1])
    return out


def unproject_pixels(uv: np.ndarray, z: np.ndarray | float, K: np.ndarray) -> np.ndarray:
    """Pixels (..., 2) (corner convention) at z-depths (...) metres -> camera-frame points (..., 3).

    The inverse of ``project`` for one (3, 3) K, skew included: ``project(unproject_pixels(uv, z,
    K), K) == uv``. A non-finite pixel or depth, or z <= 0, gives NaN in all three coordinates.
    """
    K = validate_intrinsics(K)
    if K.ndim != 2:
        raise ValueError(f"K: unproject_pixels takes one (3, 3) K, got shape {K.shape}")
    p = np.asarray(uv, dtype=np.float64)
    if p.shape[-1:] != (2,):
        raise ValueError(f"uv: expected shape (..., 2), got {p.shape}")
    try:
        zz = np.broadcast_to(np.asarray(z, dtype=np.float64), p.shape[:-1])
    except ValueError:
        raise ValueError(f"z: shape {np.shape(z)} does not match pixels {p.shape}") from None
    k = K.astype(np.float64)
    yn = (p[..., 1] - k[1, 2]) / k[1, 1]
    xn = (p[..., 0] - k[0, 2] - k[0, 1] * yn) / k[0, 0]
    out = np.stack([xn * zz, yn * zz, zz], axis=-1).astype(np.float32)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(p).all(axis=-1) & np.isfinite(zz) & (zz > 0)
    out[~ok] = np.nan
    return out


def depth_to_points(
    depth: np.ndarray,
    K: np.ndarray,
    colors: np.ndarray | None = None,
    stride: int = 1,
    valid: np.ndarray | None = None,
    depth_unit: float | None = None,
    max_depth: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Depth map (H, W) -> camera-frame point cloud (N, 3) float32 metres, and colours (N, C).

    Keeps pixels with valid depth (finite, > 0, <= ``max_depth`` when given) and, when ``valid``
    (H, W) bool is given, where it is True; every ``stride``-th row and column starting at 0.
    Points come in row-major pixel order. ``colors`` (H, W, C) (e.g. RGB uint8) are gathered at
    the same pixels and keep their dtype. ``depth_unit`` converts raw counts to metres.
    """
    K = validate_intrinsics(K)
    if K.ndim != 2:
        raise ValueError(f"K: expected one (3, 3) K, got shape {K.shape}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    d = np.asarray(depth)
    if d.ndim != 2:
        raise ValueError(f"depth: expected shape (H, W), got {d.shape}")
    h, w = d.shape
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape[:2] != (h, w):
            raise ValueError(f"colors: expected shape ({h}, {w}, C) to match depth, got {colors.shape}")
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (h, w):
            raise ValueError(f"valid: expected shape ({h}, {w}) to match depth, got {valid.shape}")
    rx, ry = _ray_grids(K, h, w)
    if stride > 1:
        d, rx, ry = d[::stride, ::stride], rx[::stride, ::stride], ry[::stride, ::stride]
        colors = None if colors is None else colors[::stride, ::stride]
        valid = None if valid is None else valid[::stride, ::stride]
    if depth_unit is not None and not (np.isfinite(depth_unit) and depth_unit > 0):
        raise ValueError(f"depth_unit must be a positive number of metres per count, got {depth_unit}")
    if np.issubdtype(d.dtype, np.integer):
        mask = d > 0
        z = d[mask].astype(np.float32)
        if depth_unit is not None:
            z *= np.float32(depth_unit)
    else:
        d = _metric_depth(d, depth_unit)
        mask = _valid_depth(d)
        z = d[mask]
    if max_depth is not None or valid is not None:
        keep = np.ones(len(z), bool) if max_depth is None else z <= max_depth
        if valid is not None:
            keep &= valid[mask]
        mask[mask] = keep
        z = z[keep]
    out = np.empty((len(z), 3), np.float32)
    np.multiply(rx[mask], z, out=out[:, 0])
    np.multiply(ry[mask], z, out=out[:, 1])
    out[:, 2] = z
    cols = None if colors is None else colors[mask]
    return out, cols


def sample_depth(depth: np.ndarray, uv: np.ndarray, radius: int = 0) -> np.ndarray:
    """Depth at pixel positions uv (N, 2) (corner convention) -> (N,) float32.

    The pixel containing (u, v) is (row floor(v), column floor(u)). With ``radius`` r > 0, the
    median of the valid depths in the (2r+1)^2 window around it (robust at depth edges). NaN
    where uv is non-finite or outside the image, or no valid depth is found.
    """
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"depth: expected shape (H, W), got {d.shape}")
    p = np.asarray(uv, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"uv: expected shape (N, 2), got {p.shape}")
    h, w = d.shape
    finite = np.all(np.isfinite(p), axis=1)
    j = np.floor(np.where(finite, p[:, 0], -1)).astype(np.int64)
    i = np.floor(np.where(finite, p[:, 1], -1)).astype(np.int64)
    inside = finite & (i >= 0) & (i < h) & (j >= 0) & (j < w)
    if radius <= 0:
        out = np.full(len(p), np.nan, np.float32)
        vals = d[i[inside], j[inside]]
        out[inside] = np.where(_valid_depth(vals), vals, np.nan)
        return out
    off = np.arange(-radius, radius + 1)
    ii = i[:, None, None] + off[None, :, None]
    jj = j[:, None, None] + off[None, None, :]
    ok = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w) & inside[:, None, None]
    vals = d[np.clip(ii, 0, h - 1), np.clip(jj, 0, w - 1)]
    vals = np.where(ok & _valid_depth(vals), vals, np.nan).reshape(len(p), -1)
    out = np.full(len(p), np.nan, np.float32)
    has = np.any(np.isfinite(vals), axis=1)
    if np.any(has):
        out[has] = np.nanmedian(vals[has], axis=1)
    return out


# ----------------------------------------------------------------------------------------------
# Hand lifting (PnP)
# ----------------------------------------------------------------------------------------------


@dataclass
class LiftResult:
    """Camera-frame hand from PnP. ``joints_cam`` (21, 3) float32 metres (NaN when not ok);
    ``reproj_error`` (21,) float32 px per joint, outliers included (NaN where the 2D landmark
    is NaN);
    ``rvec``/``tvec`` (3,) float32: camera_from_hand rotation (axis-angle) and translation (m);
    ``inliers`` (21,) bool: joints the pose was fitted on; ``reason`` says why when not ok."""

    joints_cam: np.ndarray
    reproj_error: np.ndarray
    ok: bool
    rvec: np.ndarray
    tvec: np.ndarray
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(NUM_JOINTS, bool))
    reason: str = ""

    @property
    def median_error(self) -> float:
        """Median reprojection error (px) over the inlier joints; NaN when not ok."""
        e = self.reproj_error[self.inliers] if self.ok else np.array([np.nan])
        return float(np.nanmedian(e)) if np.any(np.isfinite(e)) else float("nan")


MIN_PNP_POINTS = 4


def lift_hand(
    world_landmarks: np.ndarray,
    image_landmarks: np.ndarray,
    K: np.ndarray,
    valid: np.ndarray | None = None,
    ransac: bool = True,
    reproj_threshold_px: float = 8.0,
    strict: bool = False,
) -> LiftResult:
    """Camera-frame 3D joints of a hand from metric hand-centred landmarks and their pixels.

    ``world_landmarks`` (J, 3) metres in any hand-attached frame (MediaPipe's world landmarks:
    origin near the hand centre), ``image_landmarks`` (J, 2) px (corner convention), ``K``
    (3, 3). Solves camera_from_hand by PnP: RANSAC (EPnP minimal sets) when ``ransac`` and at
    least 6 valid joints, so a few wrong landmarks are rejected as outliers; otherwise SQPnP
    on all valid joints; then Levenberg-Marquardt refinement on the inliers. All joints,
    outliers included, are then mapped into the camera frame with that pose.

    Fewer than 4 valid joints (``valid`` and finite in both inputs), a failed solve or a pose
    putting the hand behind the camera give ``ok=False``, NaN joints and a ``reason`` -- or a
    ValueError when ``strict``. Shape errors always raise ValueError.
    """
    import cv2

    K = validate_intrinsics(K)
    if K.shape != (3, 3):
        raise ValueError(f"K: lift_hand takes one (3, 3) K, got shape {K.shape}")
    obj = np.asarray(world_landmarks, dtype=np.float64)
    img = np.asarray(image_landmarks, dtype=np.float64)
    if obj.ndim != 2 or obj.shape[1] != 3:
        raise ValueError(f"world_landmarks: expected shape (J, 3), got {obj.shape}")
    if img.shape != (obj.shape[0], 2):
        raise ValueError(f"image_landmarks: expected shape ({obj.shape[0]}, 2), got {img.shape}")
    n = obj.shape[0]
    mask = np.all(np.isfinite(obj), axis=1) & np.all(np.isfinite(img), axis=1)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != (n,):
            raise ValueError(f"valid: expected shape ({n},), got {v.shape}")
        mask &= v

    def fail(reason: str) -> LiftResult:
        if strict:
            raise ValueError(f"lift_hand: {reason}")
        return LiftResult(
            joints_cam=np.full((n, 3), np.nan, np.float32),
            reproj_error=np.full(n, np.nan, np.float32),
            ok=False,
            rvec=np.full(3, np.nan, np.float32),
            tvec=np.full(3, np.nan, np.float32),
            inliers=np.zeros(n, bool),
            reason=reason,
        )

    count = int(mask.sum())
    if count < MIN_PNP_POINTS:
        return fail(f"needs at least {MIN_PNP_POINTS} valid landmarks for PnP, got {count}")
    Kcv = intrinsics_to_opencv(K).astype(np.float64)
    o = np.ascontiguousarray(obj[mask])
    p = np.ascontiguousarray(img[mask] - 0.5)  # OpenCV pixel centres at integers
    idx = np.flatnonzero(mask)
    inl = np.ones(count, bool)
    rvec = tvec = None
    try:
        if ransac and count >= 6:
            ok, r, t, inliers = cv2.solvePnPRansac(
                o, p, Kcv, None, iterationsCount=200, reprojectionError=float(reproj_threshold_px),
                confidence=0.999, flags=cv2.SOLVEPNP_EPNP,
            )
            if ok and inliers is not None and len(inliers) >= MIN_PNP_POINTS:
                inl = np.zeros(count, bool)
                inl[np.asarray(inliers).ravel()] = True
                rvec, tvec = r, t
        if rvec is None:
            ok, r, t = cv2.solvePnP(o, p, Kcv, None, flags=cv2.SOLVEPNP_SQPNP)
            if not ok:
                return fail("PnP did not converge")
            rvec, tvec = r, t
        rvec, tvec = cv2.solvePnPRefineLM(o[inl], p[inl], Kcv, None, rvec.copy(), tvec.copy())
    except cv2.error as exc:
        return fail(f"PnP failed in OpenCV: {exc.msg if hasattr(exc, 'msg') else exc}")
    rvec = np.asarray(rvec, np.float64).reshape(3)
    tvec = np.asarray(tvec, np.float64).reshape(3)
    if not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
        return fail("PnP returned a non-finite pose")
    R = axis_angle_to_matrix(rvec.astype(np.float64))
    joints = (obj @ R.T + tvec).astype(np.float32)
    if np.any(joints[idx[inl], 2] <= 0):
        return fail("PnP pose puts the hand behind the camera")
    err = np.linalg.norm(project(joints, K) - img.astype(np.float32), axis=1).astype(np.float32)
    inliers_full = np.zeros(n, bool)
    inliers_full[idx[inl]] = True
    return LiftResult(
        joints_cam=joints,
        reproj_error=err,
        ok=True,
        rvec=rvec.astype(np.float32),
        tvec=tvec.astype(np.float32),
        inliers=inliers_full,
    )


PALM_JOINTS = (0, 1, 5, 9, 13, 17)  # wrist, thumb CMC and the four MCPs: the near-planar palm


def _pose_result(obj: np.ndarray, img: np.ndarray, K: np.ndarray, rvec: np.ndarray, tvec: np.ndarray,
                 inliers: np.ndarray) -> LiftResult | None:
    """LiftResult of one pose (None when non-finite or any inlier behind the camera)."""
    rvec = np.asarray(rvec, np.float64).reshape(3)
    tvec = np.asarray(tvec, np.float64).reshape(3)
    if not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))):
        return None
    joints = (obj @ axis_angle_to_matrix(rvec).T + tvec).astype(np.float32)
    if np.any(~(joints[inliers, 2] > 1e-3)):
        return None
    err = np.linalg.norm(project(joints, K) - img.astype(np.float32), axis=1).astype(np.float32)
    return LiftResult(joints, err, True, rvec.astype(np.float32), tvec.astype(np.float32), inliers.copy())


def lift_hand_candidates(
    world_landmarks: np.ndarray,
    image_landmarks: np.ndarray,
    K: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    depth_factors: tuple[float, ...] = (0.6, 1.6),
    tilt_deg: float = 45.0,
    min_depth_step: float = 0.05,
    ransac: bool = True,
) -> list[LiftResult]:
    """Every PnP pose that explains the 2D, best first (camera frame, metres; errors in px).

    Starts from :func:`lift_hand`'s pose, the two IPPE poses of the near-planar palm
    (``PALM_JOINTS``), the best pose moved to ``depth_factors`` times its distance and tilted
    by +-``tilt_deg`` about the two image axes; each start is refined by Levenberg-Marquardt on
    :func:`lift_hand`'s inliers. Local minima that differ in wrist depth by more than
    ``min_depth_step`` (relative) are kept, sorted by median inlier reprojection error; the
    caller decides which reprojection errors still "explain the 2D". A failed
    :func:`lift_hand` gives ``[that failure]``. ``ransac`` is passed to :func:`lift_hand`.
    """
    import cv2

    base = lift_hand(world_landmarks, image_landmarks, K, valid, ransac=ransac)
    if not base.ok:
        return [base]
    K = validate_intrinsics(K)
    obj = np.asarray(world_landmarks, np.float64)
    img = np.asarray(image_landmarks, np.float64)
    inl = base.inliers
    o = np.ascontiguousarray(obj[inl])
    p = np.ascontiguousarray(img[inl] - 0.5)
    Kcv = intrinsics_to_opencv(K).astype(np.float64)
    r0, t0 = base.rvec.astype(np.float64), base.tvec.astype(np.float64)
    R0 = axis_angle_to_matrix(r0)
    starts: list[tuple[np.ndarray, np.ndarray]] = [(r0, t0 * f) for f in depth_factors]
    for axis in ((np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])) if tilt_deg else ()):
        for sign in (-1.0, 1.0):
            Q = axis_angle_to_matrix(axis * np.deg2rad(tilt_deg) * sign)
            starts.append((matrix_to_axis_angle(Q @ R0).astype(np.float64), t0))
    palm = [k for k in PALM_JOINTS if inl[k]]
    if len(palm) >= 4:
        c = obj[palm].mean(0)
        _, _, vt = np.linalg.svd(obj[palm] - c)
        B = vt  # rows: plane axes u, v and normal
        planar = (obj[palm] - c) @ B.T
        planar[:, 2] = 0.0
        try:
            n_sol, rs, ts, _ = cv2.solvePnPGeneric(np.ascontiguousarray(planar), np.ascontiguousarray(img[palm] - 0.5),
                                                   Kcv, None, flags=cv2.SOLVEPNP_IPPE)
        except cv2.error:
            n_sol, rs, ts = 0, [], []
        for r, t in zip(list(rs)[:n_sol], list(ts)[:n_sol]):
            Rp = axis_angle_to_matrix(np.asarray(r, np.float64).reshape(3))
            R = Rp @ B  # hand frame -> plane frame -> camera
            t = np.asarray(t, np.float64).reshape(3) - R @ c
            starts.append((matrix_to_axis_angle(R).astype(np.float64), t))
    out = [base]
    for r, t in starts:
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(t))) or t[2] <= 0:
            continue
        try:
            r, t = cv2.solvePnPRefineLM(o, p, Kcv, None, r.reshape(3, 1).copy(), t.reshape(3, 1).copy())
        except cv2.error:
            continue
        res = _pose_result(obj, img, K, r, t, inl)
        if res is None:
            continue
        z = float(res.joints_cam[0, 2]) if np.isfinite(res.joints_cam[0, 2]) else float(res.tvec[2])
        if any(abs(z / (float(c_.joints_cam[0, 2]) if np.isfinite(c_.joints_cam[0, 2]) else float(c_.tvec[2])) - 1.0)
               < min_depth_step for c_ in out):
            continue
        out.append(res)
    return sorted(out, key=lambda r: r.median_error)


# ----------------------------------------------------------------------------------------------
# Scale calibration (paper: s = median_k j_k^z / j~_k^z)
# ----------------------------------------------------------------------------------------------


class ScaleResult(NamedTuple):
    """``scale`` s (metric = s * cloud), ``residual`` = median over valid joints of
    |s * cloud_z - metric_z| / metric_z, ``n_valid`` joints used. NaN scale/residual when
    ``n_valid`` is 0."""

    scale: float
    residual: float
    n_valid: int

    @property
    def ok(self) -> bool:
        return self.n_valid > 0 and math.isfinite(self.scale)


def calibrate_scale(
    metric_joint_depths: np.ndarray, cloud_depths: np.ndarray, valid: np.ndarray | None = None
) -> ScaleResult:
    """The paper's scale calibration: s = median over valid joints k of metric_z_k / cloud_z_k.

    ``metric_joint_depths`` (N,) metric hand-joint z (metres, camera frame); ``cloud_depths``
    (N,) the point cloud's (relative-scale) depth at each joint's pixel; ``valid`` (N,) bool
    (visible joints). A joint counts only when valid and both depths are finite and > 0.
    The median makes s robust to up to half the joints being outliers.
    """
    m = np.asarray(metric_joint_depths, dtype=np.float64)
    c = np.asarray(cloud_depths, dtype=np.float64)
    if m.ndim != 1 or c.shape != m.shape:
        raise ValueError(
            f"metric_joint_depths and cloud_depths: expected two (N,) arrays, got {m.shape} and {c.shape}"
        )
    ok = _valid_depth(m) & _valid_depth(c)
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != m.shape:
            raise ValueError(f"valid: expected shape {m.shape}, got {v.shape}")
        ok &= v
    n = int(ok.sum())
    if n == 0:
        return ScaleResult(float("nan"), float("nan"), 0)
    s = float(np.median(m[ok] / c[ok]))
    residual = float(np.median(np.abs(s * c[ok] - m[ok]) / m[ok]))
    return ScaleResult(s, residual, n)


# ----------------------------------------------------------------------------------------------
# Rigid transforms
# ----------------------------------------------------------------------------------------------


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) (axis * angle, radians) -> rotation matrices (..., 3, 3)."""
    r = np.asarray(rotvec)
    dtype = np.float64 if r.dtype == np.float64 else np.float32
    r = r.astype(np.float64)
    if r.shape[-1:] != (3,):
        raise ValueError(f"rotvec: expected shape (..., 3), got {r.shape}")
    theta = np.linalg.norm(r, axis=-1)
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    k = r / safe[..., None]
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    Kx = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], axis=-1).reshape(r.shape[:-1] + (3, 3))
    s = np.sin(theta)[..., None, None]
    c = np.cos(theta)[..., None, None]
    R = np.eye(3) + s * Kx + (1 - c) * (Kx @ Kx)
    # first-order term for tiny angles, where the normalised axis is meaningless
    rx, ry, rz = r[..., 0], r[..., 1], r[..., 2]
    Rs = np.eye(3) + np.stack([zero, -rz, ry, rz, zero, -rx, -ry, rx, zero], axis=-1).reshape(R.shape)
    R = np.where(small[..., None, None], Rs, R)
    return R.astype(dtype)


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> rotation vectors (..., 3), angle in [0, pi] radians."""
    m = np.asarray(R, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"R: expected shape (..., 3, 3), got {m.shape}")
    cos = np.clip((np.trace(m, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)
    w = np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    sin = np.sin(theta)
    out = np.where(
        (sin > 1e-6)[..., None], w * (theta / np.where(sin > 1e-6, 2 * sin, 1.0))[..., None], w / 2.0
    )
    # near pi: axis from the symmetric part, sign from the (small) antisymmetric part
    near_pi = (theta > math.pi - 1e-3)
    if np.any(near_pi):
        B = (m + np.swapaxes(m, -1, -2)) / 2.0 - np.eye(3) * cos[..., None, None]
        diag = np.diagonal(B, axis1=-2, axis2=-1)
        col = np.argmax(diag, axis=-1)
        axis = np.take_along_axis(B, col[..., None, None].repeat(3, axis=-1), axis=-2)[..., 0, :]
        axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
        sign = np.where(np.sum(axis * w, axis=-1) < 0, -1.0, 1.0)
        out = np.where(near_pi[..., None], axis * (theta * sign)[..., None], out)
    return out.astype(np.float64 if np.asarray(R).dtype == np.float64 else np.float32)


def make_transform(R: np.ndarray, t: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Rotation (..., 3, 3) and translation (..., 3) -> homogeneous transforms (..., 4, 4)."""
    R = np.asarray(R, dtype=dtype)
    t = np.asarray(t, dtype=dtype)
    if R.shape[-2:] != (3, 3) or t.shape[-1:] != (3,):
        raise ValueError(f"make_transform: expected R (..., 3, 3) and t (..., 3), got {R.shape} and {t.shape}")
    batch = np.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    T = np.zeros(batch + (4, 4), dtype)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1.0
    return T


def _check_transform(T: np.ndarray, name: str = "T") -> np.ndarray:
    T = np.asarray(T)
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected a (..., 4, 4) rigid transform, got shape {T.shape}")
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4): [R t]^-1 = [R^T, -R^T t]. Keeps float64 input
    as float64, else float32."""
    T = _check_transform(T)
    dtype = np.float64 if T.dtype == np.float64 else np.float32
    T = T.astype(np.float64)
    R = np.swapaxes(T[..., :3, :3], -1, -2)
    t = -(R @ T[..., :3, 3:4])[..., 0]
    return make_transform(R, t, dtype)


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a rigid transform T (4, 4) to points (..., 3) -> (..., 3) float32; or a batch of
    transforms (B..., 4, 4) to point sets (B..., N, 3), one transform per set."""
    T = _check_transform(T).astype(np.float32)
    p = np.asarray(points, dtype=np.float32)
    if p.shape[-1:] != (3,):
        raise ValueError(f"points: expected shape (..., 3), got {p.shape}")
    if T.ndim == 2:
        return (p @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
    # batched: T (B..., 4, 4) with points (B..., N, 3)
    R, t = T[..., :3, :3], T[..., :3, 3]
    return (np.einsum("...ij,...nj->...ni", R, p) + t[..., None, :]).astype(np.float32)


@dataclass
class RelativeMotion:
    """Motion of camera b seen from camera a: rotation ``axis`` (3,) unit vector in a's frame
    (zeros when the angle is 0), ``angle_deg`` in [0, 180], ``translation`` (3,) metres: b's
    origin in a's frame; ``transform`` (4, 4) a_from_b."""

    axis: np.ndarray
    angle_deg: float
    translation: np.ndarray
    transform: np.ndarray


def relative_motion(T_a: np.ndarray, T_b: np.ndarray) -> RelativeMotion:
    """Relative camera motion between two ``world_from_camera`` poses (4, 4): the pose of
    camera b in camera a's frame, a_from_b = inv(T_a) @ T_b, as axis-angle + translation."""
    Ta = _check_transform(T_a, "T_a").astype(np.float64)
    Tb = _check_transform(T_b, "T_b").astype(np.float64)
    if Ta.shape != (4, 4) or Tb.shape != (4, 4):
        raise ValueError(f"relative_motion: expected two (4, 4) poses, got {Ta.shape} and {Tb.shape}")
    a_from_b = invert_transform(Ta) @ Tb
    rv = matrix_to_axis_angle(a_from_b[:3, :3])
    angle = float(np.linalg.norm(rv))
    axis = rv / angle if angle > 1e-9 else np.zeros(3)
    return RelativeMotion(
        axis=axis.astype(np.float32),
        angle_deg=math.degrees(angle),
        translation=a_from_b[:3, 3].astype(np.float32),
        transform=a_from_b.astype(np.float32),
    )
