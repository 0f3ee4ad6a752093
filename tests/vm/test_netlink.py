"""Issue 5: the DM_SWITCH upload ABI and set_region_mappings, proven from the
header alone with an independent client (dmtest/nl.py), placement read from the paths."""
import random
import subprocess
import sys

import pytest

from conftest import Switch, sh
from dmtest import nl, wire

EINVAL, EPERM, ENODEV = 22, 1, 19


def test_single_window_upload_and_status(env, client):
    sw = Switch(env, "swnl1", guard=131072)
    dev = sw.dev
    rng = random.Random(1)
    mapping = [rng.randrange(3) for _ in range(64)]
    resp = client.send(wire.pgtable(dev.major, dev.minor, 64, 0, mapping, 3, 2, userland=(0x1234, 0xABCDEF01)))
    assert (resp.status, resp.err_str, resp.total_len, resp.opcode) == (0, "", 284, 1), resp
    assert (resp.dev_major, resp.dev_minor, resp.userland) == (dev.major, dev.minor, (0x1234, 0xABCDEF01))
    s0 = dev.status()
    sw.placed(mapping, range(64), "s")
    st = dev.status()
    assert st["userland"] == (0x1234, 0xABCDEF01)
    assert (st["remapped"] - s0["remapped"], st["unmapped"] - s0["unmapped"]) == (64, 0)


@pytest.mark.parametrize("pte_bits", [2, 3, 32])
def test_multi_window_upload(env, client, pte_bits):
    regions = 40000 if pte_bits == 32 else 300000
    region = 8
    sw = Switch(env, "swnl2", regions=regions, region=region)
    dev = sw.dev
    rng = random.Random(pte_bits)
    mapping = [rng.randrange(3) for _ in range(regions)]
    resps = nl.upload(client, dev.major, dev.minor, mapping, 3, pte_bits)
    assert len(resps) >= 2 and all(r.status == 0 for r in resps), resps
    sample = sorted(set(rng.randrange(regions) for _ in range(40)) | {0, regions - 1, 8191, 8192, 16359, 16360})
    sw.placed(mapping, sample, "w")


def test_chunk_free_and_table_replacement(env, client):
    sw = Switch(env, "swnl3", regions=20000, region=8, guard=131072)
    dev = sw.dev
    mapping = [1 + (r % 2) for r in range(20000)]
    assert all(r.status == 0 for r in nl.upload(client, dev.major, dev.minor, mapping, 3, 2))
    # Free chunk 1 (regions 8192..16383): they go to path 0, counted unmapped.
    resp = client.send(wire.pgtable(dev.major, dev.minor, 20000, 8192, [], 3, 2))
    assert resp.status == 0, resp
    s0 = dev.status()
    sw.placed({8191: mapping[8191], 8192: 0, 16383: 0, 16384: mapping[16384]},
           [8191, 8192, 16383, 16384], "f")
    assert dev.status()["unmapped"] - s0["unmapped"] == 2
    # A window with other pte_bits replaces the table: outside it, unmapped.
    resp = client.send(wire.pgtable(dev.major, dev.minor, 20000, 0, [2] * 16, 3, 4))
    assert resp.status == 0, resp
    sw.placed({0: 2, 15: 2, 16: 0, 19999: 0}, [0, 15, 16, 19999], "g")


def refusals(dev):
    M, m = dev.major, dev.minor
    good = wire.pgtable(M, m, 64, 0, [1] * 64, 3, 2)
    short = good[:39]
    return [
        ("short", short, EINVAL, "too short"),
        ("opcode", wire.pgtable(M, m, 64, 0, [1] * 64, 3, 2, opcode=2), EINVAL, "opcode"),
        ("bits0", wire.pgtable(M, m, 64, 0, [1] * 16, 3, 0, packed=b"\0" * 64), EINVAL, "pte_bits"),
        ("bits33", wire.pgtable(M, m, 64, 0, [1] * 16, 3, 33, packed=b"\0" * 64), EINVAL, "pte_bits"),
        ("narrow", wire.pgtable(M, m, 64, 0, [1] * 64, 3, 1), EINVAL, "too narrow"),
        ("devcount", wire.pgtable(M, m, 64, 0, [1] * 64, 4, 2), EINVAL, "dev_count"),
        ("unaligned", wire.pgtable(M, m, 64, 1, [1] * 32, 3, 2), EINVAL, "unaligned"),
        ("pastend", wire.pgtable(M, m, 64, 48, [1] * 32, 3, 2), EINVAL, "past the table"),
        ("wrap", wire.pgtable(M, m, 0xFFFFFFFF, 0xFFFFFFF0, [1] * 32, 3, 2), EINVAL, "past the table"),
        ("truncated", wire.pgtable(M, m, 64, 0, [1] * 64, 3, 2, page_count=64, packed=b"\x55" * 8), EINVAL, "incomplete"),
        ("badentry", wire.pgtable(M, m, 64, 0, [1] * 10 + [3] + [1] * 53, 3, 2), EINVAL, "past dev_count"),
        ("nodev", wire.pgtable(M, m + 77, 64, 0, [1] * 64, 3, 2), ENODEV, "no live switch target"),
        ("hugemajor", wire.pgtable(0xFFFFFFFF, 0xFFFFFFFF, 64, 0, [1] * 64, 3, 2), ENODEV, "no live switch target"),
        ("freeunaligned", wire.pgtable(M, m, 64, 16, [], 3, 2), EINVAL, "cannot free"),
    ]


def test_refusals_leave_mapping_unchanged(env, client):
    sw = Switch(env, "swnl4")
    dev = sw.dev
    mapping = [(r * 7) % 3 for r in range(64)]
    assert client.send(wire.pgtable(dev.major, dev.minor, 64, 0, mapping, 3, 2, userland=(5, 6))).status == 0
    for i, (name, msg, err, text) in enumerate(refusals(dev)):
        resp = client.send(msg)
        assert resp.status == err, (name, resp)
        assert text in resp.err_str, (name, resp)
        assert resp.total_len == 284
    assert dev.status()["userland"] == (5, 6)
    sw.placed(mapping, range(64), "r")


def test_window_ending_at_the_last_region_of_the_largest_table(env, client):
    """page_total 2^32 - 1 and a window up to its last region (2^32 - 2). The
    decoder once stepped a region counter past 2^32 - 1 after the last entry:
    an overflow panic in the upload handler (an oops that killed the sender
    and left the device's update lock held). Sent from a child process, so a
    crash is this test's failure, not the test runner's death."""
    sw = Switch(env, "swnl6")
    dev = sw.dev
    offset, count = 0xFFFFE000 - 16, 0x1FFF + 16
    values = [(r * 5) % 3 for r in range(count)]
    code = ("from dmtest import nl, wire; c = nl.Client(); "
            f"r = c.send(wire.pgtable({dev.major}, {dev.minor}, 0xFFFFFFFF, {offset}, {values!r}, 3, 2)); "
            "print(r.status, r.err_str)")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0 and child.stdout.split() == ["0"], (child.returncode, child.stdout,
                                                                   child.stderr[-2000:])
    # The new table maps nothing below the window: path 0, as unmapped.
    sw.placed(lambda r: 0, [0, 1, 63], "e")
    # The device takes the next upload (the update lock was released).
    mapping = [(r * 7) % 3 for r in range(64)]
    assert client.send(wire.pgtable(dev.major, dev.minor, 64, 0, mapping, 3, 2)).status == 0
    sw.placed(mapping, range(64), "n")


def test_missing_attribute_gets_a_response(client):
    resp = client.send_raw(b"")
    assert resp.status == EINVAL and "missing" in resp.err_str


def test_genl_core_refusals_are_nlmsg_errors(client):
    fid = client.family_id()
    with pytest.raises(nl.NetlinkError) as e:
        client.request(fid, 7, 1, b"")
    assert e.value.errno in (95, 22)  # EOPNOTSUPP for an unknown command
    too_long = nl._attr(wire.ATTR_MSG, b"\0" * (wire.MAX_MSG + 1))
    with pytest.raises(nl.NetlinkError) as e:
        client.request(fid, wire.CMD_GET_PAGE_TBL, 1, too_long)
    assert e.value.errno in (22, 34)  # EINVAL / ERANGE from attribute validation


PRIV_SCRIPT = """
from dmtest import nl, wire
c = nl.Client()
try:
    r = c.send(wire.pgtable({M}, {m}, 64, 0, [2] * 64, 3, 2))
    print("status", r.status, r.err_str)
except nl.NetlinkError as e:
    print("nlerr", e.errno)
"""


def test_privilege(env):
    sw = Switch(env, "swnl5")
    dev = sw.dev
    mapping = [1] * 64
    c = nl.Client()
    assert c.send(wire.pgtable(dev.major, dev.minor, 64, 0, mapping, 3, 2)).status == 0
    c.close()
    script = PRIV_SCRIPT.format(M=dev.major, m=dev.minor)
    # CAP_NET_ADMIN without CAP_SYS_ADMIN: the handler refuses with EPERM.
    out = sh(f"capsh --drop=cap_sys_admin -- -c 'python3 -c \"$0\"' {shq(script)}").stdout
    assert out.startswith("status 1 ") and "CAP_SYS_ADMIN" in out, out
    # Neither: the genl core refuses (GENL_ADMIN_PERM).
    out = sh(f"capsh --drop=cap_sys_admin,cap_net_admin -- -c 'python3 -c \"$0\"' {shq(script)}").stdout
    assert out.strip() == "nlerr 1", out
    # Without CAP_SYS_ADMIN, DM refuses the message.
    r = sh(f"capsh --drop=cap_sys_admin -- -c 'dmsetup message {dev.name} 0 set_region_mappings 0:2'", check=False)
    assert r.returncode != 0
    sw.placed(mapping, range(0, 64, 3), "p")


def shq(s):
    return "'" + s.replace("'", "'\\''") + "'"


def test_message_and_netlink_place_identically(env, client):
    swa, swb = Switch(env, "swmsga", regions=200), Switch(env, "swmsgb", regions=200)
    a, b = swa.dev, swb.dev
    rng = random.Random(7)
    mapping = [rng.randrange(3) for _ in range(200)]
    assert all(r.status == 0 for r in nl.upload(client, a.major, a.minor, mapping, 3, 2))
    # First regions one by one, then a repeat of the last 3 entries.
    args = [f"0:{mapping[0]:x}"] + [f":{p:x}" for p in mapping[1:150]]
    b.message("set_region_mappings " + " ".join(args))
    b.message("set_region_mappings " + " ".join(f"{r:x}:{mapping[r]:x}" for r in range(150, 200)))
    sample = range(0, 200, 3)
    swa.placed(mapping, sample, "x")
    swb.placed(mapping, sample, "y")


def test_message_repeat_and_refusals(env):
    sw = Switch(env, "swmsgr")
    dev = sw.dev
    dev.message("set_region_mappings 0:0 :1 :2 R3,3d")
    sw.placed([r % 3 for r in range(64)], range(64), "q")
    bad = ["", "set_region_mappings", "set_region_mappings garbage", "set_region_mappings 0:3",
           "set_region_mappings 40:0", "set_region_mappings " + "f" * 300 + ":0",
           "set_region_mappings 0:1 R1,ffffffffff", "set_region_mappings 0:1 R5,1",
           "set_region_mappings :1", "set_region_mappings 0:1 0:", "no_such_message 1"]
    for m in bad:
        r = dev.message(m, check=False)
        assert r.returncode != 0, m
    sw.placed([r % 3 for r in range(64)], range(0, 64, 5), "z")
