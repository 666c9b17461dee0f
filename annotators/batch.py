"""Batch annotation of many inputs into one Hand3D dataset: resumable, failure-tolerant,
with a local process pool or Ray.

``annotate_to_dataset(inputs, out_root, config, workers=1, progress=callback, ray=None)``
is the entry point (the CLI ``vipa annotate`` and the app call it):

* The output folder is checked up front (created, probed for writing): an unwritable one
  raises :class:`OutputError` before any work starts.
* Each input becomes one episode, id from its file name (``annotators.pipeline.episode_id_for``;
  names that repeat among the inputs get a short hash of the path appended). Episodes already
  written (``Hand3DDataset.is_finished``) are skipped, so a rerun resumes; failed ones are
  retried.
* :func:`annotate_one` is the unit of work (decode ... quality, then write): run in this
  process (``workers=1``), in a pool of ``workers`` spawned processes (one MediaPipe graph
  per process), or as Ray tasks (``ray="local"`` starts a local Ray with ``workers`` CPUs,
  any other string is a cluster address for ``ray.init``; every node must see ``out_root``).
  Each task writes its own episode; the dataset's atomic writes and lock make that safe.
* An input that fails is recorded in the dataset (``record_failure``: status "failed" and
  the error text) and the batch goes on. Ctrl-C stops the batch: finished episodes stay, an
  episode being written is either complete or absent (atomic rename), and the dataset stays
  readable; the report says ``interrupted``.
* ``progress(outcome, done, total)`` is called after every episode (skipped ones included).
"""

from __future__ import annotations

import os
import time
import traceback
import uuid
import zlib
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from annotators.errors import AnnotatorError
from annotators.pipeline import AnnotateConfig, episode_id_for


class OutputError(AnnotatorError):
    """The output dataset folder cannot be created or written."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


@dataclass
class EpisodeOutcome:
    """What happened to one input."""

    episode_id: str
    source: str
    status: str  # "ok" | "failed" | "skipped"
    error: str = ""
    seconds: float = 0.0
    num_frames: int = 0
    quality: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchReport:
    """Outcomes of a batch, in input order (inputs not reached after an interrupt are absent)."""

    outcomes: list[EpisodeOutcome]
    out_root: str
    interrupted: bool = False
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return dict(Counter(o.status for o in self.outcomes))

    @property
    def failed(self) -> list[EpisodeOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        c = self.counts()
        text = (f"{c.get('ok', 0)} annotated, {c.get('skipped', 0)} skipped (already done), "
                f"{c.get('failed', 0)} failed -> {self.out_root}")
        return text + (" (interrupted)" if self.interrupted else "")

    def to_dict(self) -> dict[str, Any]:
        return {"out_root": self.out_root, "interrupted": self.interrupted, "seconds": self.seconds,
                "counts": self.counts(), "outcomes": [asdict(o) for o in self.outcomes]}


# ---------------------------------------------------------------------------- planning


def check_output(out_root: str | Path, fps: float | None = None):
    """Create or open the dataset at ``out_root`` and prove it is writable; OutputError if not."""
    from vipa.data.dataset import Hand3DDataset

    root = Path(out_root)
    try:
        ds = Hand3DDataset.create(root, fps=fps, exist_ok=True)
    except PermissionError as exc:
        raise OutputError(root, f"cannot create the dataset here (permission denied: {exc.filename or root})") from None
    except (FileExistsError, NotADirectoryError) as exc:
        if exc.errno is None:  # the dataset's own refusal (a non-empty folder, a file)
            raise OutputError(root, str(exc)) from None
        where = f" ({exc.filename})" if exc.filename else ""
        raise OutputError(root, f"cannot create the dataset folder: {exc.strerror}{where}") from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise OutputError(root, f"cannot create the dataset folder: {exc.strerror or exc}{where}") from None
    probe = root / "episodes" / f".write-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
        with open(root / "meta" / ".lock", "a"):
            pass
    except OSError as exc:
        raise OutputError(root, f"dataset folder is not writable ({exc.strerror or exc})") from None
    return ds


def plan_episodes(inputs: Sequence[str | Path]) -> list[tuple[str, str]]:
    """(episode_id, source) per input, ids unique and stable across runs for the same inputs."""
    sources = [str(Path(p)) for p in inputs]
    base = [episode_id_for(s) for s in sources]
    counts = Counter(base)
    out, seen = [], set()
    for s, b in zip(sources, base):
        eid = b
        if counts[b] > 1:
            eid = f"{b}-{zlib.crc32(str(Path(s).resolve()).encode()):08x}"
        if eid in seen:  # the same path given twice
            continue
        seen.add(eid)
        out.append((eid, s))
    return out


# --------------------------------------------------------------------------- the work


def annotate_one(source: str, episode_id: str, out_root: str, config: dict[str, Any]) -> EpisodeOutcome:
    """Annotate one input into the dataset at ``out_root``; failures are recorded, not raised.

    The one function run locally, by pool workers and as a Ray task (plain arguments only).
    KeyboardInterrupt propagates (nothing is recorded for an interrupted episode).
    """
    from annotators.pipeline import AnnotateConfig, annotate_into_dataset
    from vipa.data.dataset import Hand3DDataset

    t0 = time.perf_counter()
    ds = Hand3DDataset.open(out_root)
    try:
        ann = annotate_into_dataset(ds, source, AnnotateConfig.from_dict(config), episode_id=episode_id)
    except Exception as exc:  # noqa: BLE001 - any failure of one input is recorded and the batch goes on
        msg = _describe(exc)
        try:
            ds.record_failure(episode_id, source, msg)
        except Exception as rec_exc:  # noqa: BLE001
            msg += f" (and recording the failure failed: {rec_exc})"
        return EpisodeOutcome(episode_id, source, "failed", msg, time.perf_counter() - t0)
    ep = ann.episode
    return EpisodeOutcome(episode_id, source, "ok", "", time.perf_counter() - t0, ep.num_frames,
                          {k: float(v) for k, v in ep.quality.items() if "." not in k})


def _describe(exc: BaseException) -> str:
    """One clear line for known errors; type, message and the last frames for unexpected ones."""
    if isinstance(exc, (AnnotatorError, ValueError, OSError)):
        return f"{type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
    return f"{type(exc).__name__}: {exc}\n{tb}"


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


# ------------------------------------------------------------------------------ runner


def annotate_to_dataset(
    inputs: Sequence[str | Path],
    out_root: str | Path,
    config: AnnotateConfig | None = None,
    *,
    workers: int = 1,
    progress: Callable[[EpisodeOutcome, int, int], None] | None = None,
    ray: str | None = None,
    skip_finished: bool = True,
) -> BatchReport:
    """Annotate ``inputs`` into the dataset at ``out_root`` (see the module docstring)."""
    config = (config or AnnotateConfig()).validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    t0 = time.perf_counter()
    ds = check_output(out_root)
    root = str(Path(out_root).resolve())
    cfg = config.to_dict()
    plan = plan_episodes(inputs)
    total = len(plan)
    outcomes: dict[str, EpisodeOutcome] = {}
    done = 0

    def finish(o: EpisodeOutcome) -> None:
        nonlocal done
        outcomes[o.episode_id] = o
        done += 1
        if progress is not None:
            progress(o, done, total)

    todo = []
    for eid, src in plan:
        if skip_finished and ds.is_finished(eid):
            finish(EpisodeOutcome(eid, src, "skipped", num_frames=ds.num_frames(eid)))
        else:
            todo.append((eid, src))
    interrupted = False
    try:
        if ray is not None:
            _run_ray(todo, root, cfg, workers, ray, finish)
        elif workers == 1 or len(todo) <= 1:
            for eid, src in todo:
                finish(annotate_one(src, eid, root, cfg))
        else:
            _run_pool(todo, root, cfg, workers, finish)
    except KeyboardInterrupt:
        interrupted = True
    order = [eid for eid, _ in plan]
    report = BatchReport([outcomes[e] for e in order if e in outcomes], root, interrupted,
                         time.perf_counter() - t0)
    return report


def _run_pool(todo, root: str, cfg: dict, workers: int, finish) -> None:
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    ex = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                             initializer=_worker_init)
    futures = {ex.submit(annotate_one, src, eid, root, cfg): (eid, src) for eid, src in todo}
    try:
        pending = set(futures)
        while pending:
            done_now, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done_now:
                eid, src = futures[f]
                try:
                    finish(f.result())
                except BrokenProcessPool as exc:
                    finish(_record_crash(root, eid, src, f"worker process died: {exc}"))
                except Exception as exc:  # noqa: BLE001
                    finish(_record_crash(root, eid, src, _describe(exc)))
    except KeyboardInterrupt:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def _run_ray(todo, root: str, cfg: dict, workers: int, address: str, finish) -> None:
    import ray

    started = False
    if not ray.is_initialized():
        if address in ("local", ""):
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        started = True
    try:
        task = ray.remote(num_cpus=1)(annotate_one)
        refs = {task.remote(src, eid, root, cfg): (eid, src) for eid, src in todo}
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for r in ready:
                    eid, src = refs[r]
                    try:
                        finish(ray.get(r))
                    except Exception as exc:  # noqa: BLE001 - a task that crashed its worker
                        finish(_record_crash(root, eid, src, f"ray task failed: {type(exc).__name__}: {exc}"))
        except KeyboardInterrupt:
            for r in pending:
                ray.cancel(r, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


def _record_crash(root: str, eid: str, src: str, msg: str) -> EpisodeOutcome:
    from vipa.data.dataset import Hand3DDataset

    try:
        Hand3DDataset.open(root).record_failure(eid, src, msg)
    except Exception as exc:  # noqa: BLE001
        msg += f" (and recording the failure failed: {exc})"
    return EpisodeOutcome(eid, src, "failed", msg)
