"""Write synthetic Hand3D episodes (annotators.synthetic) into a Hand3D dataset for training the
tiny model: `python scripts/train_synthetic_data.py OUT --episodes 300 --size 96 --frames 32`."""

from __future__ import annotations

import argparse
import sys
import warnings

from tqdm import tqdm

from annotators.synthetic import background_frames, generate_episode, pick_background
from vipa.data.dataset import Hand3DDataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out")
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--size", type=int, default=96, help="image width = height, px")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--real-backgrounds", nargs="+", default=None, metavar="VIDEO",
                   help="paste frames of these real videos over the table and background (episode i: "
                        "annotators.synthetic.pick_background); default: off, the rendered table")
    a = p.parse_args(argv)
    backgrounds = background_frames(a.real_backgrounds) if a.real_backgrounds else None
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    ds = Hand3DDataset.create(a.out, fps=15.0, exist_ok=True)
    done = set(ds.episode_ids())
    for i in tqdm(range(a.episodes), desc="synthetic episodes"):
        episode_id = f"syn_{a.seed + i:05d}"
        if episode_id in done:  # resumable: finished episodes are neither regenerated nor rewritten
            continue
        bg = pick_background(backgrounds, i) if backgrounds else None
        ep = generate_episode(a.seed + i, width=a.size, height=a.size, num_frames=a.frames, background=bg)
        ep.episode_id = episode_id
        ds.write_episode(ep)
    print(f"{a.out}: {len(ds.episode_ids())} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
