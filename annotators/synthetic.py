"""Synthetic Hand3D ground truth: table-top scenes with an articulated hand moving an object.

A scene is a table plane (world z = 0, z up, metres), 2-4 coloured primitives (cubes, cylinders,
balls with distinct colour names: "red cube", "blue cylinder", ...) and a camera 0.55-0.85 m from
the table point it looks at, 45-72 degrees down, 50-70 degree horizontal field of view (known K,
``camera_pose`` = world_from_camera per frame; static in most episodes, slowly orbiting in a
quarter of them). A 21-joint hand (``annotators.hand_model``, right or left) reaches an object,
closes its fingers on it, lifts it, carries it next to a reference object and releases it, as the
episode's instruction says ("pick up the red cube and place it to the left of the blue
cylinder"; left/right/in front of/behind are seen from the camera, on the table plane).

Frames are ray cast in numpy (one core, no GPU): every primitive is intersected only inside its
projected bounding box, and the static part of the scene is cast once per episode when the
camera does not move. RGB is Lambert-shaded albedo with a vertical soft shadow of the hand and
of the carried object; depth is the camera-frame z in millimetres (float32, depth_unit 0.001,
depth_scale 1).

Ground truth in the returned ``Episode`` is exact: 3D joints in each frame's camera frame,
2D joints projected with the pixel-centre convention of ``vipa.conventions``; a joint is
``valid`` when it projects inside the image and the surface seen at its pixel is the hand within
the joint's capsule radius plus 3 mm of its depth (so neither an object, the table nor another
part of the hand hides it, and the pixel's depth is usable for scale calibration); joint values
are kept (not NaN) when not valid. ``present``: some joint projects inside the image. Objects:
per-frame camera-frame centre, 2D box of the whole object (occluded parts included; clipped to
the image, NaN when outside), ``size`` = camera-frame extents in frame 0. ``extra["synthetic"]``
holds the seeds, the sampled parameters, the task (object, reference, relation, goal), phase
frames (grasp, release, ...), the frames the object is held, and object shapes in the world.

``generate_episode(seed, scene_seed=...)``: episodes sharing a scene_seed are different tasks in
one scene. ``generate_dataset`` writes a Hand3D dataset with whole scenes held out for the test
split (``meta/splits.json``); ``python -m annotators.synthetic --out DIR --episodes N --seed S``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotators.hand_model import (
    HandShape,
    capsules,
    grasp_point,
    grip_for_aperture,
    hand_rotation,
    joint_radius,
    local_joints,
    place,
)
from vipa import geometry
from vipa.conventions import NUM_JOINTS
from vipa.data.episode import Episode, HandTrack, ObjectTrack
from vipa.ranges import count, fraction, positive

GENERATOR_VERSION = 1

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.65, 0.20),
    "blue": (0.12, 0.28, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.20, 0.75),
    "cyan": (0.10, 0.80, 0.85),
}
SHAPES = ("cube", "cylinder", "ball")
SKIN_TONES = ((0.93, 0.74, 0.62), (0.80, 0.58, 0.44), (0.62, 0.43, 0.31))
TABLE_COLOURS = ((0.45, 0.45, 0.47), (0.40, 0.29, 0.20), (0.80, 0.80, 0.78), (0.33, 0.39, 0.45))
BACKGROUND = (0.2, 0.2, 0.22)
RELATIONS = {  # relation words -> direction in the camera's table-projected (right, forward) axes
    "to the left of": (-1.0, 0.0),
    "to the right of": (1.0, 0.0),
    "in front of": (0.0, -1.0),
    "behind": (0.0, 1.0),
}
TEMPLATES = (
    "pick up the {obj} and place it {rel} the {ref}",
    "put the {obj} {rel} the {ref}",
    "move the {obj} {rel} the {ref}",
)

LABEL_NONE, LABEL_TABLE, LABEL_HAND = -1, 0, 100  # objects are 1..N


# ----------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------


@dataclass
class SceneObject:
    """A primitive resting on the table: ``half`` is the half-extent (x, y, z) of its box in its
    own frame (yawed about world z); cylinder/ball radius = half[0]."""

    shape: str
    colour: str
    half: np.ndarray  # (3,) metres
    yaw: float  # radians about world z

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def rotation(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], np.float32)

    def surface_samples(self) -> np.ndarray:
        """(N, 3) points on the object's silhouette-defining surface, object frame (for 2D boxes)."""
        h = self.half
        if self.shape == "cube":
            return (np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T * h).astype(np.float32)
        ang = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        if self.shape == "cylinder":
            ring = np.stack([np.cos(ang) * h[0], np.sin(ang) * h[0], np.zeros_like(ang)], -1)
            return np.concatenate([ring + [0, 0, h[2]], ring - [0, 0, h[2]]]).astype(np.float32)
        # ball: a fibonacci sphere is dense enough for a sub-pixel tight box at these sizes
        n = 200
        i = np.arange(n) + 0.5
        phi = np.arccos(1 - 2 * i / n)
        th = np.pi * (1 + 5**0.5) * i
        return (np.stack([np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)], -1) * h[0]).astype(np.float32)


def _look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """(4, 4) world_from_camera for an OpenCV camera at ``eye`` looking at ``target`` (world z up)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll), math.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T.astype(np.float32)


def _smooth(u: np.ndarray) -> np.ndarray:
    """Minimum-jerk blend 0 -> 1 on u in [0, 1]."""
    u = np.clip(u, 0.0, 1.0)
    return u * u * u * (10 - 15 * u + 6 * u * u)


def _keyframe_interp(times: np.ndarray, keys_t: list[float], keys_v: list[np.ndarray]) -> np.ndarray:
    """Values at ``times`` moving between keyframes with a minimum-jerk profile (rest at each key)."""
    kv = np.stack([np.asarray(v, np.float64) for v in keys_v])
    out = np.empty((len(times),) + kv.shape[1:], np.float64)
    for n, t in enumerate(times):
        k = int(np.searchsorted(keys_t, t, side="right")) - 1
        if k < 0:
            out[n] = kv[0]
        elif k >= len(keys_t) - 1:
            out[n] = kv[-1]
        else:
            u = (t - keys_t[k]) / max(keys_t[k + 1] - keys_t[k], 1e-9)
            out[n] = kv[k] + (kv[k + 1] - kv[k]) * _smooth(np.asarray(u))
    return out


# ----------------------------------------------------------------------------------------------
# Ray caster
# ----------------------------------------------------------------------------------------------


class RayCaster:
    """Z-buffer ray caster for one camera: rays through pixel centres in the camera frame with
    direction (x, y, 1), so the ray parameter t is the camera-frame depth z (metres)."""

    def __init__(self, width: int, height: int, K: np.ndarray, cull: bool = True) -> None:
        self.w, self.h, self.cull = int(width), int(height), cull
        K = np.asarray(K, np.float64)
        if K[0, 1] != 0.0:  # rays are separable per row and column only without skew
            raise ValueError(f"RayCaster: K has skew {K[0, 1]}; the ray caster needs K[0, 1] = 0")
        self.fx, self.fy, self.cx, self.cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        self.rx = ((np.arange(self.w) + 0.5 - self.cx) / self.fx).astype(np.float32)  # (W,)
        self.ry = ((np.arange(self.h) + 0.5 - self.cy) / self.fy).astype(np.float32)  # (H,)
        self.clear()

    def clear(self) -> None:
        self.z = np.full((self.h, self.w), np.inf, np.float32)
        self.n = np.zeros((self.h, self.w, 3), np.float32)
        self.label = np.full((self.h, self.w), LABEL_NONE, np.int16)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.z.copy(), self.n.copy(), self.label.copy()

    def restore(self, snap: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.z, self.n, self.label = snap[0].copy(), snap[1].copy(), snap[2].copy()

    # -- helpers -------------------------------------------------------------------------------
    def _window(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice] | None:
        """Pixel window covering the projection of the camera-frame box [lo, hi] (or the whole
        image when culling is off or the box reaches behind the camera)."""
        if not self.cull or lo[2] <= 1e-3:
            return slice(0, self.h), slice(0, self.w)
        xs = np.array([lo[0], hi[0]])
        ys = np.array([lo[1], hi[1]])
        zs = np.array([lo[2], hi[2]])
        u = (xs[:, None] / zs[None, :]) * self.fx + self.cx
        v = (ys[:, None] / zs[None, :]) * self.fy + self.cy
        j0, j1 = int(math.floor(u.min() - 0.5)), int(math.ceil(u.max() + 0.5)) + 1
        i0, i1 = int(math.floor(v.min() - 0.5)), int(math.ceil(v.max() + 0.5)) + 1
        j0, i0 = max(j0, 0), max(i0, 0)
        j1, i1 = min(j1, self.w), min(i1, self.h)
        if j0 >= j1 or i0 >= i1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def _rays(self, win: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        return self.rx[win[1]][None, :], self.ry[win[0]][:, None]

    def _commit(self, win, t: np.ndarray, nx, ny, nz, label: int) -> None:
        zw = self.z[win]
        m = t < zw
        if not m.any():
            return
        zw[m] = t[m]
        nw = self.n[win]
        nw[..., 0][m] = np.broadcast_to(nx, t.shape)[m]
        nw[..., 1][m] = np.broadcast_to(ny, t.shape)[m]
        nw[..., 2][m] = np.broadcast_to(nz, t.shape)[m]
        self.label[win][m] = label

    # -- primitives (all in the camera frame) --------------------------------------------------
    def plane(self, normal: np.ndarray, offset: float, label: int, max_depth: float = 5.0) -> None:
        """Plane {p : normal . p = offset} (normal unit, facing the camera)."""
        win = (slice(0, self.h), slice(0, self.w))
        x, y = self._rays(win)
        den = normal[0] * x + normal[1] * y + normal[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.float32(offset) / den
        t = np.where((t > 1e-3) & (t < max_depth), t, np.inf).astype(np.float32)
        n = normal if offset < 0 else -normal
        self._commit(win, t, n[0], n[1], n[2], label)

    def sphere(self, c: np.ndarray, r: float, label: int) -> None:
        win = self._window(c - r, c + r)
        if win is None:
            return
        x, y = self._rays(win)
        ee = x * x + y * y + 1.0
        ec = x * c[0] + y * c[1] + c[2]
        h = ec * ec - ee * (float(c @ c) - r * r)
        hit = h >= 0
        t = np.where(hit, (ec - np.sqrt(np.maximum(h, 0))) / ee, np.inf).astype(np.float32)
        t[t <= 1e-3] = np.inf
        self._commit(win, t, (t * x - c[0]) / r, (t * y - c[1]) / r, (t - c[2]) / r, label)

    def capsules(self, A: np.ndarray, B: np.ndarray, R: np.ndarray, label: int) -> None:
        """Union of capsules (segment A[k]-B[k], radius R[k]) under one label."""
        for a, b, r in zip(A.tolist(), B.tolist(), R.tolist()):
            self._capsule(a, b, r, label)

    def _capsule(self, a: list[float], b: list[float], r: float, label: int) -> None:
        # Scalars stay Python floats so the per-pixel arrays stay float32.
        lo = np.minimum(a, b) - r
        hi = np.maximum(a, b) + r
        win = self._window(lo, hi)
        if win is None:
            return
        x, y = self._rays(win)
        ax, ay, az = a
        bax, bay, baz = b[0] - ax, b[1] - ay, b[2] - az
        L = math.sqrt(bax * bax + bay * bay + baz * baz)
        ux, uy, uz = bax / max(L, 1e-9), bay / max(L, 1e-9), baz / max(L, 1e-9)
        wx, wy, wz = -ax, -ay, -az  # ray origin (camera centre) minus a
        ee = x * x + y * y + 1.0
        eu = x * ux + y * uy + uz
        ew = x * wx + y * wy + wz
        wu = wx * ux + wy * uy + wz * uz
        ww = wx * wx + wy * wy + wz * wz
        qa = ee - eu * eu
        qb = ew - eu * wu
        h = qb * qb - qa * (ww - wu * wu - r * r)
        tb = (-qb - np.sqrt(np.maximum(h, 0))) / qa
        yb = tb * eu + wu
        t = np.where((h >= 0) & (yb >= 0) & (yb <= L) & (qa > 1e-12), tb, np.inf)
        for cx, cy, cz in (a, b):  # end spheres
            ec = x * cx + y * cy + cz
            hs = ec * ec - ee * (cx * cx + cy * cy + cz * cz - r * r)
            ts = np.where(hs >= 0, (ec - np.sqrt(np.maximum(hs, 0))) / ee, np.inf)
            t = np.minimum(t, ts)
        t = t.astype(np.float32, copy=False)
        t[t <= 1e-3] = np.inf
        if not np.isfinite(t).any():
            return
        # Normal: from the closest point on the segment to the hit point.
        dx, dy, dz = t * x - ax, t * y - ay, t - az
        s = np.clip(dx * ux + dy * uy + dz * uz, 0.0, L)
        self._commit(win, t, (dx - s * ux) / r, (dy - s * uy) / r, (dz - s * uz) / r, label)

    def box(self, c: np.ndarray, R: np.ndarray, half: np.ndarray, label: int) -> None:
        """Oriented box: centre c, rotation R (columns = box axes in the camera frame)."""
        ext = np.abs(R) @ half
        win = self._window(c - ext, c + ext)
        if win is None:
            return
        x, y = self._rays(win)
        o = R.T @ (-c)  # camera centre in the box frame
        tmin = np.full(np.broadcast(x, y).shape, -np.inf, np.float64)
        tmax = np.full_like(tmin, np.inf)
        axis = np.zeros(tmin.shape, np.int8)
        sign = np.zeros(tmin.shape, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                d = x * R[0, k] + y * R[1, k] + R[2, k]
                t1 = (-half[k] - o[k]) / d
                t2 = (half[k] - o[k]) / d
                near = np.minimum(t1, t2)
                far = np.maximum(t1, t2)
                upd = near > tmin
                tmin = np.where(upd, near, tmin)
                axis[upd] = k
                sign = np.where(upd, -np.sign(d), sign)
                tmax = np.minimum(tmax, far)
        hit = (tmax >= tmin) & (tmin > 1e-3)
        t = np.where(hit, tmin, np.inf).astype(np.float32)
        nrm = R[:, axis] * sign  # (3, h, w)
        self._commit(win, t, nrm[0], nrm[1], nrm[2], label)

    def cylinder(self, c: np.ndarray, R: np.ndarray, r: float, hh: float, label: int) -> None:
        """Capped cylinder: centre c, axis R[:, 2], radius r, half-height hh."""
        ext = np.abs(R) @ np.array([r, r, hh])
        win = self._window(c - ext, c + ext)
        if win is None:
            return
        x, y = self._rays(win)
        o = R.T @ (-c)
        dx = x * R[0, 0] + y * R[1, 0] + R[2, 0]
        dy = x * R[0, 1] + y * R[1, 1] + R[2, 1]
        dz = x * R[0, 2] + y * R[1, 2] + R[2, 2]
        qa = dx * dx + dy * dy
        qb = o[0] * dx + o[1] * dy
        qc = o[0] ** 2 + o[1] ** 2 - r * r
        h = qb * qb - qa * qc
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = (-qb - np.sqrt(np.maximum(h, 0))) / qa
            zs = o[2] + ts * dz
            side = (h >= 0) & (np.abs(zs) <= hh) & (qa > 1e-12)
            t = np.where(side, ts, np.inf)
            cap = np.zeros(t.shape, bool)
            for zc in (hh, -hh):
                tc = (zc - o[2]) / dz
                xc, yc = o[0] + tc * dx, o[1] + tc * dy
                ok = (xc * xc + yc * yc <= r * r) & (tc > 1e-3) & (tc < t)
                t = np.where(ok, tc, t)
                cap = np.where(ok, True, cap)
        t = t.astype(np.float32)
        t[t <= 1e-3] = np.inf
        lx = np.where(cap, 0.0, (o[0] + t * dx) / r)
        ly = np.where(cap, 0.0, (o[1] + t * dy) / r)
        lz = np.where(cap, -np.sign(dz), 0.0)
        self._commit(win, t, R[0, 0] * lx + R[0, 1] * ly + R[0, 2] * lz,
                     R[1, 0] * lx + R[1, 1] * ly + R[1, 2] * lz,
                     R[2, 0] * lx + R[2, 1] * ly + R[2, 2] * lz, label)


def _shade(caster: RayCaster, albedo: np.ndarray, light_cam: np.ndarray, shadow: np.ndarray | None,
           ambient: float = 0.35) -> np.ndarray:
    """(H, W, 3) uint8 Lambert shading; ``albedo`` (L, 3) indexed by label + 1."""
    lam = np.clip(caster.n @ light_cam, 0.0, 1.0)
    lum = ambient + (1.0 - ambient) * lam
    if shadow is not None:
        lum = lum * shadow
    col = albedo[caster.label.astype(np.int32) + 1] * lum[..., None]
    return np.clip(col * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Episode generation
# ----------------------------------------------------------------------------------------------


@dataclass
class SceneParams:
    """Ranges the generator samples from (all metres / degrees)."""

    fov_deg: tuple[float, float] = (50.0, 70.0)
    cam_distance: tuple[float, float] = (0.55, 0.85)  # camera centre -> looked-at table point
    cam_pitch_deg: tuple[float, float] = (45.0, 72.0)
    num_objects: tuple[int, int] = (2, 4)
    moving_camera_prob: float = 0.25
    hand_scale: tuple[float, float] = (0.95, 1.05)  # wrist -> middle MCP 8.55 - 9.45 cm
    left_hand_prob: float = 0.3


PRESETS: dict[str, SceneParams] = {
    "default": SceneParams(),
    # Narrower ranges for a curriculum: fewer objects, a static camera at a similar viewpoint,
    # right hands only.
    "easy": SceneParams(fov_deg=(55.0, 65.0), cam_distance=(0.6, 0.75), cam_pitch_deg=(55.0, 65.0),
                        num_objects=(2, 3), moving_camera_prob=0.0, left_hand_prob=0.0),
}


@dataclass
class _Scene:
    K: np.ndarray
    world_from_cam: np.ndarray  # (T, 4, 4)
    objects: list[SceneObject]
    positions: np.ndarray  # (T, N, 3) world centres
    wrist: np.ndarray  # (T, 3) world
    rot: np.ndarray  # (T, 3, 3) world hand rotation (columns a, b, c)
    grip: np.ndarray  # (T,)
    arm: np.ndarray  # (T, 3) world unit vector wrist -> elbow
    shape: HandShape
    skin: tuple[float, float, float]
    table: tuple[float, float, float]
    light_world: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _sample_scene(rs: np.random.Generator, rt: np.random.Generator, width: int, height: int, num_frames: int,
                  p: SceneParams) -> _Scene:
    """Scene draws (camera, objects, table, light) come from ``rs``, task draws (which object
    goes where, the hand, its person and motion) from ``rt``: one scene can host many tasks."""
    T = num_frames
    fov = rs.uniform(*p.fov_deg)
    fx = width / 2.0 / math.tan(math.radians(fov) / 2.0)
    K = np.array([[fx, 0, width / 2.0], [0, fx, height / 2.0], [0, 0, 1]], np.float32)

    dist = rs.uniform(*p.cam_distance)
    pitch = math.radians(rs.uniform(*p.cam_pitch_deg))
    cam_h = dist * math.sin(pitch)
    az = rs.uniform(0, 2 * math.pi)
    roll = math.radians(rs.uniform(-4, 4))
    moving = bool(rs.random() < p.moving_camera_prob)
    d_az = math.radians(rs.uniform(6, 15)) * rs.choice([-1, 1]) if moving else 0.0
    d_h = rs.uniform(-0.05, 0.05) if moving else 0.0
    target = np.zeros(3)
    poses = []
    for k in range(T):
        u = k / max(T - 1, 1)
        a, hgt = az + d_az * u, cam_h + d_h * u
        back = hgt / math.tan(pitch)
        eye = np.array([-back * math.cos(a), -back * math.sin(a), hgt])
        poses.append(_look_at(eye, target, roll))
    wfc = np.stack(poses).astype(np.float32)
    cam0 = wfc[0].astype(np.float64)
    right_h = cam0[:3, 0].copy()
    right_h[2] = 0
    right_h /= np.linalg.norm(right_h)
    fwd_h = np.array([-right_h[1], right_h[0], 0.0])  # forward on the table (away from camera)
    if np.dot(fwd_h, cam0[:3, 2]) < 0:
        fwd_h = -fwd_h

    def table_point(u: float, v: float) -> np.ndarray:
        d = cam0[:3, :3] @ np.array([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], 1.0])
        t = -cam0[2, 3] / d[2]
        return cam0[:3, 3] + t * d

    # Objects: positions sampled in image space (central region), then on the table.
    n_obj = int(rs.integers(p.num_objects[0], p.num_objects[1] + 1))
    colours = rs.permutation(list(COLOURS))[:n_obj]
    objects: list[SceneObject] = []
    pos: list[np.ndarray] = []
    for k in range(n_obj):
        shape = str(rs.choice(SHAPES))
        if shape == "cube":
            half = np.full(3, rs.uniform(0.025, 0.035))
        elif shape == "cylinder":
            rr = rs.uniform(0.025, 0.033)
            half = np.array([rr, rr, rs.uniform(0.035, 0.06)])
        else:
            rr = rs.uniform(0.028, 0.038)
            half = np.full(3, rr)
        obj = SceneObject(shape, str(colours[k]), half.astype(np.float32), float(rs.uniform(0, np.pi / 2)))
        for _ in range(200):
            c = table_point(rs.uniform(0.25, 0.75) * width, rs.uniform(0.35, 0.75) * height)
            c[2] = half[2]
            if all(np.linalg.norm((c - q)[:2]) > 0.075 + half[0] + o.half[0] for q, o in zip(pos, objects)):
                break
        objects.append(obj)
        pos.append(c)

    table = TABLE_COLOURS[int(rs.integers(len(TABLE_COLOURS)))]
    light = np.array([rs.uniform(-0.4, 0.4), rs.uniform(-0.4, 0.4), 1.0])
    light /= np.linalg.norm(light)

    # Task: move object `mv` next to reference `ref`. The relation is drawn first (so the four
    # are equally common), then the first (object, reference) pair for which the goal is free,
    # in view and far enough from the start; else the best compromise over all choices.
    rels = list(RELATIONS)
    rt.shuffle(rels)
    pairs = [(int(i), int(j)) for i in range(n_obj) for j in range(n_obj) if i != j]
    pair_order = rt.permutation(len(pairs))
    gap = rt.uniform(0.10, 0.14)
    T_cam0 = np.linalg.inv(cam0)
    candidates = []
    for rel in rels:
        dr, df = RELATIONS[rel]
        for pi in pair_order:
            mv, ref = pairs[pi]
            goal = pos[ref] + gap * (dr * right_h + df * fwd_h)
            goal[2] = objects[mv].half[2]
            pc = T_cam0 @ np.append(goal, 1.0)
            u = K[0, 0] * pc[0] / pc[2] + K[0, 2]
            v = K[1, 1] * pc[1] / pc[2] + K[1, 2]
            inside = 0.1 * width < u < 0.9 * width and 0.22 * height < v < 0.85 * height
            free = all(np.linalg.norm((goal - q)[:2]) > 0.06 + objects[mv].half[0] + o.half[0]
                       for k, (q, o) in enumerate(zip(pos, objects)) if k != mv)
            travel = float(np.linalg.norm((goal - pos[mv])[:2]))
            candidates.append(((inside and free and travel > 0.08, inside and free, inside, travel), rel, mv, ref, goal))
    ok = [c for c in candidates if c[0][0]]
    rel, mv, ref, goal = (ok[0] if ok else max(candidates, key=lambda c: c[0]))[1:]
    template = str(rt.choice(TEMPLATES))
    instruction = template.format(obj=objects[mv].name, rel=rel, ref=objects[ref].name)

    # Hand
    side = "left" if rt.random() < p.left_hand_prob else "right"
    shape = HandShape(scale=float(rt.uniform(*p.hand_scale)), side=side)
    sgn = 1.0 if side == "right" else -1.0
    # The hand enters from its own side of the view (seen from above and from the side, so the
    # forearm does not hide the fingers) and approaches roughly along the camera's x axis.
    # Start 16-22 cm from the object on the hand's side, 8-15 cm above the table, turned towards
    # or away from the camera and brought closer as far as needed for the wrist to start in view
    # (else the candidate nearest the image centre).
    dist0, high = rt.uniform(0.16, 0.22), rt.uniform(0.08, 0.15)
    jitter = rt.uniform(-8, 8)
    best = None
    for scale in (1.0, 0.85, 0.7):
        for ang in (0.0, 25.0, -25.0, 50.0, -50.0, 75.0):
            th = math.radians(ang + jitter)
            start = pos[mv] + scale * dist0 * (math.cos(th) * sgn * right_h - math.sin(th) * fwd_h)
            start[2] = high
            pc = np.linalg.inv(cam0) @ np.append(start, 1.0)
            u, v = K[0, 0] * pc[0] / pc[2] + K[0, 2], K[1, 1] * pc[1] / pc[2] + K[1, 2]
            off = max(abs(u / width - 0.5), abs(v / height - 0.5))
            if best is None or off < best[0]:
                best = (off, start)
            if off < 0.42:
                break
        if best[0] < 0.42:
            break
    start = best[1]
    approach = pos[mv] - start
    approach[2] = 0
    approach = approach / max(np.linalg.norm(approach), 1e-6)
    tilt = math.radians(rt.uniform(30, 50))
    fwd_grasp = approach * math.cos(tilt) - np.array([0, 0, 1.0]) * math.sin(tilt)
    side_dir = np.cross(np.array([0.0, 0.0, 1.0]), approach)  # horizontal, across the approach
    roll_g = math.radians(rt.uniform(-15, 15))  # palm turned a little about the fingers
    R_grasp = hand_rotation(fwd_grasp, -math.cos(roll_g) * np.array([0.0, 0.0, 1.0]) + math.sin(roll_g) * side_dir)
    tilt0 = math.radians(rt.uniform(5, 20))
    fwd_start = approach * math.cos(tilt0) - np.array([0, 0, 1.0]) * math.sin(tilt0)
    R_start = hand_rotation(fwd_start, np.array([0.0, 0.0, -1.0]) + sgn * rt.uniform(0.3, 0.8) * side_dir)

    start[2] += max(0.0, 0.015 - float(place(local_joints(0.15, shape), start.astype(np.float32), R_start)[:, 2].min()))
    width_obj = 2.0 * float(objects[mv].half[0])
    g_touch = grip_for_aperture(width_obj, shape)
    g_hold = min(g_touch + 0.04, 1.0)  # squeeze slightly: the tips press on the surface
    gp = grasp_point(g_touch, shape)
    grasp_wrist = pos[mv] - R_grasp.astype(np.float64) @ gp
    # Grasp higher on the object when a finger would otherwise go through the table.
    low = place(local_joints(g_hold, shape), grasp_wrist.astype(np.float32), R_grasp)[:, 2].min()
    raise_by = max(0.0, 0.011 - float(low))
    grasp_wrist = grasp_wrist + np.array([0.0, 0.0, raise_by])
    place_wrist = goal - R_grasp.astype(np.float64) @ gp + np.array([0.0, 0.0, raise_by])
    lift = rt.uniform(0.08, 0.12)
    up = np.array([0.0, 0.0, 1.0])
    jit = rt.uniform(-0.02, 0.02, 6)
    kt = [0.0, 0.28 + jit[0], 0.38 + jit[1], 0.46 + jit[2], 0.58 + jit[3], 0.76 + jit[4], 0.85 + jit[5], 0.91, 1.0]
    retreat = place_wrist + up * 0.10 - 0.10 * approach
    kw = [start, grasp_wrist + up * 0.07, grasp_wrist, grasp_wrist, grasp_wrist + up * lift,
          place_wrist + up * lift, place_wrist, place_wrist, retreat]
    kg = [0.15, 0.0, 0.0, g_hold, g_hold, g_hold, g_hold, 0.05, 0.1]
    times = np.linspace(0.0, 1.0, T)
    wrist = _keyframe_interp(times, kt, kw)
    grip = _keyframe_interp(times, kt, [np.array(g) for g in kg])
    # Rotation: start -> grasp orientation over the reach (blend of axes, re-orthonormalised).
    w = _smooth(np.clip(times / kt[2], 0, 1))
    rot = np.empty((T, 3, 3), np.float32)
    for k in range(T):
        a = (1 - w[k]) * R_start[:, 0] + w[k] * R_grasp[:, 0]
        c = (1 - w[k]) * R_start[:, 2] + w[k] * R_grasp[:, 2]
        rot[k] = hand_rotation(a, c)
    # Forearm: from the wrist back and up towards the elbow (wrist flexed, forearm flatter than
    # the hand), following the hand's heading.
    elev = math.radians(rt.uniform(10, 25))
    arm = np.empty((T, 3), np.float32)
    for k in range(T):
        a_h = rot[k][:, 0].astype(np.float64).copy()
        a_h[2] = 0
        a_h /= max(np.linalg.norm(a_h), 1e-6)
        arm[k] = -a_h * math.cos(elev) + np.array([0, 0, 1.0]) * math.sin(elev)
    # Object follows the hand rigidly between grasp closure (kt[3]) and release (kt[7]).
    positions = np.repeat(np.stack(pos)[None], T, axis=0).astype(np.float64)
    attached = (times >= kt[3]) & (times <= kt[7])
    for k in np.nonzero(attached)[0]:
        positions[k, mv] = pos[mv] + (wrist[k] - grasp_wrist)
    positions[times > kt[7], mv] = goal

    def frame_of(t: float) -> int:
        return int(np.clip(round(t * (T - 1)), 0, T - 1))

    info = {
        "instruction_template": template,
        "task": {"verb": "place", "object": objects[mv].name, "object_index": mv, "reference": objects[ref].name,
                 "reference_index": ref, "relation": rel, "goal_world": [float(v) for v in goal]},
        "hand_side": side,
        "hand_scale": shape.scale,
        "grip_touch": g_touch,
        "grasp_raised": raise_by,
        "grasp_tilt_deg": math.degrees(tilt),
        "grasp_roll_deg": math.degrees(roll_g),
        "camera": {"fov_deg": fov, "distance": dist, "height": cam_h, "pitch_deg": math.degrees(pitch), "azimuth_deg": math.degrees(az),
                   "roll_deg": math.degrees(roll), "moving": moving, "orbit_deg": math.degrees(d_az), "height_change": d_h},
        "phases": {"reach_end": frame_of(kt[2]), "grasp": frame_of(kt[3]), "lift_end": frame_of(kt[4]),
                   "place": frame_of(kt[6]), "release": frame_of(kt[7])},
        "attached_frames": [int(i) for i in np.nonzero(attached)[0]],
        "objects": [{"name": o.name, "shape": o.shape, "colour": o.colour, "half_extent": [float(v) for v in o.half],
                     "yaw": o.yaw, "start_world": [float(v) for v in q]} for o, q in zip(objects, pos)],
    }
    skins = [c for c in SKIN_TONES if np.linalg.norm(np.subtract(c, table)) > 0.3]
    skin = skins[int(rt.integers(len(skins)))]
    info["instruction"] = instruction
    return _Scene(K, wfc, objects, positions.astype(np.float32), wrist.astype(np.float32), rot, grip.astype(np.float32),
                  arm, shape, skin, table, light.astype(np.float32), info)


def _render(scene: _Scene, width: int, height: int, cull: bool = True, static_cache: bool = True):
    """Cast every frame. Returns rgb (T,H,W,3) uint8, depth (T,H,W) float32 metres (NaN = no hit),
    labels (T,H,W) int16, joints (T,21,3) camera frame."""
    T = scene.wrist.shape[0]
    caster = RayCaster(width, height, scene.K, cull=cull)
    albedo = np.zeros((LABEL_HAND + 2, 3), np.float32)
    albedo[0] = BACKGROUND
    albedo[LABEL_TABLE + 1] = scene.table
    for k, o in enumerate(scene.objects):
        albedo[k + 2] = COLOURS[o.colour]
    albedo[LABEL_HAND + 1] = scene.skin
    local = local_joints(scene.grip, scene.shape)  # (T, 21, 3)
    joints_w = place(local, scene.wrist, scene.rot)  # world
    moving_obj = {int(scene.info["task"]["object_index"])}
    rgb = np.empty((T, height, width, 3), np.uint8)
    depth = np.empty((T, height, width), np.float32)
    labels = np.empty((T, height, width), np.int16)
    joints_c = np.empty((T, NUM_JOINTS, 3), np.float32)
    static = None
    static_pose = None
    for k in range(T):
        T_wc = scene.world_from_cam[k].astype(np.float64)
        T_cw = np.linalg.inv(T_wc)
        Rcw, tcw = T_cw[:3, :3], T_cw[:3, 3]
        cam_changed = static_pose is None or not np.array_equal(static_pose, scene.world_from_cam[k])
        if static_cache and not cam_changed:
            caster.restore(static)
        else:
            caster.clear()
            caster.plane(Rcw[:, 2], -float(T_wc[2, 3]), LABEL_TABLE)
            for i, o in enumerate(scene.objects):
                if i not in moving_obj:
                    _cast_object(caster, o, Rcw @ scene.positions[k, i] + tcw, Rcw, i + 1)
            if static_cache:
                static = caster.snapshot()
                static_pose = scene.world_from_cam[k].copy()
        for i in moving_obj:
            _cast_object(caster, scene.objects[i], Rcw @ scene.positions[k, i] + tcw, Rcw, i + 1)
        jc = (joints_w[k] @ Rcw.T + tcw).astype(np.float32)
        joints_c[k] = jc
        A, B, Rr = capsules(jc, scene.shape, Rcw @ scene.arm[k])
        caster.capsules(A, B, Rr, LABEL_HAND)
        shadow = _shadow(caster, scene, k, joints_w[k], T_wc, moving_obj)
        rgb[k] = _shade(caster, albedo, (Rcw @ scene.light_world).astype(np.float32), shadow)
        z = caster.z
        depth[k] = np.where(np.isfinite(z), z, np.nan)
        labels[k] = caster.label
    return rgb, depth, labels, joints_c


def _cast_object(caster: RayCaster, o: SceneObject, c_cam: np.ndarray, Rcw: np.ndarray, label: int) -> None:
    R = Rcw @ o.rotation.astype(np.float64)
    if o.shape == "cube":
        caster.box(c_cam, R, o.half.astype(np.float64), label)
    elif o.shape == "cylinder":
        caster.cylinder(c_cam, R, float(o.half[0]), float(o.half[2]), label)
    else:
        caster.sphere(c_cam, float(o.half[0]), label)


def _shadow(caster: RayCaster, scene: _Scene, k: int, joints_w: np.ndarray, T_wc: np.ndarray,
            moving: set[int]) -> np.ndarray | None:
    """Soft vertical shadow of the hand (and the carried object) on table pixels: (H, W) factor."""
    segs_a, segs_b, rad = capsules(joints_w, scene.shape, scene.arm[k])
    pa, pb, pr = [segs_a[:, :2]], [segs_b[:, :2]], [rad]
    for i in moving:
        c = scene.positions[k, i]
        if c[2] > scene.objects[i].half[2] + 0.005:  # lifted
            pa.append(c[None, :2])
            pb.append(c[None, :2])
            pr.append(np.array([scene.objects[i].half[0] * 1.1], np.float32))
    A, B, R = np.concatenate(pa), np.concatenate(pb), np.concatenate(pr)
    # Window: table-plane footprint of the shadow projected to the image.
    lo = np.minimum(A, B).min(0) - R.max() - 0.02
    hi = np.maximum(A, B).max(0) + R.max() + 0.02
    corners = np.array([[lo[0], lo[1], 0], [lo[0], hi[1], 0], [hi[0], lo[1], 0], [hi[0], hi[1], 0]])
    T_cw = np.linalg.inv(T_wc)
    pc = corners @ T_cw[:3, :3].T + T_cw[:3, 3]
    if (pc[:, 2] <= 1e-3).any():
        win = (slice(0, caster.h), slice(0, caster.w))
    else:
        win = caster._window(pc.min(0), pc.max(0))
        if win is None:
            return None
    lab = caster.label[win]
    table = lab == LABEL_TABLE
    if not table.any():
        return None
    x, y = caster._rays(win)
    z = caster.z[win]
    Rwc, twc = T_wc[:3, :3], T_wc[:3, 3]
    wx = twc[0] + z * (Rwc[0, 0] * x + Rwc[0, 1] * y + Rwc[0, 2])
    wy = twc[1] + z * (Rwc[1, 0] * x + Rwc[1, 1] * y + Rwc[1, 2])
    dmin = np.full(z.shape, np.inf, np.float32)
    i0, j0 = win[0].start, win[1].start
    margin = 0.01  # beyond r + 8.4 mm the shadow factor is 1 (see `soft`)
    for a, b, r in zip(A.tolist(), B.tolist(), R.tolist()):
        # Each segment only where its footprint (plus the soft margin) can be seen.
        x0, y0 = min(a[0], b[0]) - r - margin, min(a[1], b[1]) - r - margin
        x1, y1 = max(a[0], b[0]) + r + margin, max(a[1], b[1]) + r + margin
        fc = np.array([[x0, y0, 0], [x0, y1, 0], [x1, y0, 0], [x1, y1, 0]]) @ T_cw[:3, :3].T + T_cw[:3, 3]
        sub = None if (fc[:, 2] <= 1e-3).any() else caster._window(fc.min(0), fc.max(0))
        if sub is None and not (fc[:, 2] <= 1e-3).any():
            continue
        if sub is None:
            loc = (slice(None), slice(None))
        else:
            r0, r1 = max(sub[0].start - i0, 0), min(sub[0].stop - i0, z.shape[0])
            c0, c1 = max(sub[1].start - j0, 0), min(sub[1].stop - j0, z.shape[1])
            if r0 >= r1 or c0 >= c1:
                continue
            loc = (slice(r0, r1), slice(c0, c1))
        px, py = wx[loc], wy[loc]
        bx, by = b[0] - a[0], b[1] - a[1]
        L2 = bx * bx + by * by
        s = 0.0 if L2 < 1e-12 else np.clip(((px - a[0]) * bx + (py - a[1]) * by) / L2, 0.0, 1.0)
        d = np.sqrt((px - a[0] - s * bx) ** 2 + (py - a[1] - s * by) ** 2) - r
        np.minimum(dmin[loc], d, out=dmin[loc])
    f = np.ones((caster.h, caster.w), np.float32)
    soft = 0.55 + 0.45 * np.clip(dmin / 0.012 + 0.3, 0.0, 1.0)
    f[win] = np.where(table & np.isfinite(z), soft, 1.0)
    return f


def paste_background(rgb: np.ndarray, labels: np.ndarray, background: np.ndarray,
                     table_albedo: tuple[float, float, float]) -> np.ndarray:
    """(T, H, W, 3) uint8 frames with ``background`` (any-size RGB uint8, resized bilinearly)
    where ``labels`` is the table or nothing; on the table the rendered shading (light falloff,
    the hand's soft shadow) multiplies the pasted image, so the shadow stays."""
    from PIL import Image

    bg = np.asarray(background)
    if bg.ndim != 3 or bg.shape[2] != 3 or bg.dtype != np.uint8 or min(bg.shape[:2]) < 2:
        raise ValueError(f"background: expected an (H, W, 3) uint8 RGB image, got {bg.shape} {bg.dtype}")
    t, h, w = labels.shape
    img = np.asarray(Image.fromarray(bg).resize((w, h), Image.BILINEAR), np.float32)
    shade = rgb.astype(np.float32).mean(-1) / max(1e-3, 255.0 * float(np.mean(table_albedo)))
    shade = np.where(labels == LABEL_TABLE, np.clip(shade, 0.0, 1.5), 1.0)
    out = rgb.copy()
    where = (labels == LABEL_TABLE) | (labels == LABEL_NONE)
    pasted = np.clip(img[None] * shade[..., None], 0, 255).astype(np.uint8)
    out[where] = pasted[where]
    return out


def background_frames(sources: list[str | Path], max_side: int = 256) -> list[list[np.ndarray]]:
    """Frames of videos or images to paste as backgrounds: per source its frames (RGB uint8),
    downsized to at most ``max_side`` px."""
    import av
    from PIL import Image

    out = []
    for src in sources:
        frames = []
        if Path(src).suffix.lower() in (".png", ".jpg", ".jpeg"):
            ims = [Image.open(src)]
        else:
            with av.open(str(src)) as c:
                ims = [f.to_image() for f in c.decode(video=0)]
        for im in ims:
            im.thumbnail((max_side, max_side))
            frames.append(np.asarray(im.convert("RGB")))
        if not frames:
            raise ValueError(f"{src}: no frames")
        out.append(frames)
    return out


def pick_background(backgrounds: list[list[np.ndarray]], i: int) -> np.ndarray:
    """Episode i's background: frame (7 i) mod n of source i mod N (deterministic)."""
    frames = backgrounds[i % len(backgrounds)]
    return frames[(7 * i) % len(frames)]


def generate_episode(seed: int, width: int = 224, height: int = 224, num_frames: int = 48, fps: float = 15.0,
                     params: SceneParams | None = None, scene_seed: int | None = None, cull: bool = True,
                     return_labels: bool = False, background: np.ndarray | None = None):
    """One synthetic episode (deterministic per seed) with rgb, depth_raw and exact ground truth.

    ``background`` (off by default): an (H', W', 3) uint8 RGB image, e.g. a real video frame,
    resized to the episode and pasted over the table and the empty background in every frame
    (``paste_background``): the objects, the hand, depth and all ground truth stay as rendered.

    ``scene_seed`` (default: ``seed``) fixes the scene (camera, objects, table, light); ``seed``
    the task and the hand, so episodes sharing a scene_seed are different tasks in one scene.

    ``return_labels`` additionally returns the (T, H, W) int16 label image (-1 nothing, 0 table,
    1..N objects in ``episode.objects`` order, 100 hand).
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    if width < 16 or height < 16:
        raise ValueError(f"width and height must be >= 16 px, got {width}x{height}")
    p = params or SceneParams()
    scene_seed = int(seed) if scene_seed is None else int(scene_seed)
    rs = np.random.default_rng(np.random.SeedSequence([scene_seed, GENERATOR_VERSION, 0]))
    rt = np.random.default_rng(np.random.SeedSequence([int(seed), GENERATOR_VERSION, 1]))
    scene = _sample_scene(rs, rt, width, height, num_frames, p)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # misses carry inf/NaN
        rgb, depth, labels, joints = _render(scene, width, height, cull=cull, static_cache=cull)
    if background is not None:
        rgb = paste_background(rgb, labels, background, scene.table)
    T = num_frames
    K = scene.K

    uv = geometry.project(joints, K)  # full K (skew included); NaN behind the camera
    inside = (joints[..., 2] > 1e-3) & (uv[..., 0] >= 0) & (uv[..., 0] < width) & (uv[..., 1] >= 0) & (uv[..., 1] < height)
    tol = joint_radius(scene.shape) + 0.003
    ii = np.clip(np.floor(np.nan_to_num(uv[..., 1], nan=-1.0)).astype(np.int64), 0, height - 1)
    jj = np.clip(np.floor(np.nan_to_num(uv[..., 0], nan=-1.0)).astype(np.int64), 0, width - 1)
    d_at = depth[np.arange(T)[:, None], ii, jj]
    on_hand = labels[np.arange(T)[:, None], ii, jj] == LABEL_HAND
    visible = inside & on_hand & (np.abs(d_at - joints[..., 2]) <= tol[None, :])
    hand = HandTrack.empty(scene.shape.side, T)
    hand.joints_3d = joints.astype(np.float32)
    hand.joints_2d = uv
    hand.confidence = np.ones((T, NUM_JOINTS), np.float32)
    hand.valid = visible
    hand.present = inside.any(axis=1)
    hand.reproj_error = np.zeros((T, NUM_JOINTS), np.float32)
    hand.provenance = np.array(["synthetic"] * T, dtype=object)

    objects = []
    T_cw = np.linalg.inv(scene.world_from_cam.astype(np.float64))  # (T, 4, 4)
    for i, o in enumerate(scene.objects):
        c_cam = np.einsum("tij,tj->ti", T_cw[:, :3, :3], scene.positions[:, i].astype(np.float64)) + T_cw[:, :3, 3]
        samples_w = (o.surface_samples().astype(np.float64) @ o.rotation.T.astype(np.float64))  # (S, 3)
        pts = (samples_w[None] + scene.positions[:, i, None].astype(np.float64))  # (T, S, 3) world
        pts_c = np.einsum("tij,tsj->tsi", T_cw[:, :3, :3], pts) + T_cw[:, None, :3, 3]
        uvs = geometry.project(pts_c, K)
        box = np.concatenate([uvs.min(1), uvs.max(1)], axis=1)
        box[:, [0, 2]] = np.clip(box[:, [0, 2]], 0, width)
        box[:, [1, 3]] = np.clip(box[:, [1, 3]], 0, height)
        bad = (pts_c[..., 2] <= 1e-3).any(1) | (box[:, 2] <= box[:, 0]) | (box[:, 3] <= box[:, 1])
        box[bad] = np.nan
        size = np.ptp(np.einsum("ij,sj->si", T_cw[0, :3, :3], samples_w), axis=0)
        objects.append(ObjectTrack(object_id=f"obj{i}", name=o.name, center=c_cam.astype(np.float32),
                                   size=size.astype(np.float32), box_2d=box.astype(np.float32), provenance="synthetic"))

    info = dict(scene.info)
    instruction = info.pop("instruction")
    info.update({"seed": int(seed), "scene_seed": scene_seed, "generator_version": GENERATOR_VERSION, "width": width, "height": height,
                 "num_frames": T, "fps": float(fps), "valid_rule": "inside image, hand seen at the pixel, |depth - z| <= joint radius + 3 mm",
                 "skin": list(scene.skin), "table": list(scene.table),
                 "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(p).items()}})
    ep = Episode(
        episode_id=f"syn_{int(seed):06d}", fps=float(fps), width=width, height=height, K=K.astype(np.float32),
        hands={scene.shape.side: hand}, num_frames=T, K_is_estimate=False, instruction=instruction,
        source="synthetic", objects=objects, depth_unit=0.001, depth_scale=np.ones(T, np.float32),
        camera_pose=scene.world_from_cam.astype(np.float32), extra={"synthetic": info},
        rgb=rgb, depth_raw=(depth * 1000.0).astype(np.float32),
    )
    ep.validate()
    return (ep, labels) if return_labels else ep


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------

SPLITS_FILE = "splits.json"  # in the dataset's meta/ folder


def episode_plan(num_episodes: int, seed: int = 0, episodes_per_scene: int = 1,
                 test_fraction: float = 0.2, split: str | None = None) -> list[dict[str, Any]]:
    """Which episodes a dataset gets: [{"seed", "scene_seed", "episode_id", "split"}].

    Episode seeds are ``seed * 100000 + k``; consecutive groups of ``episodes_per_scene`` share a
    scene. ``split=None`` holds out whole scenes for "test" (``test_fraction`` of the scenes, at
    least one when there are two or more); "train" or "test" puts every episode in that split.
    """
    if num_episodes < 0:
        raise ValueError(f"num_episodes must be >= 0, got {num_episodes}")
    if episodes_per_scene < 1:
        raise ValueError(f"episodes_per_scene must be >= 1, got {episodes_per_scene}")
    if not (0.0 <= test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    if not (0 <= seed < 10**6):
        raise ValueError(f"seed must be in [0, 1e6), got {seed}")
    seeds = [seed * 100000 + k for k in range(num_episodes)]
    scenes = [seeds[(k // episodes_per_scene) * episodes_per_scene] for k in range(num_episodes)]
    unique = sorted(set(scenes))
    if split is None:
        # Per-scene draw, so a scene keeps its split when a dataset is extended.
        u = {sc: np.random.default_rng(np.random.SeedSequence([sc, GENERATOR_VERSION, 2])).random() for sc in unique}
        test_scenes = {sc for sc in unique if u[sc] < test_fraction}
        if len(unique) > 1 and test_fraction > 0 and not test_scenes:
            test_scenes = {min(unique, key=u.get)}
        if len(unique) > 1 and test_scenes == set(unique):
            test_scenes.discard(max(unique, key=u.get))
        splits = ["test" if sc in test_scenes else "train" for sc in scenes]
    else:
        splits = [split] * num_episodes
    return [{"seed": s, "scene_seed": sc, "episode_id": f"syn_{s:06d}", "split": sp}
            for s, sc, sp in zip(seeds, scenes, splits)]


def read_splits(root: str | os.PathLike) -> dict[str, list[str]]:
    """{"train": [ids], "test": [ids]} recorded by ``generate_dataset`` for the dataset at root."""
    path = Path(root) / "meta" / SPLITS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no splits record (not made by annotators.synthetic?)")
    data = json.loads(path.read_text())
    return {k: list(data.get(k, [])) for k in ("train", "test")}


def _write_splits(root: Path, plan: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    from vipa.data._io import atomic_write_json, file_lock

    path = root / "meta" / SPLITS_FILE
    with file_lock(root / "meta" / ".splits.lock"):
        old = json.loads(path.read_text()) if path.is_file() else {}
        split_of = {i: "train" for i in old.get("train", [])}
        split_of.update({i: "test" for i in old.get("test", [])})
        split_of.update({p["episode_id"]: p["split"] for p in plan})
        scene_of = dict(old.get("scene_of", {}))
        scene_of.update({p["episode_id"]: p["scene_seed"] for p in plan})
        record = {
            "train": sorted(i for i, s in split_of.items() if s == "train"),
            "test": sorted(i for i, s in split_of.items() if s == "test"),
            "held_out": "scenes",
            "scene_of": scene_of,
            "generator": {**old.get("generator", {}), **meta},
        }
        atomic_write_json(path, record)


def _make(args: tuple[dict[str, Any], dict[str, Any]]) -> Episode:
    item, kw = args
    ep = generate_episode(item["seed"], scene_seed=item["scene_seed"], **kw)
    ep.extra["synthetic"]["split"] = item["split"]
    return ep


def generate_dataset(root: str | os.PathLike, num_episodes: int, seed: int = 0, width: int = 224, height: int = 224,
                     num_frames: int = 48, fps: float = 15.0, split: str | None = None, episodes_per_scene: int = 1,
                     test_fraction: float = 0.2, params: SceneParams | None = None, workers: int = 1,
                     progress: bool = True):
    """Write ``num_episodes`` synthetic episodes into the Hand3D dataset at ``root`` (created if
    needed) and record the train/test split by scene in ``meta/splits.json``.

    Resumable: episodes already finished in the dataset are skipped. Returns the dataset.
    """
    from vipa.data.dataset import Hand3DDataset

    plan = episode_plan(num_episodes, seed, episodes_per_scene, test_fraction, split)
    root = Path(root)
    ds = Hand3DDataset.create(root, fps=fps)
    if split is None and (root / "meta" / SPLITS_FILE).is_file():  # extending: keep recorded splits
        recorded = {i: k for k, ids in read_splits(root).items() for i in ids}
        plan = [dict(p, split=recorded.get(p["episode_id"], p["split"])) for p in plan]
    todo = [p for p in plan if not ds.is_finished(p["episode_id"])]
    kw = dict(width=width, height=height, num_frames=num_frames, fps=fps, params=params)
    jobs = [(p, kw) for p in todo]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="synthetic episodes", unit="ep")
    try:
        if workers > 1 and len(jobs) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                for ep in pool.map(_make, jobs):
                    ds.write_episode(ep)
                    if bar is not None:
                        bar.update(1)
        else:
            for job in jobs:
                ds.write_episode(_make(job))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        done = [p for p in plan if ds.is_finished(p["episode_id"])]
        _write_splits(root, done, {"version": GENERATOR_VERSION, "seed": seed, "width": width, "height": height,
                                   "num_frames": num_frames, "fps": fps, "episodes_per_scene": episodes_per_scene,
                                   "test_fraction": test_fraction,
                                   "params": {k: (list(v) if isinstance(v, tuple) else v)
                                              for k, v in vars(params or SceneParams()).items()}})
    return ds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m annotators.synthetic",
                                 description="Write synthetic Hand3D episodes with exact ground truth.")
    ap.add_argument("--out", required=True, help="dataset folder (created or extended)")
    ap.add_argument("--episodes", type=count(), required=True, help="number of episodes")
    ap.add_argument("--seed", type=count(0), default=0, help="dataset seed (episode seeds are seed*100000+k)")
    ap.add_argument("--width", type=count(8), default=224)
    ap.add_argument("--height", type=count(8), default=224)
    ap.add_argument("--frames", type=count(), default=48, help="frames per episode")
    ap.add_argument("--fps", type=positive(), default=15.0)
    ap.add_argument("--per-scene", type=count(), default=1, help="episodes (tasks) per scene")
    ap.add_argument("--test-fraction", type=fraction(), default=0.2, help="fraction of scenes held out for test")
    ap.add_argument("--split", choices=("train", "test"), default=None, help="put every episode in one split")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default", help="scene parameter ranges")
    ap.add_argument("--workers", type=count(), default=1)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        generate_dataset(a.out, a.episodes, seed=a.seed, width=a.width, height=a.height, num_frames=a.frames,
                         fps=a.fps, split=a.split, episodes_per_scene=a.per_scene, test_fraction=a.test_fraction,
                         params=PRESETS[a.preset], workers=a.workers, progress=not a.no_progress)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = read_splits(a.out)
    print(f"{a.out}: {len(s['train'])} train, {len(s['test'])} test episodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
