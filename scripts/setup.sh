#!/usr/bin/env bash
# Installs everything dm-switch-rs needs to build, boot and test, from Debian's
# configured apt sources, crates.io and PyPI only. Idempotent; run as root.
set -euo pipefail

# The kernel source is pinned to the version scripts/lib.sh builds and tests
# (KERNEL_VERSION): Debian's security archive moves on to newer point releases
# (6.12.118 on 2026-12-04) and keeps the older ones installable.
KERNEL_SOURCE=linux-source-6.12=6.12.117-1~deb12u1
APT_PACKAGES=(
  "$KERNEL_SOURCE"
  rustc-web rust-web-src rust-web-clippy
  clang-19 lld-19 llvm-19 libclang-19-dev
  bc bison flex libelf-dev libssl-dev cpio kmod xz-utils make
  qemu-system-x86 busybox-static udev
  dmsetup fio util-linux e2fsprogs strace
  dkms                                 # make check builds the module through DKMS
  pkg-config libdevmapper-dev          # the agent's devicemapper crate (its bindgen reads libdevmapper.h)
  python3 python3-pytest jq libcap2-bin
  python3-yaml python3-jsonschema       # the YNL spec check and tools/net/ynl/cli.py
  python3-matplotlib linux-perf          # make bench: the plot, guest profiles
)
BINDGEN_VERSION=0.71.1
VIRTME_NG_VERSION=1.42

log() { printf '[setup] %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  name=${p%%=*}
  [ "$name" = "$p" ] && want= || want=${p#*=}
  status=$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null) || status=
  if [ -n "$want" ]; then [ "$status" = "install ok installed $want" ]
  else [[ $status == "install ok installed "* ]]; fi || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" >/dev/null
else
  log "apt: all packages present"
fi

# bindgen: Debian's 0.60 is too old for 6.12 (needs >= 0.65.1).
BINDGEN_ROOT=${BINDGEN_ROOT:-/opt/dm-switch/bindgen}
if ! "$BINDGEN_ROOT/bin/bindgen" --version 2>/dev/null | grep -q "$BINDGEN_VERSION"; then
  log "cargo: installing bindgen-cli $BINDGEN_VERSION"
  cargo install --locked --quiet --root "$BINDGEN_ROOT" bindgen-cli --version "$BINDGEN_VERSION"
else
  log "bindgen $BINDGEN_VERSION present"
fi

# virtme-ng runs the test kernel in QEMU with the host root shared read-only.
if ! command -v vng >/dev/null 2>&1 || ! vng --version 2>/dev/null | grep -q "$VIRTME_NG_VERSION"; then
  log "pip: installing virtme-ng $VIRTME_NG_VERSION"
  python3 -m pip install --quiet --disable-pip-version-check "virtme-ng==$VIRTME_NG_VERSION" ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "virtme-ng==$VIRTME_NG_VERSION"
else
  log "virtme-ng present"
fi
log "done"
