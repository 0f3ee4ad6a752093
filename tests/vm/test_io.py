"""Issue 4: flushes, discards, write-zeroes, per-CPU counters, reload and lifecycle."""
import os
import random
import subprocess
import threading
import time


from campaign import fio_jobs, fio_verify_pass
from conftest import DISCARDS, FLUSHES, SECTOR, Switch, blkstat, marker, read_at, sh, write_at
from dmtest import model, nl, wire


def rr_table(length, region, paths, starts=None):
    starts = starts or [0] * len(paths)
    return f"0 {length} switch {len(paths)} {region} 0 " + " ".join(f"{p} {s}" for p, s in zip(paths, starts))


def test_fsync_flushes_every_path(env):
    paths = [env.nullb(4, cache_mb=8) for _ in range(3)]
    bystander = env.nullb(4, cache_mb=8)
    dev = env.dm("swflush", rr_table(8192, 128, [p.path for p in paths]))
    before = [p.stat()[FLUSHES] for p in paths + [bystander]]
    fd = os.open(dev.path, os.O_WRONLY)
    try:
        os.pwrite(fd, marker("flush", 4096), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    after = [p.stat()[FLUSHES] for p in paths + [bystander]]
    assert all(a > b for a, b in zip(after[:3], before[:3])), f"flushes per path {before} -> {after}"
    assert after[3] == before[3], "a device outside the switch got a flush"


def six_region_paths(env):
    loops = [env.loop(8) for _ in range(3)]
    region = 128
    dev = env.dm("swdz", rr_table(18 * region, region, [l.path for l in loops]))
    # Every path holds its own marker everywhere, then the switch writes its
    # data: each region's data lands on its own path only.
    for i, l in enumerate(loops):
        write_at(l.path, 0, marker(f"own{i}", 18 * region * SECTOR))
    fill = marker("keep", 18 * region * SECTOR)
    write_at(dev.path, 0, fill)
    return loops, dev, region, fill


def check_zeroed_regions(loops, region, fill, first, count):
    """Regions first..first+count-1 read zero on their own paths at their own
    offsets; the same offsets on other paths, and the neighbours, keep data."""
    zero = bytes(region * SECTOR)
    for r in range(first - 1, first + count + 1):
        off = r * region * SECTOR
        for i, l in enumerate(loops):
            got = read_at(l.path, off, region * SECTOR)
            if i == r % 3 and first <= r < first + count:
                assert got == zero, f"region {r} not cleared on path {i}"
            elif i == r % 3:
                assert got == fill[off:off + region * SECTOR], f"region {r} outside the range changed"
            else:
                assert got != zero, f"region {r}: path {i} (not its path) was cleared"


def test_discard_spanning_six_regions_reaches_each_path(env):
    loops, dev, region, fill = six_region_paths(env)
    before = [blkstat(os.path.basename(l.path))[DISCARDS] for l in loops]
    sh(f"blkdiscard -o {3 * region * SECTOR} -l {6 * region * SECTOR} {dev.path}")
    after = [blkstat(os.path.basename(l.path))[DISCARDS] for l in loops]
    assert [a - b for a, b in zip(after, before)] == [2, 2, 2], f"discards per path {before} -> {after}"
    check_zeroed_regions(loops, region, fill, 3, 6)


def test_write_zeroes_spanning_six_regions_reaches_each_path(env):
    loops, dev, region, fill = six_region_paths(env)
    # fallocate --punch-hole on a block device issues REQ_OP_WRITE_ZEROES without fallback.
    sh(f"fallocate -p -o {3 * region * SECTOR} -l {6 * region * SECTOR} {dev.path}")
    check_zeroed_regions(loops, region, fill, 3, 6)


def test_discard_advertised_only_if_every_path_supports_it(env):
    yes = env.nullb(4, discard=True)
    no = env.nullb(4, discard=False)
    both = env.dm("swdy", rr_table(8192, 128, [yes.path, yes.path]))
    mixed = env.dm("swdn", rr_table(8192, 128, [yes.path, no.path]))
    q = lambda d: int(open(f"/sys/block/dm-{d.minor}/queue/discard_max_bytes").read())
    assert q(both) > 0
    assert q(mixed) == 0


def test_counters_count_bios(env):
    sw = Switch(env, "swcnt", regions=64, region=128, fmt="upstream", guard=131072)
    dev = sw.dev
    s0 = dev.status()
    for r in range(10):
        write_at(dev.path, sw.offset(r * 128), marker("c", 4096))
    # A write across a region boundary is two bios at map().
    write_at(dev.path, sw.offset(5 * 128 - 4), marker("x", 8 * SECTOR))
    s1 = dev.status()
    assert s1["remapped"] - s0["remapped"] == 12
    assert s1["unmapped"] == s0["unmapped"]
    # fsync: empty flush clones are not counted.
    fd = os.open(dev.path, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    assert dev.status()["remapped"] == s1["remapped"]


def test_counters_exact_with_two_cpus(env):
    sw = Switch(env, "swcpu", regions=256, region=128, fmt="upstream", guard=131072)
    dev = sw.dev
    s0 = dev.status()
    sh(f"fio --name=c --filename={dev.path} --direct=1 --rw=randwrite --bs=4k --ioengine=psync "
       f"--numjobs=2 --cpus_allowed=0-1 --cpus_allowed_policy=split --number_ios=400 "
       f"--offset={sw.offset(0)} --size={sw.length * SECTOR} "
       f"--randrepeat=0 --group_reporting")
    s1 = dev.status()
    assert s1["remapped"] - s0["remapped"] == 800


def set_all(dev, path, regions):
    dev.message(f"set_region_mappings 0:{path:x} R1,{regions - 1:x}")


def test_reload_same_geometry_inherits_mapping(env):
    sw = Switch(env, "swinh", regions=32, region=128)
    dev = sw.dev
    set_all(dev, 2, 32)
    sw.placed(lambda r: 2, range(0, 32, 5), "a")
    dev.reload(sw.table())
    sh(f"dmsetup resume {dev.name}")
    sw.placed(lambda r: 2, range(1, 32, 5), "b")
    # The inherited table still takes uploads: it is live.
    c = nl.Client()
    resp = c.send(wire.pgtable(dev.major, dev.minor, 32, 0, [1] * 32, 3, 2))
    c.close()
    assert resp.status == 0, resp
    sw.placed(lambda r: 1, range(2, 32, 5), "c")


def test_reload_new_geometry_starts_empty(env):
    sw = Switch(env, "swnew", regions=32, region=128)
    dev = sw.dev
    set_all(dev, 2, 32)
    dev.reload(sw.table(region=64))
    sh(f"dmsetup resume {dev.name}")
    s0 = dev.status()
    sw.placed(lambda r: 0, range(0, 64, 7), "d", region=64)
    assert dev.status()["unmapped"] > s0["unmapped"]


def test_inactive_table_is_not_addressed(env, client):
    dev = Switch(env, "swina", regions=32, region=128).dev
    sh(f"dmsetup suspend {dev.name}")
    resp = client.send(wire.pgtable(dev.major, dev.minor, 32, 0, [1] * 32, 3, 2))
    assert resp.status == 19 and "no live switch target" in resp.err_str, resp  # ENODEV
    sh(f"dmsetup resume {dev.name}")
    assert client.send(wire.pgtable(dev.major, dev.minor, 32, 0, [1] * 32, 3, 2)).status == 0


def test_lifecycle_under_io(env, client):
    """Suspend/resume, reload+resume and uploads while fio writes and verifies;
    then remove. The debug kernel's log scan catches use-after-free and RCU bugs."""
    sw = Switch(env, "swlife", regions=64, region=128)
    dev, table = sw.dev, sw.table()
    fio = subprocess.Popen(
        ["fio", "--name=l", f"--filename={dev.path}", "--direct=1", "--rw=randrw", "--bs=4k",
         "--ioengine=libaio", "--iodepth=8", "--time_based", "--runtime=25", "--numjobs=2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 20
    n = 0
    while n < 3 or time.time() < deadline:
        sh(f"dmsetup suspend {dev.name} && dmsetup resume {dev.name}")
        dev.reload(table if n % 2 else sw.table(region=64))
        sh(f"dmsetup resume {dev.name}")
        resp = client.send(wire.pgtable(dev.major, dev.minor, 64, 0, [n % 3] * 64, 3, 2))
        assert resp.status in (0, 19), resp
        n += 1
    out, _ = fio.communicate(timeout=120)
    assert fio.returncode == 0, out
    dev.remove()
    r = sh(f"dmsetup info {dev.name}", check=False)
    assert r.returncode != 0
    # Upload to the removed device: refused, nothing dangling.
    resp = client.send(wire.pgtable(dev.major, dev.minor, 64, 0, [1] * 64, 3, 2))
    assert resp.status == 19, resp


def test_reload_with_new_length_keeps_mapping_under_io(env, client):
    """Online growth: a reload with the same paths and region size but another
    length keeps the entries of the regions both tables have (fio writes and
    verifies the first 3 MiB across a shrink and a growth: a region routed
    elsewhere would read back another path's data); the regions gained start
    as the format says: RFC unmapped in new chunks and path 0 in the chunk the
    old table ended in, upstream round robin."""
    regions, region, small = 20000, 8, 9000
    rng = random.Random(19)
    for fmt in ("rfc", "upstream"):
        sw = Switch(env, f"swgrow{fmt[0]}", regions=regions, region=region, fmt=fmt)
        dev = sw.dev
        vals = [rng.randrange(3) for _ in range(regions)]
        for m in wire.windows(dev.major, dev.minor, vals, 3, 2, userland=(5, 6)):
            assert client.send(m).status == 0
        sw.placed(vals, [900, 8191, 8192, 19999], f"g0{fmt}")
        fio_out = []
        fio = threading.Thread(target=lambda: fio_out.extend(fio_verify_pass(fio_jobs(dev.path, [1024, 1024, 1024], 1), 600)))
        fio.start()
        sw.length = small * region
        dev.reload(sw.table())
        sh(f"dmsetup resume {dev.name}")
        t = model.replay(client.dump(dev.major, dev.minor))
        assert t.page_total == small and t.userland == (5, 6)
        assert all(t.get(r) == vals[r] for r in range(small)), "shrink lost entries"
        sw.length = regions * region
        dev.reload(sw.table())
        sh(f"dmsetup resume {dev.name}")
        fio.join(600)
        assert len(fio_out) == 2, "fio write+verify did not complete"
        t = model.replay(client.dump(dev.major, dev.minor))
        assert t.page_total == regions and t.userland == (5, 6)
        assert all(t.get(r) == vals[r] for r in range(small)), "growth lost entries"
        if fmt == "rfc":
            gained = lambda r: 0  # noqa: E731
            assert all(t.get(r) == 0 for r in range(small, 2 * wire.CHUNK))
            assert 2 not in t.chunks, "a new chunk is unmapped"
        else:
            gained = lambda r: r % 3  # noqa: E731
            assert all(t.get(r) == r % 3 for r in range(small, regions))
        sw.placed(lambda r: vals[r] if r < small else gained(r), [900, 8191, 8192, 8999, 9000, 16383, 16384, 19999],
                  f"g1{fmt}")
