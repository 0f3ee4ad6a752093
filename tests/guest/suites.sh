#!/bin/bash
# Inside the VM: runs the in-VM pytest suites listed in tests/vm/suites.txt
# (or those named), each with a JUnit report in $DM_SWITCH_OUT, and prints
# its duration.
cd "$(dirname "$0")/../vm" || exit 1
suites=("$@")
[ ${#suites[@]} -gt 0 ] || mapfile -t suites < <(grep -v '^#' suites.txt | grep .)
rc=0
for s in "${suites[@]}"; do
  start=$(date +%s)
  python3 -m pytest -q -p no:cacheprovider -o junit_family=xunit1 \
    --junitxml="$DM_SWITCH_OUT/junit-${s%.py}.xml" "$s" || rc=1
  echo "suite ${s%.py}: $(( $(date +%s) - start )) s"
done
exit $rc
