"""The checkpoint on the real clips (samples/real_clips), RGB only: the 3D wrist trajectory over the
next waypoints (``traj_horizon`` x the checkpoint's stride, about one second) against the clip's
annotation (`vipa annotate`: hand detection + lift), next to holding the annotated current wrist
still, and the wrist pointer (the model's current-wrist estimate) against the annotation.

This is the zero-shot figure (a checkpoint trained on synthetic episodes only, each clip unseen);
leave-one-clip-out *training* (#13 item 2) needs stage-2 runs per fold and is not done here.

    python scripts/eval_real_clips.py checkpoints/tiny_sample --work runs/real_clips --out runs/real_clips/report.json

Clips are annotated once into WORK/ds (resumable). Figures per clip and pooled over samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from vipa.data.trajectory import main_hand, wrist_world
from vipa.geometry import transform_points
from vipa.resources import REPO_ROOT
from vipa.tasks import stride_frames

CLIPS = REPO_ROOT / "samples" / "real_clips"


def clip_figures(predictor, ds, eid: str, every: int, tokens: bool) -> dict:
    ep = ds.load_episode(eid)
    side = main_hand(ep)
    n = predictor.mcfg.traj_horizon
    stride = stride_frames(ep.fps, predictor.motion_stride_s)
    w = wrist_world(ep, side)
    rows = []
    for t in range(0, ep.num_frames - stride * n, every):
        idx = t + stride * np.arange(1, n + 1)
        if not (np.isfinite(w[t]).all() and np.isfinite(w[idx]).all()):
            continue
        image = ds.rgb_frame(eid, t)
        pred = predictor.predict(image, None, None, instruction=ep.instruction or "move the hand",
                                 mode="trajectory", motion_tokens=tokens, hand=side)
        world = transform_points(ep.camera_pose[t], pred.trajectory)
        hold = np.repeat(w[t][None], n, 0)
        d = np.linalg.norm(world - w[idx], axis=1) * 100
        dh = np.linalg.norm(hold - w[idx], axis=1) * 100
        wrist_now = transform_points(ep.camera_pose[t], pred.wrist[None])[0]
        row = {"frame": t, "ade": float(d.mean()), "fde": float(d[-1]), "hold_ade": float(dh.mean()),
               "hold_fde": float(dh[-1]), "pointer": float(np.linalg.norm(wrist_now - w[t]) * 100),
               "inputs": pred.inputs}
        if tokens and pred.trajectory_tokens is not None and len(pred.trajectory_tokens) == n:
            dt = np.linalg.norm(transform_points(ep.camera_pose[t], pred.trajectory_tokens) - w[idx], axis=1) * 100
            row["tok_ade"], row["tok_fde"] = float(dt.mean()), float(dt[-1])
        rows.append(row)
    return {"episode": eid, "side": side, "frames": ep.num_frames, "stride_frames": stride, "samples": rows}


def summary(rows: list[dict]) -> dict:
    keys = ("ade", "fde", "hold_ade", "hold_fde", "pointer", "tok_ade", "tok_fde")
    return {"n": len(rows), **{k: round(float(np.mean([r[k] for r in rows if k in r])), 2)
                               for k in keys if any(k in r for r in rows)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--work", required=True, help="folder for the annotated clips (WORK/ds)")
    ap.add_argument("--out", required=True, help="report JSON")
    ap.add_argument("--clips", nargs="*", default=None, help="clip files (default: every samples/real_clips mp4)")
    ap.add_argument("--every", type=int, default=5, help="evaluate every k-th frame")
    ap.add_argument("--tokens", action="store_true", help="also decode the motion tokens")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from annotators.batch import annotate_to_dataset
    from vipa.data.dataset import Hand3DDataset
    from vipa.infer.predictor import Predictor

    torch.set_num_threads(args.threads)
    clips = [Path(c) for c in args.clips] if args.clips else sorted(CLIPS.glob("*/*.mp4"))
    root = Path(args.work) / "ds"
    t0 = time.time()
    report = annotate_to_dataset(clips, root, None, workers=1)
    failed = {o.source: o.error for o in report.failed}
    t_ann = time.time() - t0
    ds = Hand3DDataset.open(root)
    predictor = Predictor.load(args.checkpoint)
    per_clip, pooled = {}, []
    for eid in ds.episode_ids():
        fig = clip_figures(predictor, ds, eid, args.every, args.tokens)
        per_clip[eid] = summary(fig["samples"]) | {"side": fig["side"], "stride_frames": fig["stride_frames"]}
        pooled += fig["samples"]
        print(eid, json.dumps(per_clip[eid]), flush=True)
    out = {"checkpoint": str(args.checkpoint), "inputs": "RGB only", "zero_shot": True,
           "horizon_waypoints": predictor.mcfg.traj_horizon, "stride_s": predictor.motion_stride_s,
           "annotation_s": round(t_ann, 1), "annotation_failed": failed, "per_clip": per_clip,
           "pooled": summary(pooled)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out["pooled"]))


if __name__ == "__main__":
    main()
