"""Assembling training data for a stage: Hand3D datasets (stages 1-2), annotated real RGB clips
mixed into stage 2 (``real_stage2_dataset``, ``WeightedMix``), LeRobot v3 robot data
(post-training), the held-out split and the project-trained tokenizer's corpus."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
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


def load_real(root: str | Path, cfg: VIPAConfig, episodes: Sequence[str] | None = None,
              frame_step: int = 1) -> tuple[list[FrameCache], list[str]]:
    """Model-ready caches of annotated real clips (RGB only, no depth needed) of a Hand3D
    dataset: ``episodes`` (default: all finished ones)."""
    ds = open_hand3d(root)
    ids = sorted(ds.episode_ids())
    chosen = list(episodes) if episodes is not None else ids
    missing = sorted(set(chosen) - set(ids))
    if missing:
        raise ValueError(f"{root}: no finished episodes {missing}; it has {ids}")
    if not chosen:
        raise ValueError(f"{root}: no real episodes to train on")
    return cache_from_dataset(ds, chosen, cfg.model.image_size, frame_step, params=task_params(cfg.model),
                              rgb_only=True), chosen


def real_stage2_dataset(caches: list[FrameCache], tok: VIPATokenizer, cfg: VIPAConfig) -> Hand3DTorchDataset:
    """Stage-2 motion samples of real clips (no QA replay: the clips have no object annotations)."""
    ds = Hand3DTorchDataset(caches, tok, cfg.model, "stage2")
    if ds.dropped_long:
        warnings.warn(f"real clips: {ds.dropped_long} stage-2 samples dropped (prompt or answer too long)", stacklevel=2)
    return ds


class WeightedMix(Dataset):
    """Several datasets drawn with fixed probabilities: index i maps (through a table drawn once,
    seeded) to a source chosen with probability ``weights[k] / sum(weights)`` and a uniform
    sample of it, so a uniform sampler over this dataset sees the sources in those proportions."""

    def __init__(self, parts: Sequence[Dataset], weights: Sequence[float], seed: int = 0,
                 length: int | None = None):
        w = np.asarray(weights, np.float64)
        if len(parts) != len(w) or not len(parts):
            raise ValueError(f"WeightedMix: {len(parts)} datasets and {len(w)} weights")
        if (w < 0).any() or w.sum() <= 0 or not np.isfinite(w).all():
            raise ValueError(f"WeightedMix: weights must be >= 0 with a positive sum, got {list(weights)}")
        if any(len(d) == 0 for d, x in zip(parts, w) if x > 0):
            raise ValueError("WeightedMix: a dataset with a positive weight is empty")
        self.parts, self.weights = list(parts), w / w.sum()
        n = int(length if length is not None else max(sum(len(d) for d in parts), 1000))
        rng = np.random.default_rng(seed)
        self.source = rng.choice(len(parts), n, p=self.weights)
        sizes = np.array([len(d) for d in parts], np.int64)
        self.index = np.floor(rng.random(n) * sizes[self.source]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        return self.parts[int(self.source[i])][int(self.index[i])]


def mix_real(synthetic: Dataset, real: Dataset, real_weight: float, seed: int = 0) -> Dataset:
    """Stage-2 training set drawing real samples with probability ``real_weight`` (0-1) and the
    synthetic ones (with their QA replay) otherwise."""
    if not 0.0 <= real_weight <= 1.0:
        raise ValueError(f"real_weight: expected a fraction in [0, 1], got {real_weight}")
    return WeightedMix([synthetic, real], [1.0 - real_weight, real_weight], seed)
