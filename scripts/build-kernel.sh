#!/usr/bin/env bash
# Builds (or reuses from the cache) the test kernel: Debian's linux-source-6.12 with
# kconfig/base.config and, unless FLAVOUR is "perf", kconfig/debug.config.
# Usage: scripts/build-kernel.sh [debug|perf]   Prints the build directory last.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
flavour=${1:-debug}
out=$(kernel_build_dir "$flavour")

if [ -f "$out/.dm-switch-complete" ]; then
  echo "kernel: cached $out" >&2
  echo "$out"
  exit 0
fi

# The unpacked tree is replaced when it is another version (setup.sh pins the
# package; an older checkout may have unpacked a newer one).
unpacked() { grep -q "^SUBLEVEL = ${KERNEL_VERSION##*.}\$" "$KSRC/Makefile" 2>/dev/null; }
if ! unpacked; then
  echo "kernel: unpacking $KERNEL_TARBALL" >&2
  rm -rf "$KSRC"
  mkdir -p "$CACHE_DIR/src"
  tmp=$(mktemp -d "$CACHE_DIR/src/unpack.XXXXXX")
  tar -C "$tmp" -xf "$KERNEL_TARBALL"
  mv "$tmp"/linux-source-6.12 "$KSRC"
  rmdir "$tmp"
fi
unpacked || { echo "kernel: $KERNEL_TARBALL is not $KERNEL_VERSION (scripts/setup.sh installs it)" >&2; exit 1; }

mkdir -p "$out"
start=$(date +%s)
kmake() { make -C "$KSRC" O="$out" "${KMAKE_ARGS[@]}" "$@"; }
kmake -s defconfig
mapfile -t frags < <(kernel_fragments "$flavour")
(cd "$out" && "$KSRC/scripts/kconfig/merge_config.sh" -m -O "$out" .config \
   "$KSRC/kernel/configs/kvm_guest.config" "${frags[@]}" >/dev/null)
kmake -s olddefconfig

# olddefconfig silently drops options whose dependencies are missing: check every line.
bad=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) want=$line ;;
    "# CONFIG_"*" is not set") want=$line ;;
    *) continue ;;
  esac
  name=${want#\# }; name=${name%%[= ]*}
  if [[ $want == \#* ]]; then
    grep -q "^$name=" "$out/.config" && { echo "kernel: $name should be off" >&2; bad=1; }
  else
    grep -qx "$want" "$out/.config" || { echo "kernel: wanted $want, got: $(grep "^$name=\|$name is not set" "$out/.config" || echo absent)" >&2; bad=1; }
  fi
done < <(cat "${frags[@]}")
[ $bad = 0 ] || { echo "kernel: config check failed (is /usr/bin/rustc first on PATH?)" >&2; exit 1; }

echo "kernel: building $flavour kernel in $out (a cold build takes ~25 min on 2 cores)" >&2
kmake -j"$(( $(nproc) + 1 ))" -s
touch "$out/.dm-switch-complete"
echo "kernel: built in $(( $(date +%s) - start )) s" >&2
echo "$out"
