"""Leave-one-clip-out on the real clips (samples/real_clips, #13 item 2): for each clip, a short
stage-2 continuation of a checkpoint on synthetic episodes mixed with the *other* annotated real
clips (RGB only), evaluated RGB only on the clip left out, next to the same checkpoint zero-shot
and to holding the annotated current wrist still.

    python scripts/loco_real_clips.py --init checkpoints/tiny_sample --work runs/loco --steps 200 --threads 1

Resumable: the clips are annotated once into WORK/ds (`annotate_to_dataset`, as `vipa annotate`),
synthetic episodes generated once into WORK/syn, the init checkpoint copied once to WORK/init;
a fold whose WORK/folds/<clip>/eval.json exists is skipped, and so is a zero-shot evaluation
whose WORK/zero_shot/<clip>.json exists. The table goes to WORK/report.json and WORK/table.md.

Per sample (every ``--every``-th frame t of the held-out clip whose annotated wrist is known at t
and at all ``traj_horizon`` future waypoints, the checkpoint's stride apart, about one second),
all in cm against the annotated wrist (camera frame of t, metres, as the annotation lifted it):

* end-to-end ADE / FDE: the predicted trajectory as it is (absolute, so it carries the error of
  the model's own wrist estimate);
* motion ADE / FDE: the predicted displacement (trajectory - predicted wrist) added to the
  annotated current wrist, the start that holding still also gets;
* holding still ADE / FDE: the annotated current wrist repeated;
* pointer: |predicted current wrist (pointer A) - annotated wrist|.

A clip shorter than one horizon gives no sample; its fold is not trained (said in the report).
``--seen`` also evaluates each fold's model on the clips it trained on (fit against transfer).
``--real-weight 0`` is the control: the same continuation on synthetic episodes only (trained once,
in WORK/synthetic_only), so the real clips' effect is told apart from more synthetic training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO / "samples" / "real_clips"
KEYS = ("ade", "fde", "motion_ade", "motion_fde", "hold_ade", "hold_fde", "pointer")


def clip_samples(predictor, ds, eid: str, every: int) -> dict:
    """Per-sample figures (cm) of ``predictor`` on episode ``eid``, RGB only (module docstring)."""
    from vipa import tasks

    ep = ds.load_episode(eid)
    view = tasks.episode_view(ep)
    n = predictor.mcfg.traj_horizon
    stride = tasks.stride_frames(ep.fps, predictor.motion_stride_s)
    rows = []
    for t in range(0, ep.num_frames - stride * n, every):
        idx = t + stride * np.arange(1, n + 1)
        if not (ep.frame_valid[t] and np.isfinite(view.wrist[t]).all() and np.isfinite(view.wrist[idx]).all()):
            continue
        truth = view.to_frame(view.wrist[idx], idx, t)  # (n, 3) camera t, metres
        now = view.wrist[t]
        pred = predictor.predict(ds.rgb_frame(eid, t), None, None, instruction=view.instruction, mode="trajectory",
                                 motion_tokens=False, hand=view.hand)
        if pred.inputs != "rgb":
            raise RuntimeError(f"{eid} frame {t}: expected an RGB-only prediction, got {pred.inputs}")
        motion = pred.trajectory - pred.wrist + now

        def err(p: np.ndarray) -> np.ndarray:
            return np.linalg.norm(p - truth, axis=1) * 100.0

        d, dm, dh = err(pred.trajectory), err(motion), err(np.repeat(now[None], n, 0))
        rows.append({"frame": t, "ade": float(d.mean()), "fde": float(d[-1]), "motion_ade": float(dm.mean()),
                     "motion_fde": float(dm[-1]), "hold_ade": float(dh.mean()), "hold_fde": float(dh[-1]),
                     "pointer": float(np.linalg.norm(pred.wrist - now) * 100.0),
                     # metres, camera frame of t: the predicted and the annotated displacement from the wrist now
                     "disp": np.round(pred.trajectory - pred.wrist, 5).tolist(),
                     "future": np.round(truth - now, 5).tolist()})
    return {"episode": eid, "side": view.hand, "frames": ep.num_frames, "fps": ep.fps, "stride_frames": stride,
            "samples": rows}


def summary(rows: list[dict]) -> dict:
    """{"n", mean of each figure} over samples (cm)."""
    out: dict = {"n": len(rows)}
    for k in KEYS:
        if rows:
            out[k] = round(float(np.mean([r[k] for r in rows])), 2)
    return out


SCALES = np.round(np.arange(0.0, 1.501, 0.05), 2)


def scaled_motion(rows: list[dict], scale: float | np.ndarray) -> dict:
    """Motion ADE / FDE (cm) with the predicted displacement times ``scale`` (0 = holding still);
    ``scale``: one factor, or one per row (S,)."""
    k = np.asarray(scale, float)
    d = np.array([r["disp"] for r in rows]) * k.reshape(-1, 1, 1) - np.array([r["future"] for r in rows])  # (S, n, 3)
    e = np.linalg.norm(d, axis=-1) * 100.0
    return {"n": len(rows), **({"scale": float(k)} if k.ndim == 0 else {}),
            "motion_ade": round(float(e.mean()), 2), "motion_fde": round(float(e[:, -1].mean()), 2)}


def fit_scale(rows: list[dict]) -> float:
    """The displacement scale (grid ``SCALES``) with the lowest motion ADE on ``rows``."""
    return float(min(SCALES, key=lambda k: scaled_motion(rows, k)["motion_ade"]))


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path, dict]:
    """The init copy, the annotated clips and the synthetic episodes (each made once)."""
    from annotators.batch import annotate_to_dataset
    from annotators.pipeline import AnnotateConfig

    info: dict = {}
    init = work / "init"
    if not (init / "model.safetensors").is_file():
        tmp = work / "init.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(args.init, tmp)
        tmp.rename(init)
        try:
            commit = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%H", "--", str(Path(args.init).resolve())],
                                    capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = ""
        write_json(init / "source.json", {"copied_from": str(args.init), "last_commit_touching_it": commit})
    info["init"] = json.loads((init / "source.json").read_text())
    clips = [Path(c) for c in args.clips] if args.clips else sorted(CLIPS.glob("*/*.mp4"))
    root = work / "ds"
    t0 = time.process_time()
    w0 = time.time()
    cfg = AnnotateConfig(decode={"max_frames": args.max_frames}) if args.max_frames else None
    rep = annotate_to_dataset(clips, root, cfg, workers=1)
    run = {"clips": [str(c) for c in clips], "wall_s": round(time.time() - w0, 1),
           "cpu_s": round(time.process_time() - t0, 1), "annotated": sum(o.status != "skipped" for o in rep.outcomes),
           "failed": {o.source: o.error for o in rep.failed}, "max_frames": args.max_frames}
    log = work / "annotation_runs.jsonl"  # every run's cost, the first (which annotated) included
    with open(log, "a") as fh:
        fh.write(json.dumps(run) + "\n")
    info["annotation"] = [json.loads(x) for x in log.read_text().splitlines()]
    syn = work / "syn"
    if not (syn / ".done").is_file():
        from annotators.synthetic import background_frames, generate_episode, pick_background
        from vipa.data.dataset import Hand3DDataset

        bgs = background_frames(args.synthetic_backgrounds) if args.synthetic_backgrounds else None
        sd = Hand3DDataset.create(syn, fps=15.0, exist_ok=True)
        done = set(sd.episode_ids())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in range(args.synthetic):
                if f"syn_{i:05d}" not in done:
                    ep = generate_episode(i, width=args.synthetic_size, height=args.synthetic_size,
                                          num_frames=args.synthetic_frames,
                                          background=pick_background(bgs, i) if bgs else None)
                    ep.episode_id = f"syn_{i:05d}"
                    sd.write_episode(ep)
        (syn / ".done").write_text("")
    return init, root, syn, info


def train_fold(args: argparse.Namespace, init: Path, syn: Path, real: Path, others: list[str], out: Path) -> dict:
    """Stage 2 from ``init`` on the synthetic episodes + the ``others`` real clips; its record."""
    from vipa.model.checkpoint import checkpoint_config, read_checkpoint_info
    from vipa.train.cli import run_stage

    cfg = checkpoint_config(init, read_checkpoint_info(init))
    tc = cfg.train
    tc.batch_size["stage2"] = args.batch_size
    tc.lr["stage2"] = args.lr
    tc.pointmap_dropout = args.pointmap_dropout
    tc.w_motion = args.w_motion
    tc.warmup_steps = max(1, args.steps // 10)
    tc.ckpt_every = 0
    tc.log_every = max(1, min(10, args.steps))
    t0, w0 = time.process_time(), time.time()
    res = run_stage(cfg, "stage2", syn, out, steps=args.steps, init=init, test_fraction=0.2,
                    frame_step=1, threads=args.threads, progress=False, device="cpu",
                    real_data=real if others else None, real_episodes=others or None, real_weight=args.real_weight,
                    real_frame_step=args.real_frame_step)
    return {"final": str(res.final), "steps": res.steps, "train_cpu_s": round(time.process_time() - t0, 1),
            "train_wall_s": round(time.time() - w0, 1), "last": res.metrics[-1] if res.metrics else {}}


def table(per_clip: dict, pooled: dict, control: dict | None = None) -> str:
    """Markdown table (cm): holding still, then zero-shot / [synthetic-only control /] LOCO for the
    end-to-end and the motion ADE / FDE and the pointer; ``control``: the control run's report."""
    runs = [("zero-shot", "zero_shot", None)] + ([("control", "loco", "control")] if control else []) + \
        [("LOCO", "loco", None)]
    names = " / ".join(n for n, _, _ in runs)
    head = (f"| clip | samples | holding still ADE / FDE | end-to-end ADE / FDE: {names} "
            f"| motion ADE / FDE: {names} | pointer: {names} |\n|" + "---|" * 6)
    lines = [head]
    rows = list(per_clip.items()) + [("**pooled (all samples)**", pooled)]
    ctrl = dict(control["per_clip"]) | {"**pooled (all samples)**": control["pooled"]} if control else {}

    def get(name: str, r: dict, key: str, src: str | None) -> dict | None:
        return (ctrl.get(name) or {}).get(key) if src == "control" else r.get(key)

    for name, r in rows:
        z = r.get("zero_shot") or {}
        if not z.get("n"):
            lines.append(f"| {name} | 0 ({r.get('note', 'no sample')}) |" + " - |" * 4)
            continue
        cells = []
        for a, b in (("ade", "fde"), ("motion_ade", "motion_fde")):
            cells.append(" ; ".join(f"{d[a]:.1f} / {d[b]:.1f}" if d and a in d else "-"
                                    for d in (get(name, r, k, src) for _, k, src in runs)))
        ptr = " / ".join(f"{d['pointer']:.1f}" if d and "pointer" in d else "-"
                         for d in (get(name, r, k, src) for _, k, src in runs))
        lines.append(f"| {name} | {z['n']} | {z['hold_ade']:.1f} / {z['hold_fde']:.1f} | {cells[0]} | {cells[1]} | {ptr} |")
    sc = pooled.get("loco_scaled")
    if sc:
        per = ", ".join(f"{e} {r['loco_scaled']['scale']:.2f}: {r['loco_scaled']['motion_ade']:.1f} / "
                        f"{r['loco_scaled']['motion_fde']:.1f}" for e, r in per_clip.items() if "loco_scaled" in r)
        lines.append(f"\nLOCO motion with the displacement scaled by a factor fitted on each fold's training clips: "
                     f"pooled {sc['motion_ade']:.1f} / {sc['motion_fde']:.1f} cm (per clip, scale: ADE / FDE: {per})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--init", default=str(REPO / "checkpoints" / "tiny_sample"), help="checkpoint to continue (copied once)")
    ap.add_argument("--work", required=True, help="work folder (annotation, synthetic data, folds, report)")
    ap.add_argument("--clips", nargs="*", default=None, help="clip files (default: every samples/real_clips mp4)")
    ap.add_argument("--max-frames", type=int, default=None, help="annotate only the first N frames of each clip")
    ap.add_argument("--folds", nargs="*", default=None, help="only these held-out clips (episode ids)")
    ap.add_argument("--steps", type=int, default=200, help="stage-2 steps per fold")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of the continuation")
    ap.add_argument("--pointmap-dropout", type=float, default=0.3, help="synthetic samples shown RGB only, 0-1")
    ap.add_argument("--real-weight", type=float, default=0.5,
                    help="fraction of drawn samples from the real clips; 0: the synthetic-only control (one "
                         "continuation without real clips, evaluated on every clip like the folds)")
    ap.add_argument("--real-frame-step", type=int, default=1, help="train on every k-th real frame")
    ap.add_argument("--synthetic", type=int, default=60, help="synthetic episodes (seeds 0..N-1; 80%% train)")
    ap.add_argument("--synthetic-size", type=int, default=96)
    ap.add_argument("--synthetic-frames", type=int, default=32)
    ap.add_argument("--synthetic-backgrounds", nargs="+", default=None, metavar="VIDEO_OR_IMAGE",
                    help="paste these real frames over the synthetic table and background (default: off)")
    ap.add_argument("--control-report", default=None,
                    help="report.json of a --real-weight 0 run on the same clips: its figures join the table")
    ap.add_argument("--seen", action="store_true",
                    help="also evaluate each fold's model on the clips it trained on (WORK/folds/<clip>/seen.json)")
    ap.add_argument("--w-motion", type=float, default=0.0,
                    help="stage-2 weight of the L1 in metres on the displacement from pointer A (config w_motion; "
                         "default 0 = off)")
    ap.add_argument("--every", type=int, default=4, help="evaluate every k-th frame of the held-out clip")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    from vipa.data.dataset import Hand3DDataset
    from vipa.infer.predictor import Predictor

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    init, real, syn, info = prepare(args, work)
    ds = Hand3DDataset.open(real)
    ids = sorted(ds.episode_ids())
    if len(ids) < 2:
        raise SystemExit(f"{real}: leave-one-clip-out needs at least 2 annotated clips, got {ids}")
    zero = Predictor.load(init, threads=args.threads)
    control = args.real_weight == 0  # the synthetic-only control: no real clip in training
    per_clip: dict = {}
    pooled: dict[str, list] = {"loco": []}
    for eid in ids:
        zpath = work / "zero_shot" / f"{eid}.json"
        if not zpath.is_file():
            write_json(zpath, clip_samples(zero, ds, eid, args.every))
        z = json.loads(zpath.read_text())
        rec: dict = {"frames": z["frames"], "fps": z["fps"], "stride_frames": z["stride_frames"], "side": z["side"],
                     "zero_shot": summary(z["samples"])}
        if not z["samples"]:
            rec["note"] = f"{z['frames']} frames: shorter than one horizon ({z['stride_frames']} x {zero.mcfg.traj_horizon} frames) or no annotated wrist"
            per_clip[eid] = rec
            print(eid, "no sample:", rec["note"], flush=True)
            continue
        if args.folds and eid not in args.folds:
            per_clip[eid] = rec
            continue
        fdir = work / "folds" / eid
        epath = fdir / "eval.json"
        if not epath.is_file():
            if control:  # one synthetic-only continuation, shared by every clip
                run, others = work / "synthetic_only" / "run", []
                if not (work / "synthetic_only" / "train.json").is_file():
                    shutil.rmtree(run, ignore_errors=True)
                    write_json(work / "synthetic_only" / "train.json", train_fold(args, init, syn, real, [], run))
                tr = json.loads((work / "synthetic_only" / "train.json").read_text())
            else:
                run = fdir / "run"
                shutil.rmtree(run, ignore_errors=True)  # a fold cut short restarts
                others = [i for i in ids if i != eid]
                tr = train_fold(args, init, syn, real, others, run)
            c0, w0 = time.process_time(), time.time()
            f = clip_samples(Predictor.load(tr["final"], threads=args.threads), ds, eid, args.every)
            f.update(train=tr, eval_cpu_s=round(time.process_time() - c0, 1), eval_wall_s=round(time.time() - w0, 1),
                     trained_on=others)
            write_json(epath, f)
            if not control:
                shutil.rmtree(run / "checkpoints", ignore_errors=True)  # keep final/ only
        f = json.loads(epath.read_text())
        rec.update(loco=summary(f["samples"]), train=f["train"])
        spath = fdir / "seen.json"
        if args.seen and f["trained_on"] and not spath.is_file():
            p = Predictor.load(f["train"]["final"], threads=args.threads)
            write_json(spath, {"clips": f["trained_on"],
                               "samples": [r for e in f["trained_on"] for r in clip_samples(p, ds, e, args.every)["samples"]]})
        if spath.is_file():
            seen = json.loads(spath.read_text())["samples"]
            rec["seen"] = summary(seen)
            pooled.setdefault("seen", []).extend(seen)
            if seen and "disp" in seen[0] and "disp" in f["samples"][0]:
                # The displacement scale fitted on the fold's own training clips, applied to the held-out one.
                k = fit_scale(seen)
                rec["loco_scaled"] = scaled_motion(f["samples"], k)
                pooled.setdefault("scaled", []).extend([{**r, "scale": k} for r in f["samples"]])
        pooled["loco"] += f["samples"]
        per_clip[eid] = rec
        print(eid, json.dumps({"zero_shot": rec["zero_shot"], "loco": rec["loco"]}), flush=True)
    folded = [e for e, r in per_clip.items() if "loco" in r]
    pooled_z = [s for e in folded for s in json.loads((work / "zero_shot" / f"{e}.json").read_text())["samples"]]
    pool = {"zero_shot": summary(pooled_z), "loco": summary(pooled["loco"])}
    if pooled.get("seen"):
        pool["seen"] = summary(pooled["seen"])  # each fold's model on the clips it trained on
    if pooled.get("scaled"):
        rows = pooled["scaled"]  # each held-out sample with its fold's fitted scale
        pool["loco_scaled"] = scaled_motion(rows, np.array([r["scale"] for r in rows])) | \
            {"scales": {e: r["loco_scaled"]["scale"] for e, r in per_clip.items() if "loco_scaled" in r}}
    report = {"init": info["init"], "annotation": info["annotation"], "inputs": "RGB only",
              "settings": {k: v for k, v in vars(args).items() if k not in ("work",)},
              "horizon_waypoints": zero.mcfg.traj_horizon, "stride_s": zero.motion_stride_s,
              "per_clip": per_clip, "pooled": pool, "pooled_over": folded}
    write_json(work / "report.json", report)
    control = json.loads(Path(args.control_report).read_text()) if args.control_report else None
    (work / "table.md").write_text(table(per_clip, pool, control))
    print(table(per_clip, pool, control))
    return 0


if __name__ == "__main__":
    sys.exit(main())
