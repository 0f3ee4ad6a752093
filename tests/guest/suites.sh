#!/bin/bash
# Inside the VM: runs every in-VM pytest suite (tests/vm/test_*.py, or those
# named), each with a JUnit report in $DM_SWITCH_OUT, and prints its duration.
cd "$(dirname "$0")/../vm" || exit 1
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(test_*.py)
rc=0
for s in "${suites[@]}"; do
  start=$(date +%s)
  python3 -m pytest -q -p no:cacheprovider -o junit_family=xunit1 \
    --junitxml="$DM_SWITCH_OUT/junit-${s%.py}.xml" "$s" || rc=1
  echo "suite ${s%.py}: $(( $(date +%s) - start )) s"
done
exit $rc
