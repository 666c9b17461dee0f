"""Objects: rough 3D boxes from manual 2D boxes, from the cloud around a grasping hand, or
from a zero-shot detector loaded from a local folder.

All boxes are axis-aligned in each frame's camera frame (OpenCV, metres); 2D boxes are
pixels ``x0, y0, x1, y1``. A single depth view only sees an object's front surface, so the
extent along z is a guess (at least the smaller of the x/y extents); these are the paper's
"rough 3D object positions", good for QA and tokens, not for grasp planning.

Stages:

``object_from_boxes``  manual boxes (e.g. drawn in the app) at some frames -> ObjectTrack.
``propose_grasped_objects``  geometric proposal: frames where the fingertips touch cloud points
    that are not the hand form grasp segments; at each segment's first contact the non-hand,
    non-table cloud near the fingertips is clustered (Open3D DBSCAN) and the cluster holding
    the contact points becomes the object. It stays where it was until the grasp, moves with
    the fingertips' centroid during it, and stays where it was released.
``ZeroShotDetector`` / ``detect_objects``  an OWLv2 / OWL-ViT / Grounding-DINO class model from a
    local path (``transformers`` zero-shot object detection), boxes lifted with the depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vipa import geometry
from vipa.conventions import FINGERTIPS, HAND_EDGES, HANDS
from vipa.data.episode import Episode, ObjectTrack

from annotators.errors import BackendError


# ------------------------------------------------------------------------------ helpers


def box3d_corners(center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(..., 8, 3) corners of axis-aligned boxes, camera frame metres."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float32)
    return center[..., None, :] + 0.5 * signs * size


def project_boxes(center: np.ndarray, size: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(T, 4) 2D boxes (px, clipped to the image) of (T, 3) box centres of one size; NaN where unknown/behind."""
    out = np.full((center.shape[0], 4), np.nan, np.float32)
    ok = np.isfinite(center).all(-1)
    if not ok.any():
        return out
    corners = box3d_corners(center[ok].astype(np.float32), size.astype(np.float32))
    front = (corners[..., 2] > 1e-3).all(-1)
    uv = geometry.project(corners, K)
    box = np.concatenate([uv.min(1), uv.max(1)], -1)
    box[:, [0, 2]] = np.clip(box[:, [0, 2]], 0, width)
    box[:, [1, 3]] = np.clip(box[:, [1, 3]], 0, height)
    box[~front] = np.nan
    out[ok] = box
    return out


def _metric_depth(ep: Episode, frame: int) -> np.ndarray | None:
    d = ep.metric_depth(frame)
    if d is None:
        return None
    d = d.astype(np.float32)
    d[~(d > 0)] = np.nan
    return d


def lift_box(depth: np.ndarray, box: Sequence[float], K: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Rough 3D box (centre (3,), size (3,)) of a 2D box over metric depth; None if no depth inside.

    The object's front surface is taken as the nearer half of the depths in the box's inner
    half (the outer margin holds background); x/y extents come from the box edges at that depth.
    """
    h, w = depth.shape
    x0, y0, x1, y1 = [float(v) for v in box]
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box {box}: expected x0 < x1 and y0 < y1")
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
    r0, r1 = int(np.clip(np.floor(cy - hh), 0, h)), int(np.clip(np.ceil(cy + hh), 0, h))
    c0, c1 = int(np.clip(np.floor(cx - hw), 0, w)), int(np.clip(np.ceil(cx + hw), 0, w))
    vals = depth[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)].ravel()
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size == 0:
        return None
    z = float(np.median(vals[vals <= np.median(vals)]))
    fx, fy, px, py = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    sx, sy = (x1 - x0) * z / fx, (y1 - y0) * z / fy
    sz = min(sx, sy)
    center = np.array([(cx - px) * z / fx, (cy - py) * z / fy, z + sz / 2], np.float32)
    return center, np.array([sx, sy, sz], np.float32)


# ------------------------------------------------------------------------- manual boxes


def object_from_boxes(
    ep: Episode, boxes: Mapping[int, Sequence[float]], name: str, object_id: str | None = None,
    provenance: str = "manual",
) -> ObjectTrack:
    """ObjectTrack from 2D boxes given at some frames ({frame: (x0, y0, x1, y1) px}).

    With depth, each boxed frame gets a rough 3D centre; the size is the median over them.
    Frames without a box keep NaN centres and boxes.
    """
    t_count = ep.num_frames
    center = np.full((t_count, 3), np.nan, np.float32)
    box_2d = np.full((t_count, 4), np.nan, np.float32)
    sizes = []
    for frame, box in boxes.items():
        if not 0 <= int(frame) < t_count:
            raise ValueError(f"object_from_boxes: frame {frame} outside 0..{t_count - 1}")
        box_2d[int(frame)] = np.asarray(box, np.float32)
        depth = _metric_depth(ep, int(frame))
        lifted = None if depth is None else lift_box(depth, box, ep.K)
        if lifted is not None:
            center[int(frame)], s = lifted
            sizes.append(s)
    size = np.median(np.stack(sizes), 0).astype(np.float32) if sizes else np.full(3, np.nan, np.float32)
    oid = object_id or f"obj{len(ep.objects)}"
    return ObjectTrack(object_id=oid, name=name, center=center, size=size, box_2d=box_2d, provenance=provenance)


# ----------------------------------------------------------------- geometric proposals


@dataclass(frozen=True)
class ProposalConfig:
    """Parameters of the geometric object proposal (metres unless noted)."""

    hand_radius: float = 0.015  # cloud points this close to a hand bone belong to the hand
    contact_radius: float = 0.03  # ... this close to a fingertip touch it
    min_contact_points: int = 5  # per fingertip, for it to count as touching
    min_touching_tips: int = 1  # fingertips touching at once (the hand hides most of a held object)
    min_grasp_s: float = 0.15  # shortest grasp, seconds
    max_gap_s: float = 0.6  # lost contact bridged inside one grasp (the hand hides the object), s
    search_radius: float = 0.15  # object points are sought this close to the fingertips
    dbscan_eps: float = 0.012
    dbscan_min_points: int = 8
    plane_threshold: float = 0.008  # RANSAC inlier distance for the support plane
    stride: int = 2  # pixel stride when turning depth into points


def _point_segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, S) distances of points p (N, 3) to segments a->b (S, 3)."""
    ab = b - a
    denom = np.maximum((ab * ab).sum(-1), 1e-12)
    t = np.clip(((p[:, None, :] - a[None]) * ab[None]).sum(-1) / denom, 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    return np.linalg.norm(p[:, None, :] - closest, axis=-1)


def _non_hand_points(points: np.ndarray, joints: np.ndarray, radius: float) -> np.ndarray:
    """Mask of points farther than ``radius`` from every bone of one hand (joints (21, 3))."""
    edges = np.array(HAND_EDGES)
    a, b = joints[edges[:, 0]], joints[edges[:, 1]]
    ok = np.isfinite(a).all(-1) & np.isfinite(b).all(-1)
    if not ok.any():
        return np.ones(len(points), bool)
    return _point_segment_distance(points, a[ok], b[ok]).min(1) > radius


def _frame_points(ep: Episode, frame: int, stride: int) -> np.ndarray | None:
    depth = _metric_depth(ep, frame)
    if depth is None:
        return None
    pts, _ = geometry.depth_to_points(depth, ep.K, stride=stride)
    return pts[np.isfinite(pts).all(-1)]


def contact_counts(ep: Episode, side: str, cfg: ProposalConfig = ProposalConfig()) -> np.ndarray:
    """(T, 5) number of cloud points, neither hand nor support plane, within ``contact_radius`` of each fingertip."""
    tr = ep.hands[side]
    counts = np.zeros((ep.num_frames, len(FINGERTIPS)), np.int32)
    if ep.depth_raw is None:
        return counts
    for t in np.flatnonzero(tr.present):
        joints = tr.joints_3d[t]
        tips = joints[list(FINGERTIPS)]
        if not np.isfinite(tips).all():
            continue
        pts = _frame_points(ep, t, cfg.stride)
        if pts is None or len(pts) == 0:
            continue
        near = np.linalg.norm(pts - tips.mean(0), axis=-1) < cfg.search_radius
        pts = pts[near & ~_remove_support_plane(pts, cfg)]
        pts = pts[_non_hand_points(pts, joints, cfg.hand_radius)]
        if len(pts) == 0:
            continue
        d = np.linalg.norm(pts[:, None, :] - tips[None], axis=-1)
        counts[t] = (d < cfg.contact_radius).sum(0)
    return counts


def grasp_segments(counts: np.ndarray, fps: float, cfg: ProposalConfig = ProposalConfig()) -> list[tuple[int, int]]:
    """[start, end) frame ranges where enough fingertips touch something (gaps bridged)."""
    touching = counts >= cfg.min_contact_points
    grasp = touching.sum(1) >= cfg.min_touching_tips
    max_gap = int(round(cfg.max_gap_s * fps))
    min_len = max(1, int(round(cfg.min_grasp_s * fps)))
    segs: list[list[int]] = []
    for t in np.flatnonzero(grasp):
        if segs and t - segs[-1][1] <= max_gap:
            segs[-1][1] = t + 1
        else:
            segs.append([int(t), int(t) + 1])
    return [(a, b) for a, b in segs if b - a >= min_len]


def _cluster_object(points: np.ndarray, tips: np.ndarray, cfg: ProposalConfig) -> np.ndarray | None:
    """Points of the DBSCAN cluster holding the most fingertip-contact points, or None."""
    import open3d as o3d

    if len(points) < cfg.dbscan_min_points:
        return None
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    labels = np.asarray(pcd.cluster_dbscan(eps=cfg.dbscan_eps, min_points=cfg.dbscan_min_points))
    contact = np.linalg.norm(points[:, None, :] - tips[None], axis=-1).min(1) < cfg.contact_radius
    best, best_n = None, 0
    for lab in np.unique(labels[labels >= 0]):
        n = int((contact & (labels == lab)).sum())
        if n > best_n:
            best, best_n = lab, n
    return None if best is None else points[labels == best]


def _remove_support_plane(points: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    """Drop the dominant plane (table) if it holds at least 30% of the frame's points."""
    import open3d as o3d

    if len(points) < 50:
        return np.zeros(len(points), bool)
    o3d.utility.random.seed(0)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    _, inliers = pcd.segment_plane(distance_threshold=cfg.plane_threshold, ransac_n=3, num_iterations=200)
    mask = np.zeros(len(points), bool)
    if len(inliers) >= 0.3 * len(points):
        mask[np.asarray(inliers)] = True
    return mask


def propose_grasped_objects(
    ep: Episode, cfg: ProposalConfig = ProposalConfig(), name: str = "object"
) -> list[ObjectTrack]:
    """Geometric proposals (see module docstring): one ObjectTrack per grasp segment per hand."""
    if ep.depth_raw is None:
        return []
    tracks: list[ObjectTrack] = []
    for side in HANDS:
        tr = ep.hands[side]
        if not tr.present.any():
            continue
        counts = contact_counts(ep, side, cfg)
        for start, end in grasp_segments(counts, ep.fps, cfg):
            t0 = start + int(np.argmax(counts[start:end].sum(1)[: max(1, min(3, end - start))]))
            joints = tr.joints_3d[t0]
            tips = joints[list(FINGERTIPS)]
            pts = _frame_points(ep, t0, cfg.stride)
            if pts is None:
                continue
            table = _remove_support_plane(pts, cfg)
            keep = ~table & (np.linalg.norm(pts - tips.mean(0), axis=-1) < cfg.search_radius)
            cand = pts[keep]
            cand = cand[_non_hand_points(cand, joints, cfg.hand_radius)]
            obj = _cluster_object(cand, tips, cfg)
            if obj is None:
                continue
            lo, hi = np.percentile(obj, 2, 0), np.percentile(obj, 98, 0)
            size = (hi - lo).astype(np.float32)
            depth_extra = max(0.0, float(min(size[0], size[1]) - size[2]))
            size[2] += depth_extra
            c0 = ((lo + hi) / 2).astype(np.float32)
            c0[2] += depth_extra / 2
            center = _follow_hand(tr.joints_3d, c0, t0, end, ep.num_frames)
            oid = f"grasp{len(tracks)}_{side}"
            tracks.append(ObjectTrack(
                object_id=oid, name=name, center=center, size=size,
                box_2d=project_boxes(center, size, ep.K, ep.width, ep.height),
                provenance=f"proposal:grasp:{side}:{start}-{end}",
            ))
    return tracks


def _follow_hand(joints: np.ndarray, c0: np.ndarray, t0: int, end: int, t_count: int) -> np.ndarray:
    """(T, 3) centre: c0 until t0, carried with the fingertip centroid until ``end``, then held."""
    tips = joints[:, list(FINGERTIPS)]
    ok = np.isfinite(tips).all((-1, -2))
    centroid = np.where(ok[:, None], np.where(ok[:, None, None], tips, 0).mean(1), np.nan)
    center = np.tile(c0, (t_count, 1)).astype(np.float32)
    ref = centroid[t0]
    last = c0.copy()
    for t in range(t0, end):
        if ok[t]:
            last = c0 + (centroid[t] - ref)
        center[t] = last
    center[end:] = last
    return center


# ------------------------------------------------------------------ zero-shot detector


class ZeroShotDetector:
    """A transformers zero-shot object detector (OWLv2, OWL-ViT, Grounding DINO) from a local folder.

    ``detect(image (H, W, 3) uint8, labels) -> list[(label, score, (x0, y0, x1, y1) px)]``.
    Nothing is downloaded: ``path`` must hold the model and its processor files.
    """

    def __init__(self, path: str | Path, threshold: float = 0.2, device: str = "cpu") -> None:
        path = Path(path)
        if not path.is_dir():
            raise BackendError(f"detector:{path}", "not a folder with a transformers model")
        try:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForZeroShotObjectDetection.from_pretrained(path, local_files_only=True).to(device)
        except Exception as exc:  # noqa: BLE001 - any loading failure is a backend error
            raise BackendError(f"detector:{path}", f"cannot load a zero-shot detector: {exc}") from exc
        self.model.eval()
        self.threshold = float(threshold)
        self.device = device

    def detect(self, image: np.ndarray, labels: Sequence[str]) -> list[tuple[str, float, tuple[float, float, float, float]]]:
        import torch
        from PIL import Image

        h, w = image.shape[:2]
        inputs = self.processor(text=[list(labels)], images=Image.fromarray(image), return_tensors="pt").to(self.device)
        with torch.no_grad():
            outputs = self.model(**inputs)
        # OWLv2 pads images to a square (bottom/right): its boxes are relative to that square.
        size = (max(h, w), max(h, w)) if self.model.config.model_type == "owlv2" else (h, w)
        post = getattr(self.processor, "post_process_grounded_object_detection", None)
        if post is not None:
            res = post(outputs, threshold=self.threshold, target_sizes=[size], text_labels=[list(labels)])[0]
        else:
            res = self.processor.post_process_object_detection(outputs, threshold=self.threshold, target_sizes=[size])[0]
        found = []
        names = res.get("text_labels")
        for k, (score, box) in enumerate(zip(res["scores"].tolist(), res["boxes"].tolist())):
            label = names[k] if names is not None else labels[int(res["labels"][k])]
            x0, x1 = np.clip([box[0], box[2]], 0, w)
            y0, y1 = np.clip([box[1], box[3]], 0, h)
            if x1 > x0 and y1 > y0:
                found.append((str(label), float(score), (float(x0), float(y0), float(x1), float(y1))))
        return found


def detect_objects(
    ep: Episode, detector: ZeroShotDetector, labels: Sequence[str], stride: int = 5
) -> list[ObjectTrack]:
    """Run the detector every ``stride`` frames on ``ep.rgb``; one ObjectTrack per label (best box per frame)."""
    if ep.rgb is None:
        raise ValueError("detect_objects: the episode holds no RGB frames in memory")
    per_label: dict[str, dict[int, tuple[float, ...]]] = {}
    for t in range(0, ep.num_frames, max(1, stride)):
        best: dict[str, tuple[float, tuple]] = {}
        for label, score, box in detector.detect(ep.rgb[t], labels):
            if label not in best or score > best[label][0]:
                best[label] = (score, box)
        for label, (_, box) in best.items():
            if box[2] > box[0] and box[3] > box[1]:
                per_label.setdefault(label, {})[t] = box
    return [
        object_from_boxes(ep, boxes, name=label, object_id=f"det{k}", provenance="detector")
        for k, (label, boxes) in enumerate(sorted(per_label.items()))
    ]


# ------------------------------------------------------------- backends (annotators.registry)


class GraspProposals:
    """Object backend ``grasp``: ``propose_grasped_objects`` with ``ProposalConfig`` options (needs depth)."""

    def __init__(self, **options) -> None:
        self.cfg = ProposalConfig(**options)

    def __call__(self, ep: Episode) -> list[ObjectTrack]:
        return propose_grasped_objects(ep, self.cfg) if ep.depth_raw is not None else []


class DetectorObjects:
    """Object backend ``detector:PATH``: a ``ZeroShotDetector`` run every ``stride`` frames for ``labels``."""

    def __init__(self, path: str, *, labels: tuple[str, ...] = (), threshold: float = 0.2, device: str = "cpu",
                 stride: int = 5) -> None:
        if not path:
            raise BackendError("detector", "needs a local model folder: detector:PATH")
        self.detector = ZeroShotDetector(Path(path).expanduser(), threshold=threshold, device=device)
        self.labels = [str(x) for x in labels] or ["object"]
        self.stride = int(stride)

    def __call__(self, ep: Episode) -> list[ObjectTrack]:
        return detect_objects(ep, self.detector, self.labels, stride=self.stride)


class BoxFileObjects:
    """Object backend ``boxes:FILE``: manual 2D boxes from a JSON file ``{"name": {"frame": [x0, y0, x1, y1]}}``."""

    def __init__(self, path: str) -> None:
        import json

        p = Path(path).expanduser()
        try:
            raw = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise BackendError(f"boxes:{p}", f"cannot read the boxes file: {exc}") from None
        if not isinstance(raw, dict):
            raise BackendError(f"boxes:{p}", 'expected {"name": {"frame": [x0, y0, x1, y1]}}')
        self.boxes: dict[str, dict[int, list[float]]] = {}
        for name, per_frame in raw.items():
            if not isinstance(per_frame, dict):
                raise BackendError(f"boxes:{p}", f"{name}: expected {{frame: [x0, y0, x1, y1]}}")
            for frame, box in per_frame.items():
                if not (isinstance(box, list) and len(box) == 4 and str(frame).isdigit()):
                    raise BackendError(f"boxes:{p}", f"{name}: frame {frame!r}: expected [x0, y0, x1, y1]")
            self.boxes[str(name)] = {int(f): [float(v) for v in b] for f, b in per_frame.items()}

    def __call__(self, ep: Episode) -> list[ObjectTrack]:
        return [object_from_boxes(ep, boxes, name=name, object_id=f"box{k}")
                for k, (name, boxes) in enumerate(sorted(self.boxes.items()))]
