#!/bin/bash
# The end-to-end demo, inside the VM: three paths, a switch device, a mapping
# uploaded by the dm-switch agent, data written through the switch and found
# on the paths the mapping names.
# With --stack: the RFC's two-tier stack instead (tests/guest/demo-stack.sh).
set -euo pipefail
[ "${1:-}" = --stack ] && exec "$(dirname "$0")/demo-stack.sh"
repo=$(cd "$(dirname "$0")/../.." && pwd)
agent=$repo/tools/target/release/dm-switch
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "1. Load our module (Rust, out of tree) and check it is the one answering"
run insmod "$repo/dm_switch.ko"
run cat /sys/module/dm_switch/version /sys/module/dm_switch/familyid
run dmsetup targets

say "2. Three paths: memory-backed null_blk disks of 16 MiB each"
modprobe null_blk nr_devices=0
for i in 0 1 2; do
  d=/sys/kernel/config/nullb/demo$i
  mkdir "$d"; echo 16 > "$d/size"; echo 1 > "$d/memory_backed"; echo 1 > "$d/power"
done
ls -l /dev/demo0 /dev/demo1 /dev/demo2

say "3. A switch device over them: 16 MiB in regions of 1 MiB (2048 sectors), RFC table format"
# Each path holds the whole address range; the switch decides which one serves each region.
run dmsetup create demo --table "0 32768 switch 3 2048 /dev/demo0 0 /dev/demo1 0 /dev/demo2 0"
run dmsetup table demo

say "4. A mapping file: which path owns each region"
map=$(mktemp)
cat > "$map" <<'MAP'
# region(s)  path
0-3          2
4-9          0
10           1
11-15        1
MAP
cat "$map"
run "$agent" upload demo --file "$map" --userland 0x2011,7

say "5. Write a marker into every region through the switch device"
for r in $(seq 0 15); do
  printf 'region-%02d' "$r" | dd of=/dev/mapper/demo bs=512 seek=$((r * 2048)) conv=sync,notrunc oflag=direct status=none
done
echo "wrote 16 markers"

say "6. Read the paths directly: each marker is on the path the mapping names"
expected=(2 2 2 2 0 0 0 0 0 0 1 1 1 1 1 1)   # the mapping file above
wrong=0
for r in $(seq 0 15); do
  line="region $(printf %2d "$r"):"
  holders=""
  for p in 0 1 2; do
    got=$(dd if=/dev/demo$p bs=512 skip=$((r * 2048)) count=1 iflag=direct status=none | tr -d '\0')
    [ "$got" = "$(printf 'region-%02d' "$r")" ] && { line="$line  path $p has it"; holders="$holders$p"; }
  done
  if [ "$holders" = "${expected[$r]}" ]; then echo "$line"; else echo "$line  WRONG: expected path ${expected[$r]} only"; wrong=1; fi
done
[ "$wrong" = 0 ] || { echo "demo: data landed on the wrong path" >&2; exit 1; }

say "7. Counters and userland words, from the kernel: the I/O each path got"
run "$agent" status demo
run dmsetup status demo

say "7b. Per-path rates while a reader loops over regions 4-9 (path 0): one JSON line a second"
# The loop runs while $go exists: killing it instead would leave its last dd
# holding the device open, and the removal below would fail with EBUSY.
go=$(mktemp)
( while [ -e "$go" ]; do dd if=/dev/mapper/demo of=/dev/null bs=64k skip=$((4 * 16)) count=$((6 * 16)) iflag=direct status=none; done ) &
reader=$!
run "$agent" status demo --watch 1 --count 3
rm -f "$go"; wait "$reader"

say "8. Clean up"
run dmsetup remove demo
for i in 0 1 2; do echo 0 > /sys/kernel/config/nullb/demo$i/power; rmdir /sys/kernel/config/nullb/demo$i; done
run rmmod dm_switch
say "Demo finished."
