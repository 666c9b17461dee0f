"""The simulator experiment in parallel processes: expert demos straight to arrays, seeded
evaluation of several post-trained checkpoints under a wall-clock deadline, and the report.

    python -m vipa.sim.experiment collect --tasks ... --episodes 50 --size 64 --out DEMOS --workers 8
    python -m vipa.sim.experiment eval --run a=CKPT --run b=CKPT ... --episodes 50 --out EVAL --workers 15
    python -m vipa.sim.experiment report EVAL  (markdown table on stdout)

``collect`` writes DEMOS/{task}.npz in the layout of vipa.train.robot.read_arrays (the same
fields as the LeRobot features of vipa.sim.collect; used where no video codec is installed).
``eval`` runs jobs (run, task, episode i) ordered by i, so when the deadline cuts it short every
run and task has been evaluated on the same seeds; the report uses only seeds every run
finished. Seeds are vipa.sim.evaluate's: EVAL_SEED_OFFSET + seed + i.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vipa.ranges import count, nonnegative, positive
from vipa.sim.evaluate import EVAL_SEED_OFFSET, rollout, save_rollout, wilson_interval

_POLICIES: dict[str, Any] = {}
_ENVS: dict[str, Any] = {}


def _collect_job(job: tuple[str, list[int], int, int, str, float]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from vipa.sim.collect import depth_to_mm, expert_episode
    from vipa.sim.metaworld_env import MetaWorldEnv

    task, seeds, size, max_steps, camera, noise = job
    cols: dict[str, list] = {k: [] for k in ("rgb", "depth_mm", "K", "camera_pose", "state", "action", "episode")}
    kept, instruction = [], ""
    with MetaWorldEnv(task, camera=camera, width=size, height=size, max_steps=max_steps) as env:
        for s in seeds:
            ep: dict[str, list] = {k: [] for k in cols}
            success = False
            for obs, a, success in expert_episode(env, s, noise):
                ep["rgb"].append(obs.rgb)
                ep["depth_mm"].append(depth_to_mm(obs.depth))
                ep["K"].append(obs.K)
                ep["camera_pose"].append(obs.camera_pose)
                ep["state"].append(obs.state)
                ep["action"].append(a)
                ep["episode"].append(s)
            instruction = obs.instruction
            if success:  # only successful demonstrations, as `vipa sim collect` keeps by default
                kept.append(s)
                for k in cols:
                    cols[k] += ep[k]
    return {"task": task, "arrays": {k: np.stack(v) if v else None for k, v in cols.items()}, "kept": kept,
            "attempted": len(seeds), "instruction": instruction}


def collect(tasks: list[str], episodes: int, out: str | Path, seed: int = 0, size: int = 64, max_steps: int = 200,
            workers: int = 4, camera: str = "workspace", noise: float = 0.0) -> list[dict[str, Any]]:
    """Expert demos for each task on seeds seed..seed+episodes-1, in parallel; DEMOS/{task}.npz.
    ``noise`` > 0: the expert's action is recorded, a perturbed one executed (vipa.sim.collect.perturb)."""
    from vipa.sim.collect import check_noise

    check_noise(noise)  # before any work
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per = max(1, math.ceil(episodes * len(tasks) / max(1, workers)))
    jobs = [(t, list(range(seed + i, seed + min(i + per, episodes))), size, max_steps, camera, noise)
            for t in tasks for i in range(0, episodes, per)]
    with mp.get_context("fork").Pool(workers) as pool:
        results = pool.map(_collect_job, jobs, chunksize=1)
    stats = []
    for t in tasks:
        parts = [r for r in results if r["task"] == t and r["kept"]]
        arrays = {k: np.concatenate([p["arrays"][k] for p in parts]) for k in parts[0]["arrays"]} if parts else None
        n_att = sum(r["attempted"] for r in results if r["task"] == t)
        kept = sum(len(r["kept"]) for r in results if r["task"] == t)
        if arrays is not None:
            np.savez_compressed(out / f"{t}.npz", **arrays, task_index=np.zeros(len(arrays["action"]), np.int64),
                                instructions=np.array([parts[0]["instruction"]]))
        stats.append({"task": t, "attempted": n_att, "kept": kept, "noise": noise,
                      "frames": 0 if arrays is None else int(len(arrays["action"]))})
    (out / "collect.json").write_text(json.dumps(stats, indent=2))
    return stats


def _eval_job(job: tuple[str, str, str, int, int, int, int, int, str | None, int]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from vipa.sim.metaworld_env import MetaWorldEnv
    from vipa.infer.policy import PredictorPolicy

    name, ckpt, task, i, seed, size, max_steps, replan, out, save_first, camera = job
    if name not in _POLICIES:
        _POLICIES[name] = PredictorPolicy.load(ckpt, replan=replan)
    if task not in _ENVS:
        _ENVS[task] = MetaWorldEnv(task, camera=camera, width=size, height=size, max_steps=max_steps)
    s = EVAL_SEED_OFFSET + seed + i
    t0 = time.perf_counter()
    record = out is not None and i < save_first
    ok, steps, rec = rollout(_ENVS[task], _POLICIES[name], s, replan, record=record)
    if record:
        try:
            save_rollout(Path(out) / name, task, s, ok, rec, video=False)
        except Exception as exc:  # a recording must never cost the evaluation
            print(f"rollout recording failed: {exc}", file=sys.stderr)
    return {"run": name, "task": task, "i": i, "seed": s, "success": bool(ok), "steps": int(steps),
            "seconds": round(time.perf_counter() - t0, 3)}


def evaluate_runs(runs: dict[str, str], tasks: list[str], episodes: int, out: str | Path, seed: int = 0,
                  size: int = 64, max_steps: int = 200, replan: int = 8, workers: int = 4,
                  deadline_s: float | None = None, save_first: int = 2, camera: str = "workspace"
                  ) -> list[dict[str, Any]]:
    """Evaluate each run on the same seeded episodes; stops taking results at ``deadline_s``.
    Appends one JSON line per episode to OUT/episodes.jsonl; returns them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(n, c, t, i, seed, size, max_steps, replan, str(out), save_first, camera)
            for i in range(episodes) for t in tasks for n, c in runs.items()]
    t_end = None if deadline_s is None else time.time() + deadline_s
    results: list[dict[str, Any]] = []
    pool = mp.get_context("fork").Pool(workers)
    try:
        it = pool.imap_unordered(_eval_job, jobs, chunksize=1)
        with open(out / "episodes.jsonl", "a") as f:
            while len(results) < len(jobs):
                timeout = None if t_end is None else max(0.0, t_end - time.time())
                try:
                    r = it.next(timeout=timeout)
                except mp.TimeoutError:
                    print(f"eval: deadline reached after {len(results)}/{len(jobs)} episodes", file=sys.stderr)
                    break
                results.append(r)
                f.write(json.dumps(r) + "\n")
                f.flush()
    finally:
        pool.terminate()
        pool.join()
    return results


def newcombe_diff(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float, float]:
    """Difference of two proportions p1 - p2 with Newcombe's 95% interval (from Wilson intervals)."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1)
    l2, u2 = wilson_interval(s2, n2)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, lo, hi


def report(eval_dir: str | Path) -> dict[str, Any]:
    """Per run and task: success over the seeds every run finished, Wilson 95% interval; the mean
    over tasks; and the pooled differences between runs with Newcombe intervals."""
    eval_dir = Path(eval_dir)
    rows = [json.loads(line) for line in (eval_dir / "episodes.jsonl").read_text().splitlines() if line.strip()]
    runs = sorted({r["run"] for r in rows})
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    table: dict[str, Any] = {"runs": {}, "tasks": tasks}
    common: dict[str, set[int]] = {}
    for t in tasks:
        sets = [{r["seed"] for r in rows if r["run"] == n and r["task"] == t} for n in runs]
        common[t] = set.intersection(*sets) if sets else set()
    for n in runs:
        per = {}
        tot_s = tot_n = 0
        for t in tasks:
            sel = [r for r in rows if r["run"] == n and r["task"] == t and r["seed"] in common[t]]
            s, k = sum(r["success"] for r in sel), len(sel)
            tot_s, tot_n = tot_s + s, tot_n + k
            per[t] = {"successes": s, "episodes": k, "rate": s / k if k else float("nan"),
                      "ci95": wilson_interval(s, k), "mean_steps": float(np.mean([r["steps"] for r in sel])) if sel else None}
        table["runs"][n] = {"tasks": per, "mean_rate": float(np.mean([v["rate"] for v in per.values()])),
                            "pooled": {"successes": tot_s, "episodes": tot_n, "ci95": wilson_interval(tot_s, tot_n)}}
    diffs = {}
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            pa, pb = table["runs"][a]["pooled"], table["runs"][b]["pooled"]
            if pa["episodes"] and pb["episodes"]:
                diffs[f"{a}-{b}"] = newcombe_diff(pa["successes"], pa["episodes"], pb["successes"], pb["episodes"])
    table["differences_pooled"] = diffs
    if any(SEED_SEP in n for n in runs):
        table.update(conditions_report(rows, tasks, common))
    return table


SEED_SEP = "@s"  # a run named "b@s1" is condition "b" trained with seed 1; a plain "b" is seed 0


def condition_of(run: str) -> tuple[str, int]:
    """Run name -> (condition, training seed): "b@s2" -> ("b", 2); "b" -> ("b", 0)."""
    if SEED_SEP in run:
        cond, seed = run.rsplit(SEED_SEP, 1)
        if not seed.isdigit():
            raise ValueError(f"run {run!r}: expected CONDITION{SEED_SEP}SEED with an integer seed")
        return cond, int(seed)
    return run, 0


def conditions_report(rows: list[dict[str, Any]], tasks: list[str], common: dict[str, set[int]],
                      draws: int = 2000, rng_seed: int = 0) -> dict[str, Any]:
    """Runs grouped by condition over their training seeds (``condition_of``), on the evaluation
    seeds every run finished: per condition the per-seed mean success over tasks, their mean and
    spread, the episodes pooled over seeds; per pair of conditions the pooled difference with
    Newcombe's 95 % interval (episodes as independent: ignores the spread between training seeds)
    and a hierarchical bootstrap 95 % interval (training seeds resampled, then episodes within each
    seed and task), which counts both."""
    by: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for r in rows:
        if r["seed"] not in common.get(r["task"], ()):
            continue
        cond, tseed = condition_of(r["run"])
        by.setdefault(cond, {}).setdefault(tseed, {}).setdefault(r["task"], []).append(float(r["success"]))
    conds: dict[str, Any] = {}
    for c, seeds in sorted(by.items()):
        per_seed = {s: float(np.mean([np.mean(v[t]) for t in tasks if t in v])) for s, v in sorted(seeds.items())}
        succ = int(sum(sum(v[t]) for v in seeds.values() for t in v))
        n = int(sum(len(v[t]) for v in seeds.values() for t in v))
        per_task = {t: float(np.mean([x for v in seeds.values() for x in v.get(t, [])])) for t in tasks}
        conds[c] = {"seeds": sorted(seeds), "per_seed_mean_rate": {str(k): v for k, v in per_seed.items()},
                    "mean_rate": float(np.mean(list(per_seed.values()))),
                    "seed_std": float(np.std(list(per_seed.values()), ddof=1)) if len(per_seed) > 1 else None,
                    "per_task_rate": per_task,
                    "pooled": {"successes": succ, "episodes": n, "ci95": wilson_interval(succ, n)}}
    rng = np.random.default_rng(rng_seed)

    def boot(cond: str) -> np.ndarray:
        seeds = list(by[cond].values())
        out = np.empty(draws)
        for i in range(draws):
            picks = rng.integers(0, len(seeds), len(seeds))
            rates = []
            for j in picks:
                for t in tasks:
                    ep = np.asarray(seeds[j].get(t, []))
                    if len(ep):
                        rates.append(ep[rng.integers(0, len(ep), len(ep))].mean())
            out[i] = np.mean(rates)
        return out

    boots = {c: boot(c) for c in conds}
    diffs = {}
    names = list(conds)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pa, pb = conds[a]["pooled"], conds[b]["pooled"]
            d, lo, hi = newcombe_diff(pa["successes"], pa["episodes"], pb["successes"], pb["episodes"])
            bd = boots[a] - boots[b]
            diffs[f"{a}-{b}"] = {"difference": d, "newcombe95": [lo, hi],
                                 "bootstrap95": [float(np.percentile(bd, 2.5)), float(np.percentile(bd, 97.5))]}
    return {"conditions": conds, "differences_conditions": diffs}


def markdown(table: dict[str, Any]) -> str:
    tasks = table["tasks"]
    lines = ["| run | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
    for n, r in table["runs"].items():
        cells = [f"{v['successes']}/{v['episodes']} = {v['rate']:.0%} ({v['ci95'][0]:.0%}-{v['ci95'][1]:.0%})"
                 for v in r["tasks"].values()]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {r['mean_rate']:.1%} |")
    lines.append("")
    for k, (d, lo, hi) in table["differences_pooled"].items():
        lines.append(f"- {k}: {d:+.1%} (95% CI {lo:+.1%} to {hi:+.1%}), pooled over tasks")
    if "conditions" in table:
        lines += ["", "| condition | training seeds | mean success per seed | mean | " + " | ".join(tasks) + " |",
                  "|---" * (len(tasks) + 4) + "|"]
        for c, v in table["conditions"].items():
            per = ", ".join(f"{x:.1%}" for x in v["per_seed_mean_rate"].values())
            sd = f" ± {v['seed_std']:.1%}" if v["seed_std"] is not None else ""
            lines.append(f"| {c} | {len(v['seeds'])} | {per} | {v['mean_rate']:.1%}{sd} | "
                         + " | ".join(f"{v['per_task_rate'][t]:.0%}" for t in tasks) + " |")
        lines += ["", "| conditions | difference | Newcombe 95 % (episodes) | bootstrap 95 % (seeds + episodes) |",
                  "|---|---|---|---|"]
        for k, v in table["differences_conditions"].items():
            (nl, nh), (bl, bh) = v["newcombe95"], v["bootstrap95"]
            lines.append(f"| {k} | {v['difference']:+.1%} | {nl:+.1%} to {nh:+.1%} | {bl:+.1%} to {bh:+.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vipa.sim.experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    e = sub.add_parser("eval")
    e.add_argument("--run", action="append", required=True, help="NAME=CHECKPOINT (repeat)")
    e.add_argument("--replan", type=count(), default=8)
    e.add_argument("--deadline-s", type=positive())
    e.add_argument("--save-first", type=count(0), default=2, help="rollouts recorded (npz + rrd) per run and task")
    for q in (c, e):  # collect and eval must agree on tasks, image size and camera
        q.add_argument("--tasks", nargs="+", required=True)
        q.add_argument("--episodes", type=count(), default=50)
        q.add_argument("--seed", type=count(0), default=0)
        q.add_argument("--size", type=count(8), default=64)
        q.add_argument("--max-steps", type=count(), default=200)
        q.add_argument("--workers", type=count(), default=4)
        q.add_argument("--out", required=True)
        q.add_argument("--camera", default="workspace", help="workspace (default) or a Meta-World camera name; "
                       "evaluate with the camera the demonstrations were collected with")
    c.add_argument("--noise", type=nonnegative(), default=0.0, help="execution noise (sd, action units) on the xyz "
                   "deltas: the expert's action is recorded, a perturbed one executed (DART)")
    r = sub.add_parser("report")
    r.add_argument("eval_dir")
    a = p.parse_args(argv)
    if a.cmd == "collect":
        for s in collect(a.tasks, a.episodes, a.out, a.seed, a.size, a.max_steps, a.workers, a.camera, a.noise):
            print(json.dumps(s))
    elif a.cmd == "eval":
        runs = dict(x.split("=", 1) for x in a.run)
        res = evaluate_runs(runs, a.tasks, a.episodes, a.out, a.seed, a.size, a.max_steps, a.replan, a.workers,
                            a.deadline_s, a.save_first, a.camera)
        print(f"eval: {len(res)} episodes", file=sys.stderr)
        t = report(a.out)
        (Path(a.out) / "report.json").write_text(json.dumps(t, indent=2))
        print(markdown(t))
    else:
        t = report(a.eval_dir)
        print(markdown(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
