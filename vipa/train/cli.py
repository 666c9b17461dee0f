"""`vipa train stage1|stage2|post --config NAME --data DATASET --out RUN_DIR [--steps N] [--resume]`.

Post-training reads one or more LeRobot v3 datasets (or folders of them, or their .npz array
exports); ``--budget-s`` trains as many steps as fit in that many seconds; ``--export-npz FILE``
only writes the demonstrations as one .npz (readable with numpy alone) and exits."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from vipa.model.config import GEOMETRY_FEATURES, MOTION_DECODING, STAGES, TRAIN_RANGES, VIPAConfig, get_config
from vipa.ranges import count, flag, fraction, positive

if TYPE_CHECKING:
    from vipa.train.loop import RunResult


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train VIPA-VLA: stage1 (Hand3D QA), stage2 (Hand3D motion), post (robot)",
                              description=__doc__)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--config", default="tiny", help="registered config name (tiny | small | paper)")
    p.add_argument("--data", required=True, nargs="+",
                   help="Hand3D dataset folder (stage1/2); post: LeRobot v3 folder(s) or .npz array export(s)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl)")
    p.add_argument("--steps", type=flag(TRAIN_RANGES["steps"]), default=None, help="optimizer steps, count, 0 = one epoch (default: the config's)")
    p.add_argument("--batch-size", type=flag(TRAIN_RANGES["batch_size"]), default=None, help="samples per optimizer step (default: the config's)")
    p.add_argument("--lr", type=flag(TRAIN_RANGES["lr"]), default=None, help="peak learning rate, per step, unitless (default: the config's)")
    p.add_argument("--seed", type=count(0), default=None, help="random seed, integer >= 0 (default: the config's)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--init", default=None, help="start from this checkpoint (e.g. stage 1's final)")
    p.add_argument("--no-3d", action="store_true", help="ablation: without the 3D encoder")
    p.add_argument("--frame-step", type=count(), default=1, help="use every k-th frame of each episode (k in frames)")
    p.add_argument("--real-data", default=None,
                   help="stage2: Hand3D dataset of annotated real RGB clips (no depth) mixed in beside --data")
    p.add_argument("--real-episodes", nargs="+", default=None, help="stage2: the --real-data episodes to use (default: all)")
    p.add_argument("--real-weight", type=fraction(), default=0.5,
                   help="stage2: fraction of the drawn samples that come from --real-data, 0-1")
    p.add_argument("--real-frame-step", type=count(), default=1, help="stage2: use every k-th frame of each real clip")
    p.add_argument("--test-fraction", type=fraction(), default=0.2, help="fraction of the episodes held out for evaluation, 0-1")
    p.add_argument("--max-episodes", type=count(), default=None, help="use at most this many episodes (default: all)")
    p.add_argument("--threads", type=count(), default=None, help="torch CPU threads, count (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto (GPU when available) | cpu | cuda | cuda:N")
    p.add_argument("--vlm-path", default=None, help="config paper: local pretrained VLM folder (LLaVA or Qwen2.5-VL)")
    p.add_argument("--encoder3d-path", default=None, help="config paper: local 3D-encoder folder (encoder3d.json)")
    p.add_argument("--budget-s", type=positive(), default=None,
                   help="post: train as many steps as fit in this many seconds, timed by a 10-step calibration run (default: no budget, --steps)")
    p.add_argument("--export-npz", default=None, metavar="FILE",
                   help="post: write the demonstrations as one .npz and exit (no training)")
    p.add_argument("--geometry-token", action="store_true",
                   help="the readout's geometry enters the LLM as one token before the text (config geometry_token)")
    p.add_argument("--geometry-features", choices=GEOMETRY_FEATURES, default=None,
                   help="how the geometry token sees its numbers: raw metres, or with sin / cos features "
                        "(config geometry_features; default: the config's, fourier; an --init checkpoint's "
                        "token keeps its own)")
    p.add_argument("--motion-label-sigma", type=flag(TRAIN_RANGES["motion_label_sigma"]), default=None,
                   help="motion-token labels: Gaussian over neighbouring bins, std in bins (0 = one-hot; default: the config's)")
    p.add_argument("--motion-decoding", choices=MOTION_DECODING, default=None,
                   help="how constrained decoding picks motion tokens, stored in the checkpoint (default: the config's)")
    p.add_argument("--pointmap-dropout", type=flag(TRAIN_RANGES["pointmap_dropout"]), default=None,
                   help="stages 1/2: fraction of samples trained with their point map hidden (RGB only), 0-1 "
                        "(default: the config's, 0.3)")
    p.add_argument("--no-mono-points", action="store_true",
                   help="without the RGB point-estimate head (config mono_points; RGB-only inputs then get no "
                        "3D readout); an --init checkpoint keeps its own")
    p.add_argument("--lm-per-sample", action="store_true",
                   help="the text loss averages each sample's tokens first, so a QA answer weighs as much as a "
                        "motion-token sequence (config lm_per_sample; default: every token weighs the same)")
    p.add_argument("--stage2-replay", type=flag(TRAIN_RANGES["stage2_replay"]), default=None,
                   help="stage 2: stage-1 QA samples mixed in, as a fraction of the motion samples, >= 0 "
                        "(default: the config's, 0.5)")
    p.add_argument("--w-motion", type=flag(TRAIN_RANGES["w_motion"]), default=None,
                   help="stages 1/2: weight of the L1 in metres on the trajectory relative to pointer A (the "
                        "displacement from the wrist now), >= 0 (default: the config's, 0 = off)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run_stage(cfg: VIPAConfig, stage: str, data: str | Path | Sequence[str | Path], out: str | Path,
              steps: int | None = None, init: str | Path | None = None, resume: bool = False,
              budget_s: float | None = None, test_fraction: float = 0.2, frame_step: int = 1,
              max_episodes: int | None = None, threads: int | None = None, progress: bool = True,
              device: str = "auto", real_data: str | Path | None = None,
              real_episodes: Sequence[str] | None = None, real_weight: float = 0.5,
              real_frame_step: int = 1) -> RunResult:
    """What ``vipa train STAGE`` does once its config is built: the tokenizer from the run's latest
    checkpoint (``resume``) or ``init`` (after checking ``init`` fits), the stage's data (Hand3D
    train split for stage1/2, robot demonstrations for post), then training; raises ValueError,
    FileNotFoundError or CheckpointError naming the problem. Stage 2 with ``real_data``: the
    annotated real clips (RGB only) are mixed in, drawn with probability ``real_weight``."""
    from vipa.model.checkpoint import CheckpointError, checkpoint_config, read_checkpoint_info
    from vipa.model.config import adopt_init_parts, config_diff, init_fits
    from vipa.model.tokenizer import VIPATokenizer
    from vipa.train.loop import latest_checkpoint, train

    out = Path(out)
    tok = None
    if resume and latest_checkpoint(out) is not None:
        tok = VIPATokenizer.load(latest_checkpoint(out) / "tokenizer.json")
    elif init:
        info = read_checkpoint_info(init)
        init_model = checkpoint_config(init, info).model
        adopt_init_parts(cfg.model, init_model)
        if not init_fits(init_model, cfg.model, stage):
            hint = "; add --no-3d" if cfg.model.use_3d and not init_model.use_3d else ""
            raise CheckpointError(f"--init {init} was trained with config {info['config']['name']!r} "
                                  f"(model differs from {cfg.name!r}{'' if cfg.model.use_3d else ' without 3D'}: "
                                  f"{'; '.join(config_diff(init_model, cfg.model))}){hint}")
        tok = VIPATokenizer.load(Path(init) / "tokenizer.json")
    no3d = "" if cfg.model.use_3d else " (no 3D)"
    if stage == "post":
        from vipa.train.robot import _roots, train_post

        _roots(data)  # a bad --data is the one line of the error, before any progress line
        print(f"vipa train post: config {cfg.name}{no3d}, out {out}", file=sys.stderr)
        return train_post(cfg, data, out, tok, init, steps, budget_s, resume=resume, threads=threads,
                          progress=progress, device=device)
    from vipa.train.data import build_tokenizer, load_split, stage_dataset

    if real_data is not None and stage != "stage2":
        raise ValueError(f"--real-data: real clips train stage 2 only, not {stage}")
    data = data if isinstance(data, (str, Path)) else data[0]
    caches, ids = load_split(data, cfg, "train", test_fraction, 0, frame_step, max_episodes)
    tok = tok or build_tokenizer(caches, cfg)
    train_set = stage_dataset(caches, tok, cfg, stage)
    meta = {"data": str(Path(data).resolve()), "train_episodes": ids, "test_fraction": test_fraction,
            "samples": len(train_set)}
    if real_data is not None:
        from vipa.train.data import load_real, mix_real, real_stage2_dataset

        real_caches, real_ids = load_real(real_data, cfg, real_episodes, real_frame_step)
        real_set = real_stage2_dataset(real_caches, tok, cfg)
        meta.update(real_data=str(Path(real_data).resolve()), real_episodes=real_ids, real_weight=real_weight,
                    real_samples=len(real_set), synthetic_samples=len(train_set))
        train_set = mix_real(train_set, real_set, real_weight, cfg.train.seed)
        print(f"vipa train {stage}: + {len(real_set)} real-clip samples ({len(real_ids)} clips, RGB only), "
              f"drawn with probability {real_weight}", file=sys.stderr)
    print(f"vipa train {stage}: {len(train_set)} samples, config {cfg.name}{no3d}, out {out}", file=sys.stderr)
    return train(cfg, stage, train_set, tok, out, steps=steps, resume=resume, init=init, meta=meta,
                 progress=progress, num_threads=threads, device=device)


def run(args: argparse.Namespace) -> int:
    from vipa.model.checkpoint import CheckpointError

    if args.stage != "post" and len(args.data) != 1:
        print(f"vipa train {args.stage}: --data takes one Hand3D dataset folder, got {len(args.data)}", file=sys.stderr)
        return 2
    if args.real_data is not None and args.stage != "stage2":
        print("vipa train: --real-data is a stage2 option", file=sys.stderr)
        return 2
    if (args.budget_s is not None or args.export_npz) and args.stage != "post":
        print("vipa train: --budget-s and --export-npz are post-training options", file=sys.stderr)
        return 2
    if args.export_npz:
        from vipa.train.robot import export_arrays

        try:
            print(export_arrays(args.data, args.export_npz))
        except (ValueError, FileNotFoundError) as exc:
            print(f"vipa train post: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        overrides = {"use_3d": False} if args.no_3d else {}
        if args.geometry_token:
            overrides["geometry_token"] = True
        if args.geometry_features:
            overrides["geometry_features"] = args.geometry_features
        if args.no_mono_points:
            overrides["mono_points"] = False
        if args.motion_decoding:
            overrides["motion_decoding"] = args.motion_decoding
        elif args.init and not args.resume:  # continue with the init checkpoint's decoding
            from vipa.model.checkpoint import checkpoint_config

            overrides["motion_decoding"] = checkpoint_config(args.init).model.motion_decoding
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
    if args.batch_size is not None:
        tc.batch_size[args.stage] = args.batch_size
    if args.lr is not None:
        tc.lr[args.stage] = args.lr
    if args.seed is not None:
        tc.seed = args.seed
    if args.lm_per_sample:
        tc.lm_per_sample = True
    for field in ("pointmap_dropout", "stage2_replay", "w_motion", "motion_label_sigma"):
        if getattr(args, field) is not None:
            setattr(tc, field, getattr(args, field))
    try:
        res = run_stage(cfg, args.stage, args.data, args.out, steps=args.steps, init=args.init, resume=args.resume,
                        budget_s=args.budget_s, test_fraction=args.test_fraction, frame_step=args.frame_step,
                        max_episodes=args.max_episodes, threads=args.threads, progress=not args.no_progress,
                        device=args.device, real_data=args.real_data, real_episodes=args.real_episodes,
                        real_weight=args.real_weight, real_frame_step=args.real_frame_step)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"vipa train: {exc}", file=sys.stderr)
        return 1
    last = res.metrics[-1] if res.metrics else {}
    print(json.dumps({"final": str(res.final), "steps": res.steps, "last": last}))
    return 0
