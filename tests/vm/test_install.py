"""Issue 20: what `make install` staged (scripts/check-install.sh, on the
host, into $DM_SWITCH_STAGE) works on the test kernel: modprobe finds our
module in updates/ ahead of the kernel's own C dm-switch, the systemd
unit's exact ExecStart line activates a configuration, and the udev rule
asks systemd for the unit when a disk appears."""
import os
import shlex
from pathlib import Path

import pytest

from conftest import SECTOR, marker, module_is_ours, read_at, sh, unload_module, write_at

STAGE = os.environ.get("DM_SWITCH_STAGE", "")
UNIT = "usr/local/lib/systemd/system/dm-switch-activate.service"
RULE = "etc/udev/rules.d/90-dm-switch.rules"


@pytest.fixture
def stage():
    if not (STAGE and os.path.isdir(STAGE)):
        pytest.fail("no staged install: run through `make check` (scripts/check-install.sh stages it)")
    return Path(STAGE)


def test_modprobe_loads_ours_from_updates(stage):
    kver = os.uname().release
    ours = sh(f"modinfo -b {stage} -k {kver} -n dm_switch").stdout.strip()
    assert ours.endswith(f"/lib/modules/{kver}/updates/dm_switch.ko"), ours
    # The kernel's own drivers/md/dm-switch.ko has the same module name.
    theirs = sh("modinfo -n dm_switch").stdout.strip()
    assert "drivers/md/dm-switch.ko" in theirs, theirs
    unload_module()
    sh(f"modprobe -d {stage} dm_switch")
    assert module_is_ours(), "modprobe loaded the kernel's C dm_switch, not ours"


def exec_start(stage, name):
    """The unit's `NAME=` line (ExecStart, ExecStartPre), as argv."""
    lines = [ln for ln in (stage / UNIT).read_text().splitlines() if ln.startswith(name + "=")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0].split("=", 1)[1])


def in_installed_system(stage, etc, argv):
    """Runs argv in a mount namespace that sees the staged /usr/local and a
    test /etc/dm-switch laid over the real ones (read-only overlays)."""
    script = (f"mount -t overlay overlay -o lowerdir={stage}/usr/local:/usr/local /usr/local && "
              f"mount -t overlay overlay -o lowerdir={etc}:/etc /etc && exec {shlex.join(argv)}")
    return sh(f"unshare -m sh -c {shlex.quote(script)}")


def test_unit_exec_start_activates_the_configuration(env, stage, tmp_path):
    assert exec_start(stage, "ExecStartPre") == ["-/sbin/modprobe", "dm_switch"]
    argv = exec_start(stage, "ExecStart")
    assert argv == ["/usr/local/sbin/dm-switch", "activate", "--all"], argv
    nb = env.nullb(8)
    etc = tmp_path / "etc"
    (etc / "dm-switch").mkdir(parents=True)
    (etc / "dm-switch" / "switch.toml").write_text(
        f'[[switch]]\nname = "unitsw"\nregion_size = 64\npaths = ["{nb.path}", "{nb.path}"]\n'
        f"offsets = [0, 8192]\nsectors = 4096\nround_robin = true\n")
    try:
        out = in_installed_system(stage, etc, argv).stdout
        assert "unitsw" in out and "created (2 paths, 64 regions of 64 sectors)" in out, out
        for r in (0, 1, 2, 63):
            write_at("/dev/mapper/unitsw", r * 64 * SECTOR, marker(f"u{r}"))
            assert read_at(nb.path, ((r % 2) * 8192 + r * 64) * SECTOR, SECTOR) == marker(f"u{r}")
        out = in_installed_system(stage, etc, argv).stdout
        assert "table unchanged; mapping already live (nothing sent)" in out, out
        out = in_installed_system(stage, etc, [argv[0], "deactivate", "--all"]).stdout
        assert "unitsw" in out and "removed" in out, out
        assert not os.path.exists("/dev/mapper/unitsw")
    finally:
        sh("dmsetup remove --retry unitsw", check=False)


def test_udev_rule_wants_the_unit_when_a_disk_appears(env, stage):
    nb = env.nullb(1)
    rules = Path("/run/udev/rules.d")
    rules.mkdir(parents=True, exist_ok=True)
    rule = rules / "90-dm-switch.rules"
    rule.write_text((stage / RULE).read_text())
    try:
        dev = f"/sys/class/block/{Path(nb.path).name}"
        r = sh(f"udevadm test --action=add {dev}")
        assert "SYSTEMD_WANTS=dm-switch-activate.service" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
        r = sh(f"udevadm test --action=change {dev}")
        assert "SYSTEMD_WANTS=dm-switch-activate.service" not in r.stdout + r.stderr, "only disks that appear"
    finally:
        rule.unlink()
