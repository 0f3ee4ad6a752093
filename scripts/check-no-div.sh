#!/usr/bin/env bash
# Asserts that the switch target's I/O path has no divide instruction: map()
# (the DM trampoline with the common case inlined into it) and map_any()
# (every other bio, which map() hands over). Region indices of a
# power-of-two region size are a shift, and the divide for other sizes lives
# out of line (pure/region.rs `divide`).
# Usage: scripts/check-no-div.sh [dm_switch.ko]
set -euo pipefail
ko=${1:-$(dirname "$0")/../dm_switch.ko}
check() { # $1: what, $2: awk regex of the symbol
  local sym body n divs
  sym=$(nm "$ko" | awk -v re="$2" '$2 ~ /^[tT]$/ && $3 ~ re && $3 !~ /^__pfx/ {print $3}')
  [ "$(wc -w <<<"$sym")" = 1 ] || { echo "check-no-div: cannot find $1 in $ko (found: ${sym:-nothing})" >&2; exit 1; }
  body=$(objdump -d --no-show-raw-insn --disassemble="$sym" "$ko" | grep -E '^\s+[0-9a-f]+:')
  n=$(wc -l <<<"$body")
  [ "$n" -gt 10 ] || { echo "check-no-div: $1 disassembled to $n instructions: not a real body" >&2; exit 1; }
  if divs=$(grep -E '\s(i?div[bwlq]?)\s' <<<"$body"); then
    echo "check-no-div: $1 ($n instructions) contains a divide:" >&2
    echo "$divs" >&2
    exit 1
  fi
  echo "check-no-div: $1 has $n instructions and no divide"
}
check "map()" 'registration.*Registration.*target6Switch.*3map'
check "map_any()" 'target.*Switch7map_any$'
