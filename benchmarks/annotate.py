"""Annotation pipeline frames/s on the bundled real video at 640 px wide vs MediaPipe alone on the same frames; 2 workers vs 1.

Ours: ``annotators.pipeline.run_pipeline`` with its defaults at ``max_width=640`` (decode with
PyAV, MediaPipe hands with padding and tracking, lift by PnP, calibrate, smooth, objects,
language, QA, motion tokens, quality; depth "auto" = none for a video), on the first N frames of
``vipa.resources.SAMPLE_VIDEO`` (1280x720 H.264).

Baselines, same frames, same process, interleaved with ours:
    * ``mediapipe_on_video`` (the headline baseline): the minimal script anyone would write --
      PyAV decode, the same 640x360 resize, ``mp.solutions.hands.Hands(static_image_mode=False,
      max_num_hands=2).process`` per frame, nothing else. Ratio = ours / it: the pipeline's own
      overhead (everything but getting frames to MediaPipe), goal >= 0.85.
    * ``mediapipe_on_decoded_frames``: the same graph on frames decoded beforehand (decoding not
      counted); reported beside as ``ratio_vs_predecoded``, the stricter figure.

Clock: process CPU time (all threads of this process) is the headline, because the machine these
run on is shared (load average recorded): wall-clock time there measures the scheduler more than
the code. Wall-clock figures are reported beside (best of the runs).

Workers: ``annotators.batch.annotate_to_dataset`` on W copies (symlinks) of the whole video with
``workers=1`` (in-process) and ``workers=2`` (spawned pool), wall-clock, fresh datasets each; goal
>= 1.7x. Wall-clock needs two idle cores to mean anything (``load_average`` says what the machine
was doing), so ``workers_speedup_cpu_estimate`` is given beside: the in-process run's CPU over
(the pool's CPU, worker start-up included, split over the two workers + the parent's CPU), i.e.
the speedup two idle cores would give. ``passed`` uses the wall-clock figure.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, Callable



def _measure(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Interleaved runs; best (minimum) CPU and wall seconds per callable."""
    out = {k: {"cpu": float("inf"), "wall": float("inf")} for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            c, w = time.process_time(), time.perf_counter()
            fn()
            out[k]["cpu"] = min(out[k]["cpu"], time.process_time() - c)
            out[k]["wall"] = min(out[k]["wall"], time.perf_counter() - w)
    return out


def _workers(video: Path, config, n_inputs: int) -> dict[str, Any]:
    from annotators.batch import annotate_to_dataset

    with tempfile.TemporaryDirectory(prefix="vipa_bench_annotate_") as tmp:
        tmp = Path(tmp)
        inputs = []
        for i in range(n_inputs):
            link = tmp / f"clip{i}.mp4"
            os.symlink(video, link)
            inputs.append(link)
        times, cpu, ok = {}, {}, {}
        for w in (1, 2):
            t, c = time.perf_counter(), time.process_time()
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            rep = annotate_to_dataset(inputs, tmp / f"ds_w{w}", config, workers=w)
            times[w] = time.perf_counter() - t
            kids2 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[w] = (time.process_time() - c,
                      (kids2.ru_utime + kids2.ru_stime) - (kids.ru_utime + kids.ru_stime))
            ok[w] = sum(o.status == "ok" for o in rep.outcomes)
    if ok[1] != n_inputs or ok[2] != n_inputs:
        raise RuntimeError(f"batch runs failed: {ok[1]}/{n_inputs} ok with 1 worker, {ok[2]}/{n_inputs} with 2")
    # What 2 idle cores would give: the pool's CPU (workers' start-up included) split over two
    # equally loaded workers, plus the parent's own CPU; vs the in-process run's CPU.
    est_2 = cpu[2][1] / 2 + cpu[2][0]
    return {
        "workers_inputs": n_inputs,
        "workers_1_s": times[1],
        "workers_2_s": times[2],
        "workers_speedup": times[1] / times[2],
        "workers_1_cpu_s": cpu[1][0] + cpu[1][1],
        "workers_2_cpu_s": {"parent": cpu[2][0], "workers": cpu[2][1]},
        "workers_speedup_cpu_estimate": (cpu[1][0] + cpu[1][1]) / est_2,
        "workers_goal": 1.7,
    }


def run(quick: bool) -> dict[str, Any]:
    import av
    import mediapipe as mp

    from annotators.hands import MediaPipeHands
    from annotators.io import open_source
    from annotators.pipeline import AnnotateConfig, close_backends, run_pipeline
    from vipa.resources import SAMPLE_VIDEO

    n = 60 if quick else 300
    repeats = 1 if quick else 2
    config = AnnotateConfig(decode={"max_width": 640, "max_frames": n})
    with open_source(SAMPLE_VIDEO, max_width=640, max_frames=n) as src:
        width, height = src.info.width, src.info.height
        frames = [f.rgb for f in src]

    hands = MediaPipeHands()  # the pipeline's backend; it resets (rebuilds) its graph per input
    found = {}

    def ours() -> None:
        ann = run_pipeline(SAMPLE_VIDEO, config, hand_backend=hands)
        found["ours"] = float(ann.episode.hands["right"].present.mean())

    def mediapipe_on_video() -> None:
        hit = 0
        with mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2) as graph:
            with av.open(str(SAMPLE_VIDEO)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    if i >= n:
                        break
                    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR")
                    hit += graph.process(rgb).multi_hand_landmarks is not None
        found["mediapipe_on_video"] = hit / n

    def mediapipe_on_frames() -> None:
        with mp.solutions.hands.Hands(static_image_mode=False, max_num_hands=2) as graph:
            hit = sum(graph.process(f).multi_hand_landmarks is not None for f in frames)
        found["mediapipe_on_frames"] = hit / n

    ours()  # warm-up: imports, first graph, caches
    mediapipe_on_video()
    t = _measure({"ours": ours, "video": mediapipe_on_video, "frames": mediapipe_on_frames}, repeats)
    hands.close()
    close_backends()
    fps = {k: n / v["cpu"] for k, v in t.items()}
    fps_wall = {k: n / v["wall"] for k, v in t.items()}
    ratio = fps["ours"] / fps["video"]
    result: dict[str, Any] = {
        "metric": f"frames per CPU-second, annotation of the first {n} frames of the sample video at {width}x{height}",
        "unit": "frames/s",
        "value": fps["ours"],
        "baseline": fps["video"],
        "baseline_name": "PyAV decode + resize + mediapipe 0.10.14 Hands.process (minimal loop, same frames)",
        "lower_is_better": False,
        "goal": ">= 0.85 (workers: >= 1.7x)",
        "ratio": ratio,
        "ratio_vs_predecoded": fps["ours"] / fps["frames"],
        "mediapipe_on_decoded_frames_fps": fps["frames"],
        "wall_fps": fps_wall,
        "wall_ratio": fps_wall["ours"] / fps_wall["video"],
        "detection_rate": found,
        "frames": n,
        "runs": repeats,
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
    }
    try:
        import annotators.batch  # noqa: F401
    except ImportError as exc:  # the batch runner is optional here
        result["workers_note"] = f"not measured: {exc}"
        result["passed"] = ratio >= 0.85
        return result
    # Whole-video inputs: a spawned worker costs ~3.3 s of CPU to start (imports, graph), which
    # short inputs cannot amortise (modelled: 4 x 200 frames -> 1.6x, 4 x 621 frames -> 1.85x).
    result.update(_workers(SAMPLE_VIDEO, AnnotateConfig(decode={"max_width": 640, "max_frames": 30 if quick else None}),
                           2 if quick else 4))
    result["load_average_after"] = list(os.getloadavg())
    result["passed"] = bool(ratio >= 0.85 and result["workers_speedup"] >= 1.7)
    return result
