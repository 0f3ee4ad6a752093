"""Reliability, privilege and isolation: who may upload, message and write
sysfs, across users, capabilities and namespaces; refusals do not flood
the kernel log.
"""
import shlex
import time

import pytest

from conftest import SYS, Cleanup, Switch, sh
from dmtest import wire
from campaign import ENOENT, EPERM, PY, Uploader, record

pytestmark = pytest.mark.usefixtures("kernel_log_guard")


NOBODY = "setpriv --reuid 65534 --regid 65534 --clear-groups --inh-caps=-all --bounding-set=-all"

UPLOAD_SCRIPT = """
from dmtest import nl, wire
try:
    c = nl.Client()
    fid = {fid}
    if fid is None:
        fid = c.family_id()
    gcmd, attrs, _ = c.request(fid, 1, 1, nl._attr(1, wire.pgtable({M}, {m}, 64, 0, [2] * 64, 3, 2)))
    r = wire.Response(attrs[11])
    print("status", r.status, r.err_str)
except nl.NetlinkError as e:
    print("nlerr", e.errno)
"""


FLOOD_SCRIPT = """
from dmtest import nl, wire
c = nl.Client()
fid = c.family_id()
msg = nl._attr(1, wire.pgtable({M}, {m}, 64, 0, [2] * 64, 3, 2))
st = {{}}
for _ in range({n}):
    gcmd, attrs, _ = c.request(fid, 1, 1, msg)
    s = wire.Response(attrs[11]).status
    st[s] = st.get(s, 0) + 1
print(st)
"""


def run_as(prefix, cmd):
    """Runs `cmd` under `prefix` (setpriv/unshare ..., or capsh ... which
    takes a shell command after '-- -c')."""
    if prefix.startswith("capsh"):
        return sh(f"{prefix} -- -c {shlex.quote(cmd)}", check=False)
    return sh(f"{prefix} {cmd}", check=False)


def upload_as(prefix, dev, fid=None):
    script = UPLOAD_SCRIPT.format(M=dev.major, m=dev.minor, fid=fid)
    r = run_as(prefix, f"{PY} -c {shlex.quote(script)}")
    return (r.stdout + r.stderr).strip()


@pytest.fixture(scope="module")
def priv_device():
    """One device for the privilege tests, with a known mapping (every region
    on path 1, userland words 1, 2)."""
    c = Cleanup()
    try:
        sw = Switch(c, "relpv", regions=64, region=64)
        up = Uploader()
        assert up.send(wire.pgtable(sw.dev.major, sw.dev.minor, 64, 0, [1] * 64, 3, 2, (1, 2))).status == 0
        up.close()
        yield sw
    finally:
        c.close()


@pytest.fixture
def mapped(priv_device):
    """After each test: nothing the refused requests carried took effect."""
    yield priv_device
    priv_device.placed(lambda r: 1, [0, 13, 63], "pv")
    assert priv_device.dev.status()["userland"] == (1, 2)


@pytest.mark.parametrize("name", ["familyid", "version"])
def test_unprivileged_user_cannot_write_sysfs(name):
    p = SYS / name
    before = p.read_text()
    r = sh(f"{NOBODY} sh -c {shlex.quote(f'echo 7 > {p}')}", check=False)
    assert r.returncode != 0 and "ermission denied" in r.stderr, r
    # Reading is allowed (the files are 0444).
    r = sh(f"{NOBODY} cat {p}", check=False)
    assert r.returncode == 0 and r.stdout == before
    assert p.read_text() == before


def test_unprivileged_user_cannot_upload_or_message(mapped):
    """uid 65534 with no capabilities: the genetlink core refuses the upload
    (NLMSG_ERROR EPERM, GENL_ADMIN_PERM), and dmsetup cannot even open the
    DM control device."""
    dev = mapped.dev
    assert upload_as(NOBODY, dev) == "nlerr 1"
    assert upload_as(NOBODY, dev, fid=int((SYS / "familyid").read_text())) == "nlerr 1"
    r = sh(f"{NOBODY} dmsetup message {dev.name} 0 set_region_mappings 0:2", check=False)
    assert r.returncode != 0


def test_sys_admin_without_net_admin_cannot_upload(mapped):
    """CAP_SYS_ADMIN alone is not enough: the family is admin-only, which the
    genetlink core checks as CAP_NET_ADMIN."""
    assert upload_as("capsh --drop=cap_net_admin", mapped.dev) == "nlerr 1"


def test_user_namespace_root_cannot_upload(mapped):
    """Root in a new user namespace has every capability there, none in the
    initial namespace, which is where the checks are made."""
    if sh("unshare -U -r true", check=False).returncode:
        pytest.skip("kernel without user namespaces")
    assert upload_as("unshare -U -r", mapped.dev) == "nlerr 1"


def test_other_network_namespace_cannot_reach_family(mapped):
    """The family exists in the initial network namespace only: from another
    one (root, every capability) it cannot be resolved, and a message sent to
    its id is refused by the genetlink core."""
    out = upload_as("unshare -n", mapped.dev)
    assert out == f"nlerr {ENOENT}", out
    out = upload_as("unshare -n", mapped.dev, fid=int((SYS / "familyid").read_text()))
    assert out.startswith("nlerr "), out


def test_refusals_do_not_flood_kernel_log(mapped, kernel_log_guard):
    """A sender with CAP_NET_ADMIN but without CAP_SYS_ADMIN gets EPERM for
    every upload; it must not be able to fill the kernel log with one line per
    refused request (the log is a shared resource, and a flood hides real
    reports); the kernel has printk_ratelimited and DM its *_LIMIT macros for this."""
    n = 300
    script = FLOOD_SCRIPT.format(M=mapped.dev.major, m=mapped.dev.minor, n=n)
    kernel_log_guard.count("refusals", r"upload refused")
    r = run_as("capsh --drop=cap_sys_admin", f"{PY} -c {shlex.quote(script)}")
    assert r.returncode == 0 and r.stdout.strip() == f"{{{EPERM}: {n}}}", (r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    time.sleep(1)
    lines = kernel_log_guard.counts["refusals"]
    record("log_flood", {"refused_uploads": n, "kernel_log_lines": lines})
    assert lines <= 50, f"{n} refused uploads wrote {lines} lines to the kernel log"
