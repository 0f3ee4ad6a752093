#!/usr/bin/env bash
# The end-to-end demo from a fresh clone: installs what is missing, builds the
# test kernel (cached), the module and the agent, then boots the VM and runs
# tests/guest/demo.sh inside it. `scripts/demo.sh --stack`: the two-tier
# demo (multipath members under the switch, a member losing its paths).
set -euo pipefail
demo_args=()
[ "${1:-}" = --stack ] && demo_args=(--stack)
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/lib.sh
kdir=$(scripts/build-kernel.sh debug | tail -n1)
make -s KDIR="$kdir" modules
(cd tools && cargo build --release --quiet)
echo "booting the test kernel under QEMU (TCG, debug kernel: ~2-3 minutes)..."
scripts/vm.sh -- "$REPO_ROOT/tests/guest/demo.sh" "${demo_args[@]}"
