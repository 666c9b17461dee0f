"""The bundled sample dataset the workbench opens with no ``--data``: the real hand video and the
seven real clips of ``samples/real_clips`` (annotated on first launch, in the background), plus a
few synthetic RGB-D episodes with exact ground truth. Built once into a cache folder; later
launches reuse it.

The done-marker records what the sample was built from (``SAMPLE_VERSION`` and the list of
inputs with their sizes): when either changes (a clip added, the version bumped) the next launch
builds again. Episodes already annotated are kept (``annotate_to_dataset`` skips finished ones),
so only the new inputs are annotated; an input that failed is redone at the next launch."""

from __future__ import annotations

import json
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from vipa.data.dataset import Hand3DDataset
from vipa.resources import REPO_ROOT, SAMPLE_VIDEO, SAMPLES_DIR

DEFAULT_SAMPLE_ROOT = REPO_ROOT / "cache" / "sample_dataset"
DONE_MARKER = ".sample_complete"
SAMPLE_VERSION = 2  # 1: webcam video + synthetic; 2: + the real clips
SYNTHETIC_SEEDS = (0, 1, 2)
REAL_CLIPS_DIR = SAMPLES_DIR / "real_clips"
# shortest first, so the gallery fills quickly; see samples/real_clips/SOURCE.md
REAL_CLIPS = ("egoloc/jar_shelf.mp4", "mediapipe_samples/typing.mp4", "mediapipe_samples/hand_reach.mp4",
              "sam2_gallery/04_coffee.mp4", "sam2_gallery/03_blocks.mp4", "egoloc/jar_desk.mp4",
              "sam2_gallery/02_cups.mp4")


def sample_videos() -> list[Path]:
    """The real videos of the sample, in the order they are annotated: the webcam video first."""
    return [SAMPLE_VIDEO, *(REAL_CLIPS_DIR / c for c in REAL_CLIPS)]


def sample_manifest(videos: Sequence[Path], seeds: Sequence[int] = SYNTHETIC_SEEDS,
                    config: dict | None = None) -> dict:
    """What the sample is built from; the done-marker holds it, and a different one rebuilds."""
    return {"version": SAMPLE_VERSION, "synthetic_seeds": [int(s) for s in seeds],
            "videos": [[Path(v).name, Path(v).stat().st_size if Path(v).is_file() else None] for v in videos],
            "config": config or {}}


def sample_is_built(root: Path, manifest: dict | None = None) -> bool:
    """Whether ``root`` holds a finished sample built from ``manifest`` (default: the bundled one).
    A marker of an older version (plain text) or another input list is not finished."""
    marker = Path(root) / DONE_MARKER
    if not marker.is_file():
        return False
    try:
        done = json.loads(marker.read_text()).get("manifest")
    except (ValueError, AttributeError):
        return False
    return done == (manifest if manifest is not None else sample_manifest(sample_videos()))


def build_synthetic(root: Path, seeds=SYNTHETIC_SEEDS, num_frames: int = 48,
                    progress: Callable[[float, str], None] | None = None) -> list[str]:
    """Synthetic RGB-D episodes ``synthetic_<seed>`` with quality figures; skips finished ones."""
    from annotators.quality import episode_quality
    from annotators.synthetic import generate_episode

    ds = Hand3DDataset.create(root)
    ids = []
    for k, seed in enumerate(seeds):
        eid = f"synthetic_{seed:02d}"
        ids.append(eid)
        if progress:
            progress(k / max(len(seeds), 1), f"synthetic episode {eid}")
        if ds.is_finished(eid):
            continue
        ep = generate_episode(seed, num_frames=num_frames)
        ep.episode_id = eid
        ep.quality = {k2: v for k2, v in episode_quality(ep).items() if "." not in k2}
        ds.write_episode(ep)
    return ids


def annotate_videos(root: Path, videos: Sequence[Path], config=None,
                    progress: Callable[[float, str], None] | None = None) -> list[str]:
    """Real videos through the annotation pipeline into ``root`` (one episode each, finished ones
    skipped), one after the other; while one runs the page shows its name and the elapsed time.
    Returns the errors of the videos that failed (the others are kept)."""
    from annotators.batch import annotate_to_dataset

    videos = [Path(v) for v in videos]
    done = threading.Event()
    t0 = time.time()
    state = {"k": 0}

    def current() -> str:
        k = min(state["k"], len(videos) - 1)
        return f"annotating {videos[k].name} ({k + 1} of {len(videos)}; hands, lift, QA)"

    def ticker() -> None:
        while not done.wait(1.0):
            if progress:
                progress(state["k"] / len(videos), f"{current()}: {time.time() - t0:.0f} s")

    def on_episode(outcome, n_done: int, total: int) -> None:
        state["k"] = n_done
        if progress and n_done < total:
            progress(n_done / total, f"{current()}: {time.time() - t0:.0f} s")

    th = threading.Thread(target=ticker, daemon=True)
    th.start()
    try:
        report = annotate_to_dataset(videos, root, config, workers=1, progress=on_episode)
    finally:
        done.set()
        th.join()
    failed = [f"{Path(o.source).name}: {o.error}" for o in report.failed]
    if progress:
        progress(1.0, f"{len(videos) - len(failed)} of {len(videos)} videos annotated in {time.time() - t0:.0f} s")
    return failed


class SampleBuilder:
    """Builds the sample in a background thread so the page is up at once; ``status()`` is what
    the page shows (message, progress in 0..1, ready). ``on_ready`` is called once the synthetic
    episodes are written (the page is usable from then on; the real videos join the gallery one
    by one as they are annotated); ``ready`` turns True when every video is annotated.
    ``videos``, ``seeds`` and ``config`` (an ``AnnotateConfig``) default to the bundled sample."""

    def __init__(self, root: Path = DEFAULT_SAMPLE_ROOT, videos: Sequence[Path] | None = None,
                 seeds: Sequence[int] = SYNTHETIC_SEEDS, config=None, num_frames: int = 48) -> None:
        self.root = Path(root)
        self.videos = [Path(v) for v in (sample_videos() if videos is None else videos)]
        self.seeds = tuple(seeds)
        self.config = config
        self.num_frames = num_frames
        self.manifest = sample_manifest(self.videos, self.seeds, config.to_dict() if config is not None else None)
        self._status = {"ready": False, "message": "preparing the sample dataset…", "progress": 0.0}
        self._lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.error: str | None = None

    def status(self) -> dict:
        with self._lock:
            return dict(self._status)

    def _set(self, **kw) -> None:
        with self._lock:
            self._status.update(kw)

    def start(self, on_ready: Callable[[Path], None]) -> None:
        if sample_is_built(self.root, self.manifest):
            on_ready(self.root)
            self._set(ready=True, message=f"dataset: `{self.root}`", progress=None)
            return
        self.thread = threading.Thread(target=self._run, args=(on_ready,), daemon=True, name="vipa-sample")
        self.thread.start()

    def _run(self, on_ready: Callable[[Path], None]) -> None:
        t0 = time.time()
        bar = tqdm(total=100, desc="sample dataset", unit="%")

        def progress(stage: tuple[float, float]):
            def cb(frac: float, msg: str) -> None:
                p = stage[0] + (stage[1] - stage[0]) * min(max(frac, 0.0), 1.0)
                bar.n = round(100 * p)
                bar.set_postfix_str(msg[:40])
                bar.refresh()
                self._set(progress=p, message=f"building the sample dataset (first launch only): {msg}")
            return cb

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / DONE_MARKER).unlink(missing_ok=True)  # an older sample: built again (finished episodes kept)
            build_synthetic(self.root, seeds=self.seeds, num_frames=self.num_frames,
                            progress=progress((0.0, 0.1 if self.videos else 1.0)))
            on_ready(self.root)  # the synthetic episodes are usable while the videos are annotated
            failed: list[str] = []
            if self.videos:
                try:
                    failed = annotate_videos(self.root, self.videos, self.config, progress=progress((0.1, 1.0)))
                except ModuleNotFoundError as exc:  # the pipeline is optional for the synthetic part
                    self.error = f"sample videos not annotated: {exc}"
            if failed:
                self.error = f"{len(failed)} video(s) failed (tried again at the next launch): {failed[0]}"
            if self.error is None:
                marker = {"manifest": self.manifest, "seconds": round(time.time() - t0, 1)}
                tmp = self.root / (DONE_MARKER + ".tmp")
                tmp.write_text(json.dumps(marker, indent=1) + "\n")
                tmp.replace(self.root / DONE_MARKER)
            note = f" ({self.error})" if self.error else ""
            self._set(ready=True, progress=None, message=f"dataset: `{self.root}`{note}")
        except Exception as exc:  # shown in the page; the terminal gets the traceback
            traceback.print_exc()
            self.error = f"{type(exc).__name__}: {exc}"
            self._set(ready=False, progress=None, message=f"**building the sample dataset failed**: {self.error}")
        finally:
            bar.n = 100
            bar.close()
