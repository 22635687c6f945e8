#!/usr/bin/env bash
# images/build.sh [--firmware] OUTDIR — builds the aocu confidential-VM guest payload:
#   OUTDIR/vmlinuz      Debian bookworm-backports kernel (sev-guest, tdx-guest, configfs-tsm)
#   OUTDIR/initrd.img   Debian minbase rootfs + Python venv with aocu and its locked wheels, /init
#   OUTDIR/cmdline      kernel command line (part of the measured launch)
#   OUTDIR/manifest.json  inputs, versions and SHA-256 of every artifact
# With --firmware also (images/firmware.sh: AmdSev OVMF from Debian 13's edk2 source, built once and cached):
#   OUTDIR/ovmf-amdsev.fd, OUTDIR/firmware.json  the SEV-SNP firmware for measured direct boot (in the manifest)
#   OUTDIR/reference-values.json  the full SNP launch measurement (firmware + kernel/initrd/cmdline hashes) for
#     the vCPU counts in $AOCU_SNP_VCPUS (default 2) and models in $AOCU_SNP_VCPU_TYPES (default EPYC-v4),
#     comma lists: `aocu measure --payload OUTDIR`; the verifier's --policy file
# Reproducible: the same inputs (repository tree, package versions below, requirements.lock) give the same
# bytes. Downloads are cached in $AOCU_IMAGE_CACHE (default images/out/cache) and verified by hash.
#
# Environment: AOCU_TEE (default "auto": the guest uses SNP/TDX when present and otherwise serves with
# --tee none; "sim" bakes the simulated TEE into the command line, for QEMU/CI setups), AOCU_SEAL (default
# "required": the data disk is a sealed LUKS2 volume, see docs/SEALING.md; "off" mounts it as plain ext4 --
# for debugging only, and it measures differently because the policy is on the command line), PYTHON (a Python
# with pip and pyproject.toml's build requirements -- setuptools, wheel, pybind11 -- for building the aocu wheel;
# default .venv/bin/python, where scripts/install.sh puts them). Tools: `scripts/install.sh --image`.
set -euo pipefail

usage() { echo "usage: images/build.sh [--firmware] OUTDIR" >&2; exit 2; }
with_firmware=0
[ "${1:-}" = --firmware ] && { with_firmware=1; shift; }
[ $# -eq 1 ] || usage
[ "$(id -u)" -eq 0 ] || { echo "build.sh: needs root (debootstrap, chroot)" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
cache=${AOCU_IMAGE_CACHE:-$repo/images/out/cache}
PY=${PYTHON:-$repo/.venv/bin/python}
tee_mode=${AOCU_TEE:-auto}
seal_mode=${AOCU_SEAL:-required}
for tool in debootstrap chroot cpio zstd depmod modprobe dpkg-deb apt-get git; do
  command -v "$tool" >/dev/null || { echo "build.sh: '$tool' not found (scripts/install.sh --image installs it)" >&2; exit 2; }
done
[ -x "$PY" ] || { echo "build.sh: no Python at $PY: run scripts/install.sh first (or set PYTHON)" >&2; exit 2; }
"$PY" -c 'import pybind11, setuptools, wheel' 2>/dev/null || {
  echo "build.sh: $PY lacks the wheel build tools (pybind11, setuptools, wheel): run scripts/install.sh" >&2; exit 2; }
case "$tee_mode" in auto|sim|none|snp|tdx) ;; *) echo "build.sh: AOCU_TEE must be auto|sim|none|snp|tdx" >&2; exit 2 ;; esac
case "$seal_mode" in required|off) ;; *) echo "build.sh: AOCU_SEAL must be required|off" >&2; exit 2 ;; esac

# ---- pinned inputs -------------------------------------------------------------------------------------
SUITE=bookworm
MIRROR=${AOCU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KERNEL_PKG=linux-image-6.12.95+deb12-amd64
KERNEL_VER=6.12.95-1~bpo12+1
ROOTFS_PKGS=python3,python3-venv,libssl3,libsodium23,libzstd1,iproute2,kmod,e2fsprogs,ca-certificates,cryptsetup-bin
# Modules the init loads (dependencies are resolved from the kernel package's metadata); button + evdev let an
# ACPI power-off stop the node cleanly. The sealed volume needs dm-crypt + dm-integrity, the algorithms the
# kernel requests by name for authenc(hmac(sha256),xts(aes)) (AES-NI/AVX versions where the CPU has them) and
# AF_ALG, through which cryptsetup encrypts its keyslot.
SEAL_MODULES="dm_mod dm_crypt dm_integrity xts authenc aesni_intel sha256_ssse3 algif_skcipher algif_hash"
MODULES="virtio_net e1000 virtio_blk ext4 configfs tsm sev-guest tdx-guest button evdev $SEAL_MODULES"
# The seal policy is part of the measured command line: a payload that skips sealing measures differently.
CMDLINE="console=ttyS0 quiet panic=-1 aocu.tee=$tee_mode aocu.seal=$seal_mode"

SDE=$(cd "$repo" && git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH=$SDE LC_ALL=C TZ=UTC
step=0
steps=$((7 + 2 * with_firmware))
say() { step=$((step + 1)); echo "[build $step/$steps] $*" >&2; }

mkdir -p "$cache/debs" "$cache/wheels"
work=$(mktemp -d "${TMPDIR:-/tmp}/aocu-image.XXXXXX")
cleanup() {
  for m in proc sys dev; do umount "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# ---- 1. the aocu wheel from the tracked files of this repository ----------------------------------------
say "aocu wheel from $(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo 'worktree')"
mkdir -p "$work/src" "$work/self"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) |
  (cd "$repo" && xargs -0 cp --parents -t "$work/src" 2>/dev/null || true)
rm -rf "$work/src/tests" "$work/src/bench" "$work/src/images"
(cd "$work/src" && "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/self" .) >&2
self_whl=$(ls "$work/self"/aocu-*.whl)

# ---- 2. locked runtime wheels (hash-checked) ------------------------------------------------------------
say "runtime wheels from images/requirements.lock"
"$PY" -m pip download -q --only-binary=:all: --no-deps --python-version 3.11 --implementation cp \
  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 --platform any \
  --require-hashes -r "$here/requirements.lock" -d "$cache/wheels" 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$PY" - "$self_whl" "$here/requirements.lock" <<'PYEOF'
# Refuse a stale lock: every runtime requirement of the wheel must be pinned in requirements.lock.
import re, sys, zipfile
from email.parser import Parser
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    reqs = [r for r in Parser().parsestr(z.read(meta).decode()).get_all("Requires-Dist") or [] if "extra ==" not in r]
locked = {l.split("==")[0] for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")}
missing = [r for r in reqs if re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].lower().replace("_", "-") not in locked]
if missing:
    sys.exit(f"build.sh: images/requirements.lock is stale (missing {missing}); run images/lock.sh")
PYEOF

# ---- 3. Debian minbase rootfs ---------------------------------------------------------------------------
say "debootstrap $SUITE minbase (+ $ROOTFS_PKGS)"
root="$work/rootfs"
debootstrap --variant=minbase --include="$ROOTFS_PKGS" --cache-dir="$cache/debs" \
  "$SUITE" "$root" "$MIRROR" > "$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2; echo "build.sh: debootstrap failed" >&2; exit 1; }
chroot "$root" dpkg-query -W -f '${Package}=${Version}\n' | sort > "$work/packages.txt"

# ---- 4. kernel + module subset --------------------------------------------------------------------------
say "kernel $KERNEL_PKG $KERNEL_VER (bookworm-backports)"
kdeb="$cache/debs/${KERNEL_PKG}_${KERNEL_VER//:/%3a}_amd64.deb"
if [ ! -s "$kdeb" ]; then
  apt_root="$work/apt"
  mkdir -p "$apt_root/lists/partial" "$apt_root/archives/partial"
  echo "deb $MIRROR $SUITE-backports main" > "$apt_root/sources.list"
  aptopt=(-o Dir::Etc::SourceList="$apt_root/sources.list" -o Dir::Etc::SourceParts=- -o Dir::State::Lists="$apt_root/lists"
    -o Dir::Cache::Archives="$apt_root/archives" -o APT::Sandbox::User=root -o Debug::NoLocking=1)
  apt-get "${aptopt[@]}" update -qq >&2
  (cd "$cache/debs" && apt-get "${aptopt[@]}" download "$KERNEL_PKG=$KERNEL_VER" >&2) || {
    echo "build.sh: cannot fetch $KERNEL_PKG=$KERNEL_VER (mirror moved on? update KERNEL_VER)" >&2; exit 1; }
fi
kx="$work/kernel"
dpkg-deb -x "$kdeb" "$kx"
kver=$(ls "$kx/lib/modules")
cp "$kx/boot/vmlinuz-$kver" "$out/vmlinuz"
depmod -b "$kx" "$kver"
mods=$(for m in $MODULES; do modprobe -d "$kx" -S "$kver" --show-depends "$m" 2>/dev/null; done |
  awk '$1 == "insmod" {print $2}' | sort -u)
[ -n "$mods" ] || { echo "build.sh: module resolution failed" >&2; exit 1; }
for m in $mods; do
  rel=${m#"$kx"/}
  mkdir -p "$root/$(dirname "$rel")"
  cp "$m" "$root/$rel"
done
cp "$kx/lib/modules/$kver/modules.order" "$kx/lib/modules/$kver/modules.builtin"* "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"

# ---- 5. aocu venv + init --------------------------------------------------------------------------------
say "aocu venv in the rootfs"
mkdir -p "$root/tmp/wheels"
cp "$self_whl" "$root/tmp/wheels/"
while read -r line; do
  case "$line" in \#*|"") continue ;; esac
  name=${line%%==*}; rest=${line#*==}; ver=${rest%% *}
  norm=$(echo "$name" | tr '-' '_')
  cp "$cache/wheels/"$(cd "$cache/wheels" && ls | grep -i "^${norm}-${ver}-" | head -1) "$root/tmp/wheels/"
done < "$here/requirements.lock"
cp "$here/requirements.lock" "$root/tmp/wheels/requirements.lock"
chroot "$root" /usr/bin/python3 -m venv --without-pip /opt/aocu
# The host's pip installs into the guest tree (--root/--prefix): wheels are only unpacked, no package code runs.
"$PY" -m pip install -q --ignore-installed --no-index --no-deps --no-compile --require-hashes --root "$root" --prefix /opt/aocu \
  --find-links "$root/tmp/wheels" -r "$root/tmp/wheels/requirements.lock" >&2
"$PY" -m pip install -q --ignore-installed --no-index --no-deps --no-compile --root "$root" --prefix /opt/aocu "$root"/tmp/wheels/aocu-*.whl >&2
rm -rf "$root/tmp/wheels"
# pip records the temporary wheel path in direct_url.json (and its hash in RECORD): drop both, they are not
# needed at run time and would make every build differ.
for d in "$root"/opt/aocu/lib/python3*/site-packages/aocu-*.dist-info; do
  rm -f "$d/direct_url.json"
  sed -i '/direct_url\.json/d' "$d/RECORD"
done
# Console scripts were written for the host interpreter path; point them at the guest venv.
for f in "$root"/opt/aocu/bin/*; do
  [ -L "$f" ] && continue  # python symlinks point into the guest's /usr/bin; never follow them on the host
  if [ "$(head -c2 "$f")" = "#!" ]; then sed -i "1s|^#!.*|#!/opt/aocu/bin/python3|" "$f"; fi
done
install -m 0755 "$here/init" "$root/init"
# Deterministic bytecode: hash-based pycs do not embed mtimes.
chroot "$root" /usr/bin/python3 -m compileall -q -j1 --invalidation-mode unchecked-hash /opt/aocu/lib >/dev/null

# ---- 6. normalise and pack ------------------------------------------------------------------------------
say "normalise and pack initrd (cpio newc, sorted, zstd -12)"
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/ldconfig/aux-cache \
  "$root"/var/log/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/etc/machine-id \
  "$root"/etc/hostname "$root"/etc/resolv.conf "$root"/boot "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/usr/share/locale/* "$root"/usr/share/info/*
: > "$root/etc/machine-id"
find "$root" -newermt "@$SDE" -print0 | xargs -0r touch -h -d "@$SDE"
(cd "$root" && find . -mindepth 1 -print0 | sort -z |
  cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) | zstd -q -12 -T1 > "$out/initrd.img"
printf '%s' "$CMDLINE" > "$out/cmdline"

# ---- firmware (--firmware) -------------------------------------------------------------------------------
rm -f "$out/ovmf-amdsev.fd" "$out/firmware.json" "$out/reference-values.json"
if [ "$with_firmware" = 1 ]; then
  say "AmdSev firmware (images/firmware.sh; cached after the first build)"
  AOCU_IMAGE_CACHE=$cache bash "$here/firmware.sh" "$out"
fi

# ---- 7. manifest ----------------------------------------------------------------------------------------
say "manifest"
"$PY" - "$out" "$work/packages.txt" "$SDE" "$KERNEL_PKG=$KERNEL_VER" "$tee_mode" "$seal_mode" "$here/requirements.lock" \
  "$(cd "$repo" && git rev-parse HEAD 2>/dev/null || echo unknown)" <<'PYEOF'
import hashlib, json, pathlib, sys
out, pkgs, sde, kernel, tee, seal, lock, commit = sys.argv[1:]
out = pathlib.Path(out)
sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
manifest = {
    "format": "aocu-image/1",
    "inputs": {"repository_commit": commit, "source_date_epoch": int(sde), "debian_suite": "bookworm",
               "kernel_package": kernel, "tee": tee, "seal": seal,
               "requirements_lock_sha256": sha(pathlib.Path(lock)),
               "rootfs_packages": pathlib.Path(pkgs).read_text().split()},
    "artifacts": {name: {"sha256": sha(out / name), "size": (out / name).stat().st_size}
                  for name in ("vmlinuz", "initrd.img", "cmdline", "ovmf-amdsev.fd") if (out / name).exists()},
    "cmdline": (out / "cmdline").read_text(),
}
if (out / "firmware.json").exists():  # build.sh --firmware: how the firmware was built
    manifest["inputs"]["firmware"] = json.loads((out / "firmware.json").read_text())
(out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
for name, a in manifest["artifacts"].items():
    print(f"  {name:11s} {a['size']:>10d}  sha256 {a['sha256']}", file=sys.stderr)
PYEOF
if [ "$with_firmware" = 1 ]; then
  say "SNP reference values (vCPUs ${AOCU_SNP_VCPUS:-2}, models ${AOCU_SNP_VCPU_TYPES:-EPYC-v4})"
  (cd "$repo" && "$PY" -m cu.cli measure --payload "$out" --vcpus "${AOCU_SNP_VCPUS:-2}" \
    --vcpu-type "${AOCU_SNP_VCPU_TYPES:-EPYC-v4}" -o "$out/reference-values.json") >&2
fi
echo "[build] payload in $out" >&2
