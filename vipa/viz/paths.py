"""Every Rerun entity path and timeline name VIPA uses, defined once.

Layout of a recording (3D values in metres; ``world`` uses the OpenCV camera convention,
x right, y down, z forward, so an identity camera pose puts the camera at the origin):

    /world                              view coordinates (RDF); AnnotationContext: one class per hand
                                        whose 21 keypoints are connected by HAND_EDGES
    /world/camera                       Transform3D world_from_camera per frame
    /world/camera/image                 Pinhole (K) + AssetVideo (the episode's mp4, static) and a
                                        VideoFrameReference per frame (frustum in 3D, 2D view)
    /world/camera/image/depth           EncodedDepthImage per frame (16-bit PNG, meter = counts per
                                        metre with the scale s); the viewer unprojects it in 3D
    /world/camera/image/hands/{side}/joints    Points2D, projected joints (pixels), keypoint ids
    /world/camera/hands/{side}/joints   Points3D, 21 joints (camera frame), keypoint ids (the
                                        viewer draws the bones from the annotation context)
    /world/camera/objects/{id}          Boxes3D (camera frame)
    /world/trajectory/{side}            LineStrips3D, the wrist over the episode (world frame)
    /world/prediction/{side}            LineStrips3D, a predicted wrist trajectory (world frame)
    /plots/wrist/{side}                 Scalars x, y, z (metres, camera frame)
    /plots/confidence/{side}            Scalars, mean joint confidence
    /plots/reproj_error/{side}          Scalars, mean reprojection error (pixels)
    /plots/depth_scale                  Scalars, calibration scale s

Robot rollouts (vipa.viz.rollout; simulator world frame, z up, metres):

    /robot/world                        view coordinates (right-handed, z up)
    /robot/world/camera                 Transform3D world_from_camera (OpenCV axes) per frame
    /robot/world/camera/image           Pinhole (K) + the RGB frame
    /robot/world/camera/image/executed  LineStrips2D, the executed path projected (pixels)
    /robot/world/camera/image/predicted LineStrips2D, the current predicted chunk projected
    /robot/world/executed               LineStrips3D, the whole executed end-effector path
    /robot/world/end_effector           Points3D, the end effector per frame
    /robot/world/predicted              LineStrips3D, the current predicted chunk as a path
    /robot/plots/action                 Scalars dx, dy, dz, grip of the executed action
    /robot/plots/gripper                Scalars, gripper opening (state)
"""

from __future__ import annotations

from typing import Final

FRAME_TIMELINE: Final = "frame"  # sequence timeline: frame index 0..T-1
TIME_TIMELINE: Final = "time"  # duration timeline: seconds from the episode start

WORLD: Final = "world"
CAMERA: Final = "world/camera"
IMAGE: Final = "world/camera/image"
DEPTH: Final = "world/camera/image/depth"
TRAJECTORY_ROOT: Final = "world/trajectory"
PREDICTION_ROOT: Final = "world/prediction"
PLOTS: Final = "plots"
DEPTH_SCALE_PLOT: Final = "plots/depth_scale"

ROBOT_ROOT: Final = "robot"
ROBOT_WORLD: Final = "robot/world"
ROBOT_CAMERA: Final = "robot/world/camera"
ROBOT_IMAGE: Final = "robot/world/camera/image"
EXECUTED_2D: Final = "robot/world/camera/image/executed"
PREDICTED_2D: Final = "robot/world/camera/image/predicted"
EXECUTED_PATH: Final = "robot/world/executed"
END_EFFECTOR: Final = "robot/world/end_effector"
PREDICTED_PATH: Final = "robot/world/predicted"
ROBOT_PLOTS: Final = "robot/plots"
ACTION_PLOT: Final = "robot/plots/action"
GRIPPER_PLOT: Final = "robot/plots/gripper"


def hand_joints_3d(side: str) -> str:
    """Points3D of one hand's joints, camera frame."""
    return f"{CAMERA}/hands/{side}/joints"


def hand_joints_2d(side: str) -> str:
    """Points2D of one hand's joints in the image, pixels."""
    return f"{IMAGE}/hands/{side}/joints"


def object_box(object_id: str) -> str:
    """Boxes3D of one object, camera frame."""
    return f"{CAMERA}/objects/{_safe(object_id)}"


def trajectory(side: str) -> str:
    """LineStrips3D of one hand's wrist trajectory, world frame."""
    return f"{TRAJECTORY_ROOT}/{side}"


def prediction(name: str) -> str:
    """LineStrips3D of a predicted wrist trajectory, world frame."""
    return f"{PREDICTION_ROOT}/{_safe(name)}"


def wrist_plot(side: str) -> str:
    """Scalars x, y, z of one wrist over time."""
    return f"{PLOTS}/wrist/{side}"


def confidence_plot(side: str) -> str:
    """Scalars: mean joint confidence of one hand over time."""
    return f"{PLOTS}/confidence/{side}"


def reproj_plot(side: str) -> str:
    """Scalars: mean reprojection error (pixels) of one hand over time."""
    return f"{PLOTS}/reproj_error/{side}"


def _safe(part: str) -> str:
    """One entity-path segment: no separators, no empty name."""
    cleaned = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in str(part))
    return cleaned or "_"
