"""Tabletop objects without a hand (annotators.tabletop) on synthetic RGB-D scenes with ground truth.

``render_tabletop(seed)`` ray-casts a scene made here: a finite table top (1.4 x 0.9 m) 0.75 m
above a floor, nine boxes and upright cylinders (4-14 cm) standing on it, seen by a 640x480
camera (fx = fy = 525) about 0.7 m above the table looking down at 45-60 degrees. It returns the
RGB, metric depth (NaN = no surface), K (corner convention) and the objects' true centres in the
camera frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from annotators.tabletop import TabletopConfig, label_proposals, propose_tabletop
from vipa import geometry

W, H = 640, 480
K = np.array([[525.0, 0, 320.0], [0, 525.0, 240.0], [0, 0, 1]], np.float32)
TABLE = (0.7, 0.45)  # half extents (m) of the table top in world x, y; the top is the plane z = 0
FLOOR_Z = -0.75


@dataclass
class Scene:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres, NaN = no surface
    K: np.ndarray
    centers: np.ndarray  # (N, 3) camera frame, m
    sizes: np.ndarray  # (N, 3) world extents (x, y, z), m
    kinds: list[str]
    cam_from_world: np.ndarray  # (4, 4)


def _camera(rs: np.random.Generator) -> np.ndarray:
    """cam_from_world of a camera above the table's front edge looking down at its middle."""
    tilt = np.radians(rs.uniform(45, 60))
    dist = rs.uniform(0.85, 1.0)
    target = np.array([rs.uniform(-0.05, 0.05), rs.uniform(-0.05, 0.05), 0.0])
    eye = target + dist * np.array([0.0, -np.cos(tilt), np.sin(tilt)])
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])  # rows: camera axes in world
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ eye
    return T


def render_tabletop(seed: int = 0, n_objects: int = 9, noise_m: float = 0.001, spacing: float = 1.0,
                    dropout: float = 0.0) -> Scene:
    """The scene of the module docstring; ``spacing`` scales the object grid (0.6: 17 x 12 cm apart,
    a few centimetres between neighbours), ``noise_m`` is the depth noise at 1 m (growing with z^2,
    as a structured-light sensor's), ``dropout`` the fraction of pixels without a reading."""
    rs = np.random.default_rng(seed)
    T = _camera(rs)
    R, t = T[:3, :3], T[:3, 3]
    eye = -R.T @ t
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rays_c = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)  # z = 1
    rays = rays_c.reshape(-1, 3) @ R  # world directions (camera z-depth = ray parameter)
    best = np.full(len(rays), np.inf)
    label = np.full(len(rays), -1)

    def plane_hit(z0: float, lim: tuple[float, float] | None, lab: int) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (z0 - eye[2]) / rays[:, 2]
        p = eye + s[:, None] * rays
        ok = (s > 0) & np.isfinite(s)
        if lim is not None:
            ok &= (np.abs(p[:, 0]) <= lim[0]) & (np.abs(p[:, 1]) <= lim[1])
        upd = ok & (s < best)
        best[upd], label[upd] = s[upd], lab

    plane_hit(0.0, TABLE, 100)
    plane_hit(FLOOR_Z, None, 101)
    # nine objects on a jittered 3x3 grid (no two closer than ~12 cm)
    centers, sizes, kinds = [], [], []
    gx, gy = np.meshgrid(np.array([-0.28, 0.0, 0.28]) * spacing, np.array([-0.2, 0.0, 0.2]) * spacing)
    for k, (x0, y0) in enumerate(zip(gx.ravel()[:n_objects], gy.ravel()[:n_objects])):
        x0, y0 = x0 + rs.uniform(-0.03, 0.03), y0 + rs.uniform(-0.03, 0.03)
        h = rs.uniform(0.05, 0.14)
        if k % 2 == 0:  # box, turned about the vertical
            a, b, yaw = rs.uniform(0.04, 0.1), rs.uniform(0.04, 0.1), rs.uniform(0, np.pi)
            c, s_ = np.cos(yaw), np.sin(yaw)
            Rz = np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])
            o = (eye - [x0, y0, h / 2]) @ Rz  # ray origin and direction in the box frame
            d = rays @ Rz
            half = np.array([a / 2, b / 2, h / 2])
            with np.errstate(divide="ignore", invalid="ignore"):
                t1, t2 = (-half - o) / d, (half - o) / d
            tmin = np.nanmax(np.minimum(t1, t2), 1)
            tmax = np.nanmin(np.maximum(t1, t2), 1)
            hit = (tmax >= tmin) & (tmin > 0)
            s_hit = np.where(hit, tmin, np.inf)
            ext = (abs(a * c) + abs(b * s_), abs(a * s_) + abs(b * c), h)
            kinds.append("box")
        else:  # upright cylinder
            r = rs.uniform(0.025, 0.05)
            o = eye - [x0, y0, 0.0]
            A = rays[:, 0] ** 2 + rays[:, 1] ** 2
            B = 2 * (o[0] * rays[:, 0] + o[1] * rays[:, 1])
            C = o[0] ** 2 + o[1] ** 2 - r * r
            disc = B * B - 4 * A * C
            with np.errstate(invalid="ignore", divide="ignore"):
                s_side = (-B - np.sqrt(disc)) / (2 * A)
                s_top = (h - eye[2]) / rays[:, 2]
            zs = eye[2] + s_side * rays[:, 2]
            side_ok = (disc >= 0) & (s_side > 0) & (zs >= 0) & (zs <= h)
            ptop = eye + s_top[:, None] * rays
            top_ok = (s_top > 0) & ((ptop[:, 0] - x0) ** 2 + (ptop[:, 1] - y0) ** 2 <= r * r)
            s_hit = np.minimum(np.where(side_ok, s_side, np.inf), np.where(top_ok, s_top, np.inf))
            ext = (2 * r, 2 * r, h)
            kinds.append("cylinder")
        upd = s_hit < best
        best[upd], label[upd] = s_hit[upd], k
        centers.append(R @ np.array([x0, y0, h / 2]) + t)
        sizes.append(ext)
    depth = best.reshape(H, W).astype(np.float32)
    depth[~np.isfinite(depth)] = np.nan
    depth += (rs.normal(0, noise_m, depth.shape) * depth ** 2).astype(np.float32)
    depth[rs.random(depth.shape) < dropout] = np.nan
    depth = np.round(depth * 1000) / 1000  # millimetre sensor
    palette = rs.integers(30, 230, (n_objects, 3))
    rgb = np.zeros((H * W, 3), np.uint8)
    lab = label.reshape(-1)
    rgb[lab == 100] = (200, 180, 150)
    rgb[lab == 101] = (110, 110, 110)
    for k in range(n_objects):
        rgb[lab == k] = palette[k]
    return Scene(rgb.reshape(H, W, 3), depth.astype(np.float32), K.copy(), np.array(centers, np.float32),
                 np.array(sizes, np.float32), kinds, T)


def _matched(centers: np.ndarray, proposals, tol: float = 0.05) -> int:
    """True centres within ``tol`` of a proposal, each proposal matched once (greedy, nearest first)."""
    props = np.array([p.center for p in proposals]).reshape(-1, 3)
    if len(props) == 0:
        return 0
    d = np.linalg.norm(centers[:, None] - props[None], axis=-1)
    used_c, used_p, n = set(), set(), 0
    for k in np.argsort(d, axis=None):
        i, j = np.unravel_index(k, d.shape)
        if d[i, j] > tol:
            break
        if i not in used_c and j not in used_p:
            used_c.add(i)
            used_p.add(j)
            n += 1
    return n


SCENES = {  # seed, noise at 1 m, grid spacing, dropout
    "easy-0": (0, 0.001, 1.0, 0.0), "easy-1": (1, 0.001, 1.0, 0.0), "easy-2": (2, 0.001, 1.0, 0.0),
    # objects a few cm apart, structured-light noise (3 mm at 1 m, ~z^2) and 10 % pixels without depth
    "crowded-3": (3, 0.003, 0.6, 0.1), "crowded-4": (4, 0.003, 0.6, 0.1), "crowded-5": (5, 0.003, 0.6, 0.1),
}


@pytest.mark.parametrize("name", list(SCENES))
def test_tabletop_finds_the_objects_on_the_table(name):
    seed, noise, spacing, dropout = SCENES[name]
    scene = render_tabletop(seed, noise_m=noise, spacing=spacing, dropout=dropout)
    res = propose_tabletop(scene.depth, scene.K)
    n = _matched(scene.centers, res.proposals)
    # the plane is the table top (not the floor 0.75 m below): its normal is the world's up in the camera
    up = scene.cam_from_world[:3, :3] @ np.array([0.0, 0.0, 1.0])
    assert float(np.dot(res.normal, up)) > 0.99
    assert abs(res.offset + float(scene.cam_from_world[:3, 3] @ up)) < 0.01  # n.x + d = 0, d = -n.t
    errs = np.linalg.norm(scene.centers[:, None] - np.array([p.center for p in res.proposals])[None], axis=-1).min(1)
    print(f"\n{name}: {n}/9 centres within 5 cm ({len(res.proposals)} proposals; centre errors cm "
          f"{[round(float(e) * 100, 1) for e in errs]}; rejected {res.rejected})")
    assert n >= 7
    assert len(res.proposals) <= 12  # few false proposals
    for p in res.proposals:  # heights come out close to the object's (the nearest true object)
        k = int(np.argmin(np.linalg.norm(scene.centers - p.center, axis=1)))
        if np.linalg.norm(scene.centers[k] - p.center) < 0.02:
            assert abs(p.height - scene.sizes[k, 2]) < 0.02


def test_tabletop_without_objects_and_without_depth():
    scene = render_tabletop(3, n_objects=0)
    res = propose_tabletop(scene.depth, scene.K)
    assert res.normal is not None and res.proposals == [] and "no" in res.reason
    empty = propose_tabletop(np.full((H, W), np.nan, np.float32), scene.K)
    assert empty.normal is None and "points" in empty.reason


def test_labels_from_a_local_detector():
    scene = render_tabletop(0)
    res = propose_tabletop(scene.depth, scene.K, TabletopConfig())
    # a stand-in detector: true boxes of two objects (projected), named
    dets = []
    for k, name in [(0, "cereal box"), (1, "mug")]:
        c, s = scene.centers[k], scene.sizes[k]
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * s.max() / 2 + c
        uv = geometry.project(corners.astype(np.float32), scene.K)
        dets.append((name, 0.9, (*uv.min(0), *uv.max(0))))
    label_proposals(res.proposals, dets, min_iou=0.2)
    named = {p.name: p for p in res.proposals if p.name != "object"}
    assert set(named) == {"cereal box", "mug"}
    assert np.linalg.norm(named["mug"].center - scene.centers[1]) < 0.05


def test_real_tum_frame_proposals():
    """The bundled TUM frame (a real office desk): the plane is the desk, not the floor, and there
    are desk-object proposals; figures printed for the notes."""
    from annotators.io import open_source
    from vipa.resources import REPO_ROOT

    with open_source(REPO_ROOT / "samples" / "rgbd_tum") as src:
        fr = next(iter(src))
        K_ = src.info.K
    res = propose_tabletop(fr.depth, K_)
    print(f"\nTUM frame: plane n={[round(float(v), 3) for v in res.normal]} d={res.offset:.3f} m, "
          f"{len(res.proposals)} proposals, rejected {res.rejected}")
    for p in res.proposals:
        print(f"  centre {[round(float(v), 3) for v in p.center]} m, height {p.height * 100:.1f} cm, "
              f"footprint {p.footprint[0] * 100:.1f} x {p.footprint[1] * 100:.1f} cm, box {np.round(p.box_2d).tolist()}")
    assert 1.0 < res.offset < 1.3  # the camera is about 1.1 m above the desk (the floor is ~1.8 m below)
    assert 5 <= len(res.proposals) <= 25
    assert all(p.height < 0.6 and max(p.footprint) <= 0.6 for p in res.proposals)


def test_tabletop_backend_is_registered_and_names_with_a_detector(monkeypatch, tmp_path):
    """The ``tabletop`` object backend through the registry: hand-free episodes only (by default),
    proposals named by a local detector (a stand-in here for a model folder)."""
    import annotators.objects
    from annotators import registry
    from vipa.conventions import HANDS
    from vipa.data.episode import Episode, HandTrack

    scene = render_tabletop(1)

    class StandIn:
        def __init__(self, path):
            assert path == str(tmp_path)

        def detect(self, image, labels):
            c, s = scene.centers[0], scene.sizes[0]
            corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * s.max() / 2 + c
            uv = geometry.project(corners.astype(np.float32), scene.K)
            return [(labels[0], 0.8, (*uv.min(0), *uv.max(0)))]

    monkeypatch.setattr(annotators.objects, "ZeroShotDetector", StandIn)
    ep = Episode(episode_id="scene", fps=30.0, width=W, height=H, K=scene.K, num_frames=2,
                 hands={s: HandTrack.empty(s, 2) for s in HANDS}, depth_unit=0.001,
                 depth_raw=np.stack([scene.depth * 1000] * 2).astype(np.float32), rgb=np.stack([scene.rgb] * 2))
    backend = registry.build_backend("objects", "tabletop", {"detector": str(tmp_path), "labels": ("red box",)})
    tracks = backend(ep)
    assert len(tracks) >= 7 and all(t.provenance == "tabletop" for t in tracks)
    named = [t for t in tracks if t.name == "red box"]
    assert len(named) == 1 and np.linalg.norm(named[0].center[0] - scene.centers[0]) < 0.05
    assert ep.extra["tabletop"]["plane"]["inliers"] > 0
    ep.hands["right"].present[0] = True  # an episode with a hand: left to the grasp proposals
    assert registry.build_backend("objects", "tabletop")(ep) == []
