"""Hand3D-visual answer encoding (paper, section "Hand3D-visual") and Hand3D-test metrics.

All vectors are in the camera frame (OpenCV: x right, y down, z forward), metres. Direction
words follow ``vipa.conventions.AXIS_WORDS``: right/left (x), down/up (y), forward/backward (z).

Answer forms (all produced here, all parsed back here):

* direction + distance, for Hand Movement and Task Completion::

      "left and down and forward, 0.44m"

  For a displacement ``v``: distance ``|v|`` with two decimals; one word per axis whose
  component of ``v/|v|`` has absolute value strictly greater than ``gamma``, in axis order
  x, y, z, joined with " and ". A motion shorter than ``still_distance`` (5 mm) has no
  direction: ``"stationary, 0.00m"`` (its distance is still printed).
* relationship, for Spatial Relationship (position of the object relative to the hand)::

      "right and down, 0.12m, not in contact"
* camera movement, for Camera Movement (camera b relative to camera a, in camera a's frame)::

      "rotation: down, 12.5 degrees; translation: left and forward, 0.12m"

  The rotation is axis-angle with the angle in [0, 180] degrees; the axis is described by
  the same direction words (right-hand rule: a rotation about "down" turns the camera's
  forward axis towards its right, i.e. a pan to the right). A rotation below
  ``still_angle_deg`` is ``"rotation: none, 0.0 degrees"``.

Why gamma = 0.3 by default: an axis is named when the motion makes an angle of less than
about 72.5 degrees (arccos 0.3) with it, so a motion that is mostly sideways but clearly
also forward gets both words, while a few degrees of wobble off a pure axis motion does not
add a spurious word (a 10 degree tilt gives a component of 0.17). Any unit vector has a
component of at least 1/sqrt(3) = 0.577 on some axis, so with gamma < 0.577 every non-zero
motion gets at least one word. With a larger gamma, when no axis exceeds it, the dominant
axis is named, so a real motion is never answered "stationary"; "stationary" is reserved
for motions shorter than ``still_distance`` (default 5 mm: they print as 0.00m anyway).

Hand3D-test metrics: ``distance_error`` (metres, absolute difference of the distances),
``direction_score`` (0..3, one point per axis whose sign -1/0/+1 matches) and
``score_predictions`` over a list (a prediction that cannot be parsed scores 0 direction
points, is counted as a parse failure and is left out of the mean distance error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from vipa.conventions import AXIS_WORDS
from vipa.ranges import Range

DEFAULT_GAMMA = 0.3
STILL_DISTANCE = 0.005  # metres; shorter motions are "stationary"
STILL_ANGLE_DEG = 0.5  # degrees; smaller rotations are "none"
STATIONARY_WORD = "stationary"
NO_ROTATION_WORD = "none"
CONTACT_WORDS = ("in contact", "not in contact")


class AnswerParseError(ValueError):
    """A text answer does not follow the Hand3D-visual answer format."""


# ----------------------------------------------------------------------------- directions

_WORD_TO_AXIS: dict[str, tuple[int, int]] = {}
for _axis, (_pos, _neg) in enumerate(AXIS_WORDS):
    _WORD_TO_AXIS[_pos] = (_axis, 1)
    _WORD_TO_AXIS[_neg] = (_axis, -1)
    _WORD_TO_AXIS[_pos + "s"] = (_axis, 1)  # tolerate "forwards"/"backwards" style plurals
    _WORD_TO_AXIS[_neg + "s"] = (_axis, -1)

_WORD = "(?:" + "|".join(sorted(map(re.escape, _WORD_TO_AXIS), key=len, reverse=True)) + ")"
_WORDS = rf"{_WORD}(?:\s*(?:,\s*and|,|and|&|\+)\s*{_WORD})*"
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_UNIT_M = r"(?:metres|meters|metre|meter|m)\b"
_DIR_DIST = rf"(?P<dirs>{_WORDS}|{STATIONARY_WORD}|{NO_ROTATION_WORD})\s*[,:]?\s*(?P<dist>[-+]?{_NUM})\s*{_UNIT_M}"
_DIR_DIST_RE = re.compile(_DIR_DIST, re.IGNORECASE)
_CONTACT_RE = re.compile(rf"{_DIR_DIST}\s*[,;]?\s*(?P<contact>not\s+in\s+contact|in\s+contact)", re.IGNORECASE)
_CAMERA_RE = re.compile(
    rf"rotation\s*:?\s*(?P<rdirs>{_WORDS}|{NO_ROTATION_WORD}|{STATIONARY_WORD})\s*[,:]?\s*"
    rf"(?P<angle>[-+]?{_NUM})\s*(?:degrees|degree|deg|°)\s*[;,.]?\s*"
    rf"translation\s*:?\s*(?P<tdirs>{_WORDS}|{STATIONARY_WORD}|{NO_ROTATION_WORD})\s*[,:]?\s*"
    rf"(?P<dist>[-+]?{_NUM})\s*{_UNIT_M}",
    re.IGNORECASE,
)


def _as_vec3(v: Sequence[float] | np.ndarray, name: str = "v") -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != (3,):
        raise ValueError(f"{name}: expected a (3,) vector, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: must be finite, got {a.tolist()}")
    return a


# the direction threshold: an axis is named when its share of the unit displacement exceeds it
GAMMA_RANGE = Range(0.0, 1.0, below=True)


def _check_gamma(gamma: float) -> float:
    problem = GAMMA_RANGE.problem(gamma)
    if problem:
        raise ValueError(f"gamma: {problem}")
    return float(gamma)


def direction_signs(v: Sequence[float] | np.ndarray, gamma: float = DEFAULT_GAMMA,
                    still_distance: float = STILL_DISTANCE) -> np.ndarray:
    """(3,) int64 in {-1, 0, 1}: the axes named for displacement ``v`` (camera frame, metres).

    An axis gets its sign when |v_i|/|v| > gamma; when none does, the dominant axis; all zero
    when |v| < still_distance.
    """
    a = _as_vec3(v)
    gamma = _check_gamma(gamma)
    n = float(np.linalg.norm(a))
    signs = np.zeros(3, np.int64)
    if n < still_distance or n == 0.0:
        return signs
    u = a / n
    named = np.abs(u) > gamma
    if not named.any():
        named[int(np.argmax(np.abs(u)))] = True
    signs[named] = np.sign(u[named]).astype(np.int64)
    return signs


def signs_to_words(signs: Sequence[int] | np.ndarray, empty: str = STATIONARY_WORD) -> str:
    """"left and down" from (3,) signs; ``empty`` when all are zero."""
    s = np.asarray(signs)
    if s.shape != (3,) or not np.isin(s, (-1, 0, 1)).all():
        raise ValueError(f"signs: expected (3,) values in {{-1, 0, 1}}, got {s.tolist()}")
    words = [AXIS_WORDS[i][0 if s[i] > 0 else 1] for i in range(3) if s[i] != 0]
    return " and ".join(words) if words else empty


def _words_to_signs(text: str) -> np.ndarray:
    t = text.strip().lower()
    signs = np.zeros(3, np.int64)
    if t in (STATIONARY_WORD, NO_ROTATION_WORD):
        return signs
    for word in re.findall(_WORD, t, re.IGNORECASE):
        axis, sign = _WORD_TO_AXIS[word.lower()]
        if signs[axis] == -sign:
            raise AnswerParseError(f"contradictory direction words on axis {'xyz'[axis]}: {text!r}")
        signs[axis] = sign
    return signs


def _parse_distance(text: str, what: str = "distance") -> float:
    d = float(text)
    if d < 0:
        raise AnswerParseError(f"{what} must not be negative, got {text}")
    return d


def encode_direction_distance(v: Sequence[float] | np.ndarray, gamma: float = DEFAULT_GAMMA,
                              still_distance: float = STILL_DISTANCE) -> str:
    """The paper's answer for displacement ``v`` (3,) metres, camera frame: "left and up, 0.44m"."""
    a = _as_vec3(v)
    signs = direction_signs(a, gamma, still_distance)
    return f"{signs_to_words(signs)}, {float(np.linalg.norm(a)):.2f}m"


def _search_answer(pattern: re.Pattern, text: object, expected: str) -> re.Match:
    """The first match of an answer ``pattern`` in ``text``; AnswerParseError naming ``expected`` otherwise."""
    if not isinstance(text, str):
        raise AnswerParseError(f"expected a string answer, got {type(text).__name__}")
    m = pattern.search(text)
    if m is None:
        raise AnswerParseError(f"no {expected} answer found in {text!r}")
    return m


def parse_direction_distance(text: str) -> tuple[np.ndarray, float]:
    """(signs (3,) int64 in {-1,0,1}, distance metres) from a direction + distance answer.

    Case and whitespace are free, "forwards" and "," or "and" between words are accepted, and
    surrounding text is ignored (the first "<words>, <number>m" found is used). Raises
    AnswerParseError when no such answer is in ``text`` or its words contradict each other.
    """
    m = _search_answer(_DIR_DIST_RE, text, "'<direction words>, <distance>m' (e.g. 'left and down and forward, 0.44m')")
    return _words_to_signs(m.group("dirs")), _parse_distance(m.group("dist"))


# ----------------------------------------------------------------------------- relationship

def encode_relation(v: Sequence[float] | np.ndarray, in_contact: bool, gamma: float = DEFAULT_GAMMA,
                    still_distance: float = STILL_DISTANCE) -> str:
    """Spatial Relationship answer: where the object is relative to the hand.

    ``v`` = object position - hand position (camera frame, metres), e.g.
    "right and down, 0.12m, not in contact".
    """
    return f"{encode_direction_distance(v, gamma, still_distance)}, {CONTACT_WORDS[0] if in_contact else CONTACT_WORDS[1]}"


def parse_relation(text: str) -> tuple[np.ndarray, float, bool]:
    """(signs (3,), distance metres, in_contact) from a Spatial Relationship answer."""
    m = _search_answer(_CONTACT_RE, text, "'<direction words>, <distance>m, in contact|not in contact'")
    contact = not m.group("contact").lower().startswith("not")
    return _words_to_signs(m.group("dirs")), _parse_distance(m.group("dist")), contact


# ----------------------------------------------------------------------------- camera movement

@dataclass(frozen=True)
class CameraMotionAnswer:
    """A parsed Camera Movement answer (camera b relative to camera a, camera a's frame)."""

    rotation_signs: np.ndarray  # (3,) int64 direction words of the rotation axis
    angle_deg: float  # rotation angle, degrees, >= 0
    translation_signs: np.ndarray  # (3,) int64
    distance: float  # metres


def encode_camera_motion(axis: Sequence[float] | np.ndarray, angle_deg: float,
                         translation: Sequence[float] | np.ndarray, gamma: float = DEFAULT_GAMMA,
                         still_distance: float = STILL_DISTANCE,
                         still_angle_deg: float = STILL_ANGLE_DEG) -> str:
    """Camera Movement answer from axis-angle (unit-ish axis (3,), degrees) + translation (3,) m.

    A negative angle is folded into the axis; angles are reduced to [0, 180].
    """
    ax = _as_vec3(axis, "axis")
    ang = float(angle_deg)
    if not np.isfinite(ang):
        raise ValueError(f"angle_deg: must be finite, got {angle_deg!r}")
    ang = ang % 360.0
    if ang > 180.0:
        ang, ax = 360.0 - ang, -ax
    n = float(np.linalg.norm(ax))
    if ang < still_angle_deg or n == 0.0:
        rot = f"rotation: {NO_ROTATION_WORD}, 0.0 degrees"
    else:
        rsigns = direction_signs(ax / n, gamma, still_distance=0.0)
        rot = f"rotation: {signs_to_words(rsigns)}, {ang:.1f} degrees"
    return f"{rot}; translation: {encode_direction_distance(translation, gamma, still_distance)}"


def parse_camera_motion(text: str) -> CameraMotionAnswer:
    """Parse "rotation: <words>, <a> degrees; translation: <words>, <d>m"."""
    m = _search_answer(_CAMERA_RE, text,
                       "'rotation: <words>, <angle> degrees; translation: <words>, <distance>m'")
    return CameraMotionAnswer(
        rotation_signs=_words_to_signs(m.group("rdirs")),
        angle_deg=_parse_distance(m.group("angle"), "angle"),
        translation_signs=_words_to_signs(m.group("tdirs")),
        distance=_parse_distance(m.group("dist")),
    )


# ----------------------------------------------------------------------------- metrics

def direction_score(pred_signs: Sequence[int] | np.ndarray, gt_signs: Sequence[int] | np.ndarray) -> int:
    """0..3: one point per axis whose sign (-1, 0 or +1) matches the ground truth."""
    p, g = np.asarray(pred_signs), np.asarray(gt_signs)
    if p.shape != (3,) or g.shape != (3,):
        raise ValueError(f"signs: expected (3,) each, got {p.shape} and {g.shape}")
    return int(np.sum(np.sign(p) == np.sign(g)))


def distance_error(pred_text: str, gt_text: str) -> float:
    """|distance(pred) - distance(gt)| in metres (direction + distance, relationship or camera answers).

    Raises AnswerParseError when either text cannot be parsed.
    """
    return abs(parse_direction_distance(pred_text)[1] - parse_direction_distance(gt_text)[1])


@dataclass(frozen=True)
class AnswerScore:
    """Score of one prediction against its ground truth."""

    parsed: bool
    distance_error: float  # metres; NaN when the prediction did not parse
    direction_score: int  # 0..3; 0 when the prediction did not parse
    angle_error_deg: float = float("nan")  # camera answers only
    contact_correct: bool | None = None  # relationship answers only


def answer_kind(text: str) -> str:
    """"camera", "relation" or "direction": which answer form ``text`` (a ground truth) is."""
    low = text.lower()
    if "rotation" in low and "translation" in low:
        return "camera"
    if "contact" in low:
        return "relation"
    return "direction"


def score_answer(pred_text: str, gt_text: str) -> AnswerScore:
    """Score ``pred_text`` against ``gt_text``; the form of the ground truth decides the parser.

    For camera answers, distance error and direction score are those of the translation and
    ``angle_error_deg`` is |angle(pred) - angle(gt)|. The ground truth must parse (else
    AnswerParseError); a prediction that does not parse gives ``parsed=False``.
    """
    kind = answer_kind(gt_text)
    if kind == "camera":
        g = parse_camera_motion(gt_text)
        try:
            p = parse_camera_motion(pred_text)
        except AnswerParseError:
            return AnswerScore(False, float("nan"), 0)
        return AnswerScore(True, abs(p.distance - g.distance), direction_score(p.translation_signs, g.translation_signs),
                           angle_error_deg=abs(p.angle_deg - g.angle_deg))
    if kind == "relation":
        gs, gd, gc = parse_relation(gt_text)
        try:
            ps, pd, pc = parse_relation(pred_text)
        except AnswerParseError:
            try:  # a relation answer without the contact part still has a direction and distance
                ps, pd = parse_direction_distance(pred_text)
                pc = None
            except AnswerParseError:
                return AnswerScore(False, float("nan"), 0, contact_correct=False)
        return AnswerScore(True, abs(pd - gd), direction_score(ps, gs),
                           contact_correct=(pc == gc) if pc is not None else False)
    gs, gd = parse_direction_distance(gt_text)
    try:
        ps, pd = parse_direction_distance(pred_text)
    except AnswerParseError:
        return AnswerScore(False, float("nan"), 0)
    return AnswerScore(True, abs(pd - gd), direction_score(ps, gs))


@dataclass(frozen=True)
class Hand3DTestScore:
    """Hand3D-test figures over a list of predictions."""

    n: int
    mean_distance_error: float  # metres, over predictions that parsed (NaN if none did)
    mean_direction_score: float  # 0..3, over all predictions (parse failures score 0)
    parse_failures: int
    mean_angle_error_deg: float = float("nan")  # over parsed camera answers
    contact_accuracy: float = float("nan")  # over relationship answers

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def score_predictions(preds: Iterable[str], gts: Iterable[str]) -> Hand3DTestScore:
    """Mean distance error (m), mean direction score (0..3) and parse failures of ``preds``."""
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"preds and gts differ in length: {len(preds)} vs {len(gts)}")
    scores = [score_answer(p if isinstance(p, str) else "", g) for p, g in zip(preds, gts)]
    if not scores:
        raise ValueError("score_predictions: no predictions given")
    dist = [s.distance_error for s in scores if s.parsed]
    ang = [s.angle_error_deg for s in scores if s.parsed and np.isfinite(s.angle_error_deg)]
    con = [bool(s.contact_correct) for s in scores if s.contact_correct is not None]
    return Hand3DTestScore(
        n=len(scores),
        mean_distance_error=float(np.mean(dist)) if dist else float("nan"),
        mean_direction_score=float(np.mean([s.direction_score for s in scores])),
        parse_failures=sum(not s.parsed for s in scores),
        mean_angle_error_deg=float(np.mean(ang)) if ang else float("nan"),
        contact_accuracy=float(np.mean(con)) if con else float("nan"),
    )


def score_by_type(preds: Iterable[str], gts: Iterable[str], types: Iterable[str]) -> dict[str, Hand3DTestScore]:
    """``score_predictions`` per QA type (e.g. the records' "type"), plus "all"."""
    preds, gts, types = list(preds), list(gts), list(types)
    if not len(preds) == len(gts) == len(types):
        raise ValueError(f"preds, gts and types differ in length: {len(preds)}, {len(gts)}, {len(types)}")
    out = {"all": score_predictions(preds, gts)}
    for t in dict.fromkeys(types):
        sel = [i for i, x in enumerate(types) if x == t]
        out[str(t)] = score_predictions([preds[i] for i in sel], [gts[i] for i in sel])
    return out
