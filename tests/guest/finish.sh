#!/bin/bash
# Inside the VM, after the tests: kmemleak scan, then the kernel log scan.
# Fails on any memory leak, KASAN/UBSAN report, lockdep splat, RCU stall,
# hung task, BUG or WARNING. Usage: finish.sh OUTDIR
out=$1
bad=0
kml=/sys/kernel/debug/kmemleak
if [ -w $kml ]; then
  # kmemleak ignores objects younger than 5 s and may need two scans.
  sleep 6
  echo scan > $kml
  echo scan > $kml
  cat $kml > "$out/kmemleak.txt"
  if [ -s "$out/kmemleak.txt" ]; then
    echo "guest: kmemleak reports leaks:" >&2
    head -40 "$out/kmemleak.txt" >&2
    bad=1
  fi
else
  echo "guest: kmemleak not available (not a debug kernel?)" >&2
fi
dmesg > "$out/dmesg.txt"
start=$(grep -n "dm-switch-tests: start" "$out/dmesg.txt" | tail -1 | cut -d: -f1)
head -n "${start:-0}" "$out/dmesg.txt" > "$out/dmesg-boot.txt"
tail -n +"$(( ${start:-0} + 1 ))" "$out/dmesg.txt" > "$out/dmesg-tests.txt"
pattern='BUG:|WARNING:|KASAN:|UBSAN:|general protection fault|Oops|kernel BUG at|possible recursive locking|possible circular locking|suspicious RCU usage|rcu_.* detected stall|INFO: task .* blocked for more than|unreferenced object|inconsistent lock state|sleeping function called from invalid context|Call Trace:'
if grep -E "$pattern" "$out/dmesg-boot.txt" > "$out/splats-boot.txt"; then
  echo "guest: warning: the kernel reported problems while booting, before any test ran:" >&2
  head -5 "$out/splats-boot.txt" >&2
fi
if grep -E "$pattern" "$out/dmesg-tests.txt" > "$out/splats.txt"; then
  echo "guest: the kernel log has reports:" >&2
  grep -E -B2 -A25 "$pattern" "$out/dmesg-tests.txt" | head -80 >&2
  bad=1
fi
exit $bad
