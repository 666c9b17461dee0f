"""Articulated 21-joint hand (MediaPipe order) for the synthetic generator.

The hand is modelled as a right hand in a local frame with axes
``a`` (forward: wrist towards the middle MCP), ``b`` (radial: towards the thumb side) and
``c`` (palmar: out of the palm, the side the fingers curl to); metres, float32.
A left hand is the mirror image (``b`` flipped). ``place`` puts the local hand into any frame
(world or camera) given the wrist position, the finger direction and the palm normal.

Finger flexion is one scalar ``grip`` in [0, 1] (0 open and relaxed, 1 a closed fist);
bone lengths never change with the pose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vipa.conventions import NUM_JOINTS

# Finger chains (MCP, PIP, DIP, TIP) in the MediaPipe order; thumb (CMC, MCP, IP, TIP).
THUMB = (1, 2, 3, 4)
FINGERS = ((5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))

# Reference right hand (scale 1): wrist -> middle MCP is 9.0 cm, wrist -> middle tip 18.4 cm.
_MCP = np.array(  # knuckle positions relative to the wrist, (a, b, c) metres
    [[0.084, 0.024, 0.0], [0.090, 0.002, 0.0], [0.084, -0.017, 0.0], [0.075, -0.033, 0.0]],
    np.float32,
)
_SPLAY_DEG = np.array([7.0, 0.0, -7.0, -14.0], np.float32)  # finger direction in the a-b plane
_PHALANX = np.array(  # proximal, middle, distal lengths per finger, metres
    [[0.041, 0.024, 0.020], [0.046, 0.028, 0.020], [0.043, 0.027, 0.020], [0.034, 0.020, 0.018]],
    np.float32,
)
_REST_FLEX_DEG = np.array([6.0, 10.0, 6.0], np.float32)  # MCP, PIP, DIP at grip 0
_FIST_FLEX_DEG = np.array([80.0, 100.0, 65.0], np.float32)  # at grip 1
_FINGER_EXTRA = np.array([0.0, 0.03, 0.07, 0.12], np.float32)  # ulnar fingers curl a bit more
_THUMB_CMC = np.array([0.020, 0.021, 0.010], np.float32)
_THUMB_BONES = np.array([0.040, 0.032, 0.027], np.float32)
_THUMB_DIR = np.array([0.72, 0.62, 0.30], np.float32)  # rest direction of the thumb metacarpal
_THUMB_TOWARD = np.array([0.45, -0.35, 0.82], np.float32)  # where thumb flexion turns it
_THUMB_REST_DEG = np.array([4.0, 6.0, 6.0], np.float32)
_THUMB_FIST_DEG = np.array([50.0, 35.0, 45.0], np.float32)

# Render radii (metres, scale 1) of the hand's capsules.
FINGER_RADIUS = np.array([0.0100, 0.0088, 0.0090, 0.0085, 0.0075], np.float32)  # thumb..pinky
PALM_RADIUS = 0.0150
FOREARM_RADIUS = 0.022
FOREARM_LENGTH = 0.16
WRIST_DEPTH = 0.030  # how far the forearm surface can lie in front of the wrist joint


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@dataclass(frozen=True)
class HandShape:
    """Per-person hand: overall scale and handedness ("left" / "right")."""

    scale: float = 1.0
    side: str = "right"

    def __post_init__(self) -> None:
        if self.side not in ("left", "right"):
            raise ValueError(f"HandShape.side must be 'left' or 'right', got {self.side!r}")
        if not (0.5 < self.scale < 1.5):
            raise ValueError(f"HandShape.scale must be in (0.5, 1.5), got {self.scale}")

    @property
    def wrist_to_middle_mcp(self) -> float:
        """Length wrist -> middle MCP in metres."""
        return float(np.linalg.norm(_MCP[1]) * self.scale)


def local_joints(grip: float | np.ndarray, shape: HandShape = HandShape()) -> np.ndarray:
    """Joints of the posed hand in its local (a, b, c) frame, metres.

    ``grip`` scalar -> (21, 3); array (T,) -> (T, 21, 3). A left hand is mirrored in ``b``.
    """
    g = np.clip(np.asarray(grip, np.float32), 0.0, 1.0)
    scalar = g.ndim == 0
    g = np.atleast_1d(g)[:, None]  # (T, 1)
    t = g.shape[0]
    out = np.zeros((t, NUM_JOINTS, 3), np.float32)
    c = np.array([0.0, 0.0, 1.0], np.float32)
    for f, chain in enumerate(FINGERS):
        gf = np.clip(g * (1.0 + _FINGER_EXTRA[f]), 0.0, 1.0)
        splay = np.deg2rad(_SPLAY_DEG[f]) * (1.0 - 0.5 * gf)  # fingers close together in a fist
        d0 = np.stack([np.cos(splay), np.sin(splay), np.zeros_like(splay)], -1)[:, 0]  # (T, 3)
        flex = np.deg2rad(_REST_FLEX_DEG + (_FIST_FLEX_DEG - _REST_FLEX_DEG) * gf)  # (T, 3)
        cum = np.cumsum(flex, axis=1)
        p = np.broadcast_to(_MCP[f], (t, 3)).copy()
        out[:, chain[0]] = p
        for k in range(3):
            d = np.cos(cum[:, k : k + 1]) * d0 + np.sin(cum[:, k : k + 1]) * c
            p = p + _PHALANX[f, k] * d
            out[:, chain[k + 1]] = p
    # Thumb: rotate its direction from the rest direction towards _THUMB_TOWARD (opposition).
    d0 = _unit(_THUMB_DIR)
    e = _THUMB_TOWARD - np.dot(_THUMB_TOWARD, d0) * d0
    e = _unit(e)
    flex = np.deg2rad(_THUMB_REST_DEG + (_THUMB_FIST_DEG - _THUMB_REST_DEG) * g)  # (T, 3)
    cum = np.cumsum(flex, axis=1)
    p = np.broadcast_to(_THUMB_CMC, (t, 3)).copy()
    out[:, THUMB[0]] = p
    for k in range(3):
        d = np.cos(cum[:, k : k + 1]) * d0 + np.sin(cum[:, k : k + 1]) * e
        p = p + _THUMB_BONES[k] * d
        out[:, THUMB[k + 1]] = p
    out *= np.float32(shape.scale)
    if shape.side == "left":
        out[..., 1] *= -1.0
    return out[0] if scalar else out


def hand_rotation(forward: np.ndarray, palm_normal: np.ndarray) -> np.ndarray:
    """(3, 3) matrix whose columns are the local axes a, b, c expressed in the target frame.

    ``forward`` is the finger direction, ``palm_normal`` roughly the palmar direction (it is
    made orthogonal to ``forward``). ``b = a x c`` is where a right hand's thumb lies (palm
    down, fingers pointing away from you: the thumb is on your left), so (a, b, c) is a
    left-handed basis (det -1); a left hand's thumb is at -b (``local_joints`` mirrors it).
    """
    a = _unit(np.asarray(forward, np.float32))
    n = np.asarray(palm_normal, np.float32)
    c = _unit(n - np.dot(n, a) * a)
    b = np.cross(a, c).astype(np.float32)
    return np.stack([a, b, c], axis=1)


def place(local: np.ndarray, wrist: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Local joints (..., 21, 3) -> target frame: wrist (..., 3) + R (..., 3, 3) @ local."""
    return (np.einsum("...ij,...kj->...ki", rotation, local) + wrist[..., None, :]).astype(np.float32)


def capsules(joints: np.ndarray, shape: HandShape, arm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render capsules of a posed hand: (A (N, 3), B (N, 3), radius (N,)) in the joints' frame.

    Bones of every finger, a fan of palm capsules, and a forearm from the wrist along ``arm``
    (unit vector from the wrist towards the elbow, same frame).
    """
    s = np.float32(shape.scale)
    segs: list[tuple[int, int, float]] = []
    for f, chain in enumerate((THUMB,) + FINGERS):
        for k in range(3):
            segs.append((chain[k], chain[k + 1], float(FINGER_RADIUS[f])))
    for i, j in ((0, 1), (1, 5), (0, 5), (0, 9), (0, 13), (0, 17), (5, 9), (9, 13), (13, 17), (1, 9)):
        segs.append((i, j, PALM_RADIUS))
    a = joints[[i for i, _, _ in segs]]
    b = joints[[j for _, j, _ in segs]]
    r = np.array([rr for _, _, rr in segs], np.float32) * s
    fw = _unit(np.asarray(arm, np.float32))
    wrist = joints[0]
    fa = np.stack([wrist, wrist + FOREARM_LENGTH * s * fw])
    a = np.concatenate([a, fa[:1]])
    b = np.concatenate([b, fa[1:]])
    r = np.concatenate([r, np.array([FOREARM_RADIUS * s], np.float32)])
    return a.astype(np.float32), b.astype(np.float32), r


def joint_radius(shape: HandShape) -> np.ndarray:
    """(21,) how far (metres) the visible surface of the hand can lie in front of each joint when
    nothing else hides it: the largest capsule radius touching it (for the wrist, the forearm
    seen obliquely)."""
    r = np.zeros(NUM_JOINTS, np.float32)
    for f, chain in enumerate((THUMB,) + FINGERS):
        r[list(chain)] = FINGER_RADIUS[f]
    r[[0, 1, 5, 9, 13, 17]] = PALM_RADIUS
    r[0] = WRIST_DEPTH
    return r * np.float32(shape.scale)


def grip_for_aperture(width: float, shape: HandShape, pad: float | None = None) -> float:
    """Grip at which the thumb tip and the index/middle tip centroid are ``width`` + 2 pad apart
    (pad defaults to the fingertip radius): the grip that just touches an object that wide."""
    pad = float(FINGER_RADIUS[1] * shape.scale) if pad is None else pad
    gs = np.linspace(0.0, 1.0, 201, dtype=np.float32)
    j = local_joints(gs, shape)
    ap = np.linalg.norm(j[:, 4] - 0.5 * (j[:, 8] + j[:, 12]), axis=-1)
    target = width + 2.0 * pad
    # Aperture shrinks with grip; take the first grip that reaches the target.
    idx = np.nonzero(ap <= target)[0]
    return float(gs[idx[0]]) if idx.size else 1.0


def grasp_point(grip: float, shape: HandShape) -> np.ndarray:
    """(3,) local point between the thumb tip and the index/middle tips at ``grip``."""
    j = local_joints(grip, shape)
    return (0.5 * (j[4] + 0.5 * (j[8] + j[12]))).astype(np.float32)
