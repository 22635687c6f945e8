#!/usr/bin/env bash
# Installs aocu into ./.venv on Debian 12, with the wheel-building tools images/build.sh uses (pybind11,
# setuptools, wheel: pyproject.toml's build requirements). With --image, also the tools images/build.sh runs
# (debootstrap, cpio, zstd, kmod, git) and the edk2 toolchain of images/firmware.sh (nasm, acpica-tools,
# uuid-dev). With --test, also the test toolchain: Debian's emscripten and wabt,
# QEMU/OVMF for the image tests, and the node peers (aoconnect, arbundles, binaryen) under tests/peers.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
want_image=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1; want_image=1 ;;
    --image) want_image=1 ;;
    *) echo "usage: scripts/install.sh [--image] [--test]" >&2; exit 2 ;;
  esac
done
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

pkgs=(build-essential python3-venv python3-dev libssl-dev libsodium-dev libzstd-dev)
if [ "$want_image" = 1 ]; then pkgs+=(debootstrap cpio zstd kmod git); fi
# images/firmware.sh (build.sh --firmware): edk2's toolchain; the compiler comes with build-essential
if [ "$want_image" = 1 ]; then pkgs+=(nasm acpica-tools uuid-dev dpkg-dev xz-utils patch); fi
if [ "$want_test" = 1 ]; then
  pkgs+=(emscripten wabt qemu-system-x86 ovmf cpio zstd debootstrap kmod curl chromium)  # chromium: status page test
  pkgs+=(postgresql)  # tests/pg.py starts a private server for the --store postgresql:// tests
  command -v npm >/dev/null || pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[install] apt: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# the build requirements of pyproject.toml: images/build.sh builds the aocu wheel with --no-build-isolation
mapfile -t build_reqs < <(.venv/bin/python -c \
  'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
echo "[install] pip: build tools (${build_reqs[*]})"
.venv/bin/pip install -q "${build_reqs[@]}"
if [ "$want_test" = 1 ]; then
  echo "[install] pip: aocu[test] (builds the native core)"
  .venv/bin/pip install -q -e ".[test]"
  # The test suite imports the in-tree extension; build it in place as well.
  .venv/bin/python setup.py -q build_ext --inplace >/dev/null
  if [ -f tests/peers/package.json ]; then
    echo "[install] npm: tests/peers"
    (cd tests/peers && npm ci --no-audit --no-fund --loglevel=error)
  fi
else
  echo "[install] pip: aocu (builds the native core)"
  .venv/bin/pip install -q .
fi
echo "[install] done: .venv/bin/aocu"
