"""Installed into .venv-lerobot by scripts/setup_lerobot.sh only when `import torchvision` fails there.

PyPI's torchvision wheels for Linux are CUDA builds: next to the CPU torch (the project's torch==2.13.0)
their compiled ops cannot load, and `import torchvision` then fails registering fake kernels for
torchvision::nms and torchvision::qnms ("operator torchvision::nms does not exist"). This defines those
two operator schemas (without kernels) just before torchvision is first imported, so its pure-Python
parts (models, transforms, io) import; nms and the roi ops stay unavailable, and LeRobot's dataset and
diffusion policy do not use them.
"""

import importlib.abc
import sys

_libs: list = []


class _DefineTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _libs.append(lib)
        return None  # the normal import goes on


sys.meta_path.insert(0, _DefineTorchvisionOps())
