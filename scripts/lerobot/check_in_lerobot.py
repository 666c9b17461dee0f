"""Runs inside .venv-lerobot (lerobot 0.4.4): load one of our LeRobot v3 exports with LeRobot's own
`LeRobotDataset` and compare it with what our reader saw (a reference .npz written by
scripts/check_lerobot.py). Prints one JSON line; exit 1 on any mismatch.

    python check_in_lerobot.py DATASET REFERENCE.npz
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    root, ref_path = Path(sys.argv[1]), Path(sys.argv[2])
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ref = np.load(ref_path, allow_pickle=False)
    tasks = json.loads(str(ref["tasks"]))
    ds = LeRobotDataset(repo_id=f"local/{root.name}", root=root, video_backend="torchcodec")
    problems: list[str] = []
    if ds.num_episodes != len(tasks):
        problems.append(f"{ds.num_episodes} episodes, ours {len(tasks)}")
    starts = [int(s) for s in ref["episode_starts"]]
    video_keys = list(ds.meta.video_keys)
    max_diff: dict[str, float] = {}
    for ep, start in enumerate(starts):
        for offset in (0, int(ref["episode_lengths"][ep]) - 1):
            idx = start + offset
            item = ds[idx]
            if item["task"] != tasks[ep]:
                problems.append(f"frame {idx}: task {item['task']!r}, ours {tasks[ep]!r}")
            if ds.meta.get_task_index(tasks[ep]) is None:
                problems.append(f"meta.get_task_index({tasks[ep]!r}) is None")
            for key in ref["numeric_keys"]:
                key = str(key)
                ours = ref[f"{key}@{idx}"]
                got = item[key].numpy()
                if got.shape != ours.shape and not (got.size == ours.size == 1):
                    problems.append(f"{key}: shape {got.shape}, ours {ours.shape}")
                elif not np.array_equal(got.reshape(ours.shape).astype(ours.dtype), ours):
                    problems.append(f"{key} frame {idx}: values differ")
            for key in video_keys:
                ours = ref[f"{key}@{idx}"]  # (H, W, 3) uint8 from our decoder
                got = item[key].numpy()  # (3, H, W) float in [0, 1]
                if got.shape != (3, *ours.shape[:2]):
                    problems.append(f"{key}: shape {got.shape}, ours (3, {ours.shape[0]}, {ours.shape[1]})")
                    continue
                diff = np.abs(np.round(got.transpose(1, 2, 0) * 255).astype(int) - ours.astype(int))
                max_diff[key] = max(max_diff.get(key, 0.0), float(diff.max()))
                if diff.max() > 0:
                    problems.append(f"{key} frame {idx}: decoded pixels differ by up to {diff.max()}")
    stats = ds.meta.stats
    for key, ft in ds.meta.features.items():
        if ft["dtype"] in ("bool", "uint16"):
            if key in stats:
                problems.append(f"stats.json has stats for {ft['dtype']} feature {key} (LeRobot would cast them)")
            continue
        if key not in stats:
            problems.append(f"stats.json has no entry for {key}")
            continue
        want = (3, 1, 1) if ft["dtype"] in ("video", "image") else tuple(ft["shape"])
        got = tuple(np.asarray(stats[key]["mean"]).shape)
        if got != want:
            problems.append(f"stats[{key}].mean has shape {got}, expected {want}")
    print(json.dumps({"dataset": str(root), "episodes": ds.num_episodes, "frames": ds.num_frames,
                      "video_keys": video_keys, "video_max_abs_diff": max_diff,
                      "first_task": ds[0]["task"], "problems": problems[:20]}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
