#!/usr/bin/env bash
# Asserts that the switch target's map() (the DM trampoline with everything
# inlined into it) contains no divide instruction: region indices of a
# power-of-two region size are a shift, and the divide for other sizes lives
# out of line (pure/region.rs `divide`).
# Usage: scripts/check-no-div.sh [dm_switch.ko]
set -euo pipefail
ko=${1:-$(dirname "$0")/../dm_switch.ko}
sym=$(nm "$ko" | awk '$2 ~ /^[tT]$/ && $3 ~ /registration.*Registration.*target6Switch.*3map/ && $3 !~ /^__pfx/ {print $3}')
[ "$(wc -w <<<"$sym")" = 1 ] || { echo "check-no-div: cannot find map() in $ko (found: ${sym:-nothing})" >&2; exit 1; }
body=$(objdump -d --no-show-raw-insn --disassemble="$sym" "$ko" | grep -E '^\s+[0-9a-f]+:')
n=$(wc -l <<<"$body")
[ "$n" -gt 10 ] || { echo "check-no-div: map() disassembled to $n instructions: not a real body" >&2; exit 1; }
if divs=$(grep -E '\s(i?div[bwlq]?)\s' <<<"$body"); then
  echo "check-no-div: map() ($n instructions) contains a divide:" >&2
  echo "$divs" >&2
  exit 1
fi
echo "check-no-div: map() has $n instructions and no divide"
