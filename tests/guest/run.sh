#!/bin/bash
# Runs inside the VM (as root): prepares the guest, runs the command, then
# scans the kernel log and kmemleak. Usage: run.sh OUTDIR CMD...
out=$1; shift
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export DM_SWITCH_OUT=$out
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config 2>/dev/null
# Objects allocated before the tests are not ours to report. kmemleak's
# periodic scan (16-18 s of a vCPU under TCG, every 10 min) is switched off:
# finish.sh scans once the tests are done, which finds the same leaks.
if [ -w /sys/kernel/debug/kmemleak ]; then
  echo clear > /sys/kernel/debug/kmemleak
  echo scan=off > /sys/kernel/debug/kmemleak
fi
# The log scan fails on what comes after this line (the boot before it runs
# none of our code; finish.sh still prints reports from it, as warnings).
echo "dm-switch-tests: start" > /dev/kmsg
# A live copy of the kernel log on the host: a run that hangs and is killed
# still leaves what the kernel said.
cat /dev/kmsg > "$out/kmsg-live.txt" 2>/dev/null &
kmsg_copy=$!
"$@"
rc=$?
"$(dirname "$0")/finish.sh" "$out" || rc=1
kill $kmsg_copy 2>/dev/null
touch "$out/guest-finished"
exit $rc
