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
