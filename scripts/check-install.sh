#!/usr/bin/env bash
# Host checks of the installation (issue 20), run by `make check`:
#   make install into a staging DESTDIR (kept for the VM suite test_install.py)
#   and make uninstall; the systemd unit through `systemd-analyze verify`
#   against the staged root; DKMS add/build/install against the test kernel's
#   tree and its refusal of a kernel without CONFIG_RUST.
# Usage: scripts/check-install.sh KDIR STAGE. Prints one line per check and
# ends with "install checks: N passed, N failed" (exit 1 if any failed).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
kdir=$1 stage=$2
kver=$(cat "$kdir/include/config/kernel.release")
version=$(make -s -f Makefile --eval 'v: ; @echo $(VERSION)' v)
tmp=$(mktemp -d /tmp/dm-switch-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
check() {  # check NAME COMMAND...: runs COMMAND, logs to $tmp/NAME.log
  local name=$1; shift
  if "$@" > "$tmp/$name.log" 2>&1; then
    echo "ok   $name"; passed=$((passed + 1))
  else
    echo "FAIL $name:"; sed 's/^/     /' "$tmp/$name.log" | tail -n 30; failed=$((failed + 1))
  fi
}

unit=usr/local/lib/systemd/system/dm-switch-activate.service
installed=(lib/modules/$kver/updates/dm_switch.ko usr/local/sbin/dm-switch "$unit"
           etc/udev/rules.d/90-dm-switch.rules etc/dm-switch/switch.toml.example
           usr/local/share/doc/dm-switch/README.md lib/modules/$kver/modules.dep)

staged() {
  rm -rf "$stage"
  make -s install KDIR="$kdir" DESTDIR="$stage" || return 1
  for f in "${installed[@]}"; do [ -f "$stage/$f" ] || { echo "missing: $f"; return 1; }; done
  grep -qx "ExecStart=/usr/local/sbin/dm-switch activate --all" "$stage/$unit" || return 1
  # depmod ranked our module: modules.dep names updates/dm_switch.ko.
  grep -q "^updates/dm_switch.ko:" "$stage/lib/modules/$kver/modules.dep"
}
check make-install staged

uninstalled() {
  make -s install KDIR="$kdir" DESTDIR="$tmp/u" && make -s uninstall KDIR="$kdir" DESTDIR="$tmp/u" || return 1
  for f in "${installed[@]:0:6}"; do [ ! -e "$tmp/u/$f" ] || { echo "left behind: $f"; return 1; }; done
}
check make-uninstall uninstalled

# systemd-analyze verify reports an ordering cycle on stdout/stderr but exits
# 0, so the check is: no output at all. The staged root gets the host's
# systemd units (sysinit.target, local-fs-pre.target...) so that cycles with
# them show; a copy of the unit without DefaultDependencies=no must show one.
verify() {  # verify ROOT: prints what systemd-analyze says about the unit
  mkdir -p "$1/lib/systemd" && cp -a /lib/systemd/system "$1/lib/systemd/" &&
    systemd-analyze verify --root="$1" "$1/$unit" 2>&1
}
unit_ok() { local out; cp -a "$stage/." "$tmp/root" && out=$(verify "$tmp/root") || return 1; echo "$out"; [ -z "$out" ]; }
check systemd-verify unit_ok
cycle_caught() {
  local out
  cp -a "$stage/." "$tmp/cycle" && sed -i 's/^DefaultDependencies=no$//' "$tmp/cycle/$unit" &&
    out=$(verify "$tmp/cycle") && grep -q "ordering cycle" <<< "$out"
}
check systemd-verify-catches-a-cycle cycle_caught

# DKMS against the test kernel's tree, every tree temporary.
dkms_args=(--dkmstree "$tmp/dkms" --sourcetree "$tmp/src/usr/src")
dkms_build() {
  make -s dkms-source DESTDIR="$tmp/src" && mkdir -p "$tmp/dkms" "$tmp/inst/$kver" &&
    dkms add "dm-switch/$version" "${dkms_args[@]}" || return 1
  local t0=$SECONDS
  dkms build "dm-switch/$version" -k "$kver" --kernelsourcedir "$kdir" "${dkms_args[@]}" &&
    dkms install "dm-switch/$version" -k "$kver" --kernelsourcedir "$kdir" "${dkms_args[@]}" \
      --installtree "$tmp/inst" --no-depmod || { cat "$tmp"/dkms/dm-switch/"$version"/build/make.log; return 1; }
  echo "dkms build + install: $((SECONDS - t0)) s"
  local ko; ko=$(find "$tmp/inst/$kver" -name dm_switch.ko) && [ -n "$ko" ] &&
    [ "$(modinfo -F vermagic "$ko" | cut -d' ' -f1)" = "$kver" ] && modinfo -F name "$ko" | grep -qx dm_switch
}
check dkms-build-install dkms_build
[ -f "$tmp/dkms-build-install.log" ] && grep "dkms build" "$tmp/dkms-build-install.log"

# A config-only tree without CONFIG_RUST: DKMS refuses it (exit 77) in one sentence.
dkms_refuses() {
  mkdir -p "$tmp/norust" && grep -v '^CONFIG_RUST=' "$kdir/.config" > "$tmp/norust/.config"
  local out rc
  out=$(dkms build "dm-switch/$version" -k "$kver-norust" --kernelsourcedir "$tmp/norust" "${dkms_args[@]}" 2>&1)
  rc=$?
  echo "$out"
  [ $rc = 77 ] && grep -q "BUILD_EXCLUSIVE directive which does not match this kernel" <<< "$out"
}
check dkms-refuses-a-kernel-without-rust dkms_refuses

echo "install checks: $passed passed, $failed failed"
[ "$failed" = 0 ]
