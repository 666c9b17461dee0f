"""Hand detection on the project's hand-checked real-clip labels (samples/real_clips): the label file,
the scoring rules, the search's merge and side rules, and detection figures on labelled frames."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from annotators.errors import InputError
from annotators.eval_detection import (
    DEFAULT_LABELS,
    ClipScore,
    evaluate,
    evaluate_clip,
    load_hand_labels,
    match_frame,
    score_frame,
    total,
)
from annotators.hand_search import Candidate, HandSearch, SearchConfig, nms, same_hand
from annotators.hands import MediaPipeHands

CLIPS = ("egoloc/jar_desk", "egoloc/jar_shelf", "mediapipe_samples/hand_reach", "mediapipe_samples/typing",
         "sam2_gallery/02_cups", "sam2_gallery/03_blocks", "sam2_gallery/04_coffee")


def test_labels_cover_every_10th_frame_of_every_clip():
    labels = load_hand_labels()
    assert sorted(labels) == sorted(CLIPS)
    for name, c in labels.items():
        with av.open(str(DEFAULT_LABELS.parent / c["file"])) as cont:
            st = cont.streams.video[0]
            assert (st.codec_context.width, st.codec_context.height) == c["size"], name
            n = sum(1 for _ in cont.decode(video=0))
        assert n == c["n_frames"], name
        assert sorted(c["frames"]) == list(range(0, n, 10)), name
        assert any(h for h in c["frames"].values()), name
    two_hand = [n for n, c in labels.items() if any(len([h for h in v if not h["partial"]]) == 2 for v in c["frames"].values())]
    assert len(two_hand) >= 4  # jar_desk, typing, cups, blocks, coffee show two hands at once
    for name in CLIPS:  # each clip keeps its attribution and licence beside it
        assert (DEFAULT_LABELS.parent / name.split("/")[0] / "LICENSE").is_file()
    assert (DEFAULT_LABELS.parent / "LABELS.md").is_file() and (DEFAULT_LABELS.parent / "SOURCE.md").is_file()


def test_bad_label_file_is_named(tmp_path):
    doc = json.loads(DEFAULT_LABELS.read_text())
    doc["clips"]["egoloc/jar_desk"]["frames"]["0"][0]["box"] = [0, 0, 9999, 10]
    p = tmp_path / "labels.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"clips\.egoloc/jar_desk: frames\.0\[0\]\.box"):
        load_hand_labels(p)
    p.write_text("{}")
    with pytest.raises(InputError, match="format"):
        load_hand_labels(p)


def _lab(side, box, partial=False):
    return {"side": side, "box": [float(v) for v in box], "partial": partial}


def _det(side, box, centre=None):
    box = np.asarray(box, float)
    c = 0.5 * (box[:2] + box[2:]) if centre is None else np.asarray(centre, float)
    return side, box, c


def test_scoring_rules():
    labels = [_lab("right", [100, 100, 200, 220]), _lab("left", [300, 100, 400, 220]),
              _lab("left", [500, 10, 520, 30]),  # 20 px: too small to count
              _lab("right", [600, 0, 700, 40], partial=True)]
    dets = [_det("right", [105, 95, 210, 230]),  # IoU match, side right
            _det("right", [250, 50, 500, 400], centre=[350, 160]),  # IoU < 0.3 but the palm is inside: match, wrong side
            _det("left", [600, 0, 690, 35]),  # on a partial hand: not false, not counted
            _det("left", [800, 300, 900, 400])]  # nothing there: false
    assert sorted(match_frame(dets, labels)) == [(0, 0), (1, 1), (2, 3)]
    s = ClipScore("x")
    score_frame(s, 0, dets, labels)
    score_frame(s, 10, [], labels)
    assert (s.frames, s.hands, s.found, s.side_ok, s.false_hands, s.false_frames) == (2, 4, 2, 1, 1, 1)
    assert s.recall == 0.5 and s.side_rate == 0.5 and s.false_rate == 0.5
    assert s.misses == [(10, "right"), (10, "left")]
    t = total([s, s])
    assert (t.hands, t.found, t.frames) == (8, 4, 4)


def _cand(x0, y0, size, side="right", score=0.9, source="track"):
    """A hand-like candidate: wrist at the bottom centre, fingers up, in a size x size box."""
    u = np.linspace(x0, x0 + size, 21)
    v = np.linspace(y0 + size, y0, 21)
    uv = np.stack([u, v], 1).astype(np.float32)
    uv[[0, 5, 9, 13, 17]] = [[x0 + size / 2, y0 + size * 0.7]] * 5  # the palm at the same place
    return Candidate(uv=uv, world=np.zeros((21, 3), np.float32), side=side, score=score, source=source)


def test_nms_keeps_two_hands_on_one_object_and_drops_duplicates():
    a = _cand(100, 100, 100)
    b = _cand(150, 110, 100, side="left", score=0.8)  # overlapping box, palm 50 px away: another hand
    dup = _cand(110, 105, 90, source="tile", score=0.99)  # the same hand seen in a tile
    assert not same_hand(a, b) and same_hand(a, dup)
    b_tile = _cand(150, 110, 100, side="left", source="tile")
    assert [id(k) for k in nms([a, dup, b_tile])] == [id(a), id(b_tile)]  # the tracker's a wins over its duplicate
    assert [id(k) for k in nms([b, a])] == [id(a), id(b)]  # two tracked hands on one object: both kept
    track_dup = _cand(104, 102, 96, score=0.5)  # the tracker following hand a twice
    assert [id(k) for k in nms([track_dup, a, b])] == [id(a), id(b)]


def test_side_vote_and_conflict():
    frames = [[_cand(100, 100, 80, "right", 0.9), _cand(400, 100, 80, "left", 0.9)],
              [_cand(102, 100, 80, "left", 0.6), _cand(402, 100, 80, "left", 0.9)],  # one mislabelled frame
              [_cand(104, 100, 80, "right", 0.9), _cand(404, 100, 80, "right", 0.9)]]  # both say right
    it = iter(frames)
    search = HandSearch(track=lambda img: next(it), static=lambda *a: [], cfg=SearchConfig(tiles=0, reflect_pad=0))
    img = np.zeros((300, 600, 3), np.uint8)
    sides = [[s for c, s in sorted(search.detect(img), key=lambda cs: cs[0].palm[0])] for _ in frames]
    assert sides == [["right", "left"]] * 3


def _subset(clip: str, frames: list[int]) -> dict:
    c = dict(load_hand_labels()[clip])
    c["frames"] = {f: c["frames"][f] for f in frames}
    return c


@pytest.mark.parametrize("clip,frames", [
    ("egoloc/jar_desk", [0, 40, 80, 120, 160, 240]),  # two hands, egocentric
    ("sam2_gallery/04_coffee", [0, 20, 40, 60]),  # two hands, third person
])
def test_labelled_frames_two_clips(clip, frames):
    """Each labelled frame as an unrelated image (no tracking): the search alone finds the hands."""
    with MediaPipeHands(video_mode=False) as hands:
        s = evaluate_clip(clip, _subset(clip, frames), hands, frames="labelled")
    print(clip, s.summary())
    assert s.hands >= 2 * len(frames) - 1
    assert s.recall >= 0.95 and s.side_rate >= 0.95 and s.false_rate == 0.0


# Measured on all labelled frames (640 px, tracking on, with the look-back pass as the pipeline runs it; the same
# per-clip figures with the lighter search of #9's cost check, docs/detection_results/search_cost_real_after.json;
# docs/DETECTION_RESULTS.md, docs/detection_results/after_lookback.json): what this detector keeps per clip, at or a
# little below the measured figures.
FLOORS = {  # clip: (recall, side correct, false frames); measured: recall, side, false
    "egoloc/jar_desk": (0.95, 0.95, 0.02),  # 0.983 1.000 0.000
    "egoloc/jar_shelf": (0.75, 0.95, 0.02),  # 1.000 1.000 0.000 (4 hands: one miss is 0.75)
    "mediapipe_samples/hand_reach": (0.95, 0.95, 0.02),  # 1.000 1.000 0.000
    "mediapipe_samples/typing": (0.9, 0.95, 0.02),  # 1.000 1.000 0.000 (11 hands)
    "sam2_gallery/02_cups": (0.9, 0.9, 0.05),  # 0.944 0.961 0.033
    "sam2_gallery/03_blocks": (0.84, 0.95, 0.02),  # 0.891 1.000 0.000
    "sam2_gallery/04_coffee": (0.95, 0.95, 0.02),  # 1.000 1.000 0.000
}


@pytest.fixture(scope="module")
def all_scores():
    return {s.clip: s for s in evaluate(lambda: MediaPipeHands(video_mode=True), look_back=True)}  # as the pipeline


@pytest.mark.slow
def test_all_labelled_frames_floors(all_scores):
    for clip, (rec, side, false) in FLOORS.items():
        s = all_scores[clip]
        print(clip, f"recall {s.recall:.3f} side {s.side_rate:.3f} false frames {s.false_rate:.3f}")
        assert s.recall >= rec and s.side_rate >= side and s.false_rate <= false, clip


@pytest.mark.slow
def test_all_labelled_frames_targets(all_scores):
    """Issue #9's targets on the pooled labelled frames: measured 0.961 (224 of 233), 0.991, 0.006."""
    t = total(list(all_scores.values()))
    assert t.recall >= 0.95 and t.side_rate >= 0.95 and t.false_rate <= 0.02


def test_upright_angle_and_warp_square_round_trip():
    """The follower and look-back crops: the angle that turns a hand's wrist -> middle-MCP axis up, and the
    warp's way back (a bright pixel found in the turned square maps back onto itself in the frame; world
    joints turn back with the landmarks)."""
    import cv2

    from annotators.hand_search import upright_angle, warp_square

    uv = np.zeros((21, 2), np.float32)
    for axis, expected in (((0, -10), 0.0), ((10, 0), 90.0), ((0, 10), 180.0), ((-10, 0), -90.0)):
        uv[9] = axis
        assert upright_angle(uv) == pytest.approx(expected)
    img = np.zeros((120, 200, 3), np.uint8)
    img[80, 120] = 255  # pixel (row 80, col 120): centre (120.5, 80.5) in corner-origin px
    for angle in (0.0, 30.0, 90.0, 180.0, -135.0):
        sq, back = warp_square(img, 110.0, 70.0, 60.0, angle, 240, cv2.BORDER_CONSTANT)
        i, j = np.unravel_index(np.argmax(sq[..., 0]), sq.shape[:2])
        p = np.array([j + 0.5, i + 0.5], np.float32)
        uv = np.stack([p, p + [10, 0]] + [p] * 19).astype(np.float32)  # a 10 px "bone" along the square's x axis
        world = np.zeros((21, 3), np.float32)
        world[1] = [0.01, 0, 0.02]
        c = back(Candidate(uv=uv, world=world, side="left", score=0.9, source="roi"))
        np.testing.assert_allclose(c.uv[0], [120.5, 80.5], atol=1.0)  # 4x upsampled: within a source pixel
        bone_px = c.uv[1] - c.uv[0]
        np.testing.assert_allclose(bone_px / np.linalg.norm(bone_px), c.world[1, :2] / 0.01, atol=1e-4)
        assert c.world[1, 2] == pytest.approx(0.02) and c.side == "left" and c.score == 0.9


def test_look_back_fills_a_hand_found_late():
    """03_blocks frames 0-42: the left hand (fingers down from the top edge) is found again at frame 42 by the
    search; ``revisions`` tracks it back and fills labelled frame 40 (as labelled: the left hand, with the right)."""
    clip = "sam2_gallery/03_blocks"
    labels = load_hand_labels()[clip]
    from annotators.io import open_source

    frames = []
    with open_source(DEFAULT_LABELS.parent / labels["file"], max_width=640, max_frames=43) as src:
        frames = [f.rgb for f in src]
    with MediaPipeHands() as hands:
        dets = [hands.detect(f) for f in frames]
        revised = hands.revisions(frames, dets)
        assert hands.search_stats()["look_back"]["calls"] >= 1
    assert [len(d) for d in dets[40:43]] == [1, 1, 2]  # the tracker has the right hand; the left one appears at 42
    assert all(len(r) >= len(d) for r, d in zip(revised, dets))  # revisions add, never drop
    s = ClipScore(clip)
    sx = labels["size"][0] / frames[0].shape[1]
    from annotators.eval_detection import _to_label_px

    score_frame(s, 40, [_to_label_px(d, sx, sx, labels["size"]) for d in revised[40]], labels["frames"][40])
    assert (s.hands, s.found, s.side_ok, s.false_hands) == (2, 2, 2, 0)
    with MediaPipeHands(search=False) as plain:  # no search: no look-back either
        assert [len(r) for r in plain.revisions(frames, dets)] == [len(d) for d in dets]


def _schedule(cfg: SearchConfig, n: int, find_at: tuple[int, ...] = ()) -> list[tuple[int, int]]:
    """(frame, detector runs) of each search over ``n`` frames of a one-hand video; the search's runs find a
    second hand in the frames ``find_at`` (the tracker then loses it again at once)."""
    one = _cand(100, 100, 80)
    calls: list[tuple[int, int]] = []
    frame = [0]

    def static(img, ox, oy, scale, source):
        if source != "tile":  # a follower's crop, not the search
            return []
        if calls and calls[-1][0] == frame[0]:
            calls[-1] = (frame[0], calls[-1][1] + 1)
        else:
            calls.append((frame[0], 1))
        return [_cand(400, 100, 80, side="left", source=source)] if frame[0] in find_at and ox < 0 else []

    search = HandSearch(track=lambda img: [one], static=static, cfg=cfg)
    img = np.zeros((300, 600, 3), np.uint8)
    for frame[0] in range(n):
        search.detect(img)
    return calls


def test_search_backs_off_and_drops_its_tiles_while_it_finds_nothing():
    """One hand in view: the search runs at frames 0, 6, 18, 42, ... (the interval doubling up to
    search_max_every); each search is 2 whole-frame runs (mirror-padded, upside down) + tiles x tiles tiles;
    with search_lite_after=K, the (K+1)-th empty search in a row and those after it run the whole frame only,
    as long as no search of the video has found a hand."""
    full = SearchConfig(search_every=3, search_max_every=24, tiles=2, search_lite_after=0)  # before #9's cost check
    assert _schedule(full, 100) == [(0, 6), (6, 6), (18, 6), (42, 6), (66, 6), (90, 6)]
    lite = SearchConfig(search_every=3, search_max_every=48, tiles=2, search_lite_after=2)
    assert _schedule(lite, 200) == [(0, 6), (6, 6), (18, 2), (42, 2), (90, 2), (138, 2), (186, 2)]
    assert _schedule(SearchConfig(), 300) == [(0, 6), (6, 6), (18, 2), (42, 2), (90, 2), (186, 2), (282, 2)]  # the defaults
    # a search that finds a hand: back to the base rate and to the full search for the rest of the video (the
    # tracker loses that hand at once here: the interval backs off again, the tiles stay)
    assert _schedule(lite, 120, find_at=(42,)) == [(0, 6), (6, 6), (18, 2), (42, 2), (45, 6), (51, 6), (63, 6),
                                                   (87, 6)]
