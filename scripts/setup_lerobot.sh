#!/usr/bin/env bash
# Set up the real LeRobot client for scripts/check_lerobot.py in its own venv, .venv-lerobot at the
# repository root (or $VIPA_LEROBOT_VENV): lerobot pins av<16, rerun-sdk<0.27 and torch<2.11, which cannot
# share the project's .venv.
# lerobot 0.4.4 is the newest release that installs on Python 3.11. Its torch cap (<2.11) would pull a
# multi-GB CUDA build from PyPI, so torch is pinned to the project's CPU build (torch==2.13.0, as in
# pyproject.toml) and lerobot is installed without its torch/torchvision/torchcodec pins. LeRobot decodes
# video with torchcodec (its "pyav" backend needs torchvision.io.VideoReader, gone from torchvision 0.28):
# torchcodec 0.13.0 is the release built for torch 2.13 and loads Debian's FFmpeg 5 libraries.
# Idempotent: a second run only checks. Usage: scripts/setup_lerobot.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
venv="${VIPA_LEROBOT_VENV:-.venv-lerobot}"

py=$(command -v python3.11 || true)
if [ -z "$py" ]; then
  echo "setup_lerobot: python3.11 not found (lerobot 0.4.4 is installed and tested with 3.11)" >&2
  exit 1
fi
stamp="$venv/.vipa-lerobot-installed"
if [ -f "$stamp" ] && [ ! "$0" -nt "$stamp" ]; then
  echo "setup_lerobot: ready ($venv/bin/python)"
  exit 0
fi
t0=$(date +%s)
ensure_apt_packages libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8
if [ ! -x "$venv/bin/python" ]; then
  echo "setup_lerobot: creating $venv with $py"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=("$venv/bin/python" -m pip install -q)
# torch first, at the project's pin (a CPU build); torchvision of the same release line.
"${pip[@]}" "torch==2.13.0" "torchvision==0.28.0"
"${pip[@]}" --no-deps "lerobot==0.4.4" "torchcodec==0.13.0"
# lerobot 0.4.4's requirements (its METADATA) without torch, torchvision and torchcodec, plus what
# LeRobotDataset, lerobot-train (diffusion policy) and this check use.
"${pip[@]}" "torch==2.13.0" "torchvision==0.28.0" \
  "datasets>=4.0.0,<5.0.0" "diffusers>=0.27.2,<0.36.0" "huggingface-hub[cli]>=0.34.2,<0.36.0" \
  "accelerate>=1.10.0,<2.0.0" "setuptools>=71.0.0,<81.0.0" "einops>=0.8.0,<0.9.0" \
  "opencv-python-headless>=4.9.0,<4.13.0" "av>=15.0.0,<16.0.0" "jsonlines>=4.0.0,<5.0.0" \
  "packaging>=24.2,<26.0" "draccus==0.10.0" "gymnasium>=1.1.1,<2.0.0" "deepdiff>=7.0.1,<9.0.0" \
  "imageio[ffmpeg]>=2.34.0,<3.0.0" "termcolor>=2.4.0,<4.0.0" "wandb>=0.24.0,<0.25.0" \
  "pynput>=1.7.7,<1.9.0" "pyserial>=3.5,<4.0" "rerun-sdk>=0.24.0,<0.27.0" "lerobot-doctor==0.2.0"
# PyPI's torchvision for Linux is a CUDA build; beside the CPU torch its ops cannot load and its import
# fails: a small import hook (scripts/lerobot/_vipa_torchvision_shim.py) lets its Python parts load.
if ! "$venv/bin/python" -c "import torchvision" 2>/dev/null; then
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  cp scripts/lerobot/_vipa_torchvision_shim.py "$site/"
  echo "import _vipa_torchvision_shim" > "$site/_vipa_torchvision_shim.pth"
fi
"$venv/bin/python" -c "import lerobot, torch, torchcodec.decoders; from lerobot.datasets.lerobot_dataset import LeRobotDataset; print('lerobot', lerobot.__version__, 'torch', torch.__version__, 'torchcodec', torchcodec.__version__)"
touch "$stamp"
echo "setup_lerobot: ready ($venv/bin/python) in $(( $(date +%s) - t0 )) s"
