"""`vipa train stage1|stage2|post --config NAME --data DATASET --out RUN_DIR [--steps N] [--resume]`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vipa.model.config import STAGES, get_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train VIPA-VLA: stage1 (Hand3D QA), stage2 (Hand3D motion), post (robot)",
                              description=__doc__)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--config", default="tiny", help="registered config name (tiny | small | paper)")
    p.add_argument("--data", required=True, help="Hand3D dataset folder (stage1/2) or LeRobot v3 folder (post)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the config's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--init", default=None, help="start from this checkpoint (e.g. stage 1's final)")
    p.add_argument("--no-3d", action="store_true", help="ablation: without the 3D encoder")
    p.add_argument("--frame-step", type=int, default=1, help="use every k-th frame of each episode")
    p.add_argument("--test-fraction", type=float, default=0.2, help="episodes held out for evaluation")
    p.add_argument("--max-episodes", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto (GPU when available) | cpu | cuda | cuda:N")
    p.add_argument("--vlm-path", default=None, help="config paper: local pretrained VLM folder (LLaVA or Qwen2.5-VL)")
    p.add_argument("--encoder3d-path", default=None, help="config paper: local 3D-encoder folder (encoder3d.json)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vipa.model.checkpoint import CheckpointError, read_checkpoint_info
    from vipa.model.tokenizer import VIPATokenizer
    from vipa.train.loop import latest_checkpoint, train

    try:
        overrides = {"use_3d": False} if args.no_3d else {}
        if args.vlm_path:
            overrides["vlm_path"] = args.vlm_path
        if args.encoder3d_path:
            overrides["encoder3d_path"] = args.encoder3d_path
        cfg = get_config(args.config, **overrides)
    except KeyError as exc:
        print(f"vipa train: {exc.args[0]}", file=sys.stderr)
        return 2
    if cfg.name == "paper":
        try:
            cfg.model.check_local_weights()
        except FileNotFoundError as exc:
            print(f"vipa train: {exc}", file=sys.stderr)
            return 2
    tc = cfg.train
    if args.batch_size:
        tc.batch_size[args.stage] = args.batch_size
    if args.lr:
        tc.lr[args.stage] = args.lr
    if args.seed is not None:
        tc.seed = args.seed
    out = Path(args.out)
    tok = None
    try:
        if args.resume and latest_checkpoint(out) is not None:
            tok = VIPATokenizer.load(latest_checkpoint(out) / "tokenizer.json")
        elif args.init:
            info = read_checkpoint_info(args.init)
            from vipa.model.config import ModelConfig, init_fits

            if not init_fits(ModelConfig.from_dict(info["config"]["model"]), cfg.model, args.stage):
                raise CheckpointError(f"--init {args.init} was trained with config {info['config']['name']!r} "
                                      f"(model differs from {cfg.name!r}{' without 3D' if args.no_3d else ''})")
            tok = VIPATokenizer.load(Path(args.init) / "tokenizer.json")
        if args.stage == "post":
            from vipa.train.robot import load_robot_data

            train_set, tok, stats, meta = load_robot_data(args.data, cfg, tok)
        else:
            from vipa.train.data import build_tokenizer, load_split, stage_dataset

            caches, ids = load_split(args.data, cfg, "train", args.test_fraction, 0,
                                     args.frame_step, args.max_episodes)
            tok = tok or build_tokenizer(caches, cfg)
            train_set = stage_dataset(caches, tok, cfg, args.stage)
            stats = None
            meta = {"data": str(Path(args.data).resolve()), "train_episodes": ids,
                    "test_fraction": args.test_fraction, "samples": len(train_set)}
        print(f"vipa train {args.stage}: {len(train_set)} samples, config {cfg.name}"
              f"{' (no 3D)' if args.no_3d else ''}, out {out}", file=sys.stderr)
        res = train(cfg, args.stage, train_set, tok, out, steps=args.steps, resume=args.resume, init=args.init,
                    meta=meta, action_stats=stats, progress=not args.no_progress, num_threads=args.threads,
                    device=args.device)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"vipa train: {exc}", file=sys.stderr)
        return 1
    last = res.metrics[-1] if res.metrics else {}
    print(json.dumps({"final": str(res.final), "steps": res.steps, "last": last}))
    return 0
