# Shared settings for the dm-switch-rs scripts (sourced, not run).
# The kernel toolchain: Debian's rustc 1.96 with rust-src, clang/LLVM 19, and our bindgen.
# rustup's rustc (first on PATH) has no rust-src: Kconfig would silently drop RUST with it.

KERNEL_VERSION=6.12.117
KERNEL_TARBALL=/usr/src/linux-source-6.12.tar.xz
CACHE_DIR=${DM_SWITCH_CACHE:-$HOME/.cache/dm-switch}
KSRC=$CACHE_DIR/src/linux-$KERNEL_VERSION
BINDGEN=${BINDGEN:-/opt/dm-switch/bindgen/bin/bindgen}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Arguments every kernel make call (config steps included) must get.
KMAKE_ARGS=(LLVM=-19 RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc BINDGEN="$BINDGEN"
            CLIPPY_DRIVER=/usr/bin/clippy-driver)
export PATH=/usr/bin:$PATH:/usr/local/bin:$HOME/.local/bin:${PYENV_ROOT:-$HOME/.pyenv}/shims

# kernel_build_dir FLAVOUR: the cache directory of the kernel built from
# kconfig/base.config (+ kconfig/FLAVOUR.config), keyed by version and config hash.
kernel_build_dir() {
  local flavour=$1 frags=("$REPO_ROOT/kconfig/base.config")
  [ "$flavour" = perf ] || frags+=("$REPO_ROOT/kconfig/$flavour.config")
  local hash
  hash=$( { echo "$KERNEL_VERSION"; /usr/bin/rustc --version; clang-19 --version | head -1;
            cat "${frags[@]}"; } | sha256sum | cut -c1-12)
  echo "$CACHE_DIR/build/$KERNEL_VERSION-$flavour-$hash"
}

# kernel_fragments FLAVOUR: the config fragments of that flavour, in merge order.
kernel_fragments() {
  echo "$REPO_ROOT/kconfig/base.config"
  [ "$1" = perf ] || echo "$REPO_ROOT/kconfig/$1.config"
}
