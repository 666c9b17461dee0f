"""640x480 Kinect depth to a point cloud: vipa.geometry.depth_to_points vs Open3D create_from_depth_image.

Same input for both: the real TUM frame in samples/rgbd_tum (uint16 counts, metres = value /
5000) and the freiburg1 intrinsics. Open3D receives its Image and PinholeCameraIntrinsic
wrappers built beforehand (not timed); ours gets the numpy array and K. Both drop invalid (zero)
pixels and return every other point (Open3D: no truncation). Ours caches the per-pixel ray grid
per (K, H, W), as a video with one K does; its cold (first-call) time is reported too. value and
baseline are the best of N interleaved runs (vipa.bench.time_pair; the minimum is the figure least
disturbed by other processes on a shared machine), medians beside them. Goal: at least as fast
(ratio >= 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

K_TUM_CV = np.array([[517.3, 0.0, 318.6], [0.0, 516.5, 255.3], [0.0, 0.0, 1.0]])  # OpenCV convention
DEPTH_UNIT = 1.0 / 5000.0


def run(quick: bool) -> dict[str, Any]:
    import cv2
    import open3d as o3d

    from vipa import geometry
    from vipa.bench import time_it, time_pair
    from vipa.resources import SAMPLE_RGBD

    raw = cv2.imread(str(SAMPLE_RGBD / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.shape != (480, 640) or raw.dtype != np.uint16:
        raise RuntimeError(f"{SAMPLE_RGBD / 'TUM_depth.png'}: expected a 640x480 uint16 depth PNG")
    K = geometry.intrinsics_from_opencv(K_TUM_CV)  # same camera in vipa's pixel-corner convention
    h, w = raw.shape
    intr = o3d.camera.PinholeCameraIntrinsic(w, h, *K_TUM_CV[[0, 1, 0, 1], [0, 1, 2, 2]])
    image = o3d.geometry.Image(np.ascontiguousarray(raw))

    def ours() -> np.ndarray:
        return geometry.depth_to_points(raw, K, depth_unit=DEPTH_UNIT)[0]

    def baseline() -> Any:
        return o3d.geometry.PointCloud.create_from_depth_image(
            image, intr, depth_scale=1.0 / DEPTH_UNIT, depth_trunc=1e6
        )

    pts, ref = ours(), np.asarray(baseline().points)
    if pts.shape != ref.shape:
        raise RuntimeError(f"outputs differ in size: ours {pts.shape}, open3d {ref.shape}")
    max_diff = float(np.abs(pts - ref).max())

    def cold() -> None:
        geometry._RAY_CACHE.clear()
        ours()

    repeats = 5 if quick else 60
    t_ours, t_base = time_pair(ours, baseline, repeats=repeats, warmup=1 if quick else 5)
    t_cold = time_it(cold, repeats=3 if quick else 10, warmup=0)
    return {
        "metric": "time per 640x480 depth frame to points",
        "unit": "ms",
        "value": t_ours.best * 1e3,
        "baseline": t_base.best * 1e3,
        "baseline_name": f"open3d {o3d.__version__} PointCloud.create_from_depth_image",
        "goal": 1.0,
        "lower_is_better": True,
        "ours_median_ms": t_ours.median * 1e3,
        "baseline_median_ms": t_base.median * 1e3,
        "ours_cold_ms": t_cold.median * 1e3,
        "runs": repeats,
        "points": int(len(pts)),
        "max_abs_diff_m": max_diff,
        "input": "samples/rgbd_tum/TUM_depth.png",
    }
