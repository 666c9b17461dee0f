"""The bundled sample dataset the workbench opens with no ``--data``: the real hand video
(annotated on first launch) plus a few synthetic RGB-D episodes with exact ground truth.
Built once into a cache folder; later launches reuse it."""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from vipa.data.dataset import Hand3DDataset
from vipa.resources import REPO_ROOT, SAMPLE_VIDEO

DEFAULT_SAMPLE_ROOT = REPO_ROOT / "cache" / "sample_dataset"
DONE_MARKER = ".sample_complete"
SYNTHETIC_SEEDS = (0, 1, 2)


def sample_is_built(root: Path) -> bool:
    return (Path(root) / DONE_MARKER).is_file()


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


def annotate_video(root: Path, progress: Callable[[float, str], None] | None = None) -> None:
    """The bundled real hand video through the annotation pipeline into ``root``. The pipeline
    reports per episode, so while the one video runs the page shows the elapsed time."""
    from annotators.batch import annotate_to_dataset

    done = threading.Event()
    t0 = time.time()

    def ticker() -> None:
        while not done.wait(1.0):
            if progress:
                progress(0.0, f"annotating {SAMPLE_VIDEO.name} (hands, lift, QA): {time.time() - t0:.0f} s")

    th = threading.Thread(target=ticker, daemon=True)
    th.start()
    try:
        report = annotate_to_dataset([SAMPLE_VIDEO], root, None, workers=1)
    finally:
        done.set()
        th.join()
    failed = [o.error for o in report.failed]
    if progress:
        progress(1.0, f"{SAMPLE_VIDEO.name} annotated in {time.time() - t0:.0f} s")
    if failed:
        raise RuntimeError(f"annotating {SAMPLE_VIDEO.name} failed: {failed[0]}")


class SampleBuilder:
    """Builds the sample in a background thread so the page is up at once; ``status()`` is what
    the page shows (message, progress in 0..1, ready). ``on_ready`` is called once the synthetic
    episodes are written (the page is usable from then on); ``ready`` turns True when the
    sample video is annotated too."""

    def __init__(self, root: Path = DEFAULT_SAMPLE_ROOT) -> None:
        self.root = Path(root)
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
        if sample_is_built(self.root):
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
            build_synthetic(self.root, progress=progress((0.0, 0.35)))
            on_ready(self.root)  # the synthetic episodes are usable while the video is annotated
            try:
                annotate_video(self.root, progress=progress((0.35, 1.0)))
            except ModuleNotFoundError as exc:  # the pipeline is optional for the synthetic part
                self.error = f"sample video not annotated: {exc}"
            if self.error is None:
                (self.root / DONE_MARKER).write_text(f"built in {time.time() - t0:.1f} s\n")
            note = f" ({self.error})" if self.error else ""
            self._set(ready=True, progress=None, message=f"dataset: `{self.root}`{note}")
        except Exception as exc:  # shown in the page; the terminal gets the traceback
            traceback.print_exc()
            self.error = f"{type(exc).__name__}: {exc}"
            self._set(ready=False, progress=None, message=f"**building the sample dataset failed**: {self.error}")
        finally:
            bar.n = 100
            bar.close()
