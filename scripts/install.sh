#!/usr/bin/env bash
# Installs aocu into ./.venv on Debian 12. With --test, also the test toolchain: Debian's emscripten and
# wabt, QEMU/OVMF for the image tests, and the node peers (aoconnect, arbundles, binaryen) under tests/peers.
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

pkgs=(build-essential python3-venv python3-dev libssl-dev libzstd-dev)
if [ "$want_test" = 1 ]; then
  pkgs+=(emscripten wabt qemu-system-x86 ovmf cpio zstd debootstrap kmod curl)
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
