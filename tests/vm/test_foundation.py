"""Issue 2: the module loads, registers `switch`, exposes its sysfs files, and unloads cleanly."""
import errno
import re

import pytest

from campaign import bounded
from conftest import SYS, load_module, sh, unload_module


def test_target_listed_with_sysfs_version():
    out = sh("dmsetup targets").stdout
    m = re.search(r"^switch\s+v(\d+\.\d+\.\d+)$", out, re.M)
    assert m, out
    assert (SYS / "version").read_text() == m.group(1) + "\n"


def test_familyid_matches_controller(client):
    fid = int((SYS / "familyid").read_text())
    assert fid > 0x10
    assert client.family_id("DM_SWITCH") == fid


@pytest.mark.parametrize("name", ["familyid", "version"])
def test_sysfs_files_are_read_only(name):
    p = SYS / name
    assert oct(p.stat().st_mode & 0o777) == "0o444"
    before = p.read_text()
    with pytest.raises(OSError) as e:
        with open(p, "w") as f:
            f.write("1\n")
    assert e.value.errno in (errno.EACCES, errno.EINVAL, errno.EIO)
    assert p.read_text() == before


def test_load_unload_repeatedly(env):
    # A load takes about 5 s on the debug kernel under TCG: 6 in CI, 50 in a soak.
    for _ in range(bounded(6, 50)):
        unload_module()
        assert not SYS.exists()
        load_module()
        assert "switch" in sh("dmsetup targets").stdout


def test_rmmod_refused_while_device_exists(env):
    base = env.nullb(4)
    dev = env.dm("swbusy", f"0 8192 switch 1 128 {base.path} 0")
    r = sh("rmmod dm_switch", check=False)
    assert r.returncode != 0
    assert SYS.exists()
    dev.remove()
    unload_module()
    load_module()
