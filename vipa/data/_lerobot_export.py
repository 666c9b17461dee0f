"""Hand3D <-> LeRobot v3. Export: the merged (corrected) dataset through ``vipa.data.lerobot.LeRobotWriter``.

LeRobot has fields for images, state and action only; everything else a Hand3D episode holds
is stored as declared features with their unit and frame in ``info``:

    observation.images.rgb              video (H, W, 3) uint8 (when every episode has RGB)
    observation.depth                   uint16 (H, W) raw counts, 0 = no reading (when every episode
                                        has depth); a numeric feature: LeRobot 0.4 has no depth camera
                                        type, and a video would be lossy 8-bit
    observation.depth_unit              float32 m per count;  metric = raw * unit * depth_scale
    observation.depth_scale             float32 calibration scale s (1 where unknown)
    observation.depth_scale_known       bool: False = s unknown
    observation.state                   float32 (6,) left then right wrist (x, y, z), m, camera frame
    observation.state_valid             bool (6,): False where the wrist was not measured (hand absent,
                                        wrist invalid or missing); such values hold the last measured
                                        value (the first one before any), 0 if never measured
    action                              float32 (6,) the state at the next frame (last repeats); its
                                        validity is observation.state_valid of the next frame
    observation.camera.intrinsics       float32 (3, 3) K, px
    observation.camera.pose             float32 (4, 4) world_from_camera, m
    observation.frame_valid             bool
    observation.hands.<side>.*          joints_2d (21, 2) px, joints_3d (21, 3) m camera,
                                        confidence (21,), valid (21,), present, and
                                        joints_2d_known / joints_3d_known (21,) bool: False where the
                                        value was missing (NaN in Hand3D; held like the state here)
No number in the export is NaN or infinite: what is missing is filled and marked False in its
mask, and import turns it back into NaN. Episode metadata (id, source, size, K estimate flag,
quality, review status) goes in each episode's ``extra``; the instruction is every frame's task.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from vipa.conventions import HANDS, JOINT_NAMES, NUM_JOINTS, WRIST

if TYPE_CHECKING:
    from vipa.data.reader import Hand3DDataset


class ExportError(ValueError):
    """An episode cannot be exported as it is; the message names the episode and the field."""


def hold_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown entries of (T, ...) ``values`` along time: the last known value, the first known
    one before any, 0 where nothing is ever known. ``known`` is (T, ...) bool of ``values``' shape."""
    v = np.array(values, np.float32, copy=True)
    t = v.shape[0]
    if t == 0:
        return v
    flat, k = v.reshape(t, -1), known.reshape(t, -1)
    idx = np.where(k, np.arange(t)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)
    first = np.argmax(k, axis=0)
    src = np.where(last >= 0, last, first[None, :])
    filled = np.take_along_axis(flat, src, axis=0)
    filled[:, ~k.any(0)] = 0.0
    return filled.reshape(v.shape)


def _features(h: int, w: int, rgb: bool, depth: bool) -> dict[str, dict]:
    xyz = [f"{s}_wrist_{a}" for s in HANDS for a in "xyz"]
    f: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": [6], "names": xyz,
                              "info": {"unit": "m", "frame": "camera", "mask": "observation.state_valid"}},
        "observation.state_valid": {"dtype": "bool", "shape": [6], "names": xyz,
                                    "info": {"meaning": "True where observation.state holds a measurement"}},
        "action": {"dtype": "float32", "shape": [6], "names": xyz,
                   "info": {"unit": "m", "frame": "camera", "meaning": "wrist positions at the next frame"}},
        "observation.camera.intrinsics": {"dtype": "float32", "shape": [3, 3], "names": None,
                                          "info": {"unit": "px", "pixel_origin": "top-left corner"}},
        "observation.camera.pose": {"dtype": "float32", "shape": [4, 4], "names": None,
                                    "info": {"unit": "m", "frame": "world_from_camera"}},
        "observation.depth_scale": {"dtype": "float32", "shape": [1], "names": None,
                                    "info": {"unit": "1", "meaning": "calibration scale s",
                                             "mask": "observation.depth_scale_known"}},
        "observation.depth_scale_known": {"dtype": "bool", "shape": [1], "names": None},
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
        f[p + "joints_2d_known"] = {"dtype": "bool", "shape": [NUM_JOINTS], "names": list(JOINT_NAMES)}
        f[p + "joints_3d_known"] = {"dtype": "bool", "shape": [NUM_JOINTS], "names": list(JOINT_NAMES)}
        f[p + "present"] = {"dtype": "bool", "shape": [1], "names": None}
    if rgb:
        f["observation.images.rgb"] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
    if depth:
        f["observation.depth"] = {"dtype": "uint16", "shape": [h, w], "names": ["height", "width"],
                                  "info": {"unit": "observation.depth_unit", "invalid": 0,
                                           "metric": "raw * observation.depth_unit * observation.depth_scale"}}
        f["observation.depth_unit"] = {"dtype": "float32", "shape": [1], "names": None, "info": {"unit": "m"}}
    return f


def _finite(name: str, a: np.ndarray, where: np.ndarray | None = None) -> None:
    a = np.asarray(a, np.float64)
    bad = ~np.isfinite(a)
    if where is not None:
        bad &= where
    if bad.any():
        frame = int(np.argwhere(bad)[0][0])
        raise ExportError(f"{name}: {int(bad.sum())} non-finite values marked valid (first in frame {frame})")
    if np.abs(a[np.isfinite(a)]).max(initial=0.0) > np.finfo(np.float32).max:
        raise ExportError(f"{name}: values beyond float32 range")


def episode_features(e) -> dict[str, np.ndarray]:
    """One Hand3D episode's non-media LeRobot features: finite numbers and their masks.

    Raises ExportError naming the field when a value marked valid is not finite (an infinite
    joint is never exported as a number) or K / the camera pose are not finite."""
    t = e.num_frames
    _finite("K", e.K)
    _finite("camera_pose", e.camera_pose)
    data: dict[str, np.ndarray] = {}
    state = np.zeros((t, 6), np.float32)
    state_known = np.zeros((t, 6), bool)
    for k, side in enumerate(HANDS):
        hand, p = e.hands[side], f"observation.hands.{side}."
        v = hand.valid.astype(bool)
        _finite(f"hands.{side}.joints_2d", hand.joints_2d, v[..., None])
        _finite(f"hands.{side}.joints_3d", hand.joints_3d, v[..., None])
        _finite(f"hands.{side}.confidence", hand.confidence, v)
        for key, arr in (("joints_2d", hand.joints_2d), ("joints_3d", hand.joints_3d)):
            if np.isinf(arr).any():
                raise ExportError(f"hands.{side}.{key}: infinite values (missing values must be NaN)")
            known = np.isfinite(arr).all(-1)
            data[p + key] = hold_fill(arr, np.repeat(known[..., None], arr.shape[-1], -1))
            data[p + key + "_known"] = known
        conf = np.asarray(hand.confidence, np.float32)
        data[p + "confidence"] = np.where(np.isfinite(conf), conf, 0.0).astype(np.float32)
        data[p + "valid"] = v
        data[p + "present"] = hand.present.astype(bool)
        wrist_known = hand.present & v[:, WRIST] & np.isfinite(hand.joints_3d[:, WRIST]).all(-1)
        state_known[:, 3 * k:3 * k + 3] = wrist_known[:, None]
        state[:, 3 * k:3 * k + 3] = hold_fill(hand.joints_3d[:, WRIST], np.repeat(wrist_known[:, None], 3, 1))
    scale = np.asarray(e.depth_scale, np.float32)
    if np.isinf(scale).any() or (scale[np.isfinite(scale)] <= 0).any():
        raise ExportError("depth_scale: infinite or non-positive values (unknown must be NaN)")
    scale_known = np.isfinite(scale)
    data.update({
        "observation.state": state,
        "observation.state_valid": state_known,
        "action": np.concatenate([state[1:], state[-1:]]) if t else state,
        "observation.camera.intrinsics": np.repeat(np.asarray(e.K, np.float32)[None], t, 0),
        "observation.camera.pose": np.asarray(e.camera_pose, np.float32),
        "observation.depth_scale": np.where(scale_known, scale, 1.0).astype(np.float32),
        "observation.depth_scale_known": scale_known,
        "observation.frame_valid": e.frame_valid.astype(bool),
    })
    return data


def export_hand3d(ds: "Hand3DDataset", out: str | Path, corrected: bool = True,
                  progress: "Callable[[int, int, str], None] | None" = None) -> Path:
    """Write the dataset's episodes (status "ok") as a LeRobot v3 folder at ``out``.

    LeRobot needs one fps and one image size per camera: mixed datasets are refused with a
    ValueError that says which episodes differ. RGB and depth are written when every episode
    has them. ``progress(done, total, episode_id)`` is called after each episode is read.
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
        try:
            data = episode_features(e)
        except ExportError as exc:
            raise ExportError(f"episode {eid!r}: {exc}") from None
        if rgb:
            data["observation.images.rgb"] = ds.rgb_frames(eid)
        if depth:
            meta = ds._episode_meta(eid)
            data["observation.depth"] = np.stack([ds._depth_counts(eid, i, meta) for i in range(e.num_frames)])
            data["observation.depth_unit"] = np.full(e.num_frames, meta["depth_unit"], np.float32)
        extra = {"episode_id": eid, "source": e.source, "width": e.width, "height": e.height,
                 "K_is_estimate": e.K_is_estimate, "review_status": e.review_status,
                 "quality": {k: (v if math.isfinite(v) else None) for k, v in e.quality.items()}}
        writer.add_episode(data, task=e.instruction, extra=extra)
        if progress:
            progress(len(writer._episodes), len(ids), eid)
    return writer.finalize()


def _scale(d: dict) -> np.ndarray | None:
    if "observation.depth_scale" not in d:
        return None
    s = d["observation.depth_scale"].astype(np.float32)
    if "observation.depth_scale_known" in d:
        s[~d["observation.depth_scale_known"].astype(bool)] = np.nan
    return s


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
            j2, j3 = d[p + "joints_2d"].astype(np.float32), d[p + "joints_3d"].astype(np.float32)
            if p + "joints_2d_known" in d:  # masked values were held for LeRobot: missing again
                j2[~d[p + "joints_2d_known"].astype(bool)] = np.nan
                j3[~d[p + "joints_3d_known"].astype(bool)] = np.nan
            hands[side] = HandTrack(side=side, joints_2d=j2, joints_3d=j3,
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
                     depth_scale=_scale(d),
                     camera_pose=d["observation.camera.pose"].astype(np.float32) if "observation.camera.pose" in d
                     else None,
                     frame_valid=d["observation.frame_valid"].astype(bool) if "observation.frame_valid" in d else None,
                     quality=quality, review_status=str(extra.get("review_status", "todo")),
                     rgb=rgb, depth_raw=depth.astype(np.float32) if depth is not None else None)
        ds.write_episode(ep.validate())
    return ds
