"""Issue 18: per-path statistics. DM_SWITCH_CMD_DUMP_PATH_STATS reads, for
each path, the bios and sectors the live target sent to it by stat group
(read, write, discard, flush); `dm-switch status` shows them. The counts must
equal the I/O a test issued to each path's regions: split bios, flush clones
and discard pieces included. udev's probes read the start and end of a
device, so the switches here sit between two `zero` targets (the probes
never reach them) and the counts are exact."""
import errno
import json
import os
import shlex
import struct
import subprocess
import sys
import threading

import pytest

from conftest import AGENT, FLUSHES, REPO, SECTOR, Switch, marker, read_at, sh, write_at
from dmtest import nl, wire
from dmtest.placement import _buf

pytestmark = pytest.mark.usefixtures("kernel_log_guard")

R, W, D, F = wire.STAT_READ, wire.STAT_WRITE, wire.STAT_DISCARD, wire.STAT_FLUSH
GUARD = 131072  # sectors of `zero` target before and after each switch
KSRC = os.environ.get("DM_SWITCH_KSRC")


def stats(client, dev):
    return client.path_stats(dev.major, dev.minor)


def expected(npaths):
    """A per-path [ios, sectors] table of zeros to fill in."""
    return [[[0] * 4, [0] * 4] for _ in range(npaths)]


def as_tuples(table):
    return [(tuple(ios), tuple(sectors)) for ios, sectors in table]


def delta(after, before):
    return [(tuple(a - b for a, b in zip(ai, bi)), tuple(a - b for a, b in zip(asec, bsec)))
            for (ai, asec), (bi, bsec) in zip(after, before)]


def settle():
    sh("udevadm settle --timeout=120", check=False)


def test_counts_equal_the_ios_issued_to_each_paths_regions(env, client):
    sw = Switch(env, "swps", regions=64, region=128, fmt="upstream", guard=GUARD)
    dev = sw.dev
    settle()
    s0, st0 = stats(client, dev), dev.status()
    assert len(s0) == 3
    want = expected(3)
    # Round-robin: region r is on path r % 3.
    for r in range(12):
        write_at(dev.path, sw.offset(r * 128), marker(f"w{r}", 4096))
        want[r % 3][0][W] += 1
        want[r % 3][1][W] += 8
    for r in range(12, 20):
        read_at(dev.path, sw.offset(r * 128), 8192)
        want[r % 3][0][R] += 1
        want[r % 3][1][R] += 16
    # A write across a region boundary is split: 3 sectors to region 4
    # (path 1), 5 to region 5 (path 2).
    write_at(dev.path, sw.offset(5 * 128 - 3), marker("x", 8 * SECTOR))
    want[1][0][W] += 1
    want[1][1][W] += 3
    want[2][0][W] += 1
    want[2][1][W] += 5
    # A read of a whole region and a half: two bios, on paths 0 and 1.
    read_at(dev.path, sw.offset(30 * 128), 192 * SECTOR)
    want[0][0][R] += 1
    want[0][1][R] += 128
    want[1][0][R] += 1
    want[1][1][R] += 64
    got = delta(stats(client, dev), s0)
    assert got == as_tuples(want), f"per path (ios, sectors): got {got}, issued {as_tuples(want)}"
    st1 = dev.status()
    bios = sum(sum(ios) for ios, _ in got)
    assert st1["remapped"] - st0["remapped"] == bios and st1["unmapped"] == st0["unmapped"]
    # Reading changes nothing.
    assert delta(stats(client, dev), s0) == got


def guarded_table(paths, region, regions):
    n = regions * region
    pairs = " ".join(f"{p} 0" for p in paths)
    return (f"0 {GUARD} zero\n{GUARD} {n} switch {len(paths)} {region} 0 {pairs}\n"
            f"{GUARD + n} {GUARD} zero")


def test_flush_clones_and_discard_pieces(env, client):
    """An fsync sends one empty flush to every device, on the first path
    over it (paths 0 and 2 share a device here); a discard over six regions
    arrives as one piece per region, each counted on its path with the
    piece's sectors. The devices have a write cache (or the block layer
    drops flushes) and take discards."""
    region = 128
    devs = [env.nullb(4, cache_mb=8, discard=True) for _ in range(3)]
    paths = [devs[0], devs[1], devs[0], devs[2]]
    dev = env.dm("swpsf", guarded_table([p.path for p in paths], region, 18))
    settle()
    s0 = stats(client, dev)
    f0 = [d.stat()[FLUSHES] for d in devs]
    fd = os.open(dev.path, os.O_RDONLY)
    try:
        for _ in range(3):
            os.fsync(fd)
    finally:
        os.close(fd)
    got = delta(stats(client, dev), s0)
    assert [ios for ios, _ in got] == [(0, 0, 0, 3), (0, 0, 0, 3), (0, 0, 0, 0), (0, 0, 0, 3)], \
        f"three fsyncs: {got}"
    assert [sectors for _, sectors in got] == [(0, 0, 0, 0)] * 4
    assert [d.stat()[FLUSHES] - f for d, f in zip(devs, f0)] == [3, 3, 3], "one flush per device per fsync"
    s1 = stats(client, dev)
    sh(f"blkdiscard -o {(GUARD + 3 * region) * SECTOR} -l {6 * region * SECTOR} {dev.path}")
    got = delta(stats(client, dev), s1)
    # Regions 3..8 are on paths 3, 0, 1, 2, 3, 0.
    assert [(ios[D], sectors[D]) for ios, sectors in got] == \
        [(2, 2 * region), (1, region), (1, region), (2, 2 * region)], got
    assert all(ios[R] == ios[W] == 0 for ios, _ in got), got


def test_reload_starts_counting_from_zero(env, client):
    """A reloaded table keeps its mapping (same geometry) but its counters,
    like `dmsetup status`'s, start from zero."""
    sw = Switch(env, "swpsr", regions=32, region=128, fmt="upstream", guard=GUARD)
    dev = sw.dev
    for r in range(6):
        write_at(dev.path, sw.offset(r * 128), marker("a", 4096))
    assert sum(ios[W] for ios, _ in stats(client, dev)) >= 6
    dev.reload(sw.table())
    sh(f"dmsetup resume {dev.name}")
    settle()
    assert stats(client, dev) == [((0,) * 4, (0,) * 4)] * 3
    assert (dev.status()["remapped"], dev.status()["unmapped"]) == (0, 0)
    write_at(dev.path, sw.offset(4 * 128), marker("b", 4096))
    assert [ios[W] for ios, _ in stats(client, dev)] == [0, 1, 0]


def test_refusals(env, client):
    sw = Switch(env, "swpsx", regions=16, region=64)
    lin = env.dm("linpsx", f"0 128 linear {sw.paths[0]} 0")
    u32 = lambda kind, v: nl._attr(kind, struct.pack("=I", v))  # noqa: E731

    def refused(attrs):
        with pytest.raises(nl.NetlinkError) as e:
            client.dump_raw(attrs, cmd=wire.CMD_DUMP_PATH_STATS)
        return e.value.errno, e.value.msg or ""

    e, text = refused(u32(wire.ATTR_DEV_MAJOR, lin.major) + u32(wire.ATTR_DEV_MINOR, lin.minor))
    assert e == errno.ENODEV and "no live switch target" in text
    e, text = refused(u32(wire.ATTR_DEV_MAJOR, sw.dev.major))
    assert e == errno.EINVAL and "DEV_MINOR" in text
    # No doit for the command.
    with pytest.raises(nl.NetlinkError) as ex:
        client.request(client.family_id(), wire.CMD_DUMP_PATH_STATS, 1,
                       u32(wire.ATTR_DEV_MAJOR, sw.dev.major) + u32(wire.ATTR_DEV_MINOR, sw.dev.minor))
    assert ex.value.errno == errno.EOPNOTSUPP
    # Without CAP_SYS_ADMIN (CAP_NET_ADMIN kept): refused, as the table dump.
    script = (f"from dmtest import nl\nc = nl.Client()\ntry:\n    c.path_stats({sw.dev.major}, {sw.dev.minor})\n"
              f"    print('read')\nexcept nl.NetlinkError as e:\n    print('nlerr', e.errno, e.msg)")
    out = sh(f"capsh --drop=cap_sys_admin -- -c {shlex.quote('python3 -c ' + shlex.quote(script))}",
             check=False).stdout.strip()
    assert out.startswith(f"nlerr {errno.EPERM}") and "CAP_SYS_ADMIN" in out, out
    assert len(stats(client, sw.dev)) == 3


def test_readers_while_io_runs_on_both_cpus(env, client):
    """Counters read while two CPUs write never go down, and add up to the
    bios issued once the writers are done (each CPU counts its own)."""
    sw = Switch(env, "swpsc", regions=256, region=128, fmt="upstream", guard=GUARD)
    dev = sw.dev
    settle()
    s0 = stats(client, dev)
    stop, problems, reads = threading.Event(), [], [0]

    def reader():
        c = nl.Client()
        last = s0
        while not stop.is_set():
            now = c.path_stats(dev.major, dev.minor)
            if any(a < b for (ai, asec), (bi, bsec) in zip(now, last) for a, b in zip(ai + asec, bi + bsec)):
                problems.append((last, now))
            last = now
            reads[0] += 1
        c.close()

    th = threading.Thread(target=reader)
    th.start()
    try:
        sh(f"fio --name=c --filename={dev.path} --direct=1 --rw=randwrite --bs=4k --ioengine=psync "
           f"--numjobs=2 --cpus_allowed=0-1 --cpus_allowed_policy=split --number_ios=400 "
           f"--offset={sw.offset(0)} --size={sw.length * SECTOR} --randrepeat=0 --group_reporting")
    finally:
        stop.set()
        th.join(60)
    assert not problems, f"a counter went down: {problems[0]}"
    assert reads[0] >= 2, "the reader did not run during the I/O"
    got = delta(stats(client, dev), s0)
    assert sum(ios[W] for ios, _ in got) == 800 and sum(sec[W] for _, sec in got) == 800 * 8, got
    assert all(ios[W] > 0 for ios, _ in got), f"random writes missed a path: {got}"


def test_65535_paths(env, client):
    """The most paths a table can have: a row for each, read back in many
    messages; writes to the first, second and last path are counted there
    (udev's probes only read). All paths are one device: one flush clone."""
    n, region = 65535, 8
    nb = env.nullb(65536 * region // 2048 + 1, memory_backed=False)
    mm = os.stat(nb.path).st_rdev
    dev_arg = f"{os.major(mm)}:{os.minor(mm)}"
    length = 65536 * region
    dev = env.dm("swps64k", f"0 {length} switch {n} {region} 0 " + " ".join([f"{dev_arg} 0"] * n))
    settle()
    s0 = stats(client, dev)
    assert len(s0) == n
    # Round-robin: region r on path r % 65535 (region 65535 wraps to path 0).
    for r in (0, 1, 65534, 65535):
        write_at(dev.path, r * region * SECTOR, marker("p", 4096))
    settle()
    got = delta(stats(client, dev), s0)
    writes = {p: ios[W] for p, (ios, _) in enumerate(got) if ios[W]}
    assert writes == {0: 2, 1: 1, 65534: 1}, writes
    js = json.loads(sh(f"{AGENT} status {dev.name} --json").stdout)
    assert len(js["paths"]) == n and js["paths"][65534]["writes"] == s0[65534][0][W] + 1


def test_agent_status_table_json_and_watch(env, client):
    """The agent takes one-target devices only, so this switch has no
    guard: udev's probes may read it, and only writes are compared."""
    sw = Switch(env, "swpsa", regions=32, region=128, fmt="upstream")
    dev = sw.dev
    for r in (1, 4, 7):
        write_at(dev.path, sw.offset(r * 128), marker("s", 4096))
    settle()
    js = json.loads(sh(f"{AGENT} status {dev.name} --json").stdout)
    ours = stats(client, dev)
    assert [p["writes"] for p in js["paths"]] == [ios[W] for ios, _ in ours]
    assert [p["write_sectors"] for p in js["paths"]] == [sec[W] for _, sec in ours]
    assert js["paths"][1]["writes"] >= 3 and js["paths"][1]["state"] == "active"
    assert sum(p["share"] for p in js["paths"]) == pytest.approx(1.0)
    text = sh(f"{AGENT} status {dev.name}").stdout
    lines = [ln for ln in text.splitlines() if ln.split()[:1] in (["0"], ["1"], ["2"])]
    assert len(lines) == 3 and "PATH" in text and "%" in lines[1], text
    # --watch into a pipe: one JSON line per interval, rates per second,
    # while a writer keeps hitting region 4 (path 1) through one open file
    # (closing a written device makes udev probe it).
    stop = threading.Event()

    def writer():
        buf = _buf(4096)
        buf[:4096] = marker("w", 4096)
        fd = os.open(dev.path, os.O_WRONLY | os.O_DIRECT)
        try:
            while not stop.is_set():
                os.pwritev(fd, [memoryview(buf)[:4096]], sw.offset(4 * 128))
        finally:
            os.close(fd)

    th = threading.Thread(target=writer)
    th.start()
    try:
        out = subprocess.run([str(AGENT), "status", dev.name, "--watch", "0.5", "--count", "3"],
                             capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        th.join(30)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(ln) for ln in out.stdout.splitlines()]
    assert len(lines) == 3
    for ln in lines:
        assert ln["name"] == dev.name and ln["interval"] >= 0.5 and len(ln["paths"]) == 3
        p0, p1, p2 = ln["paths"]
        assert p1["writes"] > 0 and p1["share"] > 0.9, ln
        assert p0["writes"] == p2["writes"] == 0, ln
        assert p1["write_sectors"] == pytest.approx(8 * p1["writes"]), ln
    bad = subprocess.run([str(AGENT), "status", dev.name, "--watch", "0"], capture_output=True, text=True)
    assert bad.returncode == 1 and "out of range" in bad.stderr


@pytest.mark.skipif(not KSRC, reason="needs the kernel tree (make check passes DM_SWITCH_KSRC)")
def test_ynl_cli_reads_path_stats(env, client):
    """The kernel tree's own YNL client, driven by our spec, reads the same
    records as ours."""
    sw = Switch(env, "swpsy", regions=16, region=64, fmt="upstream", guard=GUARD)
    for r in range(5):
        write_at(sw.dev.path, sw.offset(r * 64), marker("y", 4096))
    settle()
    cli = [sys.executable, f"{KSRC}/tools/net/ynl/cli.py", "--spec", str(REPO / "include/uapi/dm_switch.yaml"),
           "--schema", f"{KSRC}/Documentation/netlink/genetlink-legacy.yaml", "--output-json", "--dump",
           "dump-path-stats", "--json", json.dumps({"dev-major": sw.dev.major, "dev-minor": sw.dev.minor})]
    r = subprocess.run(cli, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout, r.stderr)
    records = [rec for m in json.loads(r.stdout) for rec in wire.path_stats_records(bytes.fromhex(m["path-stats"]))]
    assert [(ios, sectors) for _, ios, sectors in records] == stats(client, sw.dev)
    assert [ios[W] for _, ios, _ in records] == [2, 2, 1]
