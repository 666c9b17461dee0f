"""Hand search around MediaPipe: every visible hand, not only those its tracker holds.

``HandSearch`` runs per frame, in order (pixels of the frame given; MediaPipe's 0.5 px index offset
already removed by the caller's ``to_px``):

1. *Track*: the legacy video-mode graph on the frame padded by a fixed border (as before).
2. *Follow*: each known hand that step 1 did not find again is looked for in a square crop of ``roi_scale``
   times its size (so the padding follows the hand's size, not the frame's) around where it should be (its
   last place moved by its last velocity), turned so that its wrist -> middle-MCP axis points up (the palm
   detector is weak on upside-down hands), with a static-image graph; the nearest hand of about its size
   found there continues it. A lost hand is followed so for up to ``follow_frames`` frames; a hand found
   once is followed even when the tracker never holds it.
3. *Search* (multi-scale): while fewer than ``max_hands`` hands are known, every ``search_every``-th
   frame (the interval doubles, up to ``search_max_every``, after each search that finds nothing, and
   returns to ``search_every`` when a search finds a hand or a hand is lost) the static graph also runs on the whole frame mirrored out at its borders by ``reflect_pad``
   (hands cut by the image border are found more often so), on that frame turned upside down
   (``search_rot180``: hands reaching in from the top edge, fingers down) and on ``tiles`` x ``tiles`` overlapping
   tiles (each ``tile_frac`` of the frame's sides, padded by ``tile_pad`` of its longer side): hands
   that are small in the frame are larger in a tile. In a video where no search has found a hand yet, the
   searches after ``search_lite_after`` empty ones in a row skip the tiles (the whole-frame passes stay):
   on one-hand videos the search then costs a fraction of the tracker (docs/DETECTION_RESULTS.md).
4. *Merge*: candidates are reduced by non-maximum suppression (same hand: box IoU >= ``nms_iou`` or palm
   centres closer than a third of the hand's size; the tracker's candidates win, then the higher score); at most
   ``max_hands`` are kept (highest score first); a hand that only re-detection or the search found needs
   a score of ``min_search_score`` and ``min_in_frame`` of its landmarks inside the frame (a hand mirrored
   out by the search's border lies outside).
5. *Side*: each kept hand is matched to the previous frame's hands (IoU / palm distance) and keeps a
   decaying vote of the detector's side labels (a hand keeps its side through a few mislabelled frames).
   Two hands side by side: from frames where the detector labels them differently, the search learns on
   which image side the right hand is (right in egocentric views, left when the person faces the
   camera); once that evidence reaches ``view_min_evidence``, their image order decides their sides.
   Otherwise, when two hands claim the same side, the one with the weaker vote takes the other side.

The look-back pass (``MediaPipeHands.revisions``, after a whole video) uses ``warp_square`` and
``look_back``. Costs are counted per step in ``stats`` (calls and CPU seconds of this process), so the
search's cost can be reported separately from the tracker's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

PALM = (0, 5, 9, 13, 17)  # wrist and finger MCPs (MediaPipe order)


@dataclass
class Candidate:
    """One hand found by one step, in frame pixels (corner origin)."""

    uv: np.ndarray  # (21, 2) float32 px
    world: np.ndarray  # (21, 3) float32 m, hand-centred
    side: str  # anatomical side from the detector's label
    score: float
    source: str  # "track" | "roi" | "tile"
    label_raw: str = ""  # the detector's own label

    @property
    def box(self) -> np.ndarray:
        lo, hi = self.uv.min(0), self.uv.max(0)
        return np.array([lo[0], lo[1], hi[0], hi[1]], np.float64)

    @property
    def size(self) -> float:
        b = self.box
        return float(max(b[2] - b[0], b[3] - b[1], 1.0))

    @property
    def palm(self) -> np.ndarray:
        return self.uv[list(PALM)].mean(0).astype(np.float64)


@dataclass
class _Track:
    box: np.ndarray
    palm: np.ndarray
    size: float
    vote: float  # > 0: right, < 0: left (decaying sum of signed detector scores)
    uv: np.ndarray | None = None  # (21, 2) landmarks when last seen
    vel: np.ndarray = field(default_factory=lambda: np.zeros(2))  # palm px per frame when last seen
    lost: int = 0  # frames since last seen (0: seen in the latest frame)

    def predicted_palm(self) -> np.ndarray:
        """Palm centre where the hand should be now: where it was if seen in the latest frame, else its
        last place moved by its last velocity."""
        return self.palm + self.vel * (self.lost + 1) if self.lost else self.palm


def upright_angle(uv: np.ndarray) -> float:
    """Degrees to rotate the image (counter-clockwise as displayed, cv2's sense) so that the hand's
    wrist -> middle-finger MCP axis points up."""
    a = uv[9].astype(np.float64) - uv[0].astype(np.float64)
    return float(np.degrees(np.arctan2(a[0], -a[1])))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inside(p: np.ndarray, box: np.ndarray) -> bool:
    return bool(box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3])


def _in_frame_fraction(c: Candidate, w: int, h: int) -> float:
    """Fraction of the landmarks inside the frame (a hand mirrored out by the search's border lies outside)."""
    return float(np.mean((c.uv[:, 0] >= 0) & (c.uv[:, 0] <= w) & (c.uv[:, 1] >= 0) & (c.uv[:, 1] <= h)))


def same_hand(a: Candidate, b: Candidate, iou_thr: float = 0.5, palm_frac: float = 0.35) -> bool:
    """Two candidates are one hand: boxes overlap by ``iou_thr``, or their palm centres are closer than
    ``palm_frac`` of the larger hand's size (a partial view of a hand inside a full one). Two hands
    holding one object overlap too, but their palms lie apart."""
    d = float(np.hypot(*(a.palm - b.palm)))
    return _iou(a.box, b.box) >= iou_thr or d < palm_frac * max(a.size, b.size)


def nms(cands: list[Candidate], iou_thr: float = 0.5, palm_frac: float = 0.35) -> list[Candidate]:
    """Non-maximum suppression: tracker candidates first, then the others, each by score. Two tracker
    candidates are one hand only when their palms nearly coincide (MediaPipe's tracker sometimes follows
    one hand twice; two hands on one object overlap, but their palms lie apart)."""
    kept: list[Candidate] = []
    for c in sorted((c for c in cands if c.source == "track"), key=lambda c: -c.score):
        if not any(same_hand(c, k, iou_thr=2.0, palm_frac=palm_frac) for k in kept):
            kept.append(c)
    for c in sorted((c for c in cands if c.source != "track"), key=lambda c: -c.score):
        if not any(same_hand(c, k, iou_thr, palm_frac) for k in kept):
            kept.append(c)
    return kept


def warp_square(img: np.ndarray, cx: float, cy: float, side: float, angle: float, out_px: int,
                border: int) -> tuple[np.ndarray, Callable[[Candidate], Candidate]]:
    """A square of ``side`` px of ``img`` centred at (cx, cy) (corner-origin px), rotated by ``angle`` degrees
    (cv2's sense: counter-clockwise as displayed), resampled to ``out_px`` x ``out_px``; outside the image is
    filled by cv2 ``border``. Returns the square and a function taking a Candidate found in it back to
    ``img``'s pixels (landmarks by the inverse warp, world joints turned back by -angle)."""
    import cv2

    k = out_px / float(side)
    lin = cv2.getRotationMatrix2D((0.0, 0.0), float(angle), k)[:, :2]
    # image corner-origin p -> square corner-origin lin (p - c) + out_px / 2; cv2 warps pixel-index coordinates
    t = out_px / 2.0 - lin @ np.array([cx, cy])
    m_idx = np.hstack([lin, (t + lin @ np.array([0.5, 0.5]) - 0.5)[:, None]])
    sq = cv2.warpAffine(img, m_idx, (out_px, out_px), flags=cv2.INTER_LINEAR, borderMode=border)
    inv = np.linalg.inv(lin)
    rot = inv * k  # the pure rotation back (world joints: hand-centred, camera-aligned axes)

    def back(c: Candidate) -> Candidate:
        uv = ((c.uv.astype(np.float64) - t) @ inv.T).astype(np.float32)
        world = c.world.copy()
        world[:, :2] = (world[:, :2].astype(np.float64) @ rot.T).astype(np.float32)
        return Candidate(uv=uv, world=world, side=c.side, score=c.score, source=c.source, label_raw=c.label_raw)

    return sq, back


@dataclass
class SearchConfig:
    """Settings of ``HandSearch`` (see the module docstring)."""

    max_hands: int = 2
    roi_scale: float = 2.2  # re-detection crop side / hand size
    roi_min_px: int = 96  # smallest crop side (px of the frame)
    roi_reflect: bool = True  # a crop reaching past the image border is filled by mirroring, not black
    tiles: int = 2  # tiles per side (0: no tile search)
    tile_frac: float = 0.6  # tile side / frame side
    tile_pad: float = 0.2  # black border added to a tile, fraction of its longer side
    reflect_pad: float = 0.1  # the search also runs on the whole frame mirrored out by this fraction (0: off)
    search_every: int = 3  # run the search on every k-th frame that lacks hands (3: no beat with every-10th labels)
    search_max_every: int = 96  # a search that finds nothing new doubles the interval up to this (24 before #9's cost check)
    search_lite_after: int = 2  # after this many searches in a row that find nothing, in a video where no search
    # has found a hand yet, the search drops its tiles (keeps the mirror-padded frame and its upside-down copy)
    # until one finds a hand or a hand is lost (0: never; 0 before #9's cost check)
    nms_iou: float = 0.5
    min_search_score: float = 0.7  # detector score a hand found only by re-detection or search needs
    min_in_frame: float = 0.3  # ... and the fraction of its landmarks inside the frame
    vote_decay: float = 0.8  # per-frame decay of a hand's side vote
    track_match_px: float = 0.6  # palm distance (fraction of hand size) that continues a hand
    view_min_evidence: float = 3.0  # side-by-position needs this much two-hand evidence (see _assign_sides)
    follow_frames: int = 30  # a lost hand is looked for (moved by its last velocity) for up to this many frames
    follow_max_px: float = 1.0  # a followed hand found farther than this (fraction of its size) is another one
    roi_rotate: bool = True  # re-detection crops are rotated so the hand's wrist -> middle-MCP axis points up
    search_rot180: bool = True  # the search also runs on the mirror-padded frame turned upside down
    look_back: int = 30  # revisions(): a newly found hand is followed back over at most this many frames

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# a detector run: (image, origin x, origin y, scale) -> candidates in frame pixels
RunFn = Callable[[np.ndarray, float, float, float, str], list[Candidate]]


@dataclass
class HandSearch:
    """Per-video state of the search (see the module docstring). ``track`` and ``static`` are
    ``RunFn``s running the video-mode and the static-image graphs."""

    track: Callable[[np.ndarray], list[Candidate]]
    static: RunFn
    cfg: SearchConfig = field(default_factory=SearchConfig)
    stats: dict[str, list[float]] = field(default_factory=lambda: {k: [0, 0.0] for k in ("track", "roi", "tile", "look_back")})

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._view = 0.0  # > 0: the right hand is seen on the image right (egocentric), < 0: on the left (facing)
        self._frame = 0
        self._since_search = 10**9
        self._every = self.cfg.search_every
        self._empty = 0  # searches in a row that found nothing
        self._found_any = False  # a search of this video has found a hand

    def _time(self, key: str, fn: Callable[[], Any]) -> Any:
        t0 = time.process_time()
        out = fn()
        self.stats[key][0] += 1
        self.stats[key][1] += time.process_time() - t0
        return out

    def _crop_run(self, img: np.ndarray, cx: float, cy: float, side: float, source: str,
                  angle: float = 0.0, run: RunFn | None = None) -> list[Candidate]:
        """A detector run on a square crop of ``side`` px centred at (cx, cy), rotated by ``angle`` degrees
        (cv2's sense: counter-clockwise as displayed) and resampled to at least 192 px (the palm detector's
        input size); outside the frame is mirrored (``roi_reflect``) or black. Candidates come back in frame
        pixels (landmarks by the inverse warp, world joints turned back by -angle)."""
        import cv2

        h, w = img.shape[:2]
        if side < 8 or cx < -side / 2 or cy < -side / 2 or cx > w + side / 2 or cy > h + side / 2:
            return []
        out_px = int(max(192, min(round(side), 384)))
        border = cv2.BORDER_REFLECT if self.cfg.roi_reflect else cv2.BORDER_CONSTANT
        crop, back = warp_square(img, cx, cy, side, angle, out_px, border)
        return [back(c) for c in (run or self.static)(crop, 0.0, 0.0, 1.0, source)]

    def _tile_run(self, img: np.ndarray, tiles: bool = True) -> list[Candidate]:
        import cv2

        h, w = img.shape[:2]
        n = self.cfg.tiles if tiles else 0
        tw, th = int(round(w * self.cfg.tile_frac)), int(round(h * self.cfg.tile_frac))
        out: list[Candidate] = []
        if self.cfg.reflect_pad > 0:  # hands cut by the border: mirroring gives the palm detector more of them
            p = int(round(self.cfg.reflect_pad * max(w, h)))
            padded = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REFLECT)
            out += self.static(padded, float(-p), float(-p), 1.0, "tile")
            if self.cfg.search_rot180:  # hands reaching in from the top edge, fingers down, are upright here
                for c in self.static(np.ascontiguousarray(padded[::-1, ::-1]), 0.0, 0.0, 1.0, "tile"):
                    uv = (np.array([w + p, h + p], np.float32) - c.uv).astype(np.float32)
                    world = c.world * np.array([-1, -1, 1], np.float32)
                    out.append(Candidate(uv=uv, world=world, side=c.side, score=c.score, source="tile",
                                         label_raw=c.label_raw))
        if n <= 0:
            return out
        xs = np.linspace(0, w - tw, n).round().astype(int) if n > 1 else [0]
        ys = np.linspace(0, h - th, n).round().astype(int) if n > 1 else [0]
        for oy in ys:
            for ox in xs:
                p = int(round(self.cfg.tile_pad * max(tw, th)))
                tile = cv2.copyMakeBorder(img[oy:oy + th, ox:ox + tw], p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0))
                out += self.static(tile, float(ox - p), float(oy - p), 1.0, "tile")
        return out

    def _follow(self, img: np.ndarray, tr: _Track, backwards: bool = False) -> list[Candidate]:
        """Re-detection of one known hand: a crop of ``roi_scale`` times its size around its predicted
        place (its last velocity, reversed when following it back in time), rotated upright."""
        cfg = self.cfg
        c = 0.5 * (tr.box[:2] + tr.box[2:]) + (-1 if backwards else 1) * tr.vel * (tr.lost + 1)
        side = max(cfg.roi_min_px, cfg.roi_scale * tr.size)
        angle = upright_angle(tr.uv) if (cfg.roi_rotate and tr.uv is not None) else 0.0
        found = self._crop_run(img, float(c[0]), float(c[1]), side, "roi", angle)
        pp = c + (tr.palm - 0.5 * (tr.box[:2] + tr.box[2:]))  # predicted palm
        # only the hand followed: near where it should be, of about its size (not another hand or a look-alike)
        near = [(np.hypot(*(h.palm - pp)) / tr.size + abs(np.log(h.size / tr.size)), k) for k, h in enumerate(found)
                if np.hypot(*(h.palm - pp)) <= cfg.follow_max_px * tr.size and 0.5 <= h.size / tr.size <= 2.0]
        return [found[min(near)[1]]] if near else []

    def detect(self, img: np.ndarray) -> list[tuple[Candidate, str]]:
        """Hands in one frame as (candidate, side) pairs, side after voting and conflict resolution."""
        cfg = self.cfg
        cands = self._time("track", lambda: self.track(img))
        # follow hands the tracker lost: a crop around where each should be now, sized by the hand, turned upright
        for tr in self._tracks:
            pp = tr.predicted_palm()
            if any((not tr.lost and _iou(c.box, tr.box) >= cfg.nms_iou)
                   or np.hypot(*(c.palm - pp)) <= cfg.track_match_px * max(tr.size, c.size) for c in cands):
                continue
            cands += self._time("roi", lambda: self._follow(img, tr))
        merged = nms(cands, cfg.nms_iou)
        if len(merged) < sum(t.lost == 0 for t in self._tracks):  # a hand was lost: search soon again
            self._every = cfg.search_every
            self._empty = 0
        self._since_search += 1
        searching = cfg.tiles > 0 or cfg.reflect_pad > 0
        if searching and len(merged) < cfg.max_hands and self._since_search >= self._every:
            self._since_search = 0
            n_before = len(merged)
            lite = (cfg.search_lite_after > 0 and self._empty >= cfg.search_lite_after and not self._found_any
                    and cfg.reflect_pad > 0)
            merged = nms(merged + self._time("tile", lambda: self._tile_run(img, tiles=not lite)), cfg.nms_iou)
            # back off while the search finds nothing (one-hand videos), back to the base rate when it does
            found = len(merged) > n_before
            self._empty = 0 if found else self._empty + 1
            self._found_any = self._found_any or found
            self._every = cfg.search_every if found else min(2 * self._every, cfg.search_max_every)
        h, w = img.shape[:2]
        merged = [c for c in merged if c.source == "track"
                  or (c.score >= cfg.min_search_score and _in_frame_fraction(c, w, h) >= cfg.min_in_frame)]
        merged = sorted(merged, key=lambda c: -c.score)[: cfg.max_hands]
        out = self._assign_sides(merged)
        self._frame += 1
        return out

    def _assign_sides(self, hands: list[Candidate]) -> list[tuple[Candidate, str]]:
        cfg = self.cfg
        new_tracks: list[_Track] = []
        used: set[int] = set()
        for c in hands:
            best, best_d = None, None
            for k, tr in enumerate(self._tracks):
                if k in used:
                    continue
                d = float(np.hypot(*(c.palm - tr.predicted_palm()))) / max(tr.size, c.size)
                if ((d <= cfg.track_match_px or (not tr.lost and _iou(c.box, tr.box) >= cfg.nms_iou))
                        and (best_d is None or d < best_d)):
                    best, best_d = k, d
            prior, vel = 0.0, np.zeros(2)
            if best is not None:
                used.add(best)
                old = self._tracks[best]
                prior = old.vote * cfg.vote_decay
                vel = (c.palm - old.palm) / (old.lost + 1)
                vel = vel * min(1.0, 0.5 * c.size / max(float(np.hypot(*vel)), 1e-6))  # at most half a hand per frame
            vote = prior + (c.score if c.side == "right" else -c.score)
            new_tracks.append(_Track(c.box, c.palm, c.size, vote, uv=c.uv.copy(), vel=vel))
        sides = ["right" if t.vote > 0 else "left" for t in new_tracks]
        if len(hands) == 2:
            # which image side the right hand is on, learnt from frames where the detector tells the two apart
            dx = float(hands[1].palm[0] - hands[0].palm[0])
            apart = abs(dx) > 0.5 * max(hands[0].size, hands[1].size)
            if apart and hands[0].side != hands[1].side:
                right_x = 1.0 if (hands[1].side == "right") == (dx > 0) else -1.0
                self._view += right_x * min(hands[0].score, hands[1].score)
            if apart and abs(self._view) >= cfg.view_min_evidence:
                # two hands side by side: the learnt view decides (the detector's labels flip on blurred hands)
                right_first = (dx < 0) == (self._view > 0)
                sides = ["right", "left"] if right_first else ["left", "right"]
            elif sides[0] == sides[1]:
                weak = int(np.argmin([abs(t.vote) for t in new_tracks]))
                sides[weak] = "left" if sides[weak] == "right" else "right"
            for t, sd in zip(new_tracks, sides):  # the track's vote follows the decision
                if (t.vote > 0) != (sd == "right"):
                    t.vote = -t.vote
        # hands not seen in this frame are followed for up to follow_frames more (at most max_hands tracks in all)
        lost = [t for k, t in enumerate(self._tracks) if k not in used and t.lost + 1 < cfg.follow_frames]
        for t in sorted(lost, key=lambda t: t.lost):
            if len(new_tracks) >= cfg.max_hands:
                break
            if any(np.hypot(*(t.palm - n.palm)) < cfg.track_match_px * max(t.size, n.size) for n in new_tracks):
                continue  # a hand seen now where the lost one was: it is that hand
            t.lost += 1
            t.vote *= cfg.vote_decay ** 0.25
            new_tracks.append(t)
        self._tracks = new_tracks
        return list(zip(hands, sides))
