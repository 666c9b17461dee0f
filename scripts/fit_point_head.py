"""Give a checkpoint made without the RGB point-estimate head (``mono_points``) one, trained alone
(``vipa.train.point_head.fit_point_head``: everything else frozen and unchanged; L1 against the
training frames' point-map cells, metres).

    python scripts/fit_point_head.py checkpoints/tiny_sample --data runs/tiny_sample/data --out runs/mono
"""

from __future__ import annotations

import argparse
import json

from vipa.train.point_head import fit_point_head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True, help="the Hand3D dataset the checkpoint was trained on")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-episodes", type=int, default=None, help="training episodes, as the checkpoint's training used")
    ap.add_argument("--keep-if-present", action="store_true",
                    help="a checkpoint that already has the head (trained jointly) is copied to --out unchanged "
                         "instead of refused")
    args = ap.parse_args()
    try:
        out = fit_point_head(args.checkpoint, args.data, args.out, args.steps, args.batch_size, args.lr,
                             args.threads, args.seed, args.keep_if_present, args.max_episodes,
                             log_fn=lambda r: print(json.dumps(r), flush=True))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"fit_point_head: {exc}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
