"""Conventions shared by every part of VIPA. Read this before touching geometry or data.

Camera frame
    OpenCV: x right, y down, z forward (optical axis). Units: metres, stored as float32.
    A 3D point "in the camera frame" is always in this frame.
Pixels
    (u, v) in pixels, origin at the top-left corner of the top-left pixel, u to the right,
    v down. The centre of the pixel in row i, column j is therefore (j + 0.5, i + 0.5).
Intrinsics
    K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] per episode (per frame allowed). When unknown,
    ``DEFAULT_FOV_DEG`` horizontal field of view with the principal point at the image centre,
    recorded as an estimate (``K_is_estimate``) in the data.
Camera poses
    4x4 ``world_from_camera`` rigid transforms (camera frame -> world frame), metres.
Hand joints
    The 21-joint MediaPipe order in ``JOINT_NAMES``: wrist; thumb CMC, MCP, IP, tip; index
    MCP, PIP, DIP, tip; middle ...; ring ...; pinky .... Converters to and from other orders
    (MANO, InterHand2.6M, HOT3D) live below.
Handedness
    The person's anatomical ``"left"`` / ``"right"`` hand, whatever a detector reports
    (MediaPipe's legacy API labels as if the image were mirrored; converters fix that at the
    detector boundary, never later).
Directions in QA answers
    Follow the camera frame: right = +x, left = -x, down = +y, up = -y, forward = +z,
    backward = -z.
Depth
    Stored raw in "depth units" (``depth_unit`` metres per stored count for sensors); the
    paper's calibration scale ``s`` is stored beside it per frame, never baked in:
    metric depth = raw * depth_unit * s.
"""

from __future__ import annotations

from typing import Final

NUM_JOINTS: Final = 21
HANDS: Final = ("left", "right")

JOINT_NAMES: Final[tuple[str, ...]] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)
JOINT_INDEX: Final[dict[str, int]] = {n: i for i, n in enumerate(JOINT_NAMES)}

WRIST: Final = 0
THUMB_TIP: Final = 4
INDEX_MCP: Final = 5
INDEX_TIP: Final = 8
MIDDLE_MCP: Final = 9
MIDDLE_TIP: Final = 12
RING_TIP: Final = 16
PINKY_MCP: Final = 17
PINKY_TIP: Final = 20
FINGERTIPS: Final = (THUMB_TIP, INDEX_TIP, MIDDLE_TIP, RING_TIP, PINKY_TIP)

# Skeleton edges (parent, child) in the MediaPipe order; same as mediapipe's HAND_CONNECTIONS
# minus the palm cross-links, plus them for drawing a closed palm.
HAND_EDGES: Final[tuple[tuple[int, int], ...]] = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)

DEFAULT_FOV_DEG: Final = 60.0  # horizontal field of view assumed when K is unknown

# Wrist motion tokens (paper, Hand3D-action): camera-frame wrist clipped to this box, metres.
MOTION_RANGE: Final = ((-0.5, 0.5), (-0.5, 0.5), (0.0, 1.0))
MOTION_BINS: Final = 1024

# QA direction words per camera axis: (positive, negative).
AXIS_WORDS: Final = (("right", "left"), ("down", "up"), ("forward", "backward"))

# ----------------------------------------------------------------------------------------------
# Other joint orders and converters. Every order below is written with the names of
# ``JOINT_NAMES`` (plus "palm_center"), so one table lookup converts between any two.
# ----------------------------------------------------------------------------------------------

PALM_CENTER: Final = "palm_center"

# MediaPipe Hands / OpenPose hand: the order above (mediapipe HandLandmark enum; OpenPose's
# hand keypoints use the same 21 positions).
MEDIAPIPE_ORDER: Final = JOINT_NAMES

# MANO's 16 kinematic joints in the order of the MANO pickle / smplx.MANO (wrist, index1-3,
# middle1-3, pinky1-3, ring1-3, thumb1-3) followed by the five fingertip vertices as smplx
# appends them (thumb, index, middle, ring, pinky; vertex ids 744, 320, 443, 554, 671).
# Checked against smplx's MANO keypoint names and HaMeR's mano_wrapper.py, whose
# mano_to_openpose = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
# this table reproduces. MANO thumb1/2/3 = MediaPipe thumb CMC/MCP/IP.
MANO_ORDER: Final[tuple[str, ...]] = (
    "wrist",
    "index_mcp", "index_pip", "index_dip",
    "middle_mcp", "middle_pip", "middle_dip",
    "pinky_mcp", "pinky_pip", "pinky_dip",
    "ring_mcp", "ring_pip", "ring_dip",
    "thumb_cmc", "thumb_mcp", "thumb_ip",
    "thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip",
)

# InterHand2.6M, one hand (its skeleton.txt; mmpose's interhand3d dataset_info): thumb4 (tip),
# thumb3, thumb2, thumb1, then index/middle/ring/pinky 4..1, then the wrist. Its 42-joint
# arrays hold the right hand at 0-20 and the left at 21-41 (``split_interhand``).
INTERHAND_ORDER: Final[tuple[str, ...]] = (
    "thumb_tip", "thumb_ip", "thumb_mcp", "thumb_cmc",
    "index_tip", "index_dip", "index_pip", "index_mcp",
    "middle_tip", "middle_dip", "middle_pip", "middle_mcp",
    "ring_tip", "ring_dip", "ring_pip", "ring_mcp",
    "pinky_tip", "pinky_dip", "pinky_pip", "pinky_mcp",
    "wrist",
)

# HOT3D (facebookresearch/hot3d, hot3d/data_loaders/hand_common.py LANDMARK_INDEX_TO_NAMING):
# five fingertips, wrist, thumb intermediate and distal frames, index/middle/ring/pinky
# proximal, intermediate and distal frames, palm centre. Its mano_layer.py maps MANO joints
# [16..20, 0, 14, 15, 1..6, 10..12, 7..9] onto the first 20, so the thumb "intermediate frame"
# is MANO thumb2 (MediaPipe thumb MCP) and "distal frame" thumb3 (thumb IP). HOT3D has no thumb
# CMC; MediaPipe has no palm centre: those come out as NaN when converting. (HOT3D's MANO
# landmarks have only the first 20; pad a 21st row of NaN to use them here.)
HOT3D_ORDER: Final[tuple[str, ...]] = (
    "thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip",
    "wrist",
    "thumb_mcp", "thumb_ip",
    "index_mcp", "index_pip", "index_dip",
    "middle_mcp", "middle_pip", "middle_dip",
    "ring_mcp", "ring_pip", "ring_dip",
    "pinky_mcp", "pinky_pip", "pinky_dip",
    PALM_CENTER,
)

JOINT_ORDERS: Final[dict[str, tuple[str, ...]]] = {
    "mediapipe": MEDIAPIPE_ORDER,
    "openpose": MEDIAPIPE_ORDER,
    "mano": MANO_ORDER,
    "interhand": INTERHAND_ORDER,
    "hot3d": HOT3D_ORDER,
}


def _order(name: str) -> tuple[str, ...]:
    try:
        return JOINT_ORDERS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown joint order {name!r}; known: {sorted(JOINT_ORDERS)}") from None


def joint_index_table(src: str, dst: str):
    """(21,) int64 array: ``dst`` joint k is ``src`` joint table[k]; -1 where ``src`` lacks it."""
    import numpy as np

    s, d = _order(src), _order(dst)
    pos = {n: i for i, n in enumerate(s)}
    return np.array([pos.get(n, -1) for n in d], dtype=np.int64)


def convert_joints(joints, src: str, dst: str, fill: float = float("nan")):
    """Reorder joints (..., 21, C) from order ``src`` to order ``dst`` (names in JOINT_ORDERS).

    Joints ``dst`` has and ``src`` lacks (HOT3D palm centre, MediaPipe-order thumb CMC from
    HOT3D) are set to ``fill`` (NaN). Returns a new float array (input dtype kept for floats;
    integer or boolean input must not need filling).
    """
    import numpy as np

    a = np.asarray(joints)
    if a.ndim < 2 or a.shape[-2] != NUM_JOINTS:
        raise ValueError(f"joints: expected shape (..., {NUM_JOINTS}, C), got {a.shape}")
    table = joint_index_table(src, dst)
    out = a[..., np.maximum(table, 0), :]
    missing = table < 0
    if np.any(missing):
        if not np.issubdtype(out.dtype, np.floating):
            if np.issubdtype(out.dtype, np.bool_) and fill in (0, False):
                out[..., missing, :] = False
                return out
            raise ValueError(
                f"joints: {src} -> {dst} leaves {[_order(dst)[i] for i in np.flatnonzero(missing)]} "
                f"unset; pass a float array (dtype {out.dtype} cannot hold fill={fill})"
            )
        out[..., missing, :] = fill
    return out


def convert_joint_mask(valid, src: str, dst: str):
    """Reorder a per-joint mask (..., 21) bool; joints ``src`` lacks become False."""
    import numpy as np

    v = np.asarray(valid, dtype=bool)
    if v.ndim < 1 or v.shape[-1] != NUM_JOINTS:
        raise ValueError(f"valid: expected shape (..., {NUM_JOINTS}), got {v.shape}")
    table = joint_index_table(src, dst)
    return v[..., np.maximum(table, 0)] & (table >= 0)


def split_interhand(joints):
    """InterHand2.6M (..., 42, C) arrays -> {"right": (..., 21, C), "left": (..., 21, C)} in the
    InterHand per-hand order (right hand first in its files)."""
    import numpy as np

    a = np.asarray(joints)
    if a.ndim < 2 or a.shape[-2] != 2 * NUM_JOINTS:
        raise ValueError(f"joints: expected InterHand2.6M shape (..., 42, C), got {a.shape}")
    return {"right": a[..., :NUM_JOINTS, :], "left": a[..., NUM_JOINTS:, :]}


# Handedness. MediaPipe's legacy ``mp.solutions.hands`` labels hands as if the input were a
# mirrored selfie image: on an ordinary (unmirrored) camera image its "Left" is the person's
# right hand (STACK.md; MediaPipe docs on multi_handedness).
MEDIAPIPE_LEGACY_MIRRORED: Final = True

_SIDE_WORDS: Final[dict[str, str]] = {"left": "left", "l": "left", "right": "right", "r": "right"}


def other_side(side: str) -> str:
    """"left" <-> "right"."""
    return "right" if normalize_side(side) == "left" else "left"


def normalize_side(label: str) -> str:
    """A handedness label ("Left", "R", " right ") -> "left" or "right"; ValueError otherwise."""
    side = _SIDE_WORDS.get(str(label).strip().lower())
    if side is None:
        raise ValueError(f"handedness label {label!r}: expected left/right (or l/r)")
    return side


def anatomical_side(detector_label: str, mirrored: bool) -> str:
    """The person's anatomical hand ("left"/"right") from a detector's label.

    ``mirrored`` is True when the label describes the mirror image of what the camera saw:
    MediaPipe's legacy solution on an unflipped frame (``MEDIAPIPE_LEGACY_MIRRORED``), or any
    detector run on a horizontally flipped frame. Two mirrors cancel: pass
    ``detector_mirrors != frame_was_flipped``.
    """
    side = normalize_side(detector_label)
    return other_side(side) if mirrored else side
