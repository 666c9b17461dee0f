"""Assembling training data for a stage: Hand3D datasets (stages 1-2), LeRobot v3 robot data
(post-training), the held-out split and the project-trained tokenizer's corpus."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from vipa import tasks
from vipa.data.qa import encode_direction_distance
from vipa.model.config import ModelConfig, VIPAConfig
from vipa.model.tokenizer import VIPATokenizer
from vipa.train.datasets import FrameCache, Hand3DTorchDataset, cache_from_dataset, split_ids


def open_hand3d(root: str | Path):
    from vipa.data.dataset import Hand3DDataset  # heavy imports (av, pyarrow) only when needed

    return Hand3DDataset.open(root)


def load_split(root: str | Path, cfg: VIPAConfig, split: str, test_fraction: float = 0.2, seed: int = 0,
               frame_step: int = 1, max_episodes: int | None = None) -> tuple[list[FrameCache], list[str]]:
    """Model-ready caches of the ``split`` ("train" | "test" | "all") episodes of a Hand3D dataset."""
    ds = open_hand3d(root)
    ids = ds.episode_ids()
    if not ids:
        raise ValueError(f"{root}: the dataset has no finished episodes")
    train, test = split_ids(ids, test_fraction, seed)
    chosen = {"train": train, "test": test, "all": sorted(ids)}[split]
    if max_episodes:
        chosen = chosen[:max_episodes]
    return cache_from_dataset(ds, chosen, cfg.model.image_size, frame_step, params=task_params(cfg.model)), chosen


def task_params(m: ModelConfig) -> tasks.TaskParams:
    """The task records' parameters this model trains with (stride in seconds, horizons)."""
    return tasks.TaskParams(stride_s=m.motion_stride_s, n_future=m.traj_horizon, n_past=m.past_horizon)


def corpus(caches: list[FrameCache], seed: int = 0) -> list[str]:
    """The tokenizer's training text: instructions, object names, the trained prompts
    (``vipa.tasks.corpus_texts``) and answers in the paper's direction + distance form."""
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    for c in caches:
        texts.append(c.instruction)
        texts += tasks.corpus_texts(c.instruction, [name for name, _ in c.objects])
    texts += [encode_direction_distance(v) for v in rng.normal(0, 0.2, (2000, 3))]
    return texts


def build_tokenizer(caches: list[FrameCache], cfg: VIPAConfig) -> VIPATokenizer:
    """The pretrained VLM's tokenizer (+ motion tokens) for ``paper``; else one trained on the data's text."""
    return VIPATokenizer.for_config(cfg, corpus(caches))


def stage_dataset(caches: list[FrameCache], tok: VIPATokenizer, cfg: VIPAConfig, stage: str) -> Dataset:
    """The training samples of ``stage``. Stage 2 mixes in ``cfg.train.stage2_replay`` times as many
    stage-1 QA samples (drawn once, seeded) as it has motion samples, so stage 2 does not erase the
    spatial QA skill of stage 1; 0 trains on motion only."""
    ds = Hand3DTorchDataset(caches, tok, cfg.model, stage)
    if ds.dropped_long:
        warnings.warn(f"{stage}: {ds.dropped_long} of {ds.dropped_long + len(ds)} samples dropped: prompt or answer "
                      f"longer than the model's max_prompt_len / max_target_len ({ds.summary['by_kind']} kept)",
                      stacklevel=2)
    replay = float(getattr(cfg.train, "stage2_replay", 0.0))
    if stage != "stage2" or replay <= 0:
        return ds
    try:
        qa = Hand3DTorchDataset(caches, tok, cfg.model, "stage1")
    except ValueError:  # no objects in these episodes: nothing to replay
        return ds
    n = min(len(qa), max(1, int(round(replay * len(ds)))))
    pick = np.sort(np.random.default_rng(cfg.train.seed).choice(len(qa), n, replace=False))
    return ConcatDataset([ds, Subset(qa, pick.tolist())])
