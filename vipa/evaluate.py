"""`vipa eval CHECKPOINT --data DATASET [--ablations]`: Hand3D-test metrics on held-out episodes.

* QA (stage-1 questions on held-out episodes): the paper's distance error (m) and direction
  score (0-3) via ``vipa.data.qa.score_predictions``, for the model's answers (numeric head, and
  the LLM's own decoded text), next to a constant predictor (the mean ground-truth vector).
* Wrist trajectory (stage-2 instructional motion generation): ADE / FDE in cm of the numeric
  trajectory head and of the constrained motion-token decoding (always the full horizon; the
  checkpoint's ``motion_decoding`` as "model_tokens", greedy and expectation by name), next to constant-position
  baselines (the true current wrist held still; the model's own wrist estimate held still).
Writes ``report.json`` and ``report.html`` (plotly) in ``--out``.

``--ablations`` trains and evaluates the paper's ablation table at this scale instead (full;
without the 3D encoder; without stage 1; without both), same data, budget and seeds; with
``--recipe sample`` each row is trained as checkpoints/tiny_sample is (``SAMPLE_RECIPE``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vipa.data.qa import encode_direction_distance, score_predictions
from vipa.train.datasets import Hand3DTorchDataset
from vipa.infer.constrained import MOTION_DECODING, decode_motion
from vipa.model.config import GEOMETRY_FEATURES
from vipa.model.checkpoint import load_checkpoint
from vipa.model.processor import collate
from vipa.ranges import count, positive


def _batches(ds: Hand3DTorchDataset, idx: list[int], bs: int, pad_id: int):
    for i in range(0, len(idx), bs):
        yield collate([ds[j] for j in idx[i:i + bs]], pad_id)


# What the model is given on the held-out split: "points" = the episode's point map (unprojected from
# its metric depth with K: the same tensors as RGB + depth), "rgb" = RGB only (no 3D input).
INPUTS = ("points", "rgb")


def _obs(b, inputs: str) -> tuple:
    """The batch's observation for an input mode (``INPUTS``)."""
    if inputs not in INPUTS:
        raise ValueError(f"inputs: expected one of {INPUTS}, got {inputs!r}")
    image, ids, mask, xyz, valid = b.observation()
    return (image, ids, mask, None, None) if inputs == "rgb" else (image, ids, mask, xyz, valid)


def _subsample(n: int, k: int, seed: int = 0) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, k, replace=False).tolist())


@torch.no_grad()
def evaluate_qa(model, tok, cfg, caches, max_samples: int = 400, batch_size: int = 32, lm_text: bool = True,
                inputs: str = "points") -> dict[str, Any]:
    ds = Hand3DTorchDataset(caches, tok, cfg.model, "stage1")
    idx = _subsample(len(ds), max_samples)
    gts = [ds.samples[i].target for i in idx]
    kinds = [ds.samples[i].kind for i in idx]
    head, lm = [], []
    gt_vecs = np.stack([ds.samples[i].point_b - ds.samples[i].point_a for i in idx])
    for b in _batches(ds, idx, batch_size, tok.pad_id):
        args = _obs(b, inputs)
        out = model(*args)
        head += [encode_direction_distance(v) for v in (out.point_b - out.point_a).numpy()]
        if lm_text:
            ids, _ = model.generate(*args, bos_id=tok.bos_id, eos_id=tok.eos_id, max_new_tokens=16)
            lm += [tok.decode(r.tolist()) for r in ids]
    const = [encode_direction_distance(gt_vecs.mean(0))] * len(idx)
    rep: dict[str, Any] = {"n": len(idx), "model": score_predictions(head, gts).as_dict(),
                           "constant_baseline": score_predictions(const, gts).as_dict()}
    if lm_text:
        rep["model_lm_text"] = score_predictions(lm, gts).as_dict()
        rep["lm_texts"] = lm
    for k in sorted(set(kinds)):
        sel = [i for i, kk in enumerate(kinds) if kk == k]
        rep[f"model_{k}"] = score_predictions([head[i] for i in sel], [gts[i] for i in sel]).as_dict()
    rep["examples"] = [{"q": ds.samples[idx[i]].prompt, "gt": gts[i], "pred": head[i], "lm": lm[i] if lm else None}
                       for i in range(min(8, len(idx)))]
    return rep


@torch.no_grad()
def evaluate_motion(model, tok, cfg, caches, max_samples: int = 300, batch_size: int = 32,
                    tokens: bool = True, inputs: str = "points") -> dict[str, Any]:
    ds = Hand3DTorchDataset(caches, tok, cfg.model, "stage2")
    idx = [i for i in range(len(ds)) if ds.samples[i].kind == "gen"]
    idx = [idx[i] for i in _subsample(len(idx), max_samples)]
    gt = np.stack([ds.samples[i].traj for i in idx])
    cur = np.stack([ds.samples[i].point_a for i in idx])
    head, wrist = [], []
    tok_traj: dict[str, list[np.ndarray]] = {}
    n = cfg.model.traj_horizon
    for b in _batches(ds, idx, batch_size, tok.pad_id):
        args = _obs(b, inputs)
        out = model(*args)
        head.append(out.traj.numpy())
        wrist.append(out.point_a.numpy())
        if tokens:
            for dec in MOTION_DECODING:
                tok_traj.setdefault(dec, []).extend(decode_motion(model, args, tok, dec)[0])
    head_a, wrist_a = np.concatenate(head), np.concatenate(wrist)

    def ade_fde(pred: np.ndarray) -> dict[str, float]:
        d = np.linalg.norm(pred - gt, axis=-1) * 100
        return {"ade_cm": float(d.mean()), "fde_cm": float(d[:, -1].mean())}

    rep = {"n": len(idx), "horizon": n, "model_head": ade_fde(head_a),
           "constant_true_current": ade_fde(np.repeat(cur[:, None], n, 1)),
           "constant_model_wrist": ade_fde(np.repeat(wrist_a[:, None], n, 1)),
           "wrist_error_cm": float(np.linalg.norm(wrist_a - cur, axis=-1).mean() * 100)}
    if tokens:
        # The checkpoint's own decoding (config motion_decoding) as "model_tokens", every one by name.
        for dec, trajs in tok_traj.items():
            rep[f"model_tokens_{dec}"] = ade_fde(np.stack(trajs))
        rep["model_tokens"] = rep[f"model_tokens_{cfg.model.motion_decoding}"]
    return rep


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, max_qa: int = 400, max_motion: int = 300,
                        tokens: bool = True, threads: int | None = None,
                        inputs: tuple[str, ...] = ("points",)) -> dict[str, Any]:
    """Held-out QA and motion figures; ``qa`` / ``motion`` for the first input mode, every mode's
    under ``by_inputs`` (``INPUTS``: "points" = point map from depth + K, "rgb" = RGB only)."""
    from vipa.train.data import load_split

    if threads:
        torch.set_num_threads(threads)
    model, cfg, tok, info = load_checkpoint(checkpoint)
    t0 = time.time()
    caches, ids = load_split(data, cfg, "test", info.get("test_fraction", 0.2), 0)
    train_ids = set(info.get("train_episodes", []))
    leak = sorted(set(ids) & train_ids)
    if leak:
        raise ValueError(f"held-out episodes were used in training: {leak[:5]}")
    rep: dict[str, Any] = {"checkpoint": str(checkpoint), "config": cfg.name, "use_3d": cfg.model.use_3d,
                           "stage": info.get("stage"), "step": info.get("step"), "test_episodes": len(ids),
                           "alpha": model.fusion.alpha.item()}
    if not inputs or set(inputs) - set(INPUTS):
        raise ValueError(f"inputs: expected some of {INPUTS}, got {list(inputs)}")
    rep["inputs"] = list(inputs)
    rep["by_inputs"] = {}
    for mode in inputs:
        rep["by_inputs"][mode] = {"qa": evaluate_qa(model, tok, cfg, caches, max_qa, lm_text=tokens, inputs=mode),
                                  "motion": evaluate_motion(model, tok, cfg, caches, max_motion, tokens=tokens,
                                                            inputs=mode)}
    rep["qa"], rep["motion"] = rep["by_inputs"][inputs[0]]["qa"], rep["by_inputs"][inputs[0]]["motion"]
    rep["seconds"] = round(time.time() - t0, 1)
    return rep


def report_figure(rep: dict[str, Any], metrics_logs: list[Path]):
    """Plotly figure: QA metrics vs the constant predictor, ADE/FDE vs constant baselines, and
    the training curves (loss, alpha) of the given metrics logs."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=("QA distance error (m)", "QA direction score (/3)",
                                                        "Wrist trajectory (cm)", "Training loss / alpha"))
    qa = rep["qa"]
    names = [k for k in ("model", "model_lm_text", "constant_baseline") if k in qa]
    fig.add_trace(go.Bar(x=names, y=[qa[k]["mean_distance_error"] for k in names], name="distance error"), 1, 1)
    fig.add_trace(go.Bar(x=names, y=[qa[k]["mean_direction_score"] for k in names], name="direction score"), 1, 2)
    mo = rep["motion"]
    mk = [k for k, v in mo.items() if isinstance(v, dict)]
    fig.add_trace(go.Bar(x=mk, y=[mo[k]["ade_cm"] for k in mk], name="ADE"), 2, 1)
    fig.add_trace(go.Bar(x=mk, y=[mo[k]["fde_cm"] for k in mk], name="FDE"), 2, 1)
    for log in metrics_logs:
        recs = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
        recs = [r for r in recs if "loss" in r]
        fig.add_trace(go.Scatter(x=list(range(len(recs))), y=[r["loss"] for r in recs], name=f"loss {Path(log).parent.name}"), 2, 2)
        fig.add_trace(go.Scatter(x=list(range(len(recs))), y=[r["alpha"] for r in recs], name=f"alpha {Path(log).parent.name}"), 2, 2)
    fig.update_layout(title=f"Hand3D-test: {rep.get('checkpoint', '')}", height=800, barmode="group")
    return fig


def write_report(rep: dict[str, Any], out: str | Path, metrics_logs: list[Path] | None = None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rep, indent=2))
    report_figure(rep, metrics_logs or []).write_html(out / "report.html", include_plotlyjs=True)
    return out / "report.json"


ABLATIONS = {  # name: (use the 3D encoder, run stage 1 before stage 2)
    "full": (True, True), "no_3d": (False, True), "no_stage1": (True, False), "no_3d_no_stage1": (False, False),
}


# scripts/train_sample_checkpoint.sh's recipe (how checkpoints/tiny_sample is made), as run_ablations'
# arguments: stages 1-2 without point-map dropout or the RGB point head, the head fitted alone, then
# step 3 with the fourier geometry token, dropout (the config's), QA replayed 1:1 and the text loss
# per sample, then step 4: the same continued in two runs with three replayed QA per motion sample.
# tests/test_train.py checks the script's defaults against it.
SAMPLE_RECIPE: dict[str, Any] = {
    "steps1": 1200, "steps2": 400, "steps3": 1200, "lr3": 1e-3, "sigma3": 16.0, "features3": "fourier",
    "dropout12": 0.0, "mono12": False, "head_steps": 300, "replay3": 1.0, "lm_per_sample3": True,
    "steps4": [600, 900], "lr4": 5e-4, "replay4": 3.0,
}


def run_ablations(data: str | Path, out: str | Path, seeds: list[int], steps1: int, steps2: int,
                  threads: int | None = None, max_episodes: int | None = None, max_qa: int = 200,
                  max_motion: int = 150, steps3: int = 0, lr3: float = 1e-3,
                  sigma3: float = 16.0, features3: str = "raw",
                  variants: list[str] | None = None, dropout12: float | None = None, mono12: bool = True,
                  head_steps: int = 0, replay3: float | None = None,
                  lm_per_sample3: bool = False, steps4: list[int] | None = None, lr4: float = 5e-4,
                  replay4: float = 3.0) -> dict[str, Any]:
    """The paper's ablation table at this scale: every variant trained with the same data, step
    budget per stage and seeds (``vipa.train.cli.run_stage``, what ``vipa train`` runs), then evaluated
    on the held-out split.
    Variants without stage 1 train stage 2 only (their QA figures show what stage 2 alone gives).
    ``steps3`` > 0 continues stage 2 as the sample checkpoint's recipe does (step 3): that many steps
    at learning rate ``lr3`` with the geometry token (encoded as ``features3``; "raw" is what the
    committed checkpoint was made with), motion-token labels Gaussian over ``sigma3`` bins and
    expectation decoding; the table is then of the continued checkpoints.
    Stages 1-2 train with point-map dropout ``dropout12`` (None: the config's) and, when ``mono12``
    is off, without the RGB point head; ``head_steps`` > 0 then fits the head alone before step 3
    (variants with the 3D encoder). Step 3 mixes in ``replay3`` QA per motion sample (None: the
    config's) and takes the text loss per sample with ``lm_per_sample3``. ``steps4`` (step 4, only
    after step 3): one more stage-2 run per entry, each from the one before, at ``lr4`` with ``replay4``
    and step 3's other settings; the table is then of the last. ``SAMPLE_RECIPE`` holds
    the sample checkpoint's values of all of these.
    ``variants`` (default: all of ``ABLATIONS``) picks the rows, so one table can be trained by several
    processes side by side in the same OUT, each on its own rows, and then gathered by a call with all.
    Writes OUT/ablations.json (with each run's wall seconds per phase); finished runs are reused and an
    interrupted training phase continues from its latest checkpoint, so an interrupted table resumes."""
    from vipa.model.config import get_config
    from vipa.train.cli import run_stage
    from vipa.train.loop import latest_checkpoint

    if steps3 < 0 or lr3 <= 0 or sigma3 < 0:
        raise ValueError(f"ablations: steps3 must be >= 0, lr3 > 0 and sigma3 >= 0 bins "
                         f"(got {steps3}, {lr3}, {sigma3})")
    if (dropout12 is not None and not 0.0 <= dropout12 <= 1.0) or head_steps < 0 or (replay3 is not None and replay3 < 0):
        raise ValueError(f"ablations: dropout12 must be in [0, 1], head_steps >= 0 and replay3 >= 0 "
                         f"(got {dropout12}, {head_steps}, {replay3})")
    steps4 = list(steps4 or [])
    if steps4 and (not steps3 or min(steps4) < 1 or lr4 <= 0 or replay4 < 0):
        raise ValueError(f"ablations: steps4 needs steps3 > 0, every entry >= 1, lr4 > 0 and replay4 >= 0 "
                         f"(got steps3 {steps3}, steps4 {steps4}, lr4 {lr4}, replay4 {replay4})")
    from vipa.train.point_head import fit_point_head
    variants = list(ABLATIONS) if variants is None else list(variants)
    unknown = [v for v in variants if v not in ABLATIONS]
    if unknown or not variants:
        raise ValueError(f"ablations: unknown or no variants {unknown or variants} (known: {', '.join(ABLATIONS)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    timings: dict[str, dict[str, float]] = {}
    for seed in seeds:  # seeds outermost: an interrupted table still has every variant
        for name in variants:
            use_3d, stage1 = ABLATIONS[name]
            rd = out / f"{name}_seed{seed}"
            rd.mkdir(parents=True, exist_ok=True)
            tpath = rd / "timing.json"
            timing = json.loads(tpath.read_text()) if tpath.is_file() else {}

            def phase(key: str, fn: Any, run_dir: Path | None = None) -> None:
                # a phase interrupted after a checkpoint continues from it (run_stage's resume); its time
                # then counts this call only, and the table says so
                resumed = run_dir is not None and latest_checkpoint(run_dir) is not None
                t0 = time.time()
                fn()
                timing[key] = round(time.time() - t0, 1)
                if resumed:
                    timing[f"{key}_resumed"] = True
                tpath.write_text(json.dumps(timing, indent=2))

            no3d = {} if use_3d else {"use_3d": False}
            cfg = get_config("tiny", **no3d, **({} if mono12 else {"mono_points": False}))
            cfg.train.seed = seed
            if dropout12 is not None:
                cfg.train.pointmap_dropout = dropout12
            common = dict(max_episodes=max_episodes, threads=threads, progress=False, resume=True)
            fit_head = bool(head_steps) and use_3d and not mono12
            s2_final = rd / "s2h" if fit_head else rd / "s2" / "final"  # stage 2 (+ the fitted head)
            final = rd / "s2g" / "final" if steps3 else s2_final
            runs4 = [(n4, rd / f"s2t{k}") for k, n4 in enumerate(steps4, 1)]
            if runs4:
                final = runs4[-1][1] / "final"
            try:
                if stage1 and not (rd / "s1" / "final").is_dir():
                    phase("stage1_s", lambda: run_stage(cfg, "stage1", data, rd / "s1", steps=steps1, **common),
                          rd / "s1")
                if not (rd / "s2" / "final").is_dir():
                    phase("stage2_s", lambda: run_stage(cfg, "stage2", data, rd / "s2", steps=steps2,
                                                        init=rd / "s1" / "final" if stage1 else None, **common),
                          rd / "s2")
                if fit_head and not (s2_final / "model.safetensors").is_file():
                    phase("head_s", lambda: fit_point_head(rd / "s2" / "final", data, s2_final, steps=head_steps,
                                                           threads=threads, seed=seed, max_episodes=max_episodes))
                def step_cfg(lr: float, replay: float | None):  # step 3's config, at lr / replay
                    c = get_config("tiny", geometry_token=True, geometry_features=features3,
                                   motion_decoding="expectation", **no3d)
                    c.train.seed = seed
                    c.train.lr["stage2"] = lr
                    c.train.motion_label_sigma = sigma3
                    c.train.lm_per_sample = lm_per_sample3
                    if replay is not None:
                        c.train.stage2_replay = replay
                    return c

                if steps3 and not (rd / "s2g" / "final").is_dir():
                    phase("step3_s", lambda: run_stage(step_cfg(lr3, replay3), "stage2", data, rd / "s2g",
                                                       steps=steps3, init=s2_final, **common), rd / "s2g")
                prev = rd / "s2g" / "final"
                for k, (n4, d4) in enumerate(runs4, 1):
                    if not (d4 / "final").is_dir():
                        phase(f"step4_{k}_s", lambda: run_stage(step_cfg(lr4, replay4), "stage2", data, d4,
                                                                steps=n4, init=prev, **common), d4)
                    prev = d4 / "final"
            except (ValueError, FileNotFoundError) as exc:
                raise RuntimeError(f"ablation {name} seed {seed}: training failed ({exc})") from exc
            rep_path = rd / "eval" / "report.json"
            if rep_path.is_file():
                rep = json.loads(rep_path.read_text())
            else:
                logs = [p for p in (rd / "s1" / "metrics.jsonl", rd / "s2" / "metrics.jsonl",
                                    rd / "s2h" / "metrics_point_head.jsonl", rd / "s2g" / "metrics.jsonl",
                                    *(d4 / "metrics.jsonl" for _, d4 in runs4))
                        if p.is_file()]
                t0 = time.time()
                rep = evaluate_checkpoint(final, data, max_qa, max_motion, tokens=False, threads=threads)
                timing["eval_s"] = round(time.time() - t0, 1)
                tpath.write_text(json.dumps(timing, indent=2))
                write_report(rep, rd / "eval", logs)
            runs.setdefault(name, []).append(rep)
            timings[f"{name}_seed{seed}"] = timing

    def stat(vals: list[float]) -> dict[str, float]:
        a = np.asarray(vals, float)
        return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}

    table = {name: {"qa_distance_error_m": stat([r["qa"]["model"]["mean_distance_error"] for r in rs]),
                    "qa_direction_score": stat([r["qa"]["model"]["mean_direction_score"] for r in rs]),
                    "traj_ade_cm": stat([r["motion"]["model_head"]["ade_cm"] for r in rs]),
                    "traj_fde_cm": stat([r["motion"]["model_head"]["fde_cm"] for r in rs]),
                    "wrist_pointer_error_cm": stat([r["motion"]["wrist_error_cm"] for r in rs]),
                    "constant_ade_cm": stat([r["motion"]["constant_true_current"]["ade_cm"] for r in rs]),
                    "constant_fde_cm": stat([r["motion"]["constant_true_current"]["fde_cm"] for r in rs])}
             for name, rs in runs.items()}
    rep = {"seeds": seeds, "variants": variants, "steps1": steps1, "steps2": steps2, "steps3": steps3,
           **({"lr3": lr3, "sigma3": sigma3, "features3": features3, "replay3": replay3,
              "lm_per_sample3": lm_per_sample3} if steps3 else {}),
           **({"steps4": steps4, "lr4": lr4, "replay4": replay4} if steps4 else {}),
           "dropout12": dropout12, "mono12": mono12, "head_steps": head_steps, "max_episodes": max_episodes,
           "max_qa": max_qa, "max_motion": max_motion, "table": table, "wall_s": timings}
    (out / "ablations.json").write_text(json.dumps(rep, indent=2))
    return rep


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="Hand3D-test metrics of a checkpoint (or the ablation table)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (a run's final/)")
    p.add_argument("--data", required=True, help="Hand3D dataset (the held-out split is evaluated)")
    p.add_argument("--out", default=None, help="report folder (default: CHECKPOINT/../eval)")
    p.add_argument("--max-qa", type=count(), default=400, help="QA samples evaluated at most, count")
    p.add_argument("--max-motion", type=count(), default=300, help="motion samples evaluated at most, count")
    p.add_argument("--no-tokens", action="store_true", help="skip LLM text / motion-token decoding (faster)")
    p.add_argument("--threads", type=count(), default=None, help="torch CPU threads, count (default: torch's choice)")
    p.add_argument("--inputs", nargs="+", choices=INPUTS, default=["points"],
                   help="what the model is given: points (the point map from depth + K), rgb (RGB only); "
                        "several = a report per mode")
    p.add_argument("--ablations", action="store_true", help="train + evaluate the ablation table into --out")
    p.add_argument("--seeds", type=count(0), nargs="+", default=[0, 1, 2], help="ablations: random seeds, one run per seed")
    p.add_argument("--recipe", choices=["plain", "sample"], default="plain",
                   help="ablations: plain = stages 1-2 with the config's defaults (and step 3 only with "
                        "--steps3); sample = scripts/train_sample_checkpoint.sh's recipe (stages 1-2 "
                        "1200 / 400 steps without point-map dropout or the RGB point head, the head fitted "
                        "alone, step 3 of 1200 steps with the fourier geometry token, QA replay 1 and the "
                        "text loss per sample, step 4 of 600 + 900 steps with QA replay 3); --steps1/2/3, "
                        "--steps4, --lr3 and --features3 override either")
    p.add_argument("--steps1", type=count(), default=None, help="ablations: stage-1 optimizer steps per run (default: the recipe's; plain 300, sample 1200)")
    p.add_argument("--steps2", type=count(), default=None, help="ablations: stage-2 optimizer steps per run (default: the recipe's; plain 300, sample 400)")
    p.add_argument("--steps3", type=count(0), default=None,
                   help="ablations: steps of stage 2 continued with the geometry token, as the sample "
                        "checkpoint's recipe (default: the recipe's; plain 0 = none, sample 1200)")
    p.add_argument("--steps4", type=count(), nargs="*", default=None,
                   help="ablations: step 4, one more continuation of so many steps per number (default: the "
                        "recipe's; plain none, sample 600 900; --steps4 with no number: none)")
    p.add_argument("--lr3", type=positive(), default=None,
                   help="ablations: peak learning rate of that continuation, per step, unitless (default: 1e-3)")
    p.add_argument("--features3", choices=GEOMETRY_FEATURES, default=None,
                   help="ablations: the geometry token's encoding in that continuation (plain: raw, as "
                        "checkpoints made before the fourier encoding)")
    p.add_argument("--variants", nargs="+", choices=list(ABLATIONS), default=None,
                   help="ablations: the rows to train (default: all); processes on different rows can "
                        "share one --out, and a last call with all of them gathers the table")
    p.add_argument("--max-episodes", type=count(), default=None, help="ablations: training episodes per run, count (default: all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vipa.model.checkpoint import CheckpointError

    try:
        if args.ablations:
            out = Path(args.out or "runs/ablations")
            kw: dict[str, Any] = dict(SAMPLE_RECIPE) if args.recipe == "sample" else {
                "steps1": 300, "steps2": 300, "steps3": 0, "lr3": 1e-3, "features3": "raw"}
            kw.update({k: v for k in ("steps1", "steps2", "steps3", "steps4", "lr3", "features3")
                       if (v := getattr(args, k)) is not None})
            rep = run_ablations(args.data, out, args.seeds, threads=args.threads, max_episodes=args.max_episodes,
                                max_qa=args.max_qa, max_motion=args.max_motion, variants=args.variants, **kw)
            print(json.dumps(rep["table"], indent=2))
            return 0
        if not args.checkpoint:
            print("vipa eval: give a CHECKPOINT (or --ablations)", file=sys.stderr)
            return 2
        rep = evaluate_checkpoint(args.checkpoint, args.data, args.max_qa, args.max_motion, not args.no_tokens,
                                  args.threads, tuple(args.inputs))
        out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "eval"
        logs = [p for p in [Path(args.checkpoint).resolve().parent / "metrics.jsonl"] if p.is_file()]
        path = write_report(rep, out, logs)
    except (ValueError, FileNotFoundError, CheckpointError) as exc:
        print(f"vipa eval: {exc}", file=sys.stderr)
        return 1
    summary = {mode: {"qa": r["qa"]["model"], "qa_lm_text": r["qa"].get("model_lm_text"),
                      "qa_constant": r["qa"]["constant_baseline"],
                      "motion": {k: v for k, v in r["motion"].items() if isinstance(v, dict)}}
               for mode, r in rep["by_inputs"].items()}
    print(json.dumps(summary, indent=2))
    print(f"report: {path}", file=sys.stderr)
    return 0
