"""Objects of a tabletop scene without a hand: the supporting plane and a 3D box per object on it.

``propose_tabletop(depth, K, config) -> TabletopResult`` works on one metric depth map (H, W)
float32 metres (NaN = no reading) with its 3x3 K (pixel convention of ``vipa.conventions``):

1. the depth becomes a camera-frame cloud (every ``stride``-th pixel, ``vipa.geometry``),
   voxel-downsampled to ``voxel`` m;
2. the supporting plane (RANSAC, ``plane_threshold`` m, refined by least squares on its
   inliers): of the few largest planes, those parallel to the largest one are candidates (floor,
   table, shelf top) and the nearest to the camera is taken (the table, not the floor below
   it); its normal points to the camera's side ("above");
3. points ``min_height`` .. ``max_height`` m above the plane whose foot lies on the table
   (inside the 2D convex hull of the plane's inliers, grown by ``hull_margin`` m) are the
   object points; they are grouped by connected components on a voxel grid (``cluster_voxel``
   m cells, 26-neighbourhood); groups under ``min_points`` points are dropped;
4. each group becomes a box: its points plus their feet on the plane (objects stand on the
   table; the sensor sees only their top and front), axis-aligned in the camera frame
   (``ObjectTrack``'s convention); the plane-frame footprint and height go to ``extra``.

``label_proposals(proposals, detections)`` names proposals after 2D detections (label, score,
box) of a local detector: a proposal takes the label of the detection whose box overlaps its
projected box best (IoU >= ``min_iou``). ``propose_tabletop_objects(ep, detector=None,
labels=())`` runs all this on an episode (first frame with depth; static scene: the box holds
for every frame) and returns ``ObjectTrack``s (provenance ``tabletop``), storing the plane and
the proposals in ``ep.extra["tabletop"]``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from vipa import geometry
from vipa.data.episode import Episode, ObjectTrack


@dataclass(frozen=True)
class TabletopConfig:
    """Settings of the tabletop proposals (metres)."""

    stride: int = 2
    voxel: float = 0.01
    max_depth: float = 4.0
    plane_threshold: float = 0.01
    ransac_iterations: int = 400
    ransac_sample: int = 4000
    max_planes: int = 4
    parallel_deg: float = 10.0
    min_plane_fraction: float = 0.2  # of the largest plane's inliers, for another plane to count
    min_height: float = 0.015
    max_height: float = 0.6
    hull_margin: float = 0.02
    cluster_voxel: float | None = None  # None: 1 cm, or 2.5 sampled-pixel spacings at the plane's median depth if coarser
    min_points: int = 40
    max_below_fraction: float = 0.2  # of a group's points below the plane: more, it does not stand on it
    max_footprint: float = 0.6  # m: larger groups are furniture or walls, not objects
    seed: int = 0


@dataclass
class Proposal:
    """One object on the plane: camera-frame AABB (centre, size), plane-frame footprint and height."""

    center: np.ndarray  # (3,) float32 m, camera frame
    size: np.ndarray  # (3,) float32 m, extents along camera x, y, z
    height: float  # m above the plane
    footprint: tuple[float, float]  # m, extents along the footprint's principal axes
    num_points: int
    box_2d: np.ndarray  # (4,) float32 px, x0 y0 x1 y1 of the projected box
    name: str = "object"
    score: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"center": [round(float(v), 4) for v in self.center], "size": [round(float(v), 4) for v in self.size],
                "height": round(self.height, 4), "footprint": [round(float(v), 4) for v in self.footprint],
                "num_points": int(self.num_points), "box_2d": [round(float(v), 1) for v in self.box_2d],
                "name": self.name, "score": round(float(self.score), 3)}


@dataclass
class TabletopResult:
    """The plane n.x + d = 0 (unit n towards the camera) and the proposals (nearest first)."""

    normal: np.ndarray | None
    offset: float
    plane_inliers: int
    proposals: list[Proposal] = field(default_factory=list)
    reason: str = ""
    rejected: dict[str, int] = field(default_factory=dict)  # groups left out, by why
    cluster_voxel: float | None = None  # m, the grid cell used for grouping

    def to_json(self) -> dict[str, Any]:
        return {"plane": None if self.normal is None else {"normal": [round(float(v), 5) for v in self.normal],
                                                         "offset": round(float(self.offset), 5),
                                                         "inliers": int(self.plane_inliers)},
                "proposals": [p.to_json() for p in self.proposals], "reason": self.reason,
                "rejected": dict(self.rejected), "cluster_voxel": self.cluster_voxel}


def _voxel_down(points: np.ndarray, voxel: float) -> np.ndarray:
    keys = np.floor(points / voxel).astype(np.int64)
    _, idx = np.unique(keys, axis=0, return_index=True)
    return points[np.sort(idx)]


def _ransac_plane(points: np.ndarray, cfg: TabletopConfig, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """(unit normal with the camera on its positive side, offset d, inlier mask) of the largest
    plane: ``ransac_iterations`` random triples scored on a subsample of ``ransac_sample``
    points, the best refined by least squares on its inliers among all points."""
    n_pts = len(points)
    sub = points[rng.choice(n_pts, min(n_pts, cfg.ransac_sample), replace=False)]
    tri = points[rng.integers(0, n_pts, (cfg.ransac_iterations, 3))]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1)
    ok = norm > 1e-9
    normals, tri = normals[ok] / norm[ok, None], tri[ok]
    offsets = -np.einsum("ij,ij->i", normals, tri[:, 0])
    scores = (np.abs(sub @ normals.T + offsets) <= cfg.plane_threshold).sum(0)
    best = int(np.argmax(scores))
    n, d = normals[best], offsets[best]
    for _ in range(2):  # least squares on the inliers: normal = smallest principal axis
        m = np.abs(points @ n + d) <= cfg.plane_threshold
        p = points[m]
        centroid = p.mean(0)
        n = np.linalg.svd(p - centroid, full_matrices=False)[2][2]
        d = -float(np.dot(n, centroid))
    if d < 0:  # the camera (origin) on the positive side: n . 0 + d > 0
        n, d = -n, -d
    return n, d, np.abs(points @ n + d) <= cfg.plane_threshold


def _fit_plane(points: np.ndarray, cfg: TabletopConfig) -> tuple[np.ndarray, float, np.ndarray] | None:
    """The supporting plane: of the largest planes (up to ``max_planes``), those parallel to the
    largest one (within ``parallel_deg``) and holding at least ``min_plane_fraction`` of its
    inliers are candidates (a floor, a table, a shelf top); the nearest to the camera is the
    surface things stand on in view (the table above the floor)."""
    if len(points) < 50:
        return None
    rng = np.random.default_rng(cfg.seed)
    rest = np.ones(len(points), bool)
    planes = []
    for _ in range(cfg.max_planes):
        if rest.sum() < 50:
            break
        idx = np.flatnonzero(rest)
        n, d, m = _ransac_plane(points[idx], cfg, rng)
        if planes and m.sum() < cfg.min_plane_fraction * planes[0][2].sum():
            break
        full = np.zeros(len(points), bool)
        full[idx[m]] = True
        planes.append((n, d, full))
        rest &= ~full
    n0 = planes[0][0]
    cos = np.cos(np.radians(cfg.parallel_deg))
    cands = [pl for pl in planes if abs(float(np.dot(pl[0], n0))) >= cos]
    n, d, _ = min(cands, key=lambda pl: pl[1])
    return n, d, np.abs(points @ n + d) <= cfg.plane_threshold


def _plane_basis(n: np.ndarray) -> np.ndarray:
    """(2, 3) orthonormal in-plane axes of the plane with normal ``n``."""
    ref = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(n, ref)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(n, u)])


def _inside_hull(hull_pts: np.ndarray, query: np.ndarray, margin: float) -> np.ndarray:
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(hull_pts)
    except (QhullError, ValueError):
        return np.ones(len(query), bool)
    eq = hull.equations  # a.x + b <= 0 inside
    return (query @ eq[:, :2].T + eq[:, 2] <= margin).all(1)


def _components(points: np.ndarray, cell: float) -> np.ndarray:
    """Connected-component label (0..) per point on a voxel grid, 26-neighbourhood."""
    from scipy import ndimage

    keys = np.floor(points / cell).astype(np.int64)
    lo = keys.min(0)
    keys -= lo
    grid = np.zeros(keys.max(0) + 1, bool)
    grid[tuple(keys.T)] = True
    labels, _ = ndimage.label(grid, structure=np.ones((3, 3, 3), bool))
    return labels[tuple(keys.T)] - 1


def propose_tabletop(depth: np.ndarray, K: np.ndarray, config: TabletopConfig | None = None) -> TabletopResult:
    """Supporting plane and object boxes of one metric depth map (see the module docstring)."""
    cfg = config or TabletopConfig()
    K = geometry.validate_intrinsics(np.asarray(K, np.float32))
    h, w = depth.shape
    pts, _ = geometry.depth_to_points(np.asarray(depth, np.float32), K, stride=cfg.stride, max_depth=cfg.max_depth)
    pts = pts[np.isfinite(pts).all(1)].astype(np.float64)
    if len(pts) < 50:
        return TabletopResult(None, 0.0, 0, reason=f"only {len(pts)} points with depth")
    pts = _voxel_down(pts, cfg.voxel)
    fit = _fit_plane(pts, cfg)
    if fit is None:
        return TabletopResult(None, 0.0, 0, reason="too few points for a plane")
    n, d, inl = fit
    basis = _plane_basis(n)
    height = pts @ n + d
    off = ~inl & (np.abs(height) >= cfg.min_height) & (np.abs(height) <= cfg.max_height)
    if off.any():  # keep points whose foot lies on the table (inside the hull of its inliers)
        on_table = _inside_hull(pts[inl] @ basis.T, pts[off] @ basis.T, cfg.hull_margin)
        idx = np.flatnonzero(off)[on_table]
    else:
        idx = np.zeros(0, int)
    result = TabletopResult(n.astype(np.float32), float(d), int(inl.sum()))
    if not (height[idx] > 0).any():
        result.reason = "no points above the plane"
        return result
    # components over points above *and* below the plane: a thing that goes on below the table
    # top (a chair back in front of it, a wall behind it) does not stand on it
    cell = cfg.cluster_voxel
    if cell is None:
        spacing = cfg.stride * float(np.median(pts[inl][:, 2])) / float(K[0, 0])  # m between sampled pixels
        cell = max(0.01, 2.5 * spacing)
    result.cluster_voxel = round(float(cell), 4)
    comp = _components(pts[idx], cell)
    rejected = {"below_plane": 0, "too_large": 0, "too_few_points": 0}
    for c in range(comp.max() + 1):
        members = idx[comp == c]
        up = members[height[members] > 0]
        if len(up) < cfg.min_points:
            rejected["too_few_points"] += 1
            continue
        if len(members) - len(up) > cfg.max_below_fraction * len(members):
            rejected["below_plane"] += 1
            continue
        p = pts[up]
        hts = height[up]
        feet = p - hts[:, None] * n[None, :]
        f2 = feet @ basis.T
        f2 = f2 - f2.mean(0)
        ev = np.linalg.svd(f2, full_matrices=False)[2] if len(f2) > 2 else np.eye(2)
        ext = np.ptp(f2 @ ev.T, axis=0)
        if float(ext.max()) > cfg.max_footprint or float(hts.max()) >= cfg.max_height - cell:
            rejected["too_large"] += 1
            continue
        allp = np.concatenate([p, feet])
        lo, hi = allp.min(0), allp.max(0)
        center, size = ((lo + hi) / 2).astype(np.float32), (hi - lo).astype(np.float32)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        corners = corners[corners[:, 2] > 1e-3]
        uv = geometry.project(corners.astype(np.float32), K) if len(corners) else np.full((1, 2), np.nan)
        box = np.array([np.clip(uv[:, 0].min(), 0, w), np.clip(uv[:, 1].min(), 0, h),
                        np.clip(uv[:, 0].max(), 0, w), np.clip(uv[:, 1].max(), 0, h)], np.float32)
        result.proposals.append(Proposal(center, size, float(hts.max()), (float(ext[0]), float(ext[1])),
                                         len(p), box))
    result.rejected = rejected
    result.proposals.sort(key=lambda q: float(np.linalg.norm(q.center)))
    if not result.proposals:
        result.reason = f"no group of at least {cfg.min_points} points above the plane"
    return result


def _iou(a: np.ndarray, b: Sequence[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def label_proposals(proposals: list[Proposal], detections: Sequence[tuple[str, float, Sequence[float]]],
                    min_iou: float = 0.3) -> list[Proposal]:
    """Give each proposal the label of the detection (label, score, (x0, y0, x1, y1) px) whose box
    overlaps its projected box best, if that IoU reaches ``min_iou``; each detection names one proposal."""
    pairs = sorted(((_iou(p.box_2d, box), i, j) for i, p in enumerate(proposals)
                    for j, (_, _, box) in enumerate(detections)), reverse=True)
    used_p, used_d = set(), set()
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if i in used_p or j in used_d:
            continue
        proposals[i].name, proposals[i].score = str(detections[j][0]), float(detections[j][1])
        used_p.add(i)
        used_d.add(j)
    return proposals


def propose_tabletop_objects(ep: Episode, config: TabletopConfig | None = None, detector: Any = None,
                             labels: Sequence[str] = ()) -> list[ObjectTrack]:
    """ObjectTracks of the objects on the supporting plane in the first frame with depth.

    ``detector``: an object with ``detect(image, labels) -> [(label, score, box)]`` (e.g.
    ``annotators.objects.ZeroShotDetector``) naming the proposals; the box is held for every
    frame (a static scene)."""
    frame = next((t for t in range(ep.num_frames) if ep.depth_raw is not None
                  and np.isfinite(ep.depth_raw[t]).any()), None)
    if frame is None:
        ep.extra["tabletop"] = {"reason": "no depth"}
        return []
    cfg = config or TabletopConfig()
    res = propose_tabletop(ep.metric_depth(frame), ep.K, cfg)
    if detector is not None and ep.rgb is not None and res.proposals:
        label_proposals(res.proposals, detector.detect(ep.rgb[frame], list(labels) or ["object"]))
    ep.extra["tabletop"] = dict(res.to_json(), frame=int(frame), config=asdict(cfg))
    tracks = []
    start = len(ep.objects)
    for k, p in enumerate(res.proposals):
        tracks.append(ObjectTrack(
            object_id=f"table{start + k}", name=p.name,
            center=np.repeat(p.center[None], ep.num_frames, 0).astype(np.float32),
            size=p.size.astype(np.float32), box_2d=np.repeat(p.box_2d[None], ep.num_frames, 0).astype(np.float32),
            provenance="tabletop",
        ))
    return tracks


class TabletopObjects:
    """Object backend ``tabletop``: the objects standing on the supporting plane (needs metric depth).

    ``only_hand_free`` (default): only for episodes without any hand (a hand's episode gets the
    ``grasp`` proposals); ``detector``: a local zero-shot detector folder whose ``labels`` name
    the proposals; the other options are ``TabletopConfig`` fields."""

    def __init__(self, only_hand_free: bool = True, detector: str | None = None, labels: tuple = (),
                 plane_threshold: float = TabletopConfig.plane_threshold, min_height: float = TabletopConfig.min_height,
                 cluster_voxel: float | None = TabletopConfig.cluster_voxel, min_points: int = TabletopConfig.min_points,
                 max_footprint: float = TabletopConfig.max_footprint) -> None:
        self.only_hand_free = bool(only_hand_free)
        self.detector, self.labels = detector, tuple(labels)
        self.cfg = TabletopConfig(plane_threshold=plane_threshold, min_height=min_height, cluster_voxel=cluster_voxel,
                                  min_points=min_points, max_footprint=max_footprint)

    def __call__(self, ep: Episode) -> list[ObjectTrack]:
        from annotators.checks import has_hands

        if ep.depth_raw is None or (self.only_hand_free and has_hands(ep)):
            return []
        det = None
        if self.detector:
            from annotators.objects import ZeroShotDetector

            det = ZeroShotDetector(self.detector)
        return propose_tabletop_objects(ep, self.cfg, det, self.labels)


def _register() -> None:
    from annotators.registry import register_object_backend

    register_object_backend("tabletop", TabletopObjects,
                            description="objects standing on the supporting plane, for hand-free RGB-D scenes "
                                        "(plane RANSAC + clusters above it; needs metric depth)")


_register()
