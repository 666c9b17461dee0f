"""The model's typed input: one ``Batch`` for training (stage 1, stage 2, post-training),
evaluation and inference. ``vipa.model.processor.collate`` builds it from per-sample dicts;
``Predictor.prepare`` builds the observation part for one frame.

Shapes (B = batch, S = the config's ``image_size``, P = ``max_prompt_len``, Lt = longest target,
T = ``traj_horizon``, C = ``chunk_len``); 3D quantities are camera-frame metres (OpenCV axes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Batch:
    """Observation (always): ``image``, ``prompt_ids``, ``prompt_mask``; ``xyz`` / ``valid`` when
    the model has its 3D encoder. Targets (training / evaluation only) are None when absent."""

    image: torch.Tensor  # (B, 3, S, S) float32 RGB in [0, 1]
    prompt_ids: torch.Tensor  # (B, P) int64, right-padded with the tokenizer's pad id
    prompt_mask: torch.Tensor  # (B, P) int64, 1 on real prompt tokens
    xyz: torch.Tensor | None = None  # (B, 3, S, S) float32 point map, metres (0 where invalid)
    valid: torch.Tensor | None = None  # (B, 1, S, S) float32 fraction of valid pixels per cell
    # stage 1 / 2 text target: <bos> answer <eos>, right-padded
    target: torch.Tensor | None = None  # (B, Lt) int64
    target_mask: torch.Tensor | None = None  # (B, Lt) int64, 1 on real target tokens
    # readout targets, metres; each mask (B,) float32 is 1 where the sample has that target
    point_a: torch.Tensor | None = None  # (B, 3) pointer A: the wrist / end effector now
    point_a_mask: torch.Tensor | None = None
    point_b: torch.Tensor | None = None  # (B, 3) pointer B: the object / goal / episode end
    point_b_mask: torch.Tensor | None = None  # absent in post-training (point B is known where A is)
    traj: torch.Tensor | None = None  # (B, T, 3) future wrist / end-effector positions
    traj_mask: torch.Tensor | None = None
    # post-training (robot), normalised with the checkpoint's action statistics
    state: torch.Tensor | None = None  # (B, state_dim) float32
    actions: torch.Tensor | None = None  # (B, C, action_dim) float32
    action_mask: torch.Tensor | None = None  # (B, C) bool, False where the chunk ran past the episode end
    index: torch.Tensor | None = None  # (B,) int64 sample indices in their dataset

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def __len__(self) -> int:
        return self.image.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on ``device``."""
        return replace(self, **{f.name: v.to(device, non_blocking=non_blocking)
                                for f in fields(self) if torch.is_tensor(v := getattr(self, f.name))})

    def observation(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(image, prompt_ids, prompt_mask, xyz, valid): the positional inputs of ``VIPAModel.forward``."""
        return self.image, self.prompt_ids, self.prompt_mask, self.xyz, self.valid
