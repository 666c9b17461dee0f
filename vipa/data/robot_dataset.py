"""Torch dataset of robot demonstrations (LeRobot v3) for post-training: one sample per frame
with the action chunk that follows it.

Sample fields: image (3, H, W) float32 in [0, 1]; depth (H, W) float32 metres (0 = none);
K (3, 3) float32; state (S,) float32; actions (chunk, A) float32 (the frame's action and the
next chunk-1, the last repeated past the episode end); action_mask (chunk,) bool (False where
repeated); instruction str; episode int.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vipa.data.lerobot import LeRobotDataset, LeRobotFormatError

IMAGE_KEY = "observation.images.main"
DEPTH_KEY = "observation.depth"


@dataclass
class Normalizer:
    """Per-dimension mean/std normalisation of states and actions (saved with checkpoints)."""

    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v, np.float64).tolist() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> "Normalizer":
        return cls(**{k: np.asarray(d[k], np.float32) for k in ("state_mean", "state_std", "action_mean", "action_std")})

    def norm_state(self, s):
        return (s - self.state_mean) / self.state_std

    def norm_action(self, a):
        return (a - self.action_mean) / self.action_std

    def denorm_action(self, a):
        return a * self.action_std + self.action_mean


class RobotChunkDataset(Dataset):
    """All frames of a LeRobot v3 dataset held in memory (uint8 images, uint16 depth)."""

    def __init__(self, root: str | Path, chunk: int = 16, depth_unit: float = 0.001):
        self.ds = LeRobotDataset(root)
        feats = self.ds.features
        for key in (IMAGE_KEY, "observation.state", "action", "observation.camera_intrinsics"):
            if key not in feats:
                raise LeRobotFormatError(f"{root}: post-training needs feature {key!r}; has {sorted(feats)}")
        self.chunk = chunk
        self.depth_unit = depth_unit
        self.has_depth = DEPTH_KEY in feats
        self.episodes = [self.ds.episode(i) for i in range(len(self.ds))]
        self.index = [(e, t) for e, ep in enumerate(self.episodes) for t in range(len(ep["action"]))]
        states = np.concatenate([ep["observation.state"] for ep in self.episodes])
        actions = np.concatenate([ep["action"] for ep in self.episodes])
        self.normalizer = Normalizer(states.mean(0).astype(np.float32), states.std(0).astype(np.float32) + 1e-3,
                                     actions.mean(0).astype(np.float32), actions.std(0).astype(np.float32) + 1e-3)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        ep = self.episodes[e]
        n = len(ep["action"])
        idx = np.minimum(np.arange(t, t + self.chunk), n - 1)
        img = torch.from_numpy(ep[IMAGE_KEY][t]).permute(2, 0, 1).float() / 255.0
        if self.has_depth:
            depth = torch.from_numpy(ep[DEPTH_KEY][t].astype(np.float32) * self.depth_unit)
        else:
            depth = torch.zeros(img.shape[1:])
        return {
            "image": img,
            "depth": depth,
            "K": torch.from_numpy(ep["observation.camera_intrinsics"][t].astype(np.float32)),
            "state": torch.from_numpy(self.normalizer.norm_state(ep["observation.state"][t]).astype(np.float32)),
            "actions": torch.from_numpy(self.normalizer.norm_action(ep["action"][idx]).astype(np.float32)),
            "action_mask": torch.from_numpy(np.arange(t, t + self.chunk) < n),
            "instruction": ep["task"],
            "episode": e,
        }
