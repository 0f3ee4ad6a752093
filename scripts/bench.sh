#!/usr/bin/env bash
# make bench: dm-switch benchmarks on the perf kernel, ours vs upstream's C
# `switch` vs dm-linear vs raw null_blk, in one boot per QEMU mode:
#   plain   TCG, all vCPUs (2): absolute figures
#   icount  TCG with -icount shift=0,sleep=off, one vCPU: guest time ~
#           instructions, so ratios repeat to a fraction of a percent; the
#           targets are judged on this mode
# Writes bench/raw-MODE.json.gz (what the guest measured), bench/run-meta.json,
# bench/results.json, bench/results.md and bench/iops.png.
#
# Usage: scripts/bench.sh [--modes "plain icount"] [--parallel] [--quick [--scenarios S3]] [--report-only]
#   --parallel     boot the modes side by side (faster; plain mode gets noisier)
#   --quick        to iterate on the hot path (about 10 minutes): icount only,
#                  I/O of one scenario (--scenarios, default S3), 3 rounds;
#                  prints the per-bio ratios and writes nothing under bench/
#   --scenarios L  comma-separated I/O scenarios (S1..S5, see bench/README.md)
#   --report-only  rebuild results.* and the plots from the existing raw files
# Environment: BENCH_PLAIN_ARGS / BENCH_ICOUNT_ARGS replace the guest
# parameters of a mode (see bench/guest_bench.py --help).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

modes="plain icount" quick=0 report_only=0 parallel=0 scenarios=""
while [ $# -gt 0 ]; do
  case "$1" in
    --modes) modes=$2; shift ;;
    --quick) quick=1 ;;
    --scenarios) scenarios=$2; shift ;;
    --parallel) parallel=1 ;;
    --report-only) report_only=1 ;;
    *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

bench=$REPO_ROOT/bench
results=$bench                   # where raw files, results.* and plots go
if [ "$quick" = 1 ]; then
  modes=icount
  scenarios=${scenarios:-S3}
  results=$CACHE_DIR/bench/quick
  rm -rf "$results"; mkdir -p "$results"
fi
PY=/usr/bin/python3          # Debian's python: matplotlib comes from apt
say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

# ---- prerequisites
"$PY" -c 'import matplotlib' 2>/dev/null ||
  die "matplotlib is missing for $PY: install Debian's python3-matplotlib (apt-get install python3-matplotlib)"
if [ "$report_only" = 1 ]; then
  exec "$PY" "$bench/report.py" "$bench"
fi
for t in fio dmsetup vng cargo; do
  command -v "$t" >/dev/null || die "$t is missing: run scripts/setup.sh"
done

# ---- 1. perf kernel, our module built for it (outside the repo), the agent
kdir=$("$REPO_ROOT/scripts/build-kernel.sh" perf | tail -n1)
[ -f "$kdir/.dm-switch-complete" ] || die "perf kernel build failed"
upstream_ko=$kdir/drivers/md/dm-switch.ko
[ -f "$upstream_ko" ] || die "$upstream_ko is missing (CONFIG_DM_SWITCH=m in kconfig/base.config?)"

# The repo's dm_switch.ko is the debug-kernel build other suites use: build a
# copy of the sources in a scratch dir instead.
mod=$CACHE_DIR/bench-module
rm -rf "$mod"; mkdir -p "$mod"
(cd "$REPO_ROOT" && git ls-files -z -- Kbuild '*.rs' '*.c' include | grep -zv '^\(tools\|tests\)/' |
 xargs -0 cp --parents -t "$mod"/)
src_hash=$(cd "$mod" && find . -type f | sort | xargs cat | sha256sum | cut -c1-12)
say "building our module for the perf kernel in $mod (sources $src_hash)"
make -C "$kdir" M="$mod" "${KMAKE_ARGS[@]}" -s modules >"$mod/build.log" 2>&1 ||
  { tail -30 "$mod/build.log" >&2; die "module build failed (log: $mod/build.log)"; }
ours_ko=$mod/dm_switch.ko

say "building the agent"
(cd "$REPO_ROOT/tools" && cargo build --release --quiet -p dm-switch)
agent=$REPO_ROOT/tools/target/release/dm-switch
[ -x "$agent" ] || die "agent build failed"

# ---- the random mappings (made on the host, read by the guest)
maps=$CACHE_DIR/bench/maps
"$PY" "$bench/genmaps.py" "$maps"

# ---- 2. one boot per mode
mode_args() {
  case "$1" in
    plain)  echo "${BENCH_PLAIN_ARGS:---runtime 2 --ramp 0.5 --phases 3 --rounds 2 --upload-reps 5 --mem-reps 2 --mem-log2 25}" ;;
    icount) echo "${BENCH_ICOUNT_ARGS:---runtime 1 --ramp 0.25 --phases 1 --rounds 5 --upload-reps 5 --skip-memory --profile}" ;;
    *) die "unknown mode $1" ;;
  esac
}
quick_args="--runtime 1 --ramp 0.25 --phases 1 --rounds 3 --skip-upload --skip-memory"

git_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD)
git_dirty=$(git -C "$REPO_ROOT" status --porcelain -- dm_switch.rs target.rs kapi control pure Kbuild include | wc -l)
meta=$results/run-meta.json
"$PY" - "$meta" "$kdir" "$git_rev" "$git_dirty" "$src_hash" <<'EOF'
import json, os, platform, subprocess, sys, time
path, kdir, rev, dirty, src = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
old = {}
if os.path.exists(path):
    try: old = json.load(open(path))
    except ValueError: pass
old.update({"host": {"cpu_model": cpu, "cores": os.cpu_count(),
                     "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                     "os": "Debian " + open("/etc/debian_version").read().strip(),
                     "kernel": platform.release(), "qemu": qemu},
            "perf_kernel_dir": kdir, "git_rev": rev, "module_sources_dirty_files": int(dirty),
            "module_sources_hash": src, "date": time.strftime("%Y-%m-%d %H:%M %Z")})
old.setdefault("modes", {})
json.dump(old, open(path, "w"), indent=1)
EOF

run_mode() {
  local mode=$1 out=$CACHE_DIR/bench/run-$1 args vmflags start rc wall
  rm -rf "$out"; mkdir -p "$out"
  vmflags=(--perf --out "$out")
  [ "$mode" = icount ] && vmflags+=(--icount)
  # shellcheck disable=SC2207
  args=($(mode_args "$mode"))
  [ "$quick" = 1 ] && args=($quick_args)
  [ -n "$scenarios" ] && args+=(--scenarios "$scenarios")
  say "mode $mode: booting the perf kernel (guest args: ${args[*]}); log in $out/guest.log"
  start=$(date +%s)
  set +e
  VM_TIMEOUT=${VM_TIMEOUT:-3600} "$REPO_ROOT/scripts/vm.sh" "${vmflags[@]}" -- \
    "$PY" "$bench/guest_bench.py" --mode "$mode" --out "$out" \
      --ours-ko "$ours_ko" --upstream-ko "$upstream_ko" --agent "$agent" --maps "$maps" \
      "${args[@]}" >"$out/guest.log" 2>&1
  rc=$?
  set -e
  wall=$(( $(date +%s) - start ))
  say "mode $mode: exit $rc after ${wall}s"
  echo "$rc $wall ${args[*]}" >"$out/status"
}

# Modes run one after the other; --parallel boots them side by side (icount
# ratios do not care; plain-mode figures get noisier, as with any other load).
if [ "$parallel" = 1 ]; then
  for mode in $modes; do run_mode "$mode" & done
  wait
else
  for mode in $modes; do run_mode "$mode"; done
fi

failed=0
for mode in $modes; do
  out=$CACHE_DIR/bench/run-$mode
  read -r rc wall args <"$out/status" || { rc=1 wall=0 args=; }
  if [ ! -f "$out/raw-$mode.json" ]; then
    tail -20 "$out/guest.log" >&2
    die "mode $mode produced no results (see $out/guest.log)"
  fi
  gzip -9n <"$out/raw-$mode.json" >"$results/raw-$mode.json.gz"
  "$PY" - "$meta" "$mode" "$wall" "$rc" "$args" <<'EOF'
import json, sys
path, mode, wall, rc, args = sys.argv[1:]
m = json.load(open(path))
m.setdefault("modes", {})[mode] = {"boot_wall_s": int(wall), "exit": int(rc), "guest_args": args}
json.dump(m, open(path, "w"), indent=1)
EOF
  if [ "$rc" != 0 ]; then
    tail -20 "$out/guest.log" >&2
    say "mode $mode failed (exit $rc; see $out/guest.log)"
    failed=1
  fi
done

# ---- 3. results
"$PY" "$bench/report.py" "$results"
[ "$failed" = 0 ] || die "a mode failed: the results above are partial"
if [ "$quick" = 1 ]; then
  "$PY" - "$results/results.json" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1]))["modes"]["icount"]["io_ratios"]:
    print(f"{r['scenario']} {r['rw']:9} qd{r['qd']:<2}  ours/upstream {r['ours_vs_upstream']:.4f}  "
          f"ours/linear {r['ours_vs_linear']:.4f}  insn/IO ours-upstream {r['insn_ours_minus_upstream']:+.1f}")
EOF
  say "quick results (not committed): $results"
else
  say "results: bench/results.md, bench/results.json, bench/iops.png, bench/bits.png"
fi
