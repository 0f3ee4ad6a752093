#!/usr/bin/env bash
# `make check`: builds everything, runs the host tests and the in-VM suites on
# the debug kernel (one boot), and ends with one line "N passed, N failed".
# Assumes scripts/setup.sh has run. SUITES="test_x.py ..." runs only those.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

passed=0 failed=0
t_all=$(date +%s)
step() { echo; echo "== $*"; }
timed() { local s; s=$(date +%s); "$@"; local rc=$?; echo "   ($(( $(date +%s) - s )) s)"; return $rc; }
fatal() { echo "check: $*" >&2; echo "$passed passed, $((failed + 1)) failed"; exit 1; }

step "test kernel (cached after the first build)"
kdir=$(timed scripts/build-kernel.sh debug | tail -n1) || fatal "kernel build failed"
kdir=$(kernel_build_dir debug)

step "module: clippy, then the warning-free build"
timed make -s KDIR="$kdir" CLIPPY=1 modules || fatal "clippy build failed"
timed make -s KDIR="$kdir" modules || fatal "module build failed"
scripts/check-no-div.sh dm_switch.ko || fatal "map() contains a divide"

step "formatting"
make -s fmtcheck || fatal "rustfmt check failed (run make fmt)"

step "host tests (cargo test in tools/)"
host_log=$(mktemp)
(cd tools && cargo test --release 2>&1) | tee "$host_log" | grep -E "^test result|FAILED|panicked" 
read -r hp hf < <(awk '/^test result:/ {p+=$4; f+=$6} END {print p+0, f+0}' "$host_log")
passed=$((passed + hp)); failed=$((failed + hf))
(cd tools && cargo build --release --quiet) || fatal "agent build failed"

step "YNL spec against the kernel tree's schema and pure/abi.rs"
if python3 tests/host/ynl_spec.py "$KSRC"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi

out=$(mktemp -d /tmp/dm-switch-check.XXXXXX)
step "installation: make install/uninstall, the systemd unit, DKMS (staged for the VM in $out/stage)"
scripts/check-install.sh "$kdir" "$out/stage" > "$out/install.log" 2>&1
cat "$out/install.log"
read -r inst_p inst_f < <(sed -n 's/^install checks: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$out/install.log")
passed=$((passed + ${inst_p:-0})); failed=$((failed + ${inst_f:-1}))

step "in-VM suites on the debug kernel (one boot, ~2 min of it booting)"
# All suites share one boot (about 40 minutes on a fast idle machine; these
# machines differ by up to 1.7x: a cold debug kernel took 846 s on one and
# about 1,450 s on another). The limit leaves CI's 90 minutes room for the
# steps before the VM (7-9 minutes on a clean clone) and to report a hang
# (the VM's kernel log and the test then running) instead of being killed.
# A soak run needs longer (make soak sets VM_TIMEOUT=14400). Under CI
# (.ci/run sets DM_SWITCH_DEADLINE, epoch seconds) the VM also ends by that
# deadline, which counts a cold kernel build.
export VM_TIMEOUT=${VM_TIMEOUT:-4600}
if [ -n "${DM_SWITCH_DEADLINE:-}" ]; then
  left=$(( DM_SWITCH_DEADLINE - $(date +%s) ))
  [ "$left" -lt "$VM_TIMEOUT" ] && VM_TIMEOUT=$(( left > 600 ? left : 600 ))
  echo "   VM time limit: $VM_TIMEOUT s (CI deadline)"
fi
timed scripts/vm.sh --out "$out" -- env DM_SWITCH_SOAK="${SOAK:-}" DM_SWITCH_FUZZ_SEED="${FUZZ_SEED:-}" \
  DM_SWITCH_KSRC="$KSRC" DM_SWITCH_STAGE="$out/stage" \
  "$REPO_ROOT/tests/guest/suites.sh" ${SUITES:-}
vm_rc=$?
# Each suite's time (its tests' setup, call and teardown) on stderr; the
# counts on stdout.
read -r vp vf < <(python3 - "$out" <<'PY'
import collections, glob, sys, xml.etree.ElementTree as ET
p = f = 0
times, tests = collections.Counter(), collections.Counter()
for x in glob.glob(sys.argv[1] + "/junit*.xml"):
    for s in ET.parse(x).getroot().iter("testsuite"):
        t, e, fl, sk = (int(s.get(k, 0)) for k in ("tests", "errors", "failures", "skipped"))
        p += t - e - fl - sk
        f += e + fl
        for c in s.iter("testcase"):
            secs = float(c.get("time", 0))
            times[c.get("classname", "?")] += secs
            tests[c.get("classname", "?").split(".")[-1] + "::" + c.get("name", "?")] = secs
for name, secs in times.items():
    print(f"suite {name}: {secs:.0f} s", file=sys.stderr)
print("slowest tests: " + ", ".join(f"{n} {s:.0f} s" for n, s in tests.most_common(12)), file=sys.stderr)
print(p, f)
PY
)
passed=$((passed + vp)); failed=$((failed + vf))
if [ $vm_rc != 0 ] && [ "$vf" = 0 ]; then
  echo "check: the VM run failed outside the tests (log scan, kmemleak or boot): see $out" >&2
  # What the guest's scan found, here at the end where a CI log's tail shows it.
  for f in splats.txt kmemleak.txt; do
    [ -s "$out/$f" ] && { echo "check: $f:" >&2; head -n 12 "$out/$f" >&2; }
  done
  [ -f "$out/guest-finished" ] || echo "check: the guest did not finish (see vm.sh's lines above)" >&2
  failed=$((failed + 1))
fi
echo
echo "guest log and reports: $out"
echo "total: $(( $(date +%s) - t_all )) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
