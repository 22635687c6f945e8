#!/usr/bin/env bash
# images/firmware.sh OUTDIR — the SEV-SNP firmware for measured direct boot:
#   OUTDIR/ovmf-amdsev.fd   OvmfPkg/AmdSev/AmdSevX64.dsc (RELEASE, GCC5) built from Debian 13's edk2 source,
#                           with the SNP_KERNEL_HASHES metadata section QEMU's kernel-hashes=on fills in
#   OUTDIR/firmware.json    inputs (source package, hashes, toolchain versions) and the firmware's SHA-256
# Pinned inputs are in images/firmware.lock: the exact Debian version and the SHA-256 of its .dsc and tarballs
# (fetched with images/trixie.sh; apt checks them against trixie's signed Sources index, this script against
# the pins). Reproducible: fixed build path ($AOCU_FIRMWARE_BUILD_DIR, default /var/tmp/aocu-edk2 -- it ends
# up in the images' debug entries: another path gave another hash), SOURCE_DATE_EPOCH from debian/changelog,
# LC_ALL=C, TZ=UTC, /usr/bin/python3, the Debian 12 toolchain (gcc, nasm, acpica-tools, uuid-dev: installed
# here when missing). With the lock's toolchain and the default path, a result other than FIRMWARE_SHA256
# fails (AOCU_FIRMWARE_ALLOW_NEW=1 keeps it); otherwise it is a warning with both hashes.
# GRUB: AmdSevX64 embeds a grub.efi (for booting an encrypted disk with an injected secret) that edk2 builds
# with the host's grub-mkimage. Debian's edk2 packaging does not build AmdSev at all; we boot only through the
# measured kernel hashes, so the grub.efi slot is left empty (a zero-byte file, as other SNP direct-boot
# projects do): no GRUB in the measured firmware, nothing to boot without -kernel, and no host tool's output
# or timestamp inside the image.
# Cached: the result is kept in $AOCU_FIRMWARE_CACHE (default $AOCU_IMAGE_CACHE/firmware, i.e.
# images/out/cache/firmware) under a key of the pinned source, RECIPE, toolchain and build path, and copied
# from there when present: it is built once, not on every image build.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: images/firmware.sh OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
lock=${AOCU_FIRMWARE_LOCK:-$here/firmware.lock}  # another lock file: tests of the pins only
# shellcheck source=firmware.lock
. "$lock"
image_cache=${AOCU_IMAGE_CACHE:-$here/out/cache}
fw_cache=${AOCU_FIRMWARE_CACHE:-$image_cache/firmware}
pinned_build_dir=/var/tmp/aocu-edk2  # the path is in the images' debug entries: another one gives other bytes
build_dir=${AOCU_FIRMWARE_BUILD_DIR:-$pinned_build_dir}
export LC_ALL=C TZ=UTC
say() { echo "[firmware] $*" >&2; }

# ---- toolchain (Debian 12 packages) ---------------------------------------------------------------------
tool_pkgs=(gcc g++ make nasm acpica-tools uuid-dev python3 dpkg-dev xz-utils patch)
missing=()
for p in "${tool_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  say "apt: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The versions that determine the bytes: compiler, assembler, ACPI compiler, binutils (linker), Python.
toolchain=$(dpkg-query -W -f '${Package}=${Version} ' gcc-12 binutils nasm acpica-tools uuid-dev python3.11 | sed 's/ $//')

# Cache key: the pinned source, the build recipe's version (bump RECIPE when the build steps below change),
# the toolchain and the build path -- everything that determines the bytes, and nothing else.
RECIPE=1
key=$(printf '%s\n' "$EDK2_VERSION" "$EDK2_DSC_SHA256" "$EDK2_ORIG_SHA256" "$EDK2_DEBIAN_SHA256" "$RECIPE" \
  "$toolchain" "$build_dir" | sha256sum | cut -c1-16)
cached="$fw_cache/$key"
if [ ! -s "$cached/ovmf-amdsev.fd" ]; then
  mkdir -p "$fw_cache" "$(dirname "$build_dir")"
  exec 9>"$build_dir.lock"
  flock 9  # one build at a time per build path (it is fixed); a waiting run then finds the result cached
fi
if [ ! -s "$cached/ovmf-amdsev.fd" ]; then
  start=$(date +%s)
  # ---- source: trixie's edk2, pinned ----------------------------------------------------------------------
  src_cache="$image_cache/edk2-src"
  upstream=${EDK2_VERSION%-*}
  orig="edk2_${upstream}.orig.tar.xz" debian="edk2_${EDK2_VERSION}.debian.tar.xz"
  pinned() { [ -s "$src_cache/$1" ] && [ "$(sha256sum "$src_cache/$1" | cut -d' ' -f1)" = "$2" ]; }
  if pinned "$orig" "$EDK2_ORIG_SHA256" && pinned "$debian" "$EDK2_DEBIAN_SHA256"; then
    say "edk2 $EDK2_VERSION source: cached in $src_cache"
  else
    say "edk2 $EDK2_VERSION source (Debian 13)"
    if ! AOCU_IMAGE_CACHE=$image_cache "$here/trixie.sh" source-only "edk2=$EDK2_VERSION" "$src_cache"; then
      # trixie's index lists only its current edk2: after an update the pinned files may still be in the pool,
      # and the pins authenticate them by themselves.
      say "edk2 $EDK2_VERSION is not in trixie's index; the pinned files from the pool"
      pool=${AOCU_DEBIAN_MIRROR:-http://deb.debian.org/debian}/pool/main/e/edk2
      for f in "$orig:$EDK2_ORIG_SHA256" "$debian:$EDK2_DEBIAN_SHA256"; do
        /usr/lib/apt/apt-helper download-file "$pool/${f%%:*}" "$src_cache/${f%%:*}" "SHA256:${f#*:}" >&2 || {
          echo "firmware.sh: ${f%%:*} is neither in trixie nor in the pool: pin a current EDK2_VERSION" >&2; exit 1; }
      done
    fi
  fi
  check() {  # check FILE SHA256: refuse anything but the pinned bytes
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$got" = "$2" ] || { echo "firmware.sh: $1 has SHA-256 $got, pinned $2 (images/firmware.lock)" >&2; exit 1; }
  }
  check "$src_cache/$orig" "$EDK2_ORIG_SHA256"
  check "$src_cache/$debian" "$EDK2_DEBIAN_SHA256"
  dsc="$src_cache/edk2_${EDK2_VERSION}.dsc"
  [ -f "$dsc" ] && check "$dsc" "$EDK2_DSC_SHA256"
  # Unpacked as dpkg-source does for 3.0 (quilt) -- upstream tarball, debian/ tarball, the series of patches --
  # into the fixed build path.
  rm -rf "$build_dir"
  mkdir -p "$build_dir"
  src="$build_dir/edk2"
  mkdir "$src"
  tar -xf "$src_cache/$orig" -C "$src" --strip-components=1
  tar -xf "$src_cache/$debian" -C "$src"
  sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$src/debian/patches/series" | while read -r p opt; do
    patch -s -d "$src" ${opt:--p1} -N -r - < "$src/debian/patches/$p" ||
      { echo "firmware.sh: patch $p failed" >&2; exit 1; }
  done
  SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Timestamp)
  export SOURCE_DATE_EPOCH
  : > "$src/OvmfPkg/AmdSev/Grub/grub.efi"
  # grub.sh (the PREBUILD step) keeps an existing grub.efi only when it is newer than grub.sh and grub.cfg.
  touch -d "@$((SOURCE_DATE_EPOCH - 1))" "$src/OvmfPkg/AmdSev/Grub/grub.sh" "$src/OvmfPkg/AmdSev/Grub/grub.cfg"
  touch -d "@$SOURCE_DATE_EPOCH" "$src/OvmfPkg/AmdSev/Grub/grub.efi"

  # ---- build ----------------------------------------------------------------------------------------------
  jobs=$(nproc)
  say "BaseTools (make -j$jobs)"
  make -s -C "$src/BaseTools" -j"$jobs" ARCH=X64 > "$build_dir/basetools.log" 2>&1 || {
    tail -30 "$build_dir/basetools.log" >&2; echo "firmware.sh: BaseTools build failed" >&2; exit 1; }
  say "AmdSevX64 RELEASE GCC5 ($toolchain)"
  (
    cd "$src"
    export PYTHON_COMMAND=/usr/bin/python3 WORKSPACE="$src" EDK_TOOLS_PATH="$src/BaseTools" PYTHONHASHSEED=0
    unset ELF_PACKAGE_METADATA  # as Debian's rules: gcc's package-metadata notes would land in the images
    set +u --  # edksetup.sh reads the positional parameters as its own options
    # shellcheck disable=SC1091
    . ./edksetup.sh > /dev/null
    set -u
    # No PCD overrides: the firmware strings keep edk2's defaults (no build date anywhere in the image).
    build -a X64 -t GCC5 -b RELEASE -n "$jobs" -p OvmfPkg/AmdSev/AmdSevX64.dsc
  ) > "$build_dir/build.log" 2>&1 || {
    tail -40 "$build_dir/build.log" >&2; echo "firmware.sh: edk2 build failed ($build_dir/build.log)" >&2; exit 1; }
  fd="$src/Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd"
  [ -s "$fd" ] || { echo "firmware.sh: build produced no $fd" >&2; exit 1; }
  seconds=$(( $(date +%s) - start ))
  mkdir -p "$cached.tmp"
  cp "$fd" "$cached.tmp/ovmf-amdsev.fd"
  /usr/bin/python3 - "$cached.tmp" "$EDK2_VERSION" "$EDK2_DSC_SHA256" "$EDK2_ORIG_SHA256" "$EDK2_DEBIAN_SHA256" \
    "$SOURCE_DATE_EPOCH" "$toolchain" "$build_dir" <<'PYEOF'
# Only what determines the bytes (no build time, no host name): the manifest that embeds this is reproducible.
import hashlib, json, pathlib, sys
d, version, dsc, orig, deb, sde, toolchain, build_dir = sys.argv[1:]
fw = (pathlib.Path(d) / "ovmf-amdsev.fd").read_bytes()
doc = {
    "format": "aocu-firmware/1",
    "file": "ovmf-amdsev.fd",
    "sha256": hashlib.sha256(fw).hexdigest(),
    "size": len(fw),
    "platform": "OvmfPkg/AmdSev/AmdSevX64.dsc RELEASE GCC5 X64 (grub.efi empty)",
    "source": {"package": "edk2", "version": version, "suite": "trixie", "dsc_sha256": dsc,
               "orig_sha256": orig, "debian_sha256": deb},
    "source_date_epoch": int(sde),
    "toolchain": toolchain,
    "build_dir": build_dir,
}
(pathlib.Path(d) / "firmware.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
PYEOF
  rm -rf "$cached" && mv "$cached.tmp" "$cached"
  rm -rf "$build_dir"
  say "built in ${seconds}s"
else
  say "cached: $cached"
fi

got=$(sha256sum "$cached/ovmf-amdsev.fd" | cut -d' ' -f1)
size=$(stat -c %s "$cached/ovmf-amdsev.fd")
cp "$cached/ovmf-amdsev.fd" "$cached/firmware.json" "$out/"
say "ovmf-amdsev.fd $size bytes sha256 $got"
if [ -n "${FIRMWARE_SHA256:-}" ] && [ "$got" != "$FIRMWARE_SHA256" ]; then
  say "pinned  sha256 $FIRMWARE_SHA256 (built with: ${TOOLCHAIN:-?})"
  say "this    sha256 $got (built with: $toolchain)"
  if [ "$toolchain" = "${TOOLCHAIN:-}" ] && [ "$build_dir" = "$pinned_build_dir" ]; then
    if [ "${AOCU_FIRMWARE_ALLOW_NEW:-0}" != 1 ]; then
      echo "firmware.sh: the firmware differs from the pinned build with the same toolchain and build path" \
        "(not reproduced); AOCU_FIRMWARE_ALLOW_NEW=1 keeps it" >&2
      exit 1
    fi
  else
    # Another compiler/linker version or build path gives other bytes; the firmware is still built from the
    # pinned source, and its own hash is what the reference values measure.
    why="toolchain differs from the lock"
    [ "$build_dir" = "$pinned_build_dir" ] || why="built in $build_dir, not $pinned_build_dir"
    say "WARNING: not the pinned firmware ($why); publish this hash with the payload"
  fi
elif [ -n "${FIRMWARE_SHA256:-}" ]; then
  say "reproduced the pinned build"
fi
