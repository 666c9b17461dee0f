"""Batch annotation of many inputs into one Hand3D dataset: resumable, failure-tolerant,
with a local process pool or Ray.

``annotate_to_dataset(inputs, out_root, config, workers=1, progress=callback, ray=None)``
is the entry point (the CLI ``vipa annotate`` and the app call it):

* The output folder is checked up front (created, probed for writing): an unwritable one
  raises :class:`OutputError` before any work starts.
* Options that name files (``--depth hf:PATH``, ``--detector PATH``) are checked before any
  input is decoded (:func:`preflight`).
* Each input becomes one episode (:func:`plan_episodes`): its file name when that is a safe id
  as it is and no other input (of this batch, or already in the dataset) has it; otherwise the
  name with unsafe characters replaced plus a short hash of the source path (``日本.mp4`` and
  ``中国.mp4`` never share an id). Episodes already finished (``Hand3DDataset.is_finished``: all
  files in place, completion marker last) are skipped, so a rerun resumes; failed ones and
  half-written ones (no marker) are redone.
* :func:`annotate_one` is the unit of work (decode ... quality, then write): run in a pool of
  ``workers`` spawned processes (one MediaPipe graph per process), or as Ray tasks
  (``ray="local"`` starts a local Ray with ``workers`` CPUs, any other string is a cluster
  address for ``ray.init``; every node must see ``out_root``). Each task writes its own
  episode; the dataset's atomic writes and lock make that safe.
* With one worker (in this process), writing overlaps annotation (``overlap_writes=True``, the
  default; ``vipa annotate --no-overlap-write`` turns it off): episode N is written (mp4
  encode, parquet, depth PNGs, derived products, completion marker last) on a writer thread
  while episode N+1 is decoded and annotated. At most one write is pending (the next waits
  for it), so at most two episodes are in memory; episodes go into the dataset in input
  order. A write that fails records that episode as failed with its message (its files stay
  without a marker, so a resume redoes it) and the batch goes on. On Ctrl-C the episode being
  written is finished first (a second Ctrl-C stops it at its next step, without its marker);
  ``kill -9`` leaves it without its marker: either way it is never counted as done.
* An input that fails is recorded in the dataset (``record_failure``: status "failed" and
  the error text) and the batch goes on. Ctrl-C stops the batch: finished episodes stay, an
  episode being written is either complete or absent (atomic rename), and the dataset stays
  readable; the report says ``interrupted``. After an interrupt the workers are stopped and
  waited for, and every planned episode the report does not yet account for is looked up in
  the dataset (finished -> "ok", written without its marker -> "incomplete"), so the report's
  counts match the dataset.
* Pool workers exit when the parent process dies (a watchdog thread per worker: an interrupt,
  then a hard exit after a grace period), so ``kill -9`` of ``vipa annotate`` leaves no workers.
* ``progress(outcome, done, total)`` is called after every episode (skipped ones included);
  ``on_frame(episode_id, done, total)`` within an episode, per frame of the hand loop (episodes
  annotated in this process: one worker or one input).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import threading
import time
import traceback
import unicodedata
import uuid
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
    status: str  # "ok" | "failed" | "skipped" | "incomplete" (written without its marker: redone on resume)
    error: str = ""
    seconds: float = 0.0
    num_frames: int = 0
    quality: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class BatchReport:
    """Outcomes of a batch, in input order (inputs not reached after an interrupt are absent)."""

    outcomes: list[EpisodeOutcome]
    out_root: str
    interrupted: bool = False
    seconds: float = 0.0
    # one worker, writes overlapped: wall seconds of the writes (on the writer thread) and the part
    # of them the batch still waited for (the next episode annotated faster than the last was written)
    write_s: float = 0.0
    write_wait_s: float = 0.0

    def counts(self) -> dict[str, int]:
        return dict(Counter(o.status for o in self.outcomes))

    @property
    def failed(self) -> list[EpisodeOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        c = self.counts()
        text = (f"{c.get('ok', 0)} annotated, {c.get('skipped', 0)} skipped (already done), "
                f"{c.get('failed', 0)} failed")
        if c.get("incomplete"):
            text += f", {c['incomplete']} incomplete (redone on resume)"
        text += f" -> {self.out_root}"
        return text + (" (interrupted)" if self.interrupted else "")

    def to_dict(self) -> dict[str, Any]:
        return {"out_root": self.out_root, "interrupted": self.interrupted, "seconds": self.seconds,
                "write_s": self.write_s, "write_wait_s": self.write_wait_s, "counts": self.counts(),
                "outcomes": [asdict(o) for o in self.outcomes]}


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


ID_HASH_LEN = 8


def readable_name(source: str | Path) -> str:
    """The input's name (file stem or folder name), NFC, characters other than letters, digits,
    ``_`` and ``-`` replaced by ``_`` (letters of any script kept), at most 80 characters."""
    p = Path(str(source))
    name = unicodedata.normalize("NFC", p.stem if p.suffix and not p.is_dir() else p.name)
    return re.sub(r"[^\w\-]+", "_", name).strip("_.")[:80] or "episode"


def source_hash(source: str | Path) -> str:
    """A short stable hash of the input's absolute path (links not followed: two links are two inputs)."""
    return hashlib.sha1(os.path.abspath(str(source)).encode("utf-8", "surrogateescape")).hexdigest()[:ID_HASH_LEN]


def _same_source(a: str, b: str) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def plan_episodes(inputs: Sequence[str | Path], ds=None) -> list[tuple[str, str]]:
    """(episode_id, source) per input: ids unique per input and stable across runs.

    The plain name (``readable_name``) is used when it equals the file name, no other input of
    the batch has it, and (with ``ds``) the dataset holds no episode of that id from another
    source; otherwise ``name-<hash of the resolved path>``. An input given twice is planned once.
    An input already in ``ds`` under either id keeps that id (so a resume finds it). Paths are
    compared absolute, links not followed."""
    sources = [str(Path(p)) for p in inputs]
    names = [readable_name(s) for s in sources]
    counts = Counter(names)
    rows = {}
    if ds is not None:
        rows = {r["episode_id"]: r for r in ds.episodes_table()}
    out, seen = [], set()
    for s, name in zip(sources, names):
        p = Path(s)
        plain_ok = name == unicodedata.normalize("NFC", p.stem if p.suffix and not p.is_dir() else p.name)
        hashed = f"{name}-{source_hash(s)}"
        eid = None
        for cand in ((name, hashed) if plain_ok else (hashed,)):
            row = rows.get(cand)
            if row is not None and _same_source(str(row["source"]), s):
                eid = cand  # already in the dataset (finished, failed or half-written): resume it
                break
        if eid is None:
            taken = name in rows and not _same_source(str(rows[name]["source"]), s)
            eid = name if plain_ok and counts[name] == 1 and not taken else hashed
        key = os.path.abspath(s)
        if key in seen:  # the same input given twice
            continue
        seen.add(key)
        out.append((eid, s))
    return out


PATH_OPTIONS = ("path", "detector", "model", "weights")  # backend options that name a local file or folder
MODEL_FOLDERS = {("depth", "hf"), ("objects", "detector"), ("objects", "tabletop")}  # save_pretrained folders


def preflight(config: AnnotateConfig) -> None:
    """Check the files that the selected backends' options name (``--depth hf:PATH``, ``--detector
    PATH``, ``--objects boxes:FILE``, ...) before any input is decoded: BackendError naming the
    backend, the option and the path."""
    import dataclasses

    from annotators import registry
    from annotators.errors import BackendError

    selected = [("objects", spec, config.objects.options.get(registry.split_spec(spec)[0]))
                for spec in config.objects.backends]
    if config.depth.backend != "auto":
        selected.append(("depth", config.depth.backend, config.depth.options))
    for kind, spec, options in selected:
        name, arg = registry.split_spec(spec)
        if kind == "depth" and name == "hf" and not arg and not (options or {}).get("path"):
            raise BackendError(spec, "hf: needs a local model folder, e.g. hf:/models/depth-anything-small")
        try:
            cfg = registry.get_backend(kind, name).config(options, arg)
        except (ValueError, TypeError):
            continue  # AnnotateConfig.validate reports these
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if f.name not in PATH_OPTIONS or not isinstance(value, str) or not value:
                continue
            path = Path(value).expanduser()
            if not path.exists():
                raise BackendError(spec, f"{f.name} {path} does not exist")
            if (kind, name) in MODEL_FOLDERS and not (path / "config.json").is_file():
                raise BackendError(spec, f"{f.name} {path}: no config.json in the folder (expected a save_pretrained model)")


# --------------------------------------------------------------------------- the work


def annotate_one(source: str, episode_id: str, out_root: str, config: dict[str, Any],
                 on_frame: Callable[[int, int], None] | None = None) -> EpisodeOutcome:
    """Annotate one input into the dataset at ``out_root``; failures are recorded, not raised.

    The one function run by pool workers and as a Ray task (plain arguments only): annotate,
    then write. KeyboardInterrupt propagates (nothing is recorded for an interrupted episode).
    """
    from vipa.data.dataset import Hand3DDataset

    ds = Hand3DDataset.open(out_root)
    ann, outcome = annotate_only(source, episode_id, config, on_frame)
    if ann is None:
        return _record(ds, outcome)
    return write_one(ds, ann, outcome)


def annotate_only(source: str, episode_id: str, config: dict[str, Any],
                  on_frame: Callable[[int, int], None] | None = None):
    """(Annotation, "ok" outcome) or (None, "failed" outcome, not yet recorded in the dataset):
    every stage of one input, nothing written."""
    from annotators.pipeline import AnnotateConfig, run_pipeline

    t0 = time.perf_counter()
    try:
        ann = run_pipeline(source, AnnotateConfig.from_dict(config), episode_id=episode_id, on_frame=on_frame)
    except Exception as exc:  # noqa: BLE001 - any failure of one input is recorded and the batch goes on
        return None, EpisodeOutcome(episode_id, source, "failed", _describe(exc), time.perf_counter() - t0)
    ep = ann.episode
    return ann, EpisodeOutcome(episode_id, source, "ok", "", time.perf_counter() - t0, ep.num_frames,
                               {k: float(v) for k, v in ep.quality.items() if "." not in k},
                               [str(w) for w in ep.extra.get("warnings", [])])


class WriteStopped(BaseException):
    """Raised by a write's checkpoint to stop it between two steps (after a second Ctrl-C)."""


def write_one(ds, ann, outcome: EpisodeOutcome, checkpoint: Callable[[], None] | None = None) -> EpisodeOutcome:
    """Write an annotated episode (``pipeline.write_annotation``: completion marker last); a write
    that fails is recorded as that episode's failure ("failed" outcome, its message), not raised.
    ``WriteStopped`` from ``checkpoint`` propagates (the episode is left without its marker)."""
    from annotators.pipeline import write_annotation

    t0 = time.perf_counter()
    try:
        write_annotation(ds, ann, checkpoint)
    except WriteStopped:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed write fails this episode only
        failed = EpisodeOutcome(outcome.episode_id, outcome.source, "failed",
                                f"writing the episode failed: {_describe(exc)}",
                                outcome.seconds + time.perf_counter() - t0, warnings=outcome.warnings)
        return _record(ds, failed)
    outcome.seconds += time.perf_counter() - t0
    return outcome


def _record(ds, outcome: EpisodeOutcome) -> EpisodeOutcome:
    """Record a failed outcome in the dataset (status "failed" and its error); returns it."""
    try:
        ds.record_failure(outcome.episode_id, outcome.source, outcome.error)
    except Exception as rec_exc:  # noqa: BLE001
        outcome.error += f" (and recording the failure failed: {rec_exc})"
    return outcome


def _describe(exc: BaseException) -> str:
    """One clear line for known errors; type, message and the last frames for unexpected ones."""
    if isinstance(exc, (AnnotatorError, ValueError, OSError)):
        return f"{type(exc).__name__}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-3))
    return f"{type(exc).__name__}: {exc}\n{tb}"


PARENT_POLL_S = 0.5  # how often a pool worker checks that its parent is alive
PARENT_GRACE_S = 3.0  # after the parent died: time to finish a write in progress before a hard exit


def _watch_parent(parent: int, poll_s: float = PARENT_POLL_S, grace_s: float = PARENT_GRACE_S) -> None:
    """Run in a daemon thread of a worker: once the parent is gone, interrupt the main thread
    (KeyboardInterrupt: atomic writes finish or roll back) and exit hard after ``grace_s``."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    try:
        os.kill(os.getpid(), signal.SIGINT)
    finally:
        time.sleep(grace_s)
        os._exit(1)


def _worker_init(parent: int | None = None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # Interrupts reach the work as KeyboardInterrupt (also when started with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if parent is not None:
        if os.getppid() != parent:
            os._exit(1)
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watchdog", daemon=True).start()
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
    on_frame: Callable[[str, int, int], None] | None = None,
    ray: str | None = None,
    skip_finished: bool = True,
    overlap_writes: bool = True,
) -> BatchReport:
    """Annotate ``inputs`` into the dataset at ``out_root`` (see the module docstring).

    ``overlap_writes`` (one worker): write episode N on a writer thread while N+1 is annotated."""
    config = (config or AnnotateConfig()).validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    preflight(config)
    t0 = time.perf_counter()
    ds = check_output(out_root)
    root = str(Path(out_root).resolve())
    cfg = config.to_dict()
    plan = plan_episodes(inputs, ds)
    total = len(plan)
    outcomes: dict[str, EpisodeOutcome] = {}
    done = 0

    def finish(o: EpisodeOutcome, notify: bool = True) -> None:
        nonlocal done
        outcomes[o.episode_id] = o
        done += 1
        if progress is not None and notify:
            progress(o, done, total)

    todo = []
    for eid, src in plan:
        if skip_finished and ds.is_finished(eid):
            finish(EpisodeOutcome(eid, src, "skipped", num_frames=ds.num_frames(eid)))
        else:
            todo.append((eid, src))
    interrupted = False
    write_stats: dict[str, float] = {}
    try:
        if ray is not None:
            _run_ray(todo, root, cfg, workers, ray, finish)
        elif (workers == 1 or len(todo) <= 1) and overlap_writes:
            _run_overlapped(todo, root, cfg, finish, on_frame, write_stats)
        elif workers == 1 or len(todo) <= 1:
            for eid, src in todo:
                per_frame = None if on_frame is None else (lambda d, t, eid=eid: on_frame(eid, d, t))
                finish(annotate_one(src, eid, root, cfg, per_frame))
        else:
            _run_pool(todo, root, cfg, workers, finish)
    except KeyboardInterrupt:
        interrupted = True
    if interrupted:  # account for what the workers finished (or half-wrote) while stopping
        for eid, src in todo:
            if eid not in outcomes:
                o = _outcome_from_dataset(root, eid, src)
                if o is not None:
                    outcomes[eid] = o
    order = [eid for eid, _ in plan]
    report = BatchReport([outcomes[e] for e in order if e in outcomes], root, interrupted,
                         time.perf_counter() - t0, **write_stats)
    return report


class EpisodeWriter:
    """One writer thread with at most one episode pending: ``submit`` needs the previous write
    collected (``collect`` waits for it), so memory holds the episode being written and the one
    being annotated, no more."""

    def __init__(self, root: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from vipa.data.dataset import Hand3DDataset

        self.root = root
        self.ds = Hand3DDataset.open(root)
        self._ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipa-episode-writer")
        self._pending = None
        self._stop = threading.Event()
        self.write_s = 0.0  # wall seconds spent writing (writer thread)
        self.waited_s = 0.0  # wall seconds the caller waited in ``collect`` for a write to end

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def ready(self) -> bool:
        """A write was submitted and has ended (``collect`` will not wait)."""
        return self._pending is not None and self._pending.done()

    def submit(self, ann, outcome: EpisodeOutcome) -> None:
        if self._pending is not None:
            raise RuntimeError("collect the pending write before submitting another")
        self._pending = self._ex.submit(self._write, ann, outcome)

    def _checkpoint(self) -> None:
        if self._stop.is_set():
            raise WriteStopped

    def _write(self, ann, outcome: EpisodeOutcome) -> EpisodeOutcome | None:
        t0 = time.perf_counter()
        try:
            return write_one(self.ds, ann, outcome, self._checkpoint)
        except WriteStopped:  # what the dataset now holds: nothing, or files without a marker
            return _outcome_from_dataset(self.root, outcome.episode_id, outcome.source)
        except BaseException as exc:  # noqa: BLE001 - never lose the outcome to a bug
            return _record(self.ds, EpisodeOutcome(outcome.episode_id, outcome.source, "failed",
                                                   f"writing the episode failed: {_describe(exc)}",
                                                   outcome.seconds))
        finally:
            self.write_s += time.perf_counter() - t0

    def collect(self) -> EpisodeOutcome | None:
        """Wait for the pending write; its outcome (None if none was pending, or stopped before
        anything was written)."""
        fut, self._pending = self._pending, None
        if fut is None:
            return None
        t0 = time.perf_counter()
        try:
            return fut.result()
        except BaseException:
            self._pending = fut  # interrupted while waiting: still pending
            raise
        finally:
            self.waited_s += time.perf_counter() - t0

    def drain_after_interrupt(self) -> EpisodeOutcome | None:
        """After Ctrl-C: let the pending write finish (its episode then counts as done); a
        further Ctrl-C stops it at its next step (left without its marker) and waits for that."""
        if self._pending is None:
            return None
        if not self._pending.done():
            print("vipa annotate: interrupted; finishing the episode being written "
                  "(Ctrl-C again to stop it unfinished)", file=sys.stderr, flush=True)
        while True:
            try:
                return self.collect()
            except KeyboardInterrupt:
                self._stop.set()

    def close(self) -> None:
        """Wait for the writer thread (a write still pending runs to its end)."""
        self._ex.shutdown(wait=True)


def _run_overlapped(todo, root: str, cfg: dict, finish, on_frame, stats: dict[str, float]) -> None:
    """One worker in this process: annotate episode N+1 while N is written (``EpisodeWriter``);
    ``stats`` gets the writes' wall seconds and the seconds waited for them."""
    from vipa.data.dataset import Hand3DDataset

    ds = Hand3DDataset.open(root)  # this thread's handle (failures); the writer has its own
    w = EpisodeWriter(root)
    try:
        for eid, src in todo:
            deferred: list[BaseException] = []

            def per_frame(d: int, t: int, eid: str = eid) -> None:
                if w.ready() and not deferred:  # report the previous episode as soon as it is written
                    try:
                        o = w.collect()
                        if o is not None:
                            finish(o)
                    except KeyboardInterrupt:
                        raise
                    except BaseException as exc:  # noqa: BLE001 - a progress callback's error is not this episode's
                        deferred.append(exc)
                if on_frame is not None:
                    on_frame(eid, d, t)

            ann, outcome = annotate_only(src, eid, cfg, per_frame)
            prev = w.collect()  # at most one pending write; episodes go in, in input order
            if prev is not None:
                finish(prev)
            if deferred:
                raise deferred[0]
            if ann is None:
                finish(_record(ds, outcome))
            else:
                w.submit(ann, outcome)
        last = w.collect()
        if last is not None:
            finish(last)
    except KeyboardInterrupt:
        o = w.drain_after_interrupt()
        if o is not None:
            finish(o, notify=False)
        raise
    finally:
        w.close()
        stats.update(write_s=w.write_s, write_wait_s=w.waited_s)


def _outcome_from_dataset(root: str, eid: str, src: str) -> EpisodeOutcome | None:
    """What the dataset holds for ``eid`` after an interrupt: ok, incomplete, failed, or None."""
    from vipa.data.dataset import Hand3DDataset

    try:
        ds = Hand3DDataset.open(root)
        status = ds.status(eid)
        if status is None:
            return None
        if status == "failed":
            return EpisodeOutcome(eid, src, "failed", ds.error(eid))
        if ds.is_finished(eid):
            return EpisodeOutcome(eid, src, "ok", num_frames=ds.num_frames(eid))
        return EpisodeOutcome(eid, src, "incomplete", "interrupted before its completion marker; redone on resume")
    except Exception as exc:  # noqa: BLE001 - the report must still be made
        return EpisodeOutcome(eid, src, "incomplete", f"state unknown after the interrupt: {exc}")


def _stop_workers(procs, grace_s: float = 30.0) -> None:
    """Interrupt pool workers (their writes finish or roll back) and wait; kill any left after ``grace_s``."""
    for p in procs:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGINT)
            except OSError:
                pass
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def _run_pool(todo, root: str, cfg: dict, workers: int, finish) -> None:
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    ex = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                             initializer=_worker_init, initargs=(os.getpid(),))
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
        procs = list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        _stop_workers(procs)
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
