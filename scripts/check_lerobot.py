"""The real-client check of our LeRobot v3 exports: LeRobot itself loads them and trains on them.

    python scripts/check_lerobot.py [--work DIR] [--keep] [--steps 2]

Run with the project's Python (it uses vipa). It
1. builds the LeRobot venv once (scripts/setup_lerobot.sh: .venv-lerobot, or $VIPA_LEROBOT_VENV),
2. writes a small synthetic Hand3D dataset and exports it (`vipa export --format lerobot`), and records
   a small `vipa sim collect` demo set (Meta-World; skipped with a note when metaworld is missing),
3. loads each with lerobot's `LeRobotDataset` (scripts/lerobot/check_in_lerobot.py): the instruction
   is every frame's `task`, numeric features and decoded video frames equal what our reader gives,
   stats.json has every feature in its shape (videos (3, 1, 1)),
4. runs `lerobot-train` (diffusion policy, CPU, --steps) on each, and
5. runs `lerobot-doctor check` (PyPI lerobot-doctor 0.2.0) on each and reports its verdict.
Prints one JSON line (timings in seconds) and exits 0 when steps 3-4 pass for every dataset.
Exit 3 means the LeRobot venv could not be built (the reason is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _venv() -> Path:
    return Path(os.environ.get("VIPA_LEROBOT_VENV", ROOT / ".venv-lerobot")).resolve()


def _run(cmd: list[str], timeout: float, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd or ROOT)


def _reference(dataset: Path, out: Path) -> None:
    """What our reader sees: per episode task and bounds; first and last frame of each episode."""
    from vipa.data.lerobot import LeRobotDataset

    ds = LeRobotDataset(dataset)
    arrays: dict[str, np.ndarray] = {}
    tasks, starts, lengths = [], [], []
    numeric = [k for k, ft in ds.features.items()
               if ft["dtype"] != "video" and k not in ("timestamp",) and int(np.prod(ft["shape"])) <= 4096]
    for i in range(len(ds)):
        ep = ds.episode(i)
        start = int(ds.episodes[i]["dataset_from_index"])
        n = len(ep["frame_index"])
        tasks.append(ep["task"])
        starts.append(start)
        lengths.append(n)
        for off in (0, n - 1):
            for k in numeric:
                arrays[f"{k}@{start + off}"] = np.asarray(ep[k][off])
            for k in ds.video_keys:
                arrays[f"{k}@{start + off}"] = ep[k][off]
    np.savez(out, tasks=np.array(json.dumps(tasks)), episode_starts=np.array(starts),
             episode_lengths=np.array(lengths), numeric_keys=np.array(numeric), **arrays)


def _train(py_bin: Path, dataset: Path, out: Path, steps: int, timeout: float) -> dict:
    cmd = [py_bin / "lerobot-train", f"--dataset.repo_id=local/{dataset.name}", f"--dataset.root={dataset}",
           "--dataset.video_backend=torchcodec", "--policy.type=diffusion", "--policy.device=cpu",
           "--policy.push_to_hub=false", "--wandb.enable=false", f"--steps={steps}", "--batch_size=2",
           "--num_workers=0", "--log_freq=1", "--save_checkpoint=false", f"--output_dir={out}",
           "--eval_freq=0"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="2")
    t0 = time.perf_counter()
    proc = _run(cmd, timeout, env=env)
    text = proc.stdout + proc.stderr
    losses = [line for line in text.splitlines() if "loss:" in line]
    return {"rc": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
            "last_log": losses[-1].strip()[-200:] if losses else None,
            "tail": None if proc.returncode == 0 else text[-3000:]}


# lerobot-doctor 0.2.0's "anomalies" check assumes 1-D features: on any (r, c) feature with a constant
# column (camera intrinsics, for one) it dies with "only length-1 arrays can be converted"; it is run
# on its own so its crash is reported without hiding the other checks' verdicts.
DOCTOR_CHECKS = "metadata,temporal,actions,videos,statistics,episodes,consistency,training,portability,per_episode"


def _doctor(py_bin: Path, dataset: Path, timeout: float) -> dict:
    exe = py_bin / "lerobot-doctor"
    if not exe.exists():
        return {"available": False}
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = _run([exe, "check", dataset, "--json", "--checks", DOCTOR_CHECKS], timeout, env=env)
    out: dict = {"available": True, "rc": proc.returncode}
    try:
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
        out["overall"] = report.get("overall_severity")
        out["verdicts"] = {c["name"]: c["severity"] for c in report["checks"]}
        out["not_pass"] = sorted({f"{c['name']}: {m['message']}" for c in report["checks"]
                                  for m in c.get("messages", []) if m.get("severity") != "PASS"})[:12]
    except (ValueError, KeyError, TypeError):
        out["tail"] = (proc.stdout + proc.stderr)[-2000:]
    anomalies = _run([exe, "check", dataset, "--checks", "anomalies"], timeout, env=env)
    out["anomalies_rc"] = anomalies.returncode
    if "Traceback" in anomalies.stderr:
        out["anomalies_error"] = (anomalies.stderr.strip().splitlines() or ["?"])[-1][-300:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--steps", type=int, default=2, help="lerobot-train steps per dataset")
    ap.add_argument("--no-sim", action="store_true", help="skip the Meta-World demo set")
    ap.add_argument("--no-train", action="store_true", help="skip lerobot-train")
    args = ap.parse_args()
    summary: dict = {}
    t0 = time.perf_counter()
    setup = _run(["bash", ROOT / "scripts" / "setup_lerobot.sh"], 3600)
    summary["venv_seconds"] = round(time.perf_counter() - t0, 1)
    if setup.returncode != 0:
        print(f"check_lerobot: cannot build the LeRobot venv: {(setup.stderr or setup.stdout).strip()[-1500:]}",
              file=sys.stderr)
        return 3
    py_bin = _venv() / "bin"
    work = args.work or Path(tempfile.mkdtemp(prefix="vipa-lerobot-check-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    datasets: dict[str, Path] = {}
    try:
        t = time.perf_counter()
        h3d = work / "hand3d"
        gen = _run([sys.executable, "-m", "annotators.synthetic", "--out", h3d, "--episodes", "3", "--frames", "24",
                    "--width", "96", "--height", "96", "--no-progress"], 1200, env=env)
        if gen.returncode != 0:
            raise RuntimeError(f"synthetic data: {gen.stderr[-1500:]}")
        exp = _run([sys.executable, "-m", "vipa.cli", "export", h3d, "--out", work / "hand3d_lerobot",
                    "--format", "lerobot"], 1200, env=env)
        if exp.returncode != 0:
            raise RuntimeError(f"vipa export: {exp.stderr[-1500:]}")
        datasets["hand3d"] = work / "hand3d_lerobot"
        summary["hand3d_export_seconds"] = round(time.perf_counter() - t, 1)
        if not args.no_sim:
            t = time.perf_counter()
            sim = _run([sys.executable, "-m", "vipa.cli", "sim", "collect", "--out", work / "sim_lerobot",
                        "--tasks", "reach-v3", "--episodes", "2", "--size", "96", "--max-steps", "60",
                        "--keep-failures"], 1200, env=dict(env, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl")))
            if sim.returncode == 0:
                datasets["sim"] = work / "sim_lerobot"
            else:
                summary["sim_skipped"] = sim.stderr.strip().splitlines()[-1] if sim.stderr.strip() else "failed"
            summary["sim_collect_seconds"] = round(time.perf_counter() - t, 1)
        ok = True
        for name, ds in datasets.items():
            ref = work / f"{name}_reference.npz"
            _reference(ds, ref)
            res: dict = {}
            load = _run([py_bin / "python", ROOT / "scripts" / "lerobot" / "check_in_lerobot.py", ds, ref], 900,
                        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"))
            try:
                res["load"] = json.loads(load.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                res["load"] = {"rc": load.returncode, "tail": (load.stdout + load.stderr)[-3000:]}
            ok &= load.returncode == 0
            if not args.no_train:
                res["train"] = _train(py_bin, ds, work / f"train_{name}", args.steps, 1800)
                ok &= res["train"]["rc"] == 0
            res["doctor"] = _doctor(py_bin, ds, 900)
            summary[name] = res
        summary["ok"] = bool(ok and datasets)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        summary["ok"] = False
        summary["error"] = str(exc)[-2000:]
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary, default=str))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
