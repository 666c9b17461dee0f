"""The project-trained text tokenizer (byte-level BPE, ``tokenizers``) with motion tokens.

Motion tokens: one set per axis, ``MOTION_BINS`` (1024) each, so a waypoint is exactly the three
tokens ``<mx_i> <my_j> <mz_k>`` and constrained decoding only has to allow the right axis's
range at each position. Token strings and binning are ``vipa.data.motion.MotionTokenizer``'s: the camera-frame wrist
clipped to x, y in [-0.5, 0.5] m and z in [0, 1] m, uniform bins, decoded to bin centres.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from vipa.conventions import MOTION_BINS
from vipa.data.motion import MotionTokenizer

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
AXES = "xyz"

# Words the tokenizer always learns even when the training text is small.
SEED_TEXT = (
    "left right up down forward backward and , m 0 1 2 3 4 5 6 7 8 9 . degrees around axis "
    "Where is the relative to hand ? How should move to Predict wrist motion Describe this "
    "Past Predict the next pick up put place push grasp reach move cube ball cup bowl box block "
    "red green blue yellow orange purple left right hand camera rotate translate",
)


_MT = MotionTokenizer()


def motion_token(axis: int, b: int) -> str:
    return _MT.token(axis, b)


def all_motion_tokens() -> list[str]:
    return list(_MT.token_strings)


def quantize(xyz: np.ndarray) -> np.ndarray:
    """(..., 3) metres camera frame -> (..., 3) int64 bins (clipped to MOTION_RANGE silently)."""
    return _MT.encode(xyz, return_clipped=True)[0]


def dequantize(bins: np.ndarray) -> np.ndarray:
    """(..., 3) bins -> (..., 3) float32 metres (bin centres)."""
    return _MT.decode(np.asarray(bins, np.int64))


def _read_tokenizer(path: Path, what: str) -> Tokenizer:
    """A tokenizers JSON file, with FileNotFoundError / ValueError naming ``what`` and the path."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"tokenizer {path}: unreadable ({exc})") from exc


class VIPATokenizer:
    """Wraps a ``tokenizers.Tokenizer``; knows the motion-token id ranges."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        for s in SPECIALS:
            if tok.token_to_id(s) is None:
                raise ValueError(f"tokenizer: special token {s} missing")
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (tok.token_to_id(s) for s in SPECIALS)
        first = tok.token_to_id(motion_token(0, 0))
        if first is None:
            raise ValueError("tokenizer: motion tokens missing")
        self.motion_start = [tok.token_to_id(motion_token(a, 0)) for a in range(3)]
        for a in range(3):
            last = tok.token_to_id(motion_token(a, MOTION_BINS - 1))
            if last != self.motion_start[a] + MOTION_BINS - 1:
                raise ValueError(f"tokenizer: motion tokens of axis {AXES[a]} are not contiguous")

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 640, digits: bool = False) -> "VIPATokenizer":
        """Train a byte-level BPE on the project's own text; add specials and motion tokens.
        ``digits``: split every digit off first, so no token holds two digits (the saved tokenizer
        keeps the rule: a loaded one tokenizes as it was trained)."""
        tok = Tokenizer(models.BPE(unk_token=UNK))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                             if digits else byte_level)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(list(SEED_TEXT) + list(texts), trainer=trainer)
        tok.add_special_tokens(all_motion_tokens())
        return cls(tok)

    @classmethod
    def from_pretrained_folder(cls, folder: str | Path) -> "VIPATokenizer":
        """A pretrained VLM's fast tokenizer (``folder/tokenizer.json``, local) with VIPA's specials
        (those it lacks) and the 3 x 1024 motion tokens added as new tokens; the model's embeddings
        are resized to ``vocab_size`` (``VIPAModel`` does it)."""
        tok = _read_tokenizer(Path(folder) / "tokenizer.json", "pretrained tokenizer (the VLM's fast tokenizer)")
        if tok.token_to_id(motion_token(0, 0)) is None:
            tok.add_special_tokens([s for s in SPECIALS if tok.token_to_id(s) is None])
            tok.add_special_tokens(all_motion_tokens())
        return cls(tok)

    @classmethod
    def for_config(cls, cfg, texts: Iterable[str]) -> "VIPATokenizer":
        """The tokenizer a run of ``cfg`` (a VIPAConfig) uses: the pretrained VLM's (``paper``)
        or one trained on ``texts`` (tiny/small)."""
        if cfg.model.vlm_path:
            return cls.from_pretrained_folder(cfg.model.vlm_path)
        return cls.train(texts, cfg.model.tokenizer_vocab, digits=cfg.model.digit_tokens)

    @classmethod
    def load(cls, path: str | Path) -> "VIPATokenizer":
        return cls(_read_tokenizer(Path(path), "tokenizer file"))

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (self.pad_id, self.bos_id, self.eos_id)]
        return self.tok.decode(ids, skip_special_tokens=False).strip()

    def motion_ids(self, xyz: np.ndarray) -> list[int]:
        """(N, 3) waypoints (metres, camera frame) -> 3N token ids x, y, z per waypoint."""
        bins = quantize(np.asarray(xyz).reshape(-1, 3))
        return [int(self.motion_start[a] + b[a]) for b in bins for a in range(3)]

    def motion_text(self, xyz: np.ndarray) -> str:
        return "".join(self.tok.id_to_token(i) for i in self.motion_ids(xyz))

    def ids_to_waypoints(self, ids: Iterable[int]) -> np.ndarray:
        """Token ids (a multiple of 3, in x, y, z order) -> (N, 3) float32 metres."""
        ids = list(ids)
        if len(ids) % 3:
            raise ValueError(f"motion ids: {len(ids)} is not a multiple of 3")
        bins = np.zeros((len(ids) // 3, 3), np.int64)
        for k, i in enumerate(ids):
            a = k % 3
            b = i - self.motion_start[a]
            if not 0 <= b < MOTION_BINS:
                raise ValueError(f"motion ids: id {i} at position {k} is not a {AXES[a]} motion token")
            bins[k // 3, a] = b
        return dequantize(bins)

    def is_motion(self, i: int) -> bool:
        return self.motion_start[0] <= i < self.motion_start[2] + MOTION_BINS
