#!/usr/bin/env bash
# images/qemu10.sh DEST — Debian 13's qemu-system-x86 (QEMU 10.0, which knows `sev-snp-guest`) unpacked into
# DEST for checking images/launch.sh's command lines on a Debian 12 machine; nothing is installed.
# Prints the path of DEST/bin/qemu-system-x86_64, a wrapper that runs the unpacked binary with trixie's own
# dynamic loader and libraries (the binary needs glibc >= 2.38), its own firmware/ROM directory (-L) and
# module directory, so nothing of the system's QEMU is mixed in. Use it as QEMU=... images/launch.sh ...
# The .debs (qemu-system-x86 and its Depends closure, resolved against an empty package database so every
# library comes from trixie) are fetched through images/trixie.sh (signed lists, hash-checked files) into
# DEST/debs. Done once: a DEST whose wrapper runs is reused. QEMU_VERSION pins a version (default: trixie's).
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: images/qemu10.sh DEST" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
dest=$(cd "$1" && pwd)
wrapper=$dest/bin/qemu-system-x86_64

if [ -x "$wrapper" ] && "$wrapper" --version 2>/dev/null | grep -q 'version 10\.'; then
  echo "$wrapper"
  exit 0
fi
for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "qemu10.sh: '$tool' not found" >&2; exit 2; }
done
rm -rf "$dest/root" "$dest/bin" "$dest/debs"
mkdir -p "$dest/debs/partial" "$dest/root" "$dest/bin"
: > "$dest/empty-status"
pkg=qemu-system-x86${QEMU_VERSION:+=$QEMU_VERSION}
# Without the machine's dpkg status apt resolves the whole Depends closure from trixie (no Recommends: the
# GUI/audio modules are not needed to parse options).
bash "$here/trixie.sh" apt -o Dir::State::status="$dest/empty-status" -o Dir::Cache::Archives="$dest/debs" \
  -y -qq -d --no-install-recommends install "$pkg" >&2 || { echo "qemu10.sh: cannot fetch $pkg from trixie" >&2; exit 1; }
n=0
for deb in "$dest"/debs/*.deb; do dpkg-deb -x "$deb" "$dest/root"; n=$((n + 1)); done
root=$dest/root
cat > "$wrapper" <<EOF
#!/bin/sh
# QEMU 10 from Debian 13 unpacked by images/qemu10.sh ($n packages); trixie's loader and libraries only.
QEMU_MODULE_DIR=$root/usr/lib/x86_64-linux-gnu/qemu exec $root/usr/lib64/ld-linux-x86-64.so.2 \\
  --library-path $root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu \\
  $root/usr/bin/qemu-system-x86_64 -L $root/usr/share/qemu -L $root/usr/share/seabios "\$@"
EOF
chmod +x "$wrapper"
"$wrapper" --version | head -1 >&2
echo "$wrapper"
