#!/usr/bin/env bash
# Set up a fresh machine for VIPA: Debian packages, the .venv at the repository root, the
# `vipa` command in it. Idempotent: a second run only checks. Usage: scripts/setup.sh [--dev]
#   --dev   also the test extras (pytest, playwright, hypothesis), Ray, Meta-World, Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

dev=0
[ "${1:-}" = "--dev" ] && dev=1

apt_pkgs=(libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libgomp1)
[ "$dev" = 1 ] && apt_pkgs+=(chromium chromium-driver)
ensure_apt_packages "${apt_pkgs[@]}"

py=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $py"
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi

extras="."
[ "$dev" = 1 ] && extras=".[dev,scale,sim]"
stamp=".venv/.vipa-installed-$dev"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing vipa $extras into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q -e "$extras"
  touch "$stamp"
fi

# LIBERO lives in its own venv (numpy 1.26 / mujoco 2.3); its slow tests skip, saying why, without it.
if [ "$dev" = 1 ] && [ "${VIPA_SKIP_LIBERO:-0}" != 1 ]; then
  scripts/setup_libero.sh || echo "setup: LIBERO set-up failed; tests/test_libero.py will skip (see above)" >&2
fi
# openpi's client pins numpy<2: its own small venv (~30 s) for tests/test_openpi.py's real-client test.
if [ "$dev" = 1 ] && [ "${VIPA_SKIP_OPENPI:-0}" != 1 ]; then
  scripts/setup_openpi.sh || echo "setup: openpi-client set-up failed; its test in tests/test_openpi.py will skip" >&2
fi
# lerobot 0.4.4 (av<16, rerun<0.27): its own venv for the slow real-client check (first time ~15 min).
if [ "$dev" = 1 ] && [ "${VIPA_SKIP_LEROBOT:-0}" != 1 ]; then
  scripts/setup_lerobot.sh || echo "setup: LeRobot set-up failed; tests/test_lerobot_real.py will skip" >&2
fi
