"""Issue 16: reading the live table back. NETLINK_CMD_DUMP_PAGE_TBL is a
netlink dump of IpcPgTable windows; replayed as uploads (the reference model
applies them as the kernel does) they must give the table the model predicts
from what was uploaded, after every kind of change. Also: the dump is an
exact snapshot under concurrent uploads, survives the device going away
mid-dump, and refuses what it must with an errno and a text."""
import errno
import json
import os
import random
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import AGENT, REPO, Switch, sh
from dmtest import model, nl, wire

KSRC = os.environ.get("DM_SWITCH_KSRC")

pytestmark = pytest.mark.usefixtures("kernel_log_guard")


def headers(windows):
    return [model.Request(w) for w in windows]


def check_windows(windows, dev, dev_count):
    """Every window is a valid upload for `dev`; together they cover the
    table once, in order, never crossing a chunk."""
    hs = headers(windows)
    assert hs, "an empty dump"
    total = hs[0].page_total
    nxt = 0
    for w, h in zip(windows, hs):
        assert (h.opcode, h.major, h.minor, h.dev_count) == (1, dev.major, dev.minor, dev_count)
        assert h.page_total == total and 32 % h.pte_bits == 0, (h.page_total, h.pte_bits)
        assert h.page_offset == nxt, (h.page_offset, nxt)
        assert len(w) == h.total_len <= wire.MAX_MSG
        if h.page_count == 0:
            assert h.page_offset % wire.CHUNK == 0 and len(w) == wire.HEADER_LEN
            nxt = min(total, h.page_offset + wire.CHUNK)
        else:
            assert h.page_offset // wire.CHUNK == (h.page_offset + h.page_count - 1) // wire.CHUNK
            nxt = h.page_offset + h.page_count
    assert nxt == total


def dumped(client, sw, dev_count=3):
    ws = client.dump(sw.dev.major, sw.dev.minor)
    check_windows(ws, sw.dev, dev_count)
    return model.replay(ws), ws


def expect(client, sw, mdl, dev_count=3):
    got, ws = dumped(client, sw, dev_count)
    assert model.same_state(got, mdl.table), "the dump differs from the model"
    return ws


def upload(client, sw, mdl, msg):
    r = client.send(msg)
    assert r.status == 0, r
    mdl.apply_upload(model.Request(msg))


def test_full_upload_at_every_width(env, client):
    rng = random.Random(16)
    for devs in (2, 3):
        sw = Switch(env, f"swdw{devs}", npaths=devs, regions=20000, region=8)
        mdl = model.Device(sw.dev.major, sw.dev.minor, devs, 20000)
        for bits in range(model.min_pte_bits(devs), 33):
            vals = [rng.randrange(devs) for _ in range(20000)]
            for m in wire.windows(sw.dev.major, sw.dev.minor, vals, devs, bits, userland=(bits, devs)):
                upload(client, sw, mdl, m)
            ws = expect(client, sw, mdl, devs)
            want_bits = bits if 32 % bits == 0 else 1 << (bits - 1).bit_length()
            # Packed at a width dividing 32; `reserved` names the table's own.
            assert {(h.pte_bits, h.reserved) for h in headers(ws)} == {(want_bits, bits)}
        sw.placed(mdl.lookup, [0, 1, 8191, 8192, 19999], f"w{devs}")


def test_partial_window_chunk_free_and_page_total_change(env, client):
    sw = Switch(env, "swdp", regions=20000, region=8)
    M, m = sw.dev.major, sw.dev.minor
    mdl = model.Device(M, m, 3, 20000)
    # Nothing uploaded yet (RFC format): every chunk unallocated.
    got, ws = dumped(client, sw)
    assert not got.chunks and all(h.page_count == 0 for h in headers(ws)) and len(ws) == 3
    # A partial window with a partial last word (16 fields per word).
    upload(client, sw, mdl, wire.pgtable(M, m, 20000, 16, [(r * 7) % 3 for r in range(37)], 3, 2, (1, 2)))
    expect(client, sw, mdl)
    # A second chunk, then free the first.
    upload(client, sw, mdl, wire.pgtable(M, m, 20000, 9008, [2] * 100, 3, 2, (3, 4)))
    upload(client, sw, mdl, wire.pgtable(M, m, 20000, 0, [], 3, 2, (5, 6)))
    got = expect(client, sw, mdl)
    assert [h.page_count for h in headers(got)][0] == 0
    # A new page_total replaces the table.
    upload(client, sw, mdl, wire.pgtable(M, m, 30000, 8192, [1] * 64, 3, 2, (7, 8)))
    got, _ = dumped(client, sw)
    assert got.page_total == 30000 and set(got.chunks) == {1}
    assert model.same_state(got, mdl.table)


def test_region_mappings_upstream_start_and_reload(env, client):
    sw = Switch(env, "swdu", regions=5000, region=8, fmt="upstream")
    M, m = sw.dev.major, sw.dev.minor
    mdl = model.Device(M, m, 3, 5000, fmt="upstream")
    expect(client, sw, mdl)  # the round-robin start
    msg = b"set_region_mappings 0:1 :2 R2,10 fa0:0"
    sw.dev.message(msg.decode())
    assert mdl.message(msg.split()) == 0
    expect(client, sw, mdl)
    # Reload with the same geometry: the new table inherits the mapping.
    sw.dev.reload(sw.table())
    sh(f"dmsetup resume {sw.dev.name}")
    expect(client, sw, mdl)
    sw.placed(mdl.lookup, [0, 1, 2, 20, 21, 0xfa0, 4999], "r")


def test_dump_is_a_snapshot_while_uploads_run(env, client):
    """One window rewrites the whole table (500,000 regions of 1 bit),
    alternately to path 0 and to path 1; a dump spans several buffers (so
    several dump calls), yet never shows a mix."""
    regions = 500000
    sw = Switch(env, "swds", npaths=2, regions=regions, region=2)
    M, m = sw.dev.major, sw.dev.minor
    msgs = [wire.pgtable(M, m, regions, 0, [p] * regions, 2, 1) for p in (0, 1)]
    assert all(len(msg) <= wire.MAX_MSG for msg in msgs)
    assert client.send(msgs[0]).status == 0
    stop, sent = threading.Event(), [0]

    def writer():
        c = nl.Client()
        while not stop.is_set():
            assert c.send(msgs[sent[0] % 2]).status == 0
            sent[0] += 1
        c.close()

    t = threading.Thread(target=writer)
    t.start()
    seen, buffers = set(), []
    try:
        for _ in range(20):
            n = [0]
            ws = client.dump(M, m, between=lambda i: n.__setitem__(0, i))
            buffers.append(n[0] + 1)
            got = model.replay(ws)
            values = {got.get(r) for r in range(regions)}
            assert len(values) == 1, f"a dump mixed two tables: paths {sorted(values)}"
            seen |= values
    finally:
        stop.set()
        t.join()
    print(f"\ndump snapshot: {sent[0]} uploads during 20 dumps of {min(buffers)}-{max(buffers)} buffers, "
          f"tables seen {sorted(seen)}")
    assert sent[0] > 0 and min(buffers) > 1


@pytest.mark.parametrize("action", ["suspend", "remove"])
def test_device_goes_away_mid_dump(env, client, action):
    regions = 1 << 20
    sw = Switch(env, f"swdg{action[0]}", regions=regions, region=2)
    M, m = sw.dev.major, sw.dev.minor
    mdl = model.Device(M, m, 3, regions)
    for msg in wire.windows(M, m, [r % 3 for r in range(regions)], 3, 2):
        upload(client, sw, mdl, msg)
    done = []

    def act(n):
        if n == 1:
            sh(f"dmsetup {action} {sw.dev.name}")
            done.append(n)

    ws = client.dump(M, m, between=act)
    assert done, "the dump fitted in one datagram: nothing happened mid-dump"
    assert model.same_state(model.replay(ws), mdl.table)
    # Afterwards the device is not live: a new dump is refused.
    with pytest.raises(nl.NetlinkError) as e:
        client.dump(M, m)
    assert e.value.errno == errno.ENODEV and "no live switch target" in e.value.msg
    if action == "suspend":
        sh(f"dmsetup resume {sw.dev.name}")
        expect(client, sw, mdl)


def test_refusals(env, client):
    sw = Switch(env, "swdr", regions=64, region=64)
    M, m = sw.dev.major, sw.dev.minor
    lin = env.dm("lindr", f"0 128 linear {sw.paths[0]} 0")

    def refused(attrs, **kw):
        with pytest.raises(nl.NetlinkError) as e:
            client.dump_raw(attrs, **kw)
        return e.value.errno, e.value.msg or ""

    u32 = lambda kind, v: nl._attr(kind, struct.pack("=I", v))  # noqa: E731
    dev = u32(wire.ATTR_DEV_MAJOR, M) + u32(wire.ATTR_DEV_MINOR, m)
    e, text = refused(u32(wire.ATTR_DEV_MAJOR, lin.major) + u32(wire.ATTR_DEV_MINOR, lin.minor))
    assert e == errno.ENODEV and "no live switch target" in text
    e, text = refused(u32(wire.ATTR_DEV_MAJOR, 4095) + u32(wire.ATTR_DEV_MINOR, 1 << 20))
    assert e == errno.ENODEV
    e, text = refused(u32(wire.ATTR_DEV_MAJOR, M))
    assert e == errno.EINVAL and "DEV_MINOR" in text
    # Strict validation: an attribute the command does not take, or a u32 of 8 bytes.
    assert refused(dev + nl._attr(wire.ATTR_MSG, b"\0" * 40))[0] == errno.EINVAL
    assert refused(nl._attr(wire.ATTR_DEV_MAJOR, struct.pack("=Q", M)) + u32(wire.ATTR_DEV_MINOR, m))[0] == \
        errno.EINVAL
    # The upload command has no dump, and the dump command no doit.
    assert refused(dev, cmd=wire.CMD_GET_PAGE_TBL)[0] == errno.EOPNOTSUPP
    with pytest.raises(nl.NetlinkError) as ex:
        client.request(client.family_id(), wire.CMD_DUMP_PAGE_TBL, 1, dev)
    assert ex.value.errno == errno.EOPNOTSUPP
    # Still serving.
    assert len(client.dump(M, m)) == 1


DUMP_SCRIPT = """
import os
from dmtest import nl
c = nl.Client()
c.family_id()
if {drop}:
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
try:
    print("windows", len(c.dump({M}, {m})))
except nl.NetlinkError as e:
    print("nlerr", e.errno, e.msg)
"""


def test_privileges(env):
    sw = Switch(env, "swdv", regions=64, region=64)
    script = lambda drop: DUMP_SCRIPT.format(M=sw.dev.major, m=sw.dev.minor, drop=drop)  # noqa: E731

    def run(prefix, drop=False):
        cmd = f"python3 -c {shq(script(drop))}"
        return sh(f"{prefix} -- -c {shq(cmd)}" if prefix else cmd, check=False).stdout.strip()

    assert run("") == "windows 1"
    out = run("capsh --drop=cap_sys_admin")
    assert out.startswith(f"nlerr {errno.EPERM}") and "CAP_SYS_ADMIN" in out, out
    out = run("capsh --drop=cap_sys_admin,cap_net_admin")
    assert out.startswith(f"nlerr {errno.EPERM}"), out
    # A socket root opened, used after dropping to nobody: refused.
    out = run("", drop=True)
    assert out.startswith(f"nlerr {errno.EPERM}"), out


def shq(s):
    return "'" + s.replace("'", "'\"'\"'") + "'"


def test_large_table_with_freed_chunks_and_rate(env, client):
    """2^20 regions, random mapping, some chunks freed: the dump replays to
    the model; prints the dump and upload rates."""
    regions = 1 << 20
    sw = Switch(env, "swdl", regions=regions, region=2)
    M, m = sw.dev.major, sw.dev.minor
    mdl = model.Device(M, m, 3, regions)
    rng = random.Random(20)
    vals = [rng.randrange(3) for _ in range(regions)]
    t0 = time.monotonic()
    for msg in wire.windows(M, m, vals, 3, 2, userland=(0x16, 0x20)):
        upload(client, sw, mdl, msg)
    up_s = time.monotonic() - t0
    for c in (0, 5, 127):
        upload(client, sw, mdl, wire.pgtable(M, m, regions, c * wire.CHUNK, [], 3, 2, (0x16, 0x20)))
    t0 = time.monotonic()
    ws = expect(client, sw, mdl)
    dump_s = time.monotonic() - t0
    print(f"\ndump rate: {regions / dump_s:,.0f} regions/s ({len(ws)} windows, {dump_s:.2f} s incl. the "
          f"model); upload rate: {regions / up_s:,.0f} regions/s ({up_s:.2f} s)")
    assert sum(1 for h in headers(ws) if h.page_count == 0) == 3
    sw.placed(mdl.lookup, [0, 5 * wire.CHUNK, 6 * wire.CHUNK + 1, regions - 1], "l")


def agent(*args, input=None):
    r = subprocess.run([str(AGENT), *args], input=input, capture_output=True, text=True)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_agent_dump_upload_identity_and_diff(env, client):
    """`dm-switch dump | dm-switch upload --file -` restores the same table
    (placement, userland words, unallocated chunks) on a 2^18-region table
    with freed chunks; `upload --diff` sends only the windows that differ."""
    regions = 1 << 18
    sw = Switch(env, "swda", regions=regions, region=2)
    M, m = sw.dev.major, sw.dev.minor
    rng = random.Random(19)
    vals = [rng.randrange(3) for _ in range(regions)]
    for msg in wire.windows(M, m, vals, 3, 2, userland=(0x2011, 7)):
        assert client.send(msg).status == 0
    for c in (1, 16, 30):
        assert client.send(wire.pgtable(M, m, regions, c * wire.CHUNK, [], 3, 2, (0x2011, 7))).status == 0
    before = model.replay(client.dump(M, m))
    text = agent("dump", sw.dev.name)
    assert "userland 0x2011,0x7" in text and f"{wire.CHUNK}-{2 * wire.CHUNK - 1} -" in text
    # Wipe the table (a new page_total replaces it), then restore from the dump.
    assert client.send(wire.pgtable(M, m, 100, 0, [0] * 100, 3, 2)).status == 0
    out = agent("upload", sw.dev.name, "--file", "-", input=text)
    assert model.same_state(model.replay(client.dump(M, m)), before), out
    # The same file again with --diff: nothing to send.
    out = agent("upload", sw.dev.name, "--file", "-", "--diff", input=text)
    assert "nothing sent" in out, out
    # Change regions in two windows: exactly those two are sent.
    per = wire.window_size(2)
    assert per + 9 < regions
    lines = text.splitlines()
    extra = f"5 {(before.chunks[0][5] + 1) % 3}\n{per + 9} {(vals[per + 9] + 1) % 3}\n"
    out = agent("upload", sw.dev.name, "--file", "-", "--diff", input="\n".join(lines) + "\n" + extra)
    # The two entry windows with a change, then the frees of the three chunks
    # the first one covers (writing its entries allocates them again).
    assert "in 5 windows of" in out, out
    after = model.replay(client.dump(M, m))
    assert set(after.chunks) == set(before.chunks)
    changed = [r for r in range(regions) if after.get(r) != before.get(r)]
    assert changed == [5, per + 9], changed[:10]
    # JSON and region-mappings renderings.
    j = json.loads(agent("dump", f"{M}:{m}", "--format", "json"))
    assert j["page_total"] == regions and j["userland"] == [0x2011, 7] and 16 not in j["allocated_chunks"]
    small = Switch(env, "swdb", regions=64, region=64)
    agent("upload", small.dev.name, "--region-mappings", "0:1 :2 R2,3e")
    assert agent("dump", small.dev.name, "--format", "region-mappings").split()[:3] == ["0:1", "1:2", "2:1"]


@pytest.mark.skipif(not KSRC, reason="needs the kernel tree (make check passes DM_SWITCH_KSRC)")
def test_ynl_cli_uploads_and_dumps(env, client):
    """The kernel tree's own YNL client (tools/net/ynl/cli.py), driven by our
    spec, uploads a window and dumps the table: the same placement as ours."""
    sw = Switch(env, "swdy", regions=64, region=64)
    M, m = sw.dev.major, sw.dev.minor
    cli = [sys.executable, f"{KSRC}/tools/net/ynl/cli.py", "--spec", str(REPO / "include/uapi/dm_switch.yaml"),
           "--schema", f"{KSRC}/Documentation/netlink/genetlink-legacy.yaml", "--output-json"]

    def ynl(*args):
        r = subprocess.run(cli + list(args), capture_output=True, text=True)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return json.loads(r.stdout)

    vals = [(r * 5) % 3 for r in range(64)]
    reply = ynl("--do", "get-page-tbl", "--json",
                json.dumps({"msg": wire.pgtable(M, m, 64, 0, vals, 3, 2, (0x11, 0x22)).hex()}))
    resp = wire.Response(bytes.fromhex(reply["response"]))
    assert (resp.status, resp.userland) == (0, (0x11, 0x22)), resp
    sw.placed(vals, range(64), "y")
    dumped_by_ynl = [bytes.fromhex(w["msg"]) for w in ynl("--dump", "dump-page-tbl", "--json",
                                                          json.dumps({"dev-major": M, "dev-minor": m}))]
    assert dumped_by_ynl == client.dump(M, m)
    got = model.replay(dumped_by_ynl)
    assert [got.get(r) for r in range(64)] == vals and got.userland == (0x11, 0x22)
