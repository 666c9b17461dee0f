"""Why do the decoded motion tokens miss? Measures, on the held-out "gen" samples of a checkpoint
(the 200 that ``vipa eval`` scores, same subsample):

* ``gt_roundtrip_mm``: the target tokens decoded back against the trajectory the evaluation scores
  (same stride, horizon, frame: only the 0.49 mm binning should remain);
* teacher-forced (true tokens before each step): per motion token, the bin error of the argmax and of
  the expected bin index under the model's distribution over that axis's 1024 bins (mm), exact-bin
  accuracy, the probability mass within +-10 bins of the truth, and the ADE / FDE (cm) of the
  trajectory read off those bins; beside it the numeric trajectory head and holding the wrist still;
* free-running constrained decoding, every ``MOTION_DECODING`` (ADE / FDE and per waypoint, cm; the
  distance from the numeric head per waypoint; the error per axis; waypoints decoded);
* how many of the held-out target bins the training targets ever contain (per axis), and the error of
  an unconditional answer (every waypoint at the training targets' mean position).

    python scripts/diagnose_motion_tokens.py checkpoints/tiny_sample --data runs/tiny_sample/data --out runs/diag.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from vipa.conventions import MOTION_BINS
from vipa.evaluate import _batches, _obs, _subsample
from vipa.infer.constrained import MOTION_DECODING, decode_motion
from vipa.model.checkpoint import load_checkpoint
from vipa.model.tokenizer import quantize
from vipa.train.data import load_split
from vipa.train.datasets import Hand3DTorchDataset


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--max-motion", type=int, default=200)
    ap.add_argument("--inputs", default="points", choices=("points", "rgb"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-free", action="store_true", help="skip free-running decoding")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0, c0 = time.time(), time.process_time()
    model, cfg, tok, info = load_checkpoint(a.checkpoint)
    caches, _ = load_split(a.data, cfg, "test", info.get("test_fraction", 0.2), 0)
    ds = Hand3DTorchDataset(caches, tok, cfg.model, "stage2")
    idx = [i for i in range(len(ds)) if ds.samples[i].kind == "gen"]
    idx = [idx[i] for i in _subsample(len(idx), a.max_motion)]
    n = cfg.model.traj_horizon
    gt = np.stack([ds.samples[i].traj for i in idx])  # (S, n, 3) metres
    cur = np.stack([ds.samples[i].point_a for i in idx])
    width = np.array([1.0, 1.0, 1.0]) / MOTION_BINS * 1000  # mm per bin (x, y: 1 m range; z: 1 m)
    rep: dict = {"checkpoint": a.checkpoint, "inputs": a.inputs, "n": len(idx), "horizon": n}
    # 1. the target tokens against the scored trajectory
    rt = []
    for i in idx:
        ids = tok.encode(ds.samples[i].target)
        rt.append(np.abs(tok.ids_to_waypoints(ids) - ds.samples[i].traj).max() * 1000)
    rep["gt_roundtrip_mm"] = {"max": float(np.max(rt)), "mean": float(np.mean(rt))}
    # 2. teacher-forced
    arg_b, exp_b, true_b, near, head = [], [], [], [], []
    for b in _batches(ds, idx, 32, tok.pad_id):
        image, pid, pm, xyz, valid = _obs(b, a.inputs)
        out = model(image, pid, pm, xyz, valid, target_in=b.target[:, :-1], target_mask=b.target_mask[:, :-1])
        head.append(out.traj.numpy())
        lab = b.target[:, 1:1 + 3 * n]  # after <bos>: 3n motion tokens
        lg = out.logits[:, :3 * n].float()
        for k in range(3 * n):
            ax = k % 3
            s = tok.motion_start[ax]
            p = torch.softmax(lg[:, k, s:s + MOTION_BINS], -1)
            t = lab[:, k] - s
            arg_b.append(p.argmax(-1).numpy())
            exp_b.append((p @ torch.arange(MOTION_BINS, dtype=torch.float32)).numpy())
            true_b.append(t.numpy())
            lo, hi = (t - 10).clamp_min(0), (t + 10).clamp_max(MOTION_BINS - 1)
            cs = torch.cat([torch.zeros(len(t), 1), p.cumsum(-1)], 1)
            near.append((cs.gather(1, hi[:, None] + 1) - cs.gather(1, lo[:, None]))[:, 0].numpy())
    nb = len(idx)
    # arrays (batches * 3n, bsz) -> (S, n, 3)
    def arrange(lst):
        out, k = [], 0
        for start in range(0, nb, 32):
            bs = min(32, nb - start)
            blk = np.stack(lst[k:k + 3 * n], 1)  # (bs, 3n)
            out.append(blk.reshape(bs, n, 3))
            k += 3 * n
        return np.concatenate(out)
    A, E, T, NEAR = arrange(arg_b), arrange(exp_b), arrange(true_b), arrange(near)
    head_a = np.concatenate(head)

    def ade_fde(pred):
        d = np.linalg.norm(pred - gt, axis=-1) * 100
        return {"ade_cm": float(d.mean()), "fde_cm": float(d[:, -1].mean()),
                "per_waypoint_cm": [round(float(x), 2) for x in d.mean(0)]}

    lo = np.array([-0.5, -0.5, 0.0])
    to_m = lambda bins: lo + (bins + 0.5) / MOTION_BINS  # noqa: E731  (all axes span 1 m)
    rep["teacher_forced"] = {
        "exact_bin_accuracy": float((A == T).mean()),
        "argmax_bin_error_mm_per_axis": (np.abs(A - T).mean((0, 1)) * width).tolist(),
        "expectation_bin_error_mm_per_axis": (np.abs(E - T).mean((0, 1)) * width).tolist(),
        "mass_within_10_bins": float(NEAR.mean()),
        "argmax": ade_fde(to_m(A)), "expectation": ade_fde(to_m(np.round(E))),
    }
    rep["model_head"] = ade_fde(head_a)
    rep["constant_true_current"] = ade_fde(np.repeat(cur[:, None], n, 1))
    # bins of the trajectory head's own prediction vs truth (what the LLM could copy through the geometry token)
    rep["head_bin_error_mm_per_axis"] = (np.abs(quantize(head_a) - T).mean((0, 1)) * width).tolist()
    # 3. free-running decoding
    if not a.no_free:
        for dec in MOTION_DECODING:
            trajs = []
            for b in _batches(ds, idx, 32, tok.pad_id):
                tr, _ = decode_motion(model, _obs(b, a.inputs), tok, dec)
                trajs += tr
            lens = [len(t) for t in trajs]
            dist = np.linalg.norm(np.stack(trajs) - head_a, axis=-1) * 100  # how far the tokens sit from the head
            rep[f"free_{dec}"] = {**ade_fde(np.stack(trajs)), "waypoints_min": int(min(lens)),
                                  "from_head_per_waypoint_cm": [round(float(x), 2) for x in dist.mean(0)],
                                  "abs_error_cm_per_axis": (np.abs(np.stack(trajs) - gt).mean((0, 1)) * 100).tolist()}
    # 4. coverage of the held-out target bins by the training targets
    tr_caches, _ = load_split(a.data, cfg, "train", info.get("test_fraction", 0.2), 0)
    trs = Hand3DTorchDataset(tr_caches, tok, cfg.model, "stage2")
    train_bins = quantize(np.concatenate([s.traj for s in trs.samples if s.kind == "gen"]))
    rep["train_gen_samples"] = sum(s.kind == "gen" for s in trs.samples)
    # an unconditional answer: every waypoint at the training targets' mean position (camera frame)
    mean_pos = np.concatenate([s.traj for s in trs.samples if s.kind == "gen"]).mean(0)
    rep["constant_train_mean_position"] = ade_fde(np.broadcast_to(mean_pos, gt.shape))
    rep["constant_train_mean_bin_error_mm_per_axis"] = (np.abs(quantize(mean_pos)[None, None] - T).mean((0, 1)) * width).tolist()
    rep["heldout_bins_seen_in_training_per_axis"] = [
        float(np.isin(T[..., ax], np.unique(train_bins[:, ax])).mean()) for ax in range(3)]
    rep["distinct_train_bins_per_axis"] = [int(len(np.unique(train_bins[:, ax]))) for ax in range(3)]
    rep["seconds"], rep["cpu_s"] = round(time.time() - t0, 1), round(time.process_time() - c0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rep, indent=2))
    print(json.dumps(rep, indent=2))


if __name__ == "__main__":
    main()
