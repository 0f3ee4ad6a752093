#!/bin/bash
# The two-tier demo, inside the VM (tests/guest/demo.sh --stack): the RFC's
# stack built as its agent built it, with dmsetup. One shared store (a
# null_blk: every path sees the same LUN), six paths (dm-linear views of it),
# three members (bio-based dm-multipath: group 1 the member's own two paths,
# group 2 the other members' four), the switch over the members. fio runs
# while member 0 loses both of its direct paths: its regions are served
# through the other members' paths, and nothing fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
agent=$repo/tools/target/release/dm-switch
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
S=131072           # 64 MiB in sectors
REGION=1024        # 512 KiB regions: 128 of them
store=/dev/demostore

devno() { local n; n=$(basename "$(readlink -f "/dev/mapper/$1")"); cat "/sys/block/$n/dev"; }
ios() { local n; n=$(basename "$(readlink -f "/dev/mapper/$1")"); awk '{print $1 + $5}' "/sys/block/$n/stat"; }
# I/Os completed per device over the same two seconds, three per line.
rates() {
  local d i=0
  local -a before=()
  for d in "$@"; do before+=("$(ios "$d")"); done
  sleep 2
  for d in "$@"; do
    printf '%-9s %5d  ' "$d" $(( $(ios "$d") - before[i] )); i=$((i + 1))
    [ $((i % 3)) = 0 ] && echo
  done
  return 0
}
members=(demo-m0 demo-m1 demo-m2)
paths=(demo-m0a demo-m0b demo-m1a demo-m1b demo-m2a demo-m2b)
show() {
  echo "I/Os completed in 2 s, per member and per path:"
  rates "${members[@]}" "${paths[@]}"
}
group() { local p out=""; for p in "$@"; do out+=" $(devno "$p") 1"; done; echo "round-robin 0 $# 1$out"; }

say "1. Load our module; one shared store (64 MiB null_blk, 4 KiB blocks)"
run insmod "$repo/dm_switch.ko"
modprobe null_blk nr_devices=0
d=/sys/kernel/config/nullb/demostore
mkdir "$d"; echo 64 > "$d/size"; echo 4096 > "$d/blocksize"; echo 1 > "$d/memory_backed"; echo 1 > "$d/power"
ls -l $store

say "2. Lower tier, bottom first: six paths, then one multipath device per member"
for p in "${paths[@]}"; do run dmsetup create "$p" --table "0 $S linear $store 0"; done
for m in 0 1 2; do
  own=(); other=()
  for p in "${paths[@]}"; do if [[ $p == demo-m$m? ]]; then own+=("$p"); else other+=("$p"); fi; done
  run dmsetup create "demo-m$m" --table \
    "0 $S multipath 3 queue_if_no_path queue_mode bio 0 2 1 $(group "${own[@]}") $(group "${other[@]}")"
done

say "3. Upper tier: the switch over the three members, 512 KiB regions"
run dmsetup create demo-sw --table "0 $S switch 3 $REGION /dev/mapper/demo-m0 0 /dev/mapper/demo-m1 0 /dev/mapper/demo-m2 0"
run dmsetup ls --tree

say "4. A random mapping (region -> member), uploaded by the agent"
map=$(mktemp)
for r in $(seq 0 127); do echo "$r $((RANDOM % 3))"; done > "$map"
for m in 0 1 2; do echo "member $m owns $(awk -v m=$m '$2 == m' "$map" | wc -l) of 128 regions"; done
run "$agent" upload demo-sw --file "$map"
run dmsetup status demo-sw

say "5. fio: random reads and writes over the whole switch (io_uring, direct), until step 8"
fio --name=demo --filename=/dev/mapper/demo-sw --direct=1 --ioengine=io_uring --iodepth=8 \
  --rw=randrw --bssplit=4k/50:16k/30:64k/20 --time_based --runtime=900 --output=/tmp/demo-fio.txt &
fio_pid=$!
until [ "$(ios demo-sw)" -gt 100 ]; do sleep 1; done   # fio starts slowly under TCG
show
echo "The switch's own view: I/O per member (path of the switch), rates over 2 s"
run "$agent" status demo-sw --watch 2 --count 1

say "6. Member 0 loses both direct paths: their tables become failing dm-flakey"
for p in demo-m0a demo-m0b; do
  run dmsetup load "$p" --table "0 $S flakey $store 0 0 1"
  run dmsetup resume "$p"
done
sleep 2
run dmsetup status demo-m0
echo "(group 1 disabled or enabled with both paths F; group 2, the other members' paths, active)"
show
run "$agent" status demo-sw --watch 2 --count 1
echo "(the switch still routes member 0's regions to member 0: multipath below serves them)"
echo "member 0 still completes I/O; its own paths carry none; the other members' paths carry it."

say "7. Paths back: linear tables, reinstate_path, then failback to group 1 (what multipathd does)"
for p in demo-m0a demo-m0b; do
  run dmsetup load "$p" --table "0 $S linear $store 0"
  run dmsetup resume "$p"
  for m in "${members[@]}"; do dmsetup message "$m" 0 reinstate_path "$(devno "$p")"; done
done
run dmsetup message demo-m0 0 switch_group 1
show
run dmsetup status demo-m0

say "8. fio's result (stopped with SIGINT: each dmsetup step takes seconds under TCG)"
kill -INT $fio_pid
wait $fio_pid || true
grep -E "err=|READ:|WRITE:" /tmp/demo-fio.txt
grep -q "err= 0" /tmp/demo-fio.txt || { echo "demo: fio saw an error" >&2; exit 1; }

say "9. Teardown: fail_if_no_path first (nothing may stay queued), then top-down"
for m in "${members[@]}"; do run dmsetup message "$m" 0 fail_if_no_path; done
run dmsetup remove demo-sw
for m in "${members[@]}"; do run dmsetup remove "$m"; done
for p in "${paths[@]}"; do run dmsetup remove "$p"; done
echo 0 > "$d/power"; rmdir "$d"
run dmsetup ls
run rmmod dm_switch
say "Stack demo finished."
