"""MANO-regressor hand backend (HaMeR / WiLoR style) from local files: crop -> ViT -> MANO -> 21 joints.

What a user must bring (nothing is downloaded):

* ``checkpoint``: a PyTorch file (``torch.load(..., weights_only=True)``) holding the regressor's
  ``state_dict`` -- directly or under ``"state_dict"`` (a Lightning checkpoint such as HaMeR's
  ``hamer_ckpts/checkpoints/hamer.ckpt``). Keys under ``backbone.`` (the ViT) and ``mano_head.``
  (the transformer MANO head) are loaded; others (``mano.``, ``discriminator.``) are ignored.
  Every parameter of the configured model must be found with its shape, else a clear error
  names the file and the first missing keys. The architecture follows HaMeR's layout (ViT-H/16
  on a 256x192 crop, a transformer decoder head regressing 6D rotations, betas and a weak-
  perspective camera); a checkpoint with other parameter names needs a key map
  (``key_map={"their.prefix.": "backbone."}``). Exact key compatibility with the released
  HaMeR / WiLoR files could not be checked here (no such file on this machine).
* ``mano``: the MANO right-hand model, ``MANO_RIGHT.npz`` (or a folder holding it) with arrays
  ``v_template`` (778, 3), ``shapedirs`` (778, 3, 10), ``posedirs`` (778, 3, 135) or (135, 2334),
  ``J_regressor`` (16, 778) dense, ``weights`` (778, 16), ``kintree_table`` (2, 16). The official
  ``MANO_RIGHT.pkl`` (from mano.is.tue.mpg.de, licence required) is a pickle of chumpy objects;
  convert it once where chumpy is installed::

      python -c "import pickle, numpy as np, scipy.sparse as sp; d = pickle.load(open('MANO_RIGHT.pkl', 'rb'),
      encoding='latin1'); np.savez('MANO_RIGHT.npz', **{k: (d[k].toarray() if sp.issparse(d[k]) else np.asarray(d[k]))
      for k in ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights', 'kintree_table')})"

  (this module never unpickles anything).
* Hand boxes: by default from MediaPipe (the bundled detector; its side, made anatomical, tells
  which hands to mirror), or any callable ``frame -> [(side, (x0, y0, x1, y1), score), ...]``.

Conventions of the output (``annotators.hands.HandDetection``): 21 joints in the MediaPipe order
(MANO's 16 joints + the fingertip vertices 744, 320, 443, 554, 671, reordered with
``vipa.conventions.convert_joints(j, "mano", "mediapipe")``); the person's anatomical side (a left
hand is regressed as a mirrored right hand and mirrored back, as HaMeR does); camera frame OpenCV
(x right, y down, z forward, metres): the weak-perspective camera (s, tx, ty) of the crop becomes
the translation t = (tx + 2 (u_box - cx) / (b s), ty + 2 (v_box - cy) / (b s), 2 fx / (b s)) with the
real K (b: crop side in pixels), so ``landmarks_2d`` = projection of the camera-frame joints
(pixels, corner convention) and ``world_landmarks`` = those joints minus their centroid (metres,
camera axes, the person's own size from the betas). :attr:`ManoRegressorHands.last_joints_cam`
keeps the camera-frame joints of the last call.

Use from Python: ``create_hand_backend("annotators.mano_regressor:ManoRegressorHands",
checkpoint="/path/hamer.ckpt", mano="/path/mano")`` (or ``--hands`` with the same spec where the
CLI exposes it); the lift then uses the landmarks at the person's size (``annotators.lift``:
``config_for_backend("mano_regressor")``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from annotators.errors import BackendError
from annotators.hands import HandBackend, HandDetection
from vipa import geometry
from vipa.conventions import DEFAULT_FOV_DEG, convert_joints

MANO_TIP_VERTICES = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky (smplx / HaMeR)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MANO_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


@dataclass(frozen=True)
class ManoRegressorConfig:
    """Architecture of a HaMeR-style regressor (crop pixels; the camera's focal in crop units)."""

    name: str
    image_size: int = 256  # square crop side fed to the model (px)
    crop_width: int = 192  # the ViT sees the crop's central columns (HaMeR: x[..., 32:-32])
    patch_size: int = 16
    embed_dim: int = 1280
    depth: int = 32
    num_heads: int = 16
    mlp_ratio: float = 4.0
    head_dim: int = 1024
    head_depth: int = 6
    head_heads: int = 8
    num_betas: int = 10
    focal_length: float = 5000.0  # training focal (px at image_size): cam z = 2 f / (image_size * s)
    rescale: float = 2.5  # crop side = rescale * the box's longer side


CONFIGS: dict[str, ManoRegressorConfig] = {
    "hamer": ManoRegressorConfig("hamer"),
    "tiny": ManoRegressorConfig("tiny", image_size=64, crop_width=48, patch_size=16, embed_dim=32, depth=2,
                                num_heads=2, head_dim=32, head_depth=1, head_heads=2),
}


def get_config(name: str | ManoRegressorConfig) -> ManoRegressorConfig:
    if isinstance(name, ManoRegressorConfig):
        return name
    if name not in CONFIGS:
        raise BackendError("mano_regressor", f"unknown config {name!r}; known: {sorted(CONFIGS)}")
    return CONFIGS[name]


# ----------------------------------------------------------------------------------- MANO


def load_mano(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of the MANO right hand from ``MANO_RIGHT.npz`` (or a folder holding it); see the module docstring."""
    p = Path(path)
    if p.is_dir():
        p = p / "MANO_RIGHT.npz"
    if p.suffix == ".pkl":
        raise BackendError("mano_regressor", f"{p}: a pickle is never loaded here; convert it to MANO_RIGHT.npz "
                                             f"(see annotators/mano_regressor.py)")
    if not p.is_file():
        raise BackendError("mano_regressor", f"{p}: MANO model file not found (bring MANO_RIGHT.npz)")
    with np.load(p, allow_pickle=False) as z:
        missing = [k for k in MANO_KEYS if k not in z.files]
        if missing:
            raise BackendError("mano_regressor", f"{p}: missing arrays {missing}")
        d = {k: np.asarray(z[k]) for k in MANO_KEYS}
    v = d["v_template"].shape[0]
    checks = {"v_template": (v, 3), "J_regressor": (16, v), "weights": (v, 16), "kintree_table": (2, 16)}
    for k, shape in checks.items():
        if d[k].shape != shape:
            raise BackendError("mano_regressor", f"{p}: {k} has shape {d[k].shape}, expected {shape}")
    if d["shapedirs"].ndim != 3 or d["shapedirs"].shape[:2] != (v, 3):
        raise BackendError("mano_regressor", f"{p}: shapedirs has shape {d['shapedirs'].shape}, expected ({v}, 3, B)")
    pd = d["posedirs"]
    if pd.shape == (v, 3, 135):
        d["posedirs"] = pd.reshape(v * 3, 135).T
    elif pd.shape != (135, v * 3):
        raise BackendError("mano_regressor", f"{p}: posedirs has shape {pd.shape}, expected ({v}, 3, 135)")
    if v <= max(MANO_TIP_VERTICES):
        raise BackendError("mano_regressor", f"{p}: {v} vertices, the fingertip vertices need {max(MANO_TIP_VERTICES) + 1}")
    return d


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        raise BackendError("mano_regressor", f"needs torch ({exc})") from None
    return torch


def build_mano_layer(arrays: dict[str, np.ndarray]):
    """A torch MANO layer (linear blend skinning) over :func:`load_mano`'s arrays."""
    torch = _torch()
    nn = torch.nn

    class ManoLayer(nn.Module):
        """MANO: (global_orient (N, 3, 3), hand_pose (N, 15, 3, 3), betas (N, B)) -> joints (N, 21, 3) in
        MANO order (16 joints + 5 tip vertices) and vertices (N, V, 3), metres, MANO's own frame."""

        def __init__(self) -> None:
            super().__init__()
            f = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
            self.register_buffer("v_template", f(arrays["v_template"]))
            self.register_buffer("shapedirs", f(arrays["shapedirs"]))
            pd = np.asarray(arrays["posedirs"])
            if pd.ndim == 3:  # (V, 3, 135) as in the MANO file -> (135, V * 3)
                pd = pd.reshape(-1, pd.shape[2]).T
            self.register_buffer("posedirs", f(pd))
            self.register_buffer("J_regressor", f(arrays["J_regressor"]))
            self.register_buffer("lbs_weights", f(arrays["weights"]))
            parents = np.asarray(arrays["kintree_table"][0], np.int64).copy()
            parents[0] = -1
            self.parents = [int(x) for x in parents]
            self.num_betas = int(arrays["shapedirs"].shape[2])

        def forward(self, global_orient, hand_pose, betas):
            n = betas.shape[0]
            b = betas[:, : self.num_betas]
            v_shaped = self.v_template + torch.einsum("vdb,nb->nvd", self.shapedirs[:, :, : b.shape[1]], b)
            J = torch.einsum("jv,nvd->njd", self.J_regressor, v_shaped)
            R = torch.cat([global_orient.reshape(n, 1, 3, 3), hand_pose.reshape(n, 15, 3, 3)], 1)
            eye = torch.eye(3, dtype=R.dtype, device=R.device)
            pose_feat = (R[:, 1:] - eye).reshape(n, -1)
            v_posed = v_shaped + (pose_feat @ self.posedirs).reshape(n, -1, 3)
            G = [None] * 16
            for k in range(16):
                T = torch.zeros(n, 4, 4, dtype=R.dtype, device=R.device)
                T[:, :3, :3] = R[:, k]
                p = self.parents[k]
                T[:, :3, 3] = J[:, k] - (J[:, p] if p >= 0 else 0.0)
                T[:, 3, 3] = 1.0
                G[k] = T if p < 0 else G[p] @ T
            Gs = torch.stack(G, 1)  # (n, 16, 4, 4)
            joints = Gs[:, :, :3, 3]
            rest = torch.einsum("nkij,nkj->nki", Gs[:, :, :3, :3], J)
            A = Gs.clone()
            A[:, :, :3, 3] = Gs[:, :, :3, 3] - rest
            Tv = torch.einsum("vk,nkij->nvij", self.lbs_weights, A)
            verts = torch.einsum("nvij,nvj->nvi", Tv[:, :, :3, :3], v_posed) + Tv[:, :, :3, 3]
            tips = verts[:, list(MANO_TIP_VERTICES)]
            return torch.cat([joints, tips], 1), verts

    return ManoLayer()


# ------------------------------------------------------------------------------ regressor


def rot6d_to_rotmat(x):
    """(N, 6) -> (N, 3, 3): HaMeR's 6D layout (two columns of the matrix, read as x.view(3, 2))."""
    torch = _torch()
    x = x.reshape(-1, 3, 2)
    a1, a2 = x[:, :, 0], x[:, :, 1]
    b1 = torch.nn.functional.normalize(a1, dim=1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(1, keepdim=True) * b1, dim=1)
    b3 = torch.cross(b1, b2, dim=1)
    return torch.stack([b1, b2, b3], dim=-1)


def build_regressor(config: str | ManoRegressorConfig = "tiny", seed: int | None = 0):
    """The ViT + MANO-head regressor of ``config``, random weights (seeded)."""
    torch = _torch()
    nn = torch.nn
    cfg = get_config(config)
    if seed is not None:
        torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self, d: int, heads: int, mlp: float) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.norm2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, int(d * mlp)), nn.GELU(), nn.Linear(int(d * mlp), d))

        def forward(self, x):
            h = self.norm1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.grid = (cfg.image_size // cfg.patch_size, cfg.crop_width // cfg.patch_size)
            self.patch_embed = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
            self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], cfg.embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            self.blocks = nn.ModuleList([Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
            self.last_norm = nn.LayerNorm(cfg.embed_dim)

        def forward(self, x):  # (N, 3, image_size, crop_width) -> (N, tokens, embed_dim)
            x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
            for blk in self.blocks:
                x = blk(x)
            return self.last_norm(x)

    class ManoHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.context = nn.Linear(cfg.embed_dim, cfg.head_dim)
            self.query = nn.Parameter(torch.zeros(1, 1, cfg.head_dim))
            layer = nn.TransformerDecoderLayer(cfg.head_dim, cfg.head_heads, 4 * cfg.head_dim, dropout=0.0,
                                               batch_first=True)
            self.transformer = nn.TransformerDecoder(layer, cfg.head_depth)
            self.decpose = nn.Linear(cfg.head_dim, 16 * 6)
            self.decshape = nn.Linear(cfg.head_dim, cfg.num_betas)
            self.deccam = nn.Linear(cfg.head_dim, 3)
            for m in (self.decpose, self.decshape, self.deccam):
                nn.init.xavier_uniform_(m.weight, gain=0.01)
                nn.init.zeros_(m.bias)
            self.register_buffer("init_hand_pose", torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(16))
            self.register_buffer("init_betas", torch.zeros(cfg.num_betas))
            self.register_buffer("init_cam", torch.tensor([0.9, 0.0, 0.0]))

        def forward(self, tokens):
            ctx = self.context(tokens)
            q = self.query.expand(tokens.shape[0], -1, -1)
            h = self.transformer(q, ctx)[:, 0]
            pose6d = self.init_hand_pose + self.decpose(h)
            R = rot6d_to_rotmat(pose6d.reshape(-1, 6)).reshape(-1, 16, 3, 3)
            return {"global_orient": R[:, :1], "hand_pose": R[:, 1:], "betas": self.init_betas + self.decshape(h),
                    "cam": self.init_cam + self.deccam(h)}

    class ManoRegressor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = cfg
            self.backbone = ViT()
            self.mano_head = ManoHead()

        def forward(self, crops):  # (N, 3, image_size, image_size), ImageNet-normalised RGB
            c0 = (cfg.image_size - cfg.crop_width) // 2
            return self.mano_head(self.backbone(crops[..., c0:c0 + cfg.crop_width]))

    return ManoRegressor().eval()


def load_checkpoint(model, path: str | Path, key_map: dict[str, str] | None = None) -> None:
    """Load a regressor state_dict (or a Lightning checkpoint's ``state_dict``) into ``model``; see the module docstring."""
    torch = _torch()
    p = Path(path)
    if not p.is_file():
        raise BackendError("mano_regressor", f"{p}: checkpoint not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise BackendError("mano_regressor", f"{p}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise BackendError("mano_regressor", f"{p}: expected a state_dict (or a dict with 'state_dict')")
    for old, new in (key_map or {}).items():
        sd = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in sd.items()}
    own = model.state_dict()
    take = {k: v for k, v in sd.items() if k in own}
    missing = [k for k in own if k not in take]
    wrong = [k for k, v in take.items() if tuple(v.shape) != tuple(own[k].shape)]
    if missing or wrong:
        detail = (f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "") + (
            f" {len(wrong)} with other shapes (e.g. {wrong[0]}: {tuple(take[wrong[0]].shape)} vs "
            f"{tuple(own[wrong[0]].shape)})" if wrong else "")
        raise BackendError("mano_regressor", f"{p}: does not fit config {model.config.name!r}: {detail.strip()}")
    model.load_state_dict(take, strict=True)


# -------------------------------------------------------------------------------- geometry


def crop_box(box: Sequence[float], rescale: float) -> tuple[float, float, float]:
    """(u, v, b): centre (px, corner convention) and side (px) of the square crop around a box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(x) for x in box)
    return 0.5 * (x0 + x1), 0.5 * (y0 + y1), rescale * max(x1 - x0, y1 - y0, 1.0)


def crop_image(frame_rgb: np.ndarray, u: float, v: float, b: float, size: int, flip: bool) -> np.ndarray:
    """(size, size, 3) uint8 crop of side ``b`` px centred at (u, v), black outside; mirrored when ``flip``."""
    import cv2

    s = size / b
    # corner-convention pixel x maps to s * (x - (u - b/2)); cv2 maps pixel centres (x - 0.5)
    M = np.array([[s, 0.0, s * (0.5 - (u - b / 2)) - 0.5], [0.0, s, s * (0.5 - (v - b / 2)) - 0.5]], np.float64)
    if flip:
        M = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([M, [0.0, 0.0, 1.0]])
    return cv2.warpAffine(frame_rgb, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def camera_translation(cam: np.ndarray, u: float, v: float, b: float, K: np.ndarray) -> np.ndarray:
    """Weak-perspective crop camera (s, tx, ty) -> camera-frame translation (m) with the real K (see the module docstring)."""
    s, tx, ty = (float(c) for c in cam)
    bs = b * s if abs(b * s) > 1e-9 else 1e-9
    fx, cx, cy = float(K[0, 0]), float(K[0, 2]), float(K[1, 2])
    return np.array([tx + 2.0 * (u - cx) / bs, ty + 2.0 * (v - cy) / bs, 2.0 * fx / bs], np.float64)


# --------------------------------------------------------------------------------- backend

BoxFn = Callable[[np.ndarray], list[tuple[str, Sequence[float], float]]]


class ManoRegressorHands(HandBackend):
    """HaMeR / WiLoR-style MANO regressor as a :class:`annotators.hands.HandBackend` (see the module docstring).

    ``checkpoint`` / ``mano``: local paths (or pass built ``model`` / ``mano_layer`` objects, as the
    tests do). ``config``: a name in ``CONFIGS`` or a :class:`ManoRegressorConfig`. ``boxes``:
    ``"mediapipe"`` or a callable. ``K``: (3, 3) intrinsics of the frames; None assumes
    ``DEFAULT_FOV_DEG`` (the lift redoes the camera-frame placement with the episode's K from the
    2D and the metric landmarks, so K mostly matters for :attr:`last_joints_cam`).
    """

    name = "mano_regressor"

    def __init__(self, checkpoint: str | None = None, mano: str | None = None, *, config: str | ManoRegressorConfig = "hamer",
                 boxes: str | BoxFn = "mediapipe", K: Any = None, rescale: float | None = None, device: str = "cpu",
                 key_map: dict[str, str] | None = None, model: Any = None, mano_layer: Any = None) -> None:
        torch = _torch()
        self.config = get_config(config)
        if model is None:
            if checkpoint is None:
                raise BackendError("mano_regressor", "needs checkpoint=PATH (the regressor's weights, a local file)")
            model = build_regressor(self.config, seed=None)
            load_checkpoint(model, checkpoint, key_map)
        if mano_layer is None:
            if mano is None:
                raise BackendError("mano_regressor", "needs mano=PATH (MANO_RIGHT.npz or its folder)")
            mano_layer = build_mano_layer(load_mano(mano))
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.mano = mano_layer.to(self.device).eval()
        self.rescale = float(self.config.rescale if rescale is None else rescale)
        self.K = None if K is None else geometry.validate_intrinsics(np.asarray(K, np.float32))
        self._boxes_spec = boxes
        self._mp = None
        self.settings = {"checkpoint": None if checkpoint is None else str(checkpoint),
                         "mano": None if mano is None else str(mano), "config": self.config.name,
                         "boxes": boxes if isinstance(boxes, str) else getattr(boxes, "__name__", "callable"),
                         "rescale": self.rescale}
        self.last_joints_cam: list[np.ndarray] = []

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings}

    def _frame_K(self, h: int, w: int) -> np.ndarray:
        return self.K if self.K is not None else geometry.fov_intrinsics(w, h, DEFAULT_FOV_DEG)

    def boxes(self, frame_rgb: np.ndarray) -> list[tuple[str, Sequence[float], float]]:
        """[(anatomical side, (x0, y0, x1, y1) px, score)] of the hands in the frame."""
        if callable(self._boxes_spec):
            return list(self._boxes_spec(frame_rgb))
        if self._boxes_spec != "mediapipe":
            raise BackendError("mano_regressor", f"boxes must be 'mediapipe' or a callable, got {self._boxes_spec!r}")
        if self._mp is None:
            from annotators.hands import MediaPipeHands

            self._mp = MediaPipeHands()
        out = []
        for d in self._mp.detect(frame_rgb):
            uv = d.landmarks_2d
            out.append((d.side, (*uv.min(0), *uv.max(0)), d.score))
        return out

    def regress(self, frame_rgb: np.ndarray, boxes: list[tuple[str, Sequence[float], float]]) -> list[dict]:
        """Per box: MANO-order camera-frame joints (21, 3) m and the raw outputs (see the module docstring)."""
        torch = _torch()
        if not boxes:
            return []
        h, w = frame_rgb.shape[:2]
        K = self._frame_K(h, w)
        size = self.config.image_size
        crops, geo = [], []
        for side, box, score in boxes:
            if side not in ("left", "right"):
                raise BackendError("mano_regressor", f"box side must be 'left' or 'right', got {side!r}")
            u, v, b = crop_box(box, self.rescale)
            crops.append(crop_image(frame_rgb, u, v, b, size, flip=side == "left"))
            geo.append((side, u, v, b, float(score)))
        x = torch.as_tensor(np.stack(crops), dtype=torch.float32, device=self.device).permute(0, 3, 1, 2) / 255.0
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        with torch.no_grad():
            out = self.model((x - mean) / std)
            joints, _ = self.mano(out["global_orient"], out["hand_pose"], out["betas"])
        joints = joints.cpu().numpy().astype(np.float64)
        cams = out["cam"].cpu().numpy().astype(np.float64)
        res = []
        for i, (side, u, v, b, score) in enumerate(geo):
            j, cam = joints[i].copy(), cams[i].copy()
            if side == "left":  # regressed as a mirrored right hand: mirror back
                j[:, 0] *= -1.0
                cam[1] *= -1.0
            t = camera_translation(cam, u, v, b, K)
            res.append({"side": side, "score": score, "joints_mano": j, "joints_cam": j + t, "cam": cam,
                        "betas": out["betas"][i].cpu().numpy()})
        return res

    def detect(self, frame_rgb: np.ndarray) -> list[HandDetection]:
        from annotators.hands import _check_frame

        img = _check_frame(frame_rgb)
        h, w = img.shape[:2]
        K = self._frame_K(h, w)
        dets, self.last_joints_cam = [], []
        for r in self.regress(img, self.boxes(img)):
            jc = convert_joints(r["joints_cam"], "mano", "mediapipe").astype(np.float32)
            if not (np.isfinite(jc).all() and (jc[:, 2] > 0).all()):
                continue
            uv = geometry.project(jc, K).astype(np.float32)
            inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w) & (uv[:, 1] >= 0) & (uv[:, 1] <= h)
            conf = np.where(inside, r["score"], 0.3 * r["score"]).astype(np.float32)
            dets.append(HandDetection(side=r["side"], landmarks_2d=uv, world_landmarks=(jc - jc.mean(0)).astype(np.float32),
                                      confidence=conf, score=r["score"], in_frame=inside, label_raw=r["side"]))
            self.last_joints_cam.append(jc)
        return dets

    def close(self) -> None:
        if self._mp is not None:
            self._mp.close()
            self._mp = None
