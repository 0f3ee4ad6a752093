"""Issue 3: constructor, routing, status. Placement is read back from the paths."""
import pytest

from conftest import SECTOR, Cleanup, Switch, check_placement, ctr_error, marker, read_at, shared_paths, write_at


def layout(env, npaths, region, regions):
    """Paths (slices of one device at distinct offsets) for `regions` regions."""
    return shared_paths(env, npaths, regions * region)


def upstream_table(length, region, paths, starts):
    return f"0 {length} switch {len(paths)} {region} 0 " + " ".join(f"{p} {s}" for p, s in zip(paths, starts))


@pytest.mark.parametrize("npaths,region", [(2, 128), (3, 120), (16, 200), (255, 8)])
def test_upstream_round_robin_placement(env, npaths, region):
    regions = 40 if npaths <= 16 else 300
    paths, starts = layout(env, npaths, region, regions)
    length = regions * region - region // 2  # the last region is partial
    dev = env.dm("swrr", upstream_table(length, region, paths, starts))
    check_placement(dev, paths, starts, region, lambda r: r % npaths, range(regions))
    # The last partial region, at its last sector.
    last = regions - 1
    off = (length - 1) * SECTOR
    write_at(dev.path, off, marker("tail"))
    assert read_at(paths[last % npaths], starts[last % npaths] * SECTOR + off, SECTOR) == marker("tail")


@pytest.mark.parametrize("region", [64, 96])
def test_write_straddling_a_region_boundary_is_split(env, region):
    paths, starts = layout(env, 3, region, 10)
    dev = env.dm("swsplit", upstream_table(10 * region, region, paths, starts))
    for r in range(1, 9):
        data = marker(f"A{r}", 4 * SECTOR) + marker(f"B{r}", 4 * SECTOR)
        write_at(dev.path, (r * region - 4) * SECTOR, data)
        lo, hi = (r - 1) % 3, r % 3
        assert read_at(paths[lo], (starts[lo] + r * region - 4) * SECTOR, 4 * SECTOR) == data[:4 * SECTOR]
        assert read_at(paths[hi], (starts[hi] + r * region) * SECTOR, 4 * SECTOR) == data[4 * SECTOR:]


def test_target_not_at_sector_zero(env):
    region, regions, begin = 128, 12, 1000
    paths, starts = layout(env, 3, region, regions)
    sw = upstream_table(regions * region, region, paths, starts).split(" ", 2)[2]
    dev = env.dm("swoff", f"0 {begin} zero\n{begin} {regions * region} {sw}")
    check_placement(dev, paths, starts, region, lambda r: r % 3, range(regions), begin_sector=begin)


def test_rfc_format_without_table_sends_everything_to_path_0_unmapped(env):
    sw = Switch(env, "swrfc", regions=8, region=128, guard=131072)
    dev = sw.dev
    before = dev.status()
    sw.placed(lambda r: 0, range(8), "u")
    after = dev.status()
    assert after["unmapped"] - before["unmapped"] == 8, "one count per bio: 8 writes (the reads went to the paths)"
    assert after["remapped"] == before["remapped"]


def test_status_and_table_lines(env):
    paths, starts = layout(env, 3, 128, 8)
    rfc = env.dm("swst1", "0 1024 switch 3 128 " + " ".join(f"{p} {s}" for p, s in zip(paths, starts)))
    up = env.dm("swst2", upstream_table(1024, 128, paths, starts))
    t1, t2 = rfc.table().split(), up.table().split()
    assert t1[:5] == ["0", "1024", "switch", "3", "128"] and len(t1) == 5 + 6
    assert t2[:6] == ["0", "1024", "switch", "3", "128", "0"] and len(t2) == 6 + 6
    assert [int(x) for x in t1[6::2]] == starts and [int(x) for x in t2[7::2]] == starts
    st = rfc.status()
    assert st["dev_count"] == 3 and st["states"] == "AAA" and st["userland"] == (0, 0)
    assert st["devs"] == t1[5::2]


@pytest.fixture(scope="module")
def small_paths():
    """Two 2048-sector paths, one with 512-byte and one with 4 KiB logical
    blocks, for every refused table line (made once: each takes seconds)."""
    c = Cleanup()
    yield {"p0": c.nullb(1).path, "p4k": c.nullb(1, blocksize=4096).path}
    c.close()


@pytest.mark.parametrize("args,message", [
    ("", "Missing arguments"),
    ("x 128 {p0} 0", "Invalid device count"),
    ("0 128 {p0} 0", "Invalid device count"),
    ("65536 128 {p0} 0", "Too many devices"),
    ("2 128 {p0} 0", "Wrong number of arguments"),
    ("1 0 {p0} 0", "Invalid page size"),
    ("1 abc {p0} 0", "Invalid page size"),
    ("1 4294967296 {p0} 0", "Page size too large"),
    ("1 128 {p0} -1", "Invalid device offset"),
    ("1 128 {p0} 1x", "Invalid device offset"),
    ("1 128 /dev/nonexistent 0", "Device lookup failed"),
    ("1 128 {p0} 100", "Device too small"),
    ("1 128 {p0} 18446744073709551615", "Device offset too large"),
    ("1 128 1 {p0} 0", "Invalid number of optional arguments"),
    ("1 7 {p4k} 0", "not a multiple of a device's logical block size"),
])
def test_refused_table_lines(small_paths, args, message):
    table = f"0 2048 switch {args.format(**small_paths)}"
    assert message in ctr_error(table)


def test_too_many_regions_refused(env):
    # 2^32 regions of one sector over a sparse 2 TiB path: refused before any allocation.
    big = env.nullb(2 * 1024 * 1024, memory_backed=False)
    assert "Too many regions" in ctr_error(f"0 4294967296 switch 1 1 {big.path} 0")


def test_second_switch_target_in_one_table_refused(env):
    p0 = env.nullb(1).path
    err = ctr_error(f"0 1024 switch 1 128 {p0} 0\n1024 1024 switch 1 128 {p0} 1024")
    assert "Only one switch target" in err
