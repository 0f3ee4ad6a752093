#!/bin/bash
# Inside the VM: runs the in-VM pytest suites listed in tests/vm/suites.txt
# (or those named), in that order, in ONE pytest process with a JUnit report
# in $DM_SWITCH_OUT/junit.xml (scripts/check.sh prints each suite's time from
# it). One process: starting Python and pytest takes about 40 s under TCG.
# Verbose: each test is named as it starts, so a run cut off by a hang says where.
cd "$(dirname "$0")/../vm" || exit 1
suites=("$@")
[ ${#suites[@]} -gt 0 ] || mapfile -t suites < <(grep -v '^#' suites.txt | grep .)
exec python3 -m pytest -v -p no:cacheprovider -o junit_family=xunit1 \
  --junitxml="$DM_SWITCH_OUT/junit.xml" "${suites[@]}"
