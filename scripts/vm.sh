#!/usr/bin/env bash
# Boots a cached kernel with virtme-ng under TCG, runs CMD as root inside with
# the repository visible at the same path, and returns CMD's exit status.
# After CMD, the guest scans its kernel log and kmemleak (tests/guest/finish.sh);
# any report fails the run.
#
# Usage: scripts/vm.sh [--perf] [--icount] [--cpus N] [--kvm] [--out DIR] -- CMD...
#   --perf     boot the perf kernel (no debug options) instead of the debug kernel
#   --icount   QEMU instruction counting (one vCPU): guest time ~ instructions
#   --kvm      opt in to KVM (stalls on these machines; a boot timeout applies)
#   --out DIR  keep the guest's kernel log (dmesg.txt) and outputs in DIR
set -euo pipefail
source "$(dirname "$0")/lib.sh"

flavour=debug cpus=2 icount=0 kvm=0 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --perf) flavour=perf ;;
    --icount) icount=1; cpus=1 ;;
    --cpus) cpus=$2; shift ;;
    --kvm) kvm=1 ;;
    --out) out=$2; shift ;;
    --) shift; break ;;
    *) echo "vm.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ $# -gt 0 ] || { echo "usage: scripts/vm.sh [options] -- CMD..." >&2; exit 2; }

kdir=$(kernel_build_dir "$flavour")
[ -f "$kdir/.dm-switch-complete" ] || kdir=$("$REPO_ROOT/scripts/build-kernel.sh" "$flavour" | tail -n1)
[ -n "$out" ] || out=$(mktemp -d /tmp/dm-switch-vm.XXXXXX)
mkdir -p "$out"

# The root is the host's, shared read-only over 9p. virtme-ng mounts it
# uncached; the later rootflags= (the kernel keeps the last) adds cache=loose,
# so that the guest's page cache keeps what it reads: under TCG every exec
# (each dmsetup of the tests and of udev's DM rules) read the binary and its
# libraries from the host again (measured: dmsetup create 4.0-4.9 s uncached,
# 1.7-4.3 s cached). The host does not change the tree while the VM runs.
rootflags=rootflags=version=9p2000.L,trans=virtio,access=any,msize=524288,cache=loose
args=(--run "$kdir" --cpus "$cpus" --memory 4G --rwdir "$out" --cwd "$REPO_ROOT"
      --append "panic_on_warn=0 hung_task_timeout_secs=120 no5lvl $rootflags")
timeout_s=${VM_TIMEOUT:-3600}
if [ "$kvm" = 1 ]; then
  timeout_s=${VM_KVM_TIMEOUT:-600}
else
  args+=(--disable-kvm)
fi
if [ "$icount" = 1 ]; then
  args+=("--qemu-opts=-icount shift=0,sleep=off")
fi

# The guest command: quote each word so it survives vng's shell.
cmd=$(printf '%q ' "$@")
set +e
# Through a pipe: given a regular file as stdout or stderr, QEMU's console
# reopens it by path and truncates it (earlier output of the caller is lost).
timeout --foreground "$timeout_s" vng "${args[@]}" \
  --exec "$REPO_ROOT/tests/guest/run.sh $(printf '%q' "$out") $cmd" < /dev/null 2>&1 | cat
rc=${PIPESTATUS[0]}
set -e
if [ $rc = 124 ]; then
  echo "vm.sh: the VM did not finish within ${timeout_s}s; the end of its kernel log ($out/kmsg-live.txt):" >&2
  # Hung-task and stall reports name the stuck code; the last lines say where the run was.
  grep -E -A12 "blocked for more than|detected stall|BUG:|WARNING:" "$out/kmsg-live.txt" 2>/dev/null | head -60 >&2
  tail -n 20 "$out/kmsg-live.txt" 2>/dev/null >&2
fi
if [ ! -f "$out/guest-finished" ]; then
  echo "vm.sh: the guest did not reach its log scan (boot failure or crash); exit $rc" >&2
  [ $rc != 0 ] || rc=1
fi
exit $rc
