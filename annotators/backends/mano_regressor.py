"""Registers ``--hands mano_regressor``: a HaMeR / WiLoR-style MANO regressor from local files.

``vipa annotate clips/ --out ds --hands mano_regressor --hands-opt checkpoint=/path/hamer.ckpt
--hands-opt mano=/path/mano_dir`` (files to bring: ``annotators/mano_regressor.py``'s docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

from annotators.registry import register_hand_backend


@dataclass
class ManoRegressorOptions:
    """Options of the MANO-regressor hand backend (paths are local files; nothing is downloaded)."""

    checkpoint: str = ""  # the regressor's state_dict / Lightning checkpoint
    mano: str = ""  # MANO_RIGHT.npz or the folder holding it
    config: str = "hamer"  # architecture: a name in annotators.mano_regressor.CONFIGS
    rescale: float = 2.5  # crop side / the hand box's longer side
    device: str = "cpu"


def build(checkpoint: str = "", mano: str = "", config: str = "hamer", rescale: float = 2.5,
          device: str = "cpu"):
    """The backend (boxes from MediaPipe; see ``annotators.mano_regressor.ManoRegressorHands``)."""
    from annotators.mano_regressor import ManoRegressorHands

    return ManoRegressorHands(checkpoint=checkpoint or None, mano=mano or None, config=config, rescale=rescale,
                              device=device)


register_hand_backend("mano_regressor", build, ManoRegressorOptions,
                      description="HaMeR/WiLoR-style MANO regressor from local files "
                                  "(--hands-opt checkpoint=PATH --hands-opt mano=PATH)")
