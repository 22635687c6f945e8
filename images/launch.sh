#!/usr/bin/env bash
# images/launch.sh {snp|tdx|plain} OUTDIR [--port HOSTPORT] [--ovmf F] [--mem MiB] [--vcpus N] [--cpu MODEL]
#                  [--data DISKIMG] [--serial FILE] [--print-cmd] [-- extra qemu options]
# Launches the payload built by images/build.sh with the node's HTTP port (8080 in the guest) forwarded to
# 127.0.0.1:HOSTPORT (default 18080).
#   snp    AMD SEV-SNP guest, measured direct boot (QEMU >= 9.1 `sev-snp-guest`, kernel-hashes=on; needs KVM on an
#          SNP host). Firmware: the AmdSev OVMF that `images/build.sh --firmware` put in OUTDIR (its manifest
#          entry), or --ovmf F. vmlinuz, initrd.img, cmdline and firmware are checked against OUTDIR/manifest.json:
#          the guest boots exactly what `aocu measure --payload OUTDIR` measured (with the same --vcpus and
#          --cpu, default EPYC-v4, as `--vcpu-type`).
#   tdx    Intel TDX guest (QEMU >= 10.1 `tdx-guest`; needs KVM on a TDX host and a TDVF passed with --ovmf)
#   plain  no TEE: KVM when /dev/kvm is usable, else TCG; the guest runs with --tee sim (clearly simulated)
# --print-cmd: print the QEMU command (shell-quoted, one line) instead of running it; host checks are skipped.
# --data DISKIMG: the node's data disk, a raw file the guest seals (LUKS2 + integrity; docs/SEALING.md). Create a
#   blank one for a new node: `truncate -s 4G disk.img` (sparse; at least 64 MiB). The first boot formats it
#   (writing all of it once); a disk that fails authentication later stops the guest before the node starts.
#   In plain mode the simulated chip that seals it is kept beside it in DISKIMG.sim-chip (created blank here;
#   keep the two together: without the chip the disk does not open). Without --data, state lives in RAM.
# Stopping: ACPI power-off (`system_powerdown` on the monitor; Ctrl-A c in -nographic mode) stops the node,
#   which checkpoints, and closes the volume; killing QEMU is a power cut (journalled, nothing is lost that
#   the node had committed).
# QEMU=/path/to/qemu-system-x86_64 selects the emulator (images/qemu10.sh unpacks Debian 13's QEMU 10).
set -euo pipefail

usage() {
  sed -n '2,22p' "$0" >&2
  exit 2
}
die() { echo "launch.sh: $*" >&2; exit 2; }
[ $# -ge 2 ] || usage
mode=$1 dir=$2
shift 2
port=18080 ovmf="" mem=2048 vcpus=2 cpu="" data="" serial="" print_cmd=0 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --ovmf) ovmf=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --vcpus) vcpus=$2; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --serial) serial=$2; shift 2 ;;
    --print-cmd) print_cmd=1; shift ;;
    --) shift; extra=("$@"); break ;;
    *) extra+=("$1"); shift ;;
  esac
done
case "$mode" in snp|tdx|plain) ;; *) usage ;; esac
for f in vmlinuz initrd.img cmdline; do
  [ -f "$dir/$f" ] || die "$dir/$f missing (run images/build.sh $dir first)"
done
case "$port" in *[!0-9]*|"") die "--port must be a number" ;; esac
case "$vcpus" in *[!0-9]*|""|0) die "--vcpus must be a positive number" ;; esac
case "$mem" in *[!0-9]*|""|0) die "--mem must be a positive number of MiB" ;; esac

QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null || die "$QEMU not found (apt-get install qemu-system-x86)"
qver=$("$QEMU" --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
need_qemu() {  # need_qemu MAJOR MINOR WHAT
  set -- "$1" "$2" "$3" $qver
  if [ "$4" -lt "$1" ] || { [ "$4" -eq "$1" ] && [ "$5" -lt "$2" ]; }; then
    die "$3 needs QEMU >= $1.$2, this is $4.$5"
  fi
}
kvm_usable() {
  case "${AOCU_ACCEL:-}" in kvm) return 0 ;; tcg) return 1 ;; esac
  [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
  # /dev/kvm can exist without working virtualisation (nested sandboxes fail on the first emulated
  # instruction), so boot the payload's kernel to a deliberate panic and see which comes first.
  local log pid i verdict=1
  log=$(mktemp)
  "$QEMU" -machine q35,accel=kvm -cpu host -m 256 -nodefaults -no-user-config -no-reboot -display none \
    -serial "file:$log" -monitor none -kernel "$dir/vmlinuz" -append "console=ttyS0 panic=-1 rdinit=/aocu-kvm-probe" \
    </dev/null >>"$log" 2>&1 &
  pid=$!
  for i in $(seq 1 60); do
    if grep -q "Kernel panic" "$log"; then verdict=0; break; fi
    if grep -q "KVM internal error\|emulation failure" "$log" || ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.5
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  rm -f "$log"
  return $verdict
}
# manifest_check: the payload files (and firmware FW, when the manifest records one) are the ones images/build.sh
# wrote and `aocu measure --payload` measured; prints the manifest's firmware file name (empty if none).
manifest_check() {
  local m=$dir/manifest.json
  [ -f "$m" ] || return 0
  command -v python3 >/dev/null || die "python3 is needed to read $m"
  python3 - "$dir" "${1:-}" <<'PYEOF'
import hashlib, json, pathlib, sys
d, fw = pathlib.Path(sys.argv[1]), sys.argv[2]
try:
    arts = json.loads((d / "manifest.json").read_text())["artifacts"]
except (ValueError, KeyError, TypeError) as exc:
    sys.exit(f"launch.sh: {d}/manifest.json is unreadable ({exc})")
def sha(p: pathlib.Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
fws = sorted(n for n in arts if n.endswith(".fd"))
for name, a in sorted(arts.items()):
    if name.endswith(".fd"):
        path = pathlib.Path(fw) if fw else d / name
    else:
        path = d / name
    if not path.is_file():
        sys.exit(f"launch.sh: {path} missing (listed in {d}/manifest.json)")
    if sha(path) != a["sha256"]:
        what = "firmware" if name.endswith(".fd") else name
        sys.exit(f"launch.sh: {path} is not the {what} the payload was built and measured with "
                 f"(sha256 differs from {d}/manifest.json)")
print(fws[0] if fws else "")
PYEOF
}
# snp_host_check: one clear line and exit 2 where this is no SEV-SNP host (AOCU_HOST_ROOT: tests only).
snp_host_check() {
  local r=${AOCU_HOST_ROOT:-} snp
  [ -e "$r/dev/kvm" ] || die "no KVM on this host (/dev/kvm missing): SEV-SNP needs KVM on an AMD EPYC host"
  [ -e "$r/dev/sev" ] || die "not an SEV-SNP host: /dev/sev missing (no AMD PSP/ccp driver, or SEV disabled in the BIOS)"
  snp=$(cat "$r/sys/module/kvm_amd/parameters/sev_snp" 2>/dev/null || echo missing)
  case "$snp" in
    Y|y|1) ;;
    missing) die "not an SEV-SNP host: kvm_amd is not loaded (no /sys/module/kvm_amd/parameters/sev_snp)" ;;
    *) die "not an SEV-SNP host: kvm_amd sev_snp is '$snp' (enable SNP in the BIOS, load kvm_amd sev_snp=1)" ;;
  esac
}

cmdline=$(cat "$dir/cmdline")
net=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8080" -device virtio-net-pci,netdev=n0,romfile=)
disk=()
if [ -n "$data" ]; then
  [ -f "$data" ] || [ -b "$data" ] || die "data disk $data does not exist; create a blank one: truncate -s 4G $data"
  if [ -f "$data" ] && [ "$(stat -c %s "$data")" -lt $((64 << 20)) ]; then
    die "data disk $data is smaller than 64 MiB (the sealed volume's header and journal take ~20 MiB)"
  fi
  # The data disk comes first (the guest's /dev/vda); the serial lets the guest tell it from the chip disk.
  disk=(-drive "file=$data,if=none,id=aocu-data,format=raw" -device virtio-blk-pci,drive=aocu-data,serial=aocu-data)
fi
con=(-nographic -serial mon:stdio)
[ -n "$serial" ] && con=(-display none -serial "file:$serial" -monitor none)

case "$mode" in
  plain)
    # A plain VM has no TEE: force the simulated provider so the node says so on every response.
    cmdline=$(echo "$cmdline" | sed 's/aocu\.tee=[a-z]*/aocu.tee=sim/')
    case "$cmdline" in *aocu.tee=*) ;; *) cmdline="$cmdline aocu.tee=sim" ;; esac
    if [ -n "$data" ]; then
      # The simulated chip of --tee sim: the guest keeps its secret here (a real chip keeps it in the processor).
      chip="$data.sim-chip"
      [ -e "$chip" ] || [ "$print_cmd" = 1 ] || truncate -s 1M "$chip"
      disk+=(-drive "file=$chip,if=none,id=aocu-sim-chip,format=raw"
        -device virtio-blk-pci,drive=aocu-sim-chip,serial=aocu-sim-chip)
    fi
    if kvm_usable; then accel=(-machine q35,accel=kvm -cpu host); echo "launch.sh: plain VM on KVM" >&2
    else accel=(-machine q35,accel=tcg -cpu max); echo "launch.sh: plain VM on TCG (no usable KVM; slow)" >&2; fi
    cmd=("$QEMU" "${accel[@]}" -m "$mem" -smp "$vcpus" -nodefaults -no-user-config -no-reboot
      -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$cmdline")
    ;;
  snp)
    need_qemu 9 1 "sev-snp-guest"
    # The measured command line is the file's bytes: $(cat) would drop a trailing newline QEMU then not hash.
    [ "$(tail -c 1 "$dir/cmdline" | od -An -tx1 | tr -d ' ')" != 0a ] ||
      die "$dir/cmdline ends with a newline: the launch could not pass it byte for byte (rebuild the payload)"
    fw=$(manifest_check "$ovmf") || exit 2
    if [ -z "$ovmf" ]; then
      [ -n "$fw" ] || die "snp needs the AmdSev firmware: build the payload with images/build.sh --firmware, or pass --ovmf AMDSEV.fd"
      ovmf=$dir/$fw
    fi
    [ -f "$ovmf" ] || die "firmware $ovmf not found"
    [ "$print_cmd" = 1 ] || snp_host_check
    # Memory is private (guest_memfd) except what the guest shares; the memfd backend holds the shared part.
    # cbitpos 51 / reduced-phys-bits 1: the C-bit of EPYC Milan/Genoa/Turin. The vCPU model and count enter
    # the launch measurement (VMSA per vCPU): `aocu measure --vcpus N --vcpu-type MODEL` must use the same.
    cmd=("$QEMU" -enable-kvm -cpu "${cpu:-EPYC-v4}" -smp "$vcpus" -m "${mem}M" -nodefaults -no-user-config -no-reboot
      -machine q35,confidential-guest-support=sev0,memory-backend=ram1
      -object "memory-backend-memfd,id=ram1,size=${mem}M,share=true,prealloc=false"
      -object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on
      -bios "$ovmf" -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$cmdline")
    ;;
  tdx)
    need_qemu 10 1 "tdx-guest"
    [ -n "$ovmf" ] || die "tdx needs --ovmf TDVF.fd"
    cmd=("$QEMU" -enable-kvm -cpu "${cpu:-host}" -smp "$vcpus" -m "${mem}M" -nodefaults -no-user-config -no-reboot
      -machine q35,kernel_irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1
      -object "memory-backend-memfd,id=ram1,size=${mem}M,share=true,prealloc=false"
      -object tdx-guest,id=tdx0
      -bios "$ovmf" -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$cmdline")
    ;;
esac
cmd+=("${net[@]}" "${disk[@]}" "${con[@]}" "${extra[@]}")
if [ "$print_cmd" = 1 ]; then
  out=""
  for a in "${cmd[@]}"; do  # POSIX shell quoting (plain words stay plain; others in single quotes)
    if [[ -n "$a" && "$a" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then q=$a; else q="'${a//\'/\'\\\'\'}'"; fi
    out+="${out:+ }$q"
  done
  echo "$out"
  exit 0
fi
exec "${cmd[@]}"
