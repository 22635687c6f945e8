#!/usr/bin/env bash
# images/launch.sh {snp|tdx|plain} OUTDIR [--port HOSTPORT] [--ovmf F] [--mem MiB] [--vcpus N]
#                  [--data DISKIMG] [--serial FILE] [-- extra qemu options]
# Launches the payload built by images/build.sh with the node's HTTP port (8080 in the guest) forwarded to
# 127.0.0.1:HOSTPORT (default 18080).
#   snp    AMD SEV-SNP guest, measured direct boot (QEMU >= 9.1 `sev-snp-guest`, kernel-hashes=on; needs KVM on an
#          SNP host and an AmdSev OVMF build passed with --ovmf; its measurement is what `aocu measure` computes)
#   tdx    Intel TDX guest (QEMU >= 10.1 `tdx-guest`; needs KVM on a TDX host and a TDVF passed with --ovmf)
#   plain  no TEE: KVM when /dev/kvm is usable, else TCG; the guest runs with --tee sim (clearly simulated)
# --data DISKIMG: the node's data disk, a raw file the guest seals (LUKS2 + integrity; docs/SEALING.md). Create a
#   blank one for a new node: `truncate -s 4G disk.img` (sparse; at least 64 MiB). The first boot formats it
#   (writing all of it once); a disk that fails authentication later stops the guest before the node starts.
#   In plain mode the simulated chip that seals it is kept beside it in DISKIMG.sim-chip (created blank here;
#   keep the two together: without the chip the disk does not open). Without --data, state lives in RAM.
# Stopping: ACPI power-off (`system_powerdown` on the monitor; Ctrl-A c in -nographic mode) stops the node,
#   which checkpoints, and closes the volume; killing QEMU is a power cut (journalled, nothing is lost that
#   the node had committed).
set -euo pipefail

usage() {
  sed -n '2,18p' "$0" >&2
  exit 2
}
[ $# -ge 2 ] || usage
mode=$1 dir=$2
shift 2
port=18080 ovmf="" mem=2048 vcpus=2 data="" serial="" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port=$2; shift 2 ;;
    --ovmf) ovmf=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --vcpus) vcpus=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --serial) serial=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) extra+=("$1"); shift ;;
  esac
done
for f in vmlinuz initrd.img cmdline; do
  [ -f "$dir/$f" ] || { echo "launch.sh: $dir/$f missing (run images/build.sh $dir first)" >&2; exit 2; }
done
case "$port" in *[!0-9]*|"") echo "launch.sh: --port must be a number" >&2; exit 2 ;; esac

QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null || { echo "launch.sh: $QEMU not found (apt-get install qemu-system-x86)" >&2; exit 2; }
qver=$("$QEMU" --version | sed -n 's/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
need_qemu() {  # need_qemu MAJOR MINOR WHAT
  set -- "$1" "$2" "$3" $qver
  if [ "$4" -lt "$1" ] || { [ "$4" -eq "$1" ] && [ "$5" -lt "$2" ]; }; then
    echo "launch.sh: $3 needs QEMU >= $1.$2, this is $4.$5" >&2
    exit 2
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

cmdline=$(cat "$dir/cmdline")
net=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:8080" -device virtio-net-pci,netdev=n0,romfile=)
disk=()
if [ -n "$data" ]; then
  [ -f "$data" ] || [ -b "$data" ] || {
    echo "launch.sh: data disk $data does not exist; create a blank one: truncate -s 4G $data" >&2; exit 2; }
  if [ -f "$data" ] && [ "$(stat -c %s "$data")" -lt $((64 << 20)) ]; then
    echo "launch.sh: data disk $data is smaller than 64 MiB (the sealed volume's header and journal take ~20 MiB)" >&2
    exit 2
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
      [ -e "$chip" ] || truncate -s 1M "$chip"
      disk+=(-drive "file=$chip,if=none,id=aocu-sim-chip,format=raw"
        -device virtio-blk-pci,drive=aocu-sim-chip,serial=aocu-sim-chip)
    fi
    if kvm_usable; then accel=(-machine q35,accel=kvm -cpu host); echo "launch.sh: plain VM on KVM" >&2
    else accel=(-machine q35,accel=tcg -cpu max); echo "launch.sh: plain VM on TCG (no usable KVM; slow)" >&2; fi
    exec "$QEMU" "${accel[@]}" -m "$mem" -smp "$vcpus" -nodefaults -no-user-config -no-reboot \
      -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$cmdline" \
      "${net[@]}" "${disk[@]}" "${con[@]}" "${extra[@]}"
    ;;
  snp)
    need_qemu 9 1 "sev-snp-guest"
    [ -n "$ovmf" ] || { echo "launch.sh: snp needs --ovmf AMDSEV.fd (an AmdSevX64 build with SNP kernel hashes)" >&2; exit 2; }
    exec "$QEMU" -enable-kvm -cpu EPYC-v4 -smp "$vcpus" -m "$mem" -nodefaults -no-user-config -no-reboot \
      -machine q35,confidential-guest-support=sev0,memory-backend=ram1 \
      -object "memory-backend-memfd,id=ram1,size=${mem}M,share=true,prealloc=false" \
      -object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on \
      -bios "$ovmf" -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$cmdline" \
      "${net[@]}" "${disk[@]}" "${con[@]}" "${extra[@]}"
    ;;
  tdx)
    need_qemu 10 1 "tdx-guest"
    [ -n "$ovmf" ] || { echo "launch.sh: tdx needs --ovmf TDVF.fd" >&2; exit 2; }
    exec "$QEMU" -enable-kvm -cpu host -smp "$vcpus" -m "$mem" -nodefaults -no-user-config -no-reboot \
      -machine q35,kernel_irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1 \
      -object "memory-backend-memfd,id=ram1,size=${mem}M,share=true,prealloc=false" \
      -object tdx-guest,id=tdx0 \
      -bios "$ovmf" -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" -append "$cmdline" \
      "${net[@]}" "${disk[@]}" "${con[@]}" "${extra[@]}"
    ;;
  *) usage ;;
esac
