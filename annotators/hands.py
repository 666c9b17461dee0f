"""Hand detection: RGB frame -> per-hand 2D landmarks, metric hand-centred 3D landmarks,
anatomical side and per-joint confidence.

Public names
    ``HandDetection`` (one hand in one frame), ``HandBackend`` (the interface),
    ``MediaPipeHands`` (the bundled offline backend), ``create_hand_backend(spec, **kw)``
    (factory: ``"mediapipe"`` or ``"package.module:ClassName"``), ``by_side(detections)``
    (at most one detection per anatomical side), ``look_back_by_side(backend, frames, ...)`` (the
    backend's ``revisions`` pass over per-side arrays, as the pipeline keeps them).

Units and frames
    ``landmarks_2d`` (21, 2) float32 pixels of the frame given to ``detect``, in the convention of
    ``vipa.conventions`` (origin at the top-left pixel's *corner*; pixel (i, j) has centre
    (j + 0.5, i + 0.5)). ``world_landmarks`` (21, 3) float32 metres, hand-centred (origin near the
    hand's centre, axes roughly those of the camera); a camera-frame position needs PnP
    (``vipa.geometry.lift_hand``). Joints in the 21-joint MediaPipe order.

MediaPipe facts checked on this machine (mediapipe 0.10.14, ``mp.solutions.hands``)
    * Pixel convention: MediaPipe's normalised ``x * W`` behaves as a pixel *index* coordinate
      (the centre of column j at j), not a corner-origin one. Measured on 60 frames of the
      sample video: detecting on a 2x (half-pixel-centred, cv2 INTER_LINEAR) upscale gives
      ``u_2x - 2 u = +0.50 / +0.50 px`` (x / y; corner-origin would give 0, index +0.5), and a
      vertical flip gives ``y + y_flip - H = -1.0 px`` (corner-origin 0, index -1). So
      ``u = x * W + 0.5``, ``v = y * H + 0.5`` here.
    * Handedness: the legacy graph labels hands as if the image were mirrored (selfie view): the
      right hand in the sample video (unmirrored webcam) comes out "Left". ``mirrored_input=False``
      (default) swaps the label to the anatomical side; pass True for selfie-view video.
    * Confidence: the legacy graph fills ``visibility`` and ``presence`` of every landmark with 0,
      and exposes no hand-presence score; the only score is the handedness classification score
      (returned hands already passed ``min_detection_confidence`` / ``min_tracking_confidence``).
      Per-joint confidence = that score for joints inside the image, and ``OUTSIDE_FACTOR`` times
      it for joints MediaPipe extrapolated outside the frame (``in_frame`` False).
    * Cost: about 22 ms of CPU per 640x360 frame with ``max_num_hands=2`` and one hand in view
      (the palm detector runs on every frame while fewer hands than the maximum are tracked),
      about 10 ms with ``max_num_hands=1``. Padding costs no measurable CPU.
    * Padding: the palm detector misses hands that fill the frame. ``pad_fraction`` (default 0.25)
      adds a black border of that fraction of the longer side on every side before detection;
      coordinates are mapped back exactly (an integer shift). Checked on tight crops of sample
      frames (hand filling the crop): 61 of 63 found padded vs 52 of 63 unpadded (tests: 30/30 vs
      26/30), landmarks agreeing with the full-frame ones to a few px.

Hand search (``search=True``, the default; ``annotators.hand_search``)
    The tracker alone misses hands it never locked on to (the second hand, small, blurred, at the
    border) and MediaPipe's side label flips on blurred hands. The search adds followers of lost hands
    (30 frames, crops turned upright), a multi-scale search (also on the upside-down frame: hands reaching
    in from the top edge) and side votes; ``revisions(frames, detections)`` is a look-back pass over the
    whole video (the pipeline runs it after detection) that tracks each newly found hand backwards (and each
    vanishing one forwards) with a second video graph. On the project's labelled real-clip frames
    (``samples/real_clips``, ``annotators.eval_detection --look-back``, 640 px) recall of visible hands went
    from 0.850 (tracker alone) to 0.961, correct sides from 0.919 to 0.991, frames with a false hand from
    0.019 to 0.006: ``docs/DETECTION_RESULTS.md`` (costs there).

Adding a HaMeR/WiLoR-style estimator (user weights)
    Subclass ``HandBackend`` in your own module, load your weights from a local path given to
    ``__init__`` (no downloads), and return ``HandDetection``s from ``detect``: 2D joints in
    pixels of the given frame (reorder your model's joints with
    ``vipa.conventions.convert_joints(j, "mano", "mediapipe")``; shift +0.5 px if your model uses
    pixel-index coordinates),
    ``world_landmarks`` as root-relative metric joints (e.g. MANO joints minus their centre,
    camera-aligned axes), ``side`` anatomical, and a per-joint confidence in [0, 1]. Then use
    ``create_hand_backend("mypkg.hamer_backend:HamerHands", weights="/path/to/ckpt")`` (or
    ``--hands mypkg.hamer_backend:HamerHands`` where the CLI exposes it). Release models in
    ``close()``; ``reset()`` is called between videos (tracking state).
"""

from __future__ import annotations

import importlib
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from annotators.errors import BackendError
from vipa.conventions import MEDIAPIPE_LEGACY_MIRRORED, anatomical_side

OUTSIDE_FACTOR = 0.3  # confidence factor for joints extrapolated outside the image
MP_PIXEL_OFFSET = 0.5  # px added to MediaPipe's x*W, y*H (index -> corner-origin convention)


@dataclass
class HandDetection:
    """One hand in one frame (see the module docstring for units and conventions)."""

    side: str  # anatomical "left" / "right"
    landmarks_2d: np.ndarray  # (21, 2) float32 px
    world_landmarks: np.ndarray  # (21, 3) float32 m, hand-centred
    confidence: np.ndarray  # (21,) float32 in [0, 1]
    score: float  # hand-level score in [0, 1]
    in_frame: np.ndarray  # (21,) bool: 2D landmark inside the image
    label_raw: str = ""  # the detector's own label, before conversion


class HandBackend(ABC):
    """Interface of hand estimators. Use as a context manager (or call ``close()``)."""

    name: str = "hands"

    @abstractmethod
    def detect(self, frame_rgb: np.ndarray) -> list[HandDetection]:
        """Hands in one (H, W, 3) uint8 RGB frame; consecutive calls are consecutive frames."""

    def reset(self) -> None:
        """Forget tracking state (call between videos)."""

    def revisions(self, frames, detections: list[list["HandDetection"]]) -> list[list["HandDetection"]]:
        """A pass over a whole video after ``detect`` ran on each of its frames: ``detections[t]`` are
        ``detect``'s hands in ``frames[t]``; returns the hands per frame, revised (e.g. hands found late
        filled in backwards). The default changes nothing."""
        return [list(d) for d in detections]

    def close(self) -> None:
        """Release models and graphs."""

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings, stored as provenance."""
        return {"name": self.name}

    def __enter__(self) -> "HandBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_frame(frame_rgb: np.ndarray) -> np.ndarray:
    if not isinstance(frame_rgb, np.ndarray) or frame_rgb.ndim != 3 or frame_rgb.shape[2] != 3:
        raise ValueError(f"frame_rgb must be an (H, W, 3) array, got {getattr(frame_rgb, 'shape', type(frame_rgb))}")
    if frame_rgb.dtype != np.uint8:
        raise ValueError(f"frame_rgb must be uint8 RGB, got {frame_rgb.dtype}")
    return np.ascontiguousarray(frame_rgb)


class MediaPipeHands(HandBackend):
    """MediaPipe 0.10.14 legacy ``mp.solutions.hands`` (bundled models, fully offline).

    ``video_mode=True`` tracks hands across consecutive frames (``static_image_mode=False``);
    use False for unrelated images. ``pad_fraction``: border added on every side, as a fraction
    of the longer image side (0 = off). ``mirrored_input``: the frames are a selfie (mirrored)
    view, so MediaPipe's labels are already anatomical. ``search`` (default on): run
    ``annotators.hand_search`` around the tracker (re-detection of lost hands, a multi-scale search
    while fewer than ``max_num_hands`` hands are found, side votes); ``search_options``: fields of
    ``hand_search.SearchConfig``. ``search=False`` is the tracker alone.
    """

    name = "mediapipe"

    def __init__(
        self,
        *,
        video_mode: bool = True,
        max_num_hands: int = 2,
        model_complexity: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        pad_fraction: float = 0.25,
        mirrored_input: bool = False,
        search: bool = True,
        search_options: dict[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= pad_fraction <= 2.0:
            raise ValueError(f"pad_fraction must be in [0, 2], got {pad_fraction}")
        try:
            with warnings.catch_warnings():  # protobuf deprecation noise from mediapipe 0.10.14
                warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
                import mediapipe as mp

            self._mp_hands = mp.solutions.hands
        except (ImportError, AttributeError) as exc:
            raise BackendError("mediapipe", f"needs mediapipe==0.10.14 with mp.solutions ({exc})") from None
        self.settings = dict(
            video_mode=video_mode, max_num_hands=max_num_hands, model_complexity=model_complexity,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence, pad_fraction=pad_fraction,
            mirrored_input=mirrored_input, search=search,
        )
        from annotators.hand_search import HandSearch, SearchConfig

        try:
            self._search_cfg = SearchConfig(max_hands=max_num_hands, **(search_options or {})) if search else None
        except TypeError as exc:
            raise ValueError(f"search_options: {exc}") from None
        if self._search_cfg is not None:
            self.settings["search_options"] = self._search_cfg.to_dict()
        self._graph = None
        self._static = None
        self._back = None  # video graph of the look-back pass (built when first needed)
        self._search = None
        self._open()
        if self._search_cfg is not None:
            self._search = HandSearch(self._track_candidates, self._static_candidates, self._search_cfg)

    def _open(self) -> None:
        s = self.settings
        self._graph = self._mp_hands.Hands(
            static_image_mode=not s["video_mode"], max_num_hands=s["max_num_hands"],
            model_complexity=s["model_complexity"],
            min_detection_confidence=s["min_detection_confidence"],
            min_tracking_confidence=s["min_tracking_confidence"],
        )
        if s["search"]:
            self._static = self._mp_hands.Hands(
                static_image_mode=True, max_num_hands=s["max_num_hands"], model_complexity=s["model_complexity"],
                min_detection_confidence=s["min_detection_confidence"],
            )

    def describe(self) -> dict[str, Any]:
        import mediapipe as mp

        return {"name": self.name, "version": mp.__version__, **self.settings}

    def reset(self) -> None:
        self.close()
        self._open()
        if self._search is not None:
            self._search.reset()

    def close(self) -> None:
        for attr in ("_graph", "_static", "_back"):
            g = getattr(self, attr, None)
            if g is not None:
                g.close()
                setattr(self, attr, None)

    def search_stats(self) -> dict[str, dict[str, float]]:
        """Calls and seconds of each search step since construction ({} without search)."""
        if self._search is None:
            return {}
        return {k: {"calls": int(n), "seconds": float(t)} for k, (n, t) in self._search.stats.items()}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _run(self, graph, img: np.ndarray, ox: float, oy: float, scale: float, source: str) -> list:
        """One graph on one image -> hand_search.Candidates in frame pixels (image px / scale + origin)."""
        from annotators.hand_search import Candidate

        with warnings.catch_warnings():  # protobuf deprecation noise raised while reading outputs
            warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype", category=UserWarning)
            res = graph.process(np.ascontiguousarray(img))
        if not res.multi_hand_landmarks:
            return []
        ph, pw = img.shape[:2]
        mirrored = MEDIAPIPE_LEGACY_MIRRORED != self.settings["mirrored_input"]
        out = []
        for lms, wlms, cls in zip(res.multi_hand_landmarks, res.multi_hand_world_landmarks, res.multi_handedness):
            xy = np.array([(p.x, p.y) for p in lms.landmark], np.float32)
            uv = (xy * np.array([pw, ph], np.float32) + np.float32(MP_PIXEL_OFFSET)) / np.float32(scale)
            uv += np.array([ox, oy], np.float32)
            world = np.array([(p.x, p.y, p.z) for p in wlms.landmark], np.float32)
            c = cls.classification[0]
            out.append(Candidate(uv=uv, world=world, side=anatomical_side(c.label, mirrored=mirrored),
                                 score=float(c.score), source=source, label_raw=c.label))
        return out

    def _track_candidates(self, img: np.ndarray) -> list:
        h, w = img.shape[:2]
        pad = int(round(self.settings["pad_fraction"] * max(h, w)))
        if pad:
            import cv2

            img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        return self._run(self._graph, img, -pad, -pad, 1.0, "track")

    def _static_candidates(self, img: np.ndarray, ox: float, oy: float, scale: float, source: str) -> list:
        return self._run(self._static, img, ox, oy, scale, source)

    def _detection(self, cand, side: str, w: int, h: int) -> HandDetection:
        uv = cand.uv.astype(np.float32)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w) & (uv[:, 1] >= 0) & (uv[:, 1] <= h)
        score = float(cand.score)
        conf = np.where(inside, score, score * OUTSIDE_FACTOR).astype(np.float32)
        return HandDetection(side=side, landmarks_2d=uv, world_landmarks=cand.world, confidence=conf,
                             score=score, in_frame=inside, label_raw=cand.label_raw)

    def revisions(self, frames, detections: list[list[HandDetection]]) -> list[list[HandDetection]]:
        """Look-back (and look-ahead) pass, ``look_back`` in ``search_options`` frames at most (0: off): a hand
        that appears at frame t (no hand of frame t-1 where it is) is tracked backwards over t-1, t-2, ... by
        a second MediaPipe video graph (the hand nearest to where it was), on squares of 3 times its size
        re-centred on it every frame, black outside the image (the landmark model follows a hand half out
        of the frame, which the palm detector does not find), first as seen, then turned so that its wrist ->
        middle-MCP axis points up (the other order for a hand pointing down); a hand that vanishes after
        frame t is tracked forwards the same way. A jump of more than 0.6 of its size, or fewer than
        ``min_in_frame`` of its landmarks inside the frame, stops it. Hands it finds fill frames that lack them (``max_num_hands`` per frame at
        most; a hand already there stops it), with the side of the hand they continue."""
        from annotators.hand_search import Candidate, same_hand, upright_angle

        out = [list(d) for d in detections]
        cfg = self._search_cfg
        if cfg is None or cfg.look_back <= 0 or not self.settings["video_mode"] or len(frames) != len(out):
            return out
        if self._back is None:
            s = self.settings
            self._back = self._mp_hands.Hands(
                static_image_mode=False, max_num_hands=s["max_num_hands"], model_complexity=s["model_complexity"],
                min_detection_confidence=s["min_detection_confidence"],
                min_tracking_confidence=s["min_tracking_confidence"],
            )

        def cand(d: HandDetection) -> Candidate:
            return Candidate(uv=d.landmarks_2d, world=d.world_landmarks, side=d.side, score=d.score, source="track")

        n = len(out)
        for step in (-1, 1):
            order = range(1, n) if step == -1 else range(n - 2, -1, -1)
            for t in order:
                for d in list(detections[t]):
                    c0 = cand(d)
                    if any(same_hand(c0, cand(e), 0.3, 0.6) for e in out[t + step]):
                        continue  # the hand is there in the neighbouring frame already
                    # as seen first, then turned upright (upside-down hands), or the other way round for a hand
                    # pointing down: the turn helps the palm detector but not always the landmark model
                    up = upright_angle(c0.uv)
                    for angle in ((up, 0.0) if abs(up) > 135 else (0.0, up)):
                        if self._search._time("look_back", lambda: self._follow_video(frames, out, t, step, c0, d.side,
                                                                                       angle)):
                            break
        return out

    def _follow_video(self, frames, out: list[list[HandDetection]], t: int, step: int, c0, side: str,
                      angle: float) -> int:
        """Track hand ``c0`` of frame t into frames t+step, t+2 step, ... on squares turned by ``angle`` (see
        ``revisions``), adding it to ``out``; returns the number of frames it was added to."""
        import cv2

        from annotators.hand_search import same_hand, warp_square

        cfg = self._search_cfg
        h, w = frames[t].shape[:2]
        size = c0.size
        sq_side = max(3.0 * size, 128.0)
        out_px = int(min(max(256, round(sq_side)), 512))
        self._back.reset()
        prev, added = c0, 0
        for k in range(t, t + step * (cfg.look_back + 1), step):
            if not 0 <= k < len(frames):
                return added
            centre = prev.palm
            sq, back = warp_square(np.ascontiguousarray(frames[k]), float(centre[0]), float(centre[1]), sq_side, angle,
                                   out_px, cv2.BORDER_CONSTANT)
            found = [back(c) for c in self._run(self._back, sq, 0.0, 0.0, 1.0, "look_back")]
            if not found:
                return added
            c = min(found, key=lambda f: float(np.hypot(*(f.palm - prev.palm))))  # another hand may be in the square
            if np.hypot(*(c.palm - prev.palm)) > 0.6 * max(prev.size, c.size) or not 0.5 <= c.size / prev.size <= 2.0:
                return added  # jumped to something else
            if k == t:  # the seed: the graph must have found the hand it is asked to follow
                prev = c
                continue
            inside = float(np.mean((c.uv[:, 0] >= 0) & (c.uv[:, 0] <= w) & (c.uv[:, 1] >= 0) & (c.uv[:, 1] <= h)))
            if inside < cfg.min_in_frame or len(out[k]) >= cfg.max_hands:
                return added
            from annotators.hand_search import Candidate

            if any(same_hand(c, Candidate(uv=e.landmarks_2d, world=e.world_landmarks, side=e.side, score=e.score,
                                          source="track"), 0.3, 0.6) for e in out[k]):
                return added  # joined a hand found there already
            out[k].append(self._detection(c, side, w, h))
            prev, added = c, added + 1
        return added

    def detect(self, frame_rgb: np.ndarray) -> list[HandDetection]:
        if self._graph is None:
            raise BackendError("mediapipe", "detect() after close()")
        img = _check_frame(frame_rgb)
        h, w = img.shape[:2]
        if self._search is not None:
            if not self.settings["video_mode"]:
                self._search.reset()  # unrelated images: no tracks, no side votes carried over
            found = self._search.detect(img)
        else:
            found = [(c, c.side) for c in self._track_candidates(img)]
        return [self._detection(cand, side, w, h) for cand, side in found]


def by_side(detections: list[HandDetection]) -> dict[str, HandDetection]:
    """At most one detection per anatomical side; when two hands claim the same side (MediaPipe
    does this briefly when hands cross), the higher-scored one keeps it and the other is dropped."""
    best: dict[str, HandDetection] = {}
    for d in detections:
        if d.side not in best or d.score > best[d.side].score:
            best[d.side] = d
    return best


def look_back_by_side(backend: HandBackend, frames, joints_2d: dict, world: dict, confidence: dict,
                      present: dict) -> int:
    """Run ``backend.revisions`` over a video whose per-side detections are already in the arrays
    (``joints_2d[side]`` (T, 21, 2), ``world[side]`` (T, 21, 3), ``confidence[side]`` (T, 21), ``present[side]``
    (T,), as ``annotators.pipeline.detect_hands`` fills them) and fill, in place, the frames and sides the
    revision found a hand for and the detector did not. Returns the number of hands added."""
    if not callable(getattr(backend, "revisions", None)):  # a duck-typed backend without the pass
        return 0
    n = len(frames)
    h, w = frames[0].shape[:2] if n else (0, 0)
    dets = []
    for t in range(n):
        row = []
        for side in present:
            if present[side][t]:
                uv = np.asarray(joints_2d[side][t], np.float32)
                inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w) & (uv[:, 1] >= 0) & (uv[:, 1] <= h)
                conf = np.asarray(confidence[side][t], np.float32)
                row.append(HandDetection(side=side, landmarks_2d=uv, confidence=conf, score=float(conf.max()),
                                         world_landmarks=np.asarray(world[side][t], np.float32), in_frame=inside))
        dets.append(row)
    added = 0
    for t, row in enumerate(backend.revisions(frames, dets)):
        for side, det in by_side(row[len(dets[t]):]).items():
            if side in present and not present[side][t]:
                joints_2d[side][t] = det.landmarks_2d
                world[side][t] = det.world_landmarks
                confidence[side][t] = det.confidence
                present[side][t] = True
                added += 1
    return added


def create_hand_backend(spec: str = "mediapipe", **kwargs: Any) -> HandBackend:
    """``"mediapipe"`` -> MediaPipeHands(**kwargs); ``"package.module:ClassName"`` -> that
    HandBackend subclass built with ``**kwargs`` (e.g. ``weights="/path"``)."""
    if spec in ("mediapipe", "mp"):
        return MediaPipeHands(**kwargs)
    if ":" not in spec:
        raise BackendError(spec, "unknown hand backend; use 'mediapipe' or 'package.module:ClassName'")
    mod_name, cls_name = spec.split(":", 1)
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise BackendError(spec, f"cannot import the hand backend: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, HandBackend)):
        raise BackendError(spec, "is not a HandBackend subclass")
    return cls(**kwargs)
