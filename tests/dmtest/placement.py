"""Data-placement oracle without pytest (for worker processes): the same
method as tests/vm/conftest.py's check_placement — write a marker through the
switch into a region, read it back from the path the model names, and make
sure no other path got it. Importing conftest would import pytest, which
takes a long time in the debug VM."""
import mmap
import os

SECTOR = 512


def _buf(n):
    return mmap.mmap(-1, max(n, mmap.PAGESIZE))


def write_at(path, offset, data):
    buf = _buf(len(data))
    buf[:len(data)] = data
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    try:
        n = os.pwritev(fd, [memoryview(buf)[:len(data)]], offset)
        assert n == len(data), f"short write {n}"
    finally:
        os.close(fd)


def read_at(path, offset, length):
    buf = _buf(length)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        n = os.preadv(fd, [memoryview(buf)[:length]], offset)
        assert n == length, f"short read {n}"
    finally:
        os.close(fd)
    return bytes(buf[:length])


def marker(tag, length=SECTOR):
    b = f"<{tag}>".encode()
    return (b * (length // len(b) + 1))[:length]


def mismatches(dev_path, paths, starts, region_sectors, expect, regions, tag):
    """Regions whose marker is not (only) on path expect(r): [(region, want, found_on)]."""
    for r in regions:
        write_at(dev_path, r * region_sectors * SECTOR, marker(f"{tag}{r}"))
    bad = []
    for r in regions:
        off = r * region_sectors * SECTOR
        want = expect(r)
        found = [i for i, p in enumerate(paths)
                 if read_at(p, starts[i] * SECTOR + off, SECTOR) == marker(f"{tag}{r}")]
        if found != [want]:
            bad.append((r, want, found))
    return bad
