"""Hand3D <-> LeRobot v3. Export: the merged (corrected) dataset through ``vipa.data.lerobot.LeRobotWriter``.

LeRobot has fields for images, state and action only; everything else a Hand3D episode holds
is stored as declared features with their unit and frame in ``info``:

    observation.images.rgb              video (H, W, 3) uint8 (when every episode has RGB)
    observation.depth                   uint16 (H, W) raw counts (when every episode has depth)
    observation.depth_unit              float32 m per count;  metric = raw * unit * depth_scale
    observation.depth_scale             float32 calibration scale s (NaN = unknown)
    observation.state                   float32 (6,) left then right wrist (x, y, z), m, camera
                                        frame; 0 where the hand is absent
    action                              float32 (6,) the same at the next frame (last repeats)
    observation.camera.intrinsics       float32 (3, 3) K, px
    observation.camera.pose             float32 (4, 4) world_from_camera, m
    observation.frame_valid             bool
    observation.hands.<side>.*          joints_2d (21, 2) px, joints_3d (21, 3) m camera,
                                        confidence (21,), valid (21,), present
Episode metadata (id, source, size, K estimate flag, quality, review status) goes in each
episode's ``extra``; the instruction is the task.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vipa.conventions import HANDS, JOINT_NAMES, NUM_JOINTS, WRIST

if TYPE_CHECKING:
    from vipa.data.reader import Hand3DDataset


def _features(h: int, w: int, rgb: bool, depth: bool) -> dict[str, dict]:
    xyz = [f"{s}_wrist_{a}" for s in HANDS for a in "xyz"]
    f: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": [6], "names": xyz,
                              "info": {"unit": "m", "frame": "camera", "absent": 0.0}},
        "action": {"dtype": "float32", "shape": [6], "names": xyz,
                   "info": {"unit": "m", "frame": "camera", "meaning": "wrist positions at the next frame"}},
        "observation.camera.intrinsics": {"dtype": "float32", "shape": [3, 3], "names": None,
                                          "info": {"unit": "px", "pixel_origin": "top-left corner"}},
        "observation.camera.pose": {"dtype": "float32", "shape": [4, 4], "names": None,
                                    "info": {"unit": "m", "frame": "world_from_camera"}},
        "observation.depth_scale": {"dtype": "float32", "shape": [1], "names": None,
                                    "info": {"unit": "1", "meaning": "calibration scale s; NaN = unknown"}},
        "observation.frame_valid": {"dtype": "bool", "shape": [1], "names": None},
    }
    for side in HANDS:
        p = f"observation.hands.{side}."
        f[p + "joints_2d"] = {"dtype": "float32", "shape": [NUM_JOINTS, 2], "names": list(JOINT_NAMES),
                              "info": {"unit": "px", "frame": "image"}}
        f[p + "joints_3d"] = {"dtype": "float32", "shape": [NUM_JOINTS, 3], "names": list(JOINT_NAMES),
                              "info": {"unit": "m", "frame": "camera"}}
        f[p + "confidence"] = {"dtype": "float32", "shape": [NUM_JOINTS], "names": list(JOINT_NAMES)}
        f[p + "valid"] = {"dtype": "bool", "shape": [NUM_JOINTS], "names": list(JOINT_NAMES)}
        f[p + "present"] = {"dtype": "bool", "shape": [1], "names": None}
    if rgb:
        f["observation.images.rgb"] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
    if depth:
        f["observation.depth"] = {"dtype": "uint16", "shape": [h, w], "names": ["height", "width"],
                                  "info": {"unit": "observation.depth_unit", "invalid": 0}}
        f["observation.depth_unit"] = {"dtype": "float32", "shape": [1], "names": None, "info": {"unit": "m"}}
    return f


def export_hand3d(ds: "Hand3DDataset", out: str | Path, corrected: bool = True) -> Path:
    """Write the dataset's episodes (status "ok") as a LeRobot v3 folder at ``out``.

    LeRobot needs one fps and one image size per camera: mixed datasets are refused with a
    ValueError that says which episodes differ. RGB and depth are written when every episode
    has them.
    """
    from vipa.data.lerobot import LeRobotWriter

    ids = ds.episode_ids()
    if not ids:
        raise ValueError(f"{ds.root}: no episodes to export")
    eps = [ds.load_episode(i, media=False, corrected=corrected) for i in ids]
    fps = {e.fps for e in eps}
    if len(fps) != 1:
        raise ValueError(f"LeRobot v3 needs one fps; episodes have {sorted(fps)}")
    sizes = {(e.height, e.width) for e in eps}
    rgb = all(ds.has_rgb(i) for i in ids)
    depth = all(ds.has_depth(i) for i in ids)
    if (rgb or depth) and len(sizes) != 1:
        raise ValueError(f"LeRobot v3 needs one image size per camera; episodes have (height, width) {sorted(sizes)}")
    h, w = next(iter(sizes))
    writer = LeRobotWriter(root=Path(out), fps=float(next(iter(fps))), features=_features(h, w, rgb, depth),
                           robot_type="human_hand")
    for eid, e in zip(ids, eps):
        t = e.num_frames
        state = np.zeros((t, 6), np.float32)
        for k, side in enumerate(HANDS):
            hand = e.hands[side]
            wrist = np.where(hand.present[:, None], hand.joints_3d[:, WRIST], 0.0)
            state[:, 3 * k:3 * k + 3] = np.nan_to_num(wrist, nan=0.0)
        data: dict[str, np.ndarray] = {
            "observation.state": state,
            "action": np.concatenate([state[1:], state[-1:]]) if t else state,
            "observation.camera.intrinsics": np.repeat(e.K[None], t, 0),
            "observation.camera.pose": e.camera_pose,
            "observation.depth_scale": e.depth_scale,
            "observation.frame_valid": e.frame_valid,
        }
        for side in HANDS:
            hand, p = e.hands[side], f"observation.hands.{side}."
            data[p + "joints_2d"] = hand.joints_2d
            data[p + "joints_3d"] = hand.joints_3d
            data[p + "confidence"] = hand.confidence
            data[p + "valid"] = hand.valid
            data[p + "present"] = hand.present
        if rgb:
            data["observation.images.rgb"] = ds.rgb_frames(eid)
        if depth:
            meta = ds._episode_meta(eid)
            data["observation.depth"] = np.stack([ds._depth_counts(eid, i, meta) for i in range(t)])
            data["observation.depth_unit"] = np.full(t, meta["depth_unit"], np.float32)
        extra = {"episode_id": eid, "source": e.source, "width": e.width, "height": e.height,
                 "K_is_estimate": e.K_is_estimate, "review_status": e.review_status,
                 "quality": {k: (v if math.isfinite(v) else None) for k, v in e.quality.items()}}
        writer.add_episode(data, task=e.instruction, extra=extra)
    return writer.finalize()


def import_hand3d(src: str | Path, out: str | Path) -> "Hand3DDataset":
    """LeRobot v3 -> Hand3D: the inverse of ``export_hand3d`` (episodes, hands, K, poses, depth
    counts with their unit and scale, RGB, instruction, quality and review status). A LeRobot
    dataset that lacks the hand features is refused with a message naming the missing ones."""
    from vipa.data.reader import Hand3DDataset
    from vipa.data.episode import Episode, HandTrack
    from vipa.data.lerobot import LeRobotDataset, LeRobotFormatError

    lr = LeRobotDataset(src)
    needed = [f"observation.hands.{s}.{k}" for s in HANDS for k in ("joints_2d", "joints_3d", "confidence",
                                                                      "valid", "present")]
    needed += ["observation.camera.intrinsics"]
    missing = [k for k in needed if k not in lr.features]
    if missing:
        raise LeRobotFormatError(f"{src}: not a Hand3D export (missing features {missing[:4]}"
                                 f"{'...' if len(missing) > 4 else ''})")
    ds = Hand3DDataset.create(out, fps=lr.fps)
    for i in range(len(lr)):
        d = lr.episode(i)
        extra = json.loads(lr.episodes[i].get("extra") or "{}")
        t = len(d["frame_index"])
        hands = {}
        for side in HANDS:
            p = f"observation.hands.{side}."
            hands[side] = HandTrack(side=side, joints_2d=d[p + "joints_2d"].astype(np.float32),
                                    joints_3d=d[p + "joints_3d"].astype(np.float32),
                                    confidence=d[p + "confidence"].astype(np.float32),
                                    valid=d[p + "valid"].astype(bool), present=d[p + "present"].astype(bool),
                                    provenance=np.array(["lerobot-import"] * t, dtype=object))
        K = d["observation.camera.intrinsics"][0].astype(np.float32)
        rgb = d.get("observation.images.rgb")
        depth = d.get("observation.depth")
        h, w = (rgb.shape[1:3] if rgb is not None else depth.shape[1:3] if depth is not None
                else (int(extra.get("height", 0)), int(extra.get("width", 0))))
        quality = {k: (float("nan") if v is None else float(v)) for k, v in (extra.get("quality") or {}).items()}
        ep = Episode(episode_id=str(extra.get("episode_id", f"episode_{i:06d}")), fps=lr.fps, width=int(w),
                     height=int(h), K=K, hands=hands, num_frames=t, K_is_estimate=bool(extra.get("K_is_estimate")),
                     instruction=d["task"], source=str(extra.get("source", f"lerobot:{src}")),
                     depth_unit=float(d["observation.depth_unit"][0]) if depth is not None else 0.001,
                     depth_scale=d["observation.depth_scale"].astype(np.float32) if "observation.depth_scale" in d
                     else None,
                     camera_pose=d["observation.camera.pose"].astype(np.float32) if "observation.camera.pose" in d
                     else None,
                     frame_valid=d["observation.frame_valid"].astype(bool) if "observation.frame_valid" in d else None,
                     quality=quality, review_status=str(extra.get("review_status", "todo")),
                     rgb=rgb, depth_raw=depth.astype(np.float32) if depth is not None else None)
        ds.write_episode(ep.validate())
    return ds
