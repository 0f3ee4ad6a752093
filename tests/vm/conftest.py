"""Shared fixtures and helpers for the in-VM suites (run as root in the guest)."""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from dmtest import nl
from dmtest.klog import KmsgScanner, kernel_log
from dmtest.placement import marker, read_at, write_at  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"
# Child Python processes (some under other credentials) import dmtest too.
os.environ["PYTHONPATH"] = str(TESTS)
MODULE = REPO / "dm_switch.ko"
AGENT = REPO / "tools" / "target" / "release" / "dm-switch"
SYS = Path("/sys/module/dm_switch")
NULLB = Path("/sys/kernel/config/nullb")
SECTOR = 512
# Fields of /sys/block/X/stat (0-based; Documentation/block/stat.rst).
READS, READ_SECTORS, WRITES, WRITE_SECTORS, IN_FLIGHT = 0, 2, 4, 6, 8
DISCARDS, DISCARD_SECTORS, FLUSHES = 11, 13, 15


def blkstat(name):
    """The counters of block device `name` (dm-3, nullb0...) as a list of ints."""
    return [int(x) for x in Path(f"/sys/block/{name}/stat").read_text().split()]


def sh(cmd, check=True, **kw):
    """Runs a shell command; returns the CompletedProcess (text)."""
    r = subprocess.run(cmd, shell=True, text=True, capture_output=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd!r} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def module_is_ours():
    return (SYS / "familyid").exists()


def load_module():
    if not SYS.exists():
        sh(f"insmod {MODULE}")
    assert module_is_ours(), "dm_switch is loaded but it is not ours (no familyid)"


def unload_module():
    if SYS.exists():
        sh("rmmod dm_switch")


def kmsg_mark():
    """A marker in the kernel log; kmsg_since(mark) returns what came after."""
    tag = f"dm-switch-test-{time.monotonic_ns()}"
    with open("/dev/kmsg", "w") as f:
        f.write(tag + "\n")
    return tag


def kmsg_since(mark):
    log = kernel_log()
    return log[log.rindex(mark) + len(mark):] if mark in log else log


# ---------------------------------------------------------------- devices

_nullb_seq = [0]


class NullBlk:
    """A null_blk device made through configfs."""

    def __init__(self, size_mb, blocksize=512, memory_backed=True, cache_mb=0, discard=False):
        if not NULLB.exists():
            sh("modprobe null_blk nr_devices=0")
        _nullb_seq[0] += 1
        self.name = f"nbt{os.getpid() % 1000}x{_nullb_seq[0]}"
        d = NULLB / self.name
        d.mkdir()
        for k, v in [("size", size_mb), ("blocksize", blocksize), ("memory_backed", int(memory_backed)),
                     ("cache_size", cache_mb), ("discard", int(discard)), ("irqmode", 0)]:
            (d / k).write_text(f"{v}\n")
        (d / "power").write_text("1\n")
        self.path = f"/dev/{self.name}"
        for _ in range(100):
            if os.path.exists(self.path):
                break
            time.sleep(0.05)
        self.sectors = size_mb * 2048

    def stat(self):
        return blkstat(self.name)

    def remove(self):
        d = NULLB / self.name
        if d.exists():
            (d / "power").write_text("0\n")
            d.rmdir()


class LoopDev:
    """A loop device over a tmpfs file (supports discard and write-zeroes)."""

    def __init__(self, size_mb):
        if not os.path.exists("/dev/loop-control"):
            sh("modprobe loop")
        self.file = f"/tmp/loop-{os.getpid()}-{time.monotonic_ns()}.img"
        sh(f"truncate -s {size_mb}M {self.file}")
        self.path = sh(f"losetup --find --show {self.file}").stdout.strip()
        self.sectors = size_mb * 2048

    def remove(self):
        sh(f"losetup -d {self.path}", check=False)
        if os.path.exists(self.file):
            os.unlink(self.file)


class Dm:
    """A device-mapper device."""

    def __init__(self, name, table):
        self.name = name
        self.path = f"/dev/mapper/{name}"
        sh(f"dmsetup create {name}", input=table + "\n")
        # dmsetup waited for udev: the node is there (no second process).
        rdev = os.stat(self.path).st_rdev
        self.major, self.minor = os.major(rdev), os.minor(rdev)

    def status(self):
        return parse_status(sh(f"dmsetup status {self.name}").stdout)

    def table(self):
        return sh(f"dmsetup table {self.name}").stdout.strip()

    def message(self, text, check=True):
        return sh(f"dmsetup message {self.name} 0 {text}", check=check)

    def reload(self, table):
        sh(f"dmsetup reload {self.name}", input=table + "\n")

    def remove(self):
        sh(f"dmsetup remove --retry {self.name}", check=False)


def parse_status(text):
    """Parses the switch line `START LEN switch N DEV... 5 A... U0 U1 REMAPPED UNMAPPED`
    of `dmsetup status` (other targets' lines are skipped)."""
    lines = [ln for ln in text.splitlines() if ln.split()[2:3] == ["switch"]]
    assert len(lines) == 1, text
    line = lines[0]
    f = line.split()
    n = int(f[3])
    devs = f[4:4 + n]
    rest = f[4 + n:]
    assert rest[0] == "5" and len(rest) == 6, line
    return {"dev_count": n, "devs": devs, "states": rest[1], "userland": (int(rest[2], 16), int(rest[3], 16)),
            "remapped": int(rest[4]), "unmapped": int(rest[5])}


# ---------------------------------------------------------------- I/O
# O_DIRECT helpers, shared with the fuzzers (tests/dmtest/placement.py, which
# must not import pytest): write_at(path, offset, data), read_at(path,
# offset, length), marker(tag, length).

def check_placement(dev, paths, starts, region_sectors, expect, regions, begin_sector=0, tag="m", inner=0):
    """Writes a marker into each region through `dev` and asserts it sits on
    path expect(r) at start + offset, and (up to 16 paths) on no other path.

    `begin_sector` is the target's start in the DM device; `inner` a sector
    offset inside each region."""
    for r in regions:
        off = (r * region_sectors + inner) * SECTOR
        write_at(dev.path, (begin_sector * SECTOR) + off, marker(f"{tag}{r}"))
    for r in regions:
        off = (r * region_sectors + inner) * SECTOR
        want = expect(r)
        others = range(len(paths)) if len(paths) <= 16 else [want]
        for i in others:
            p = paths[i]
            got = read_at(p, starts[i] * SECTOR + off, SECTOR)
            if i == want:
                assert got == marker(f"{tag}{r}"), f"region {r}: marker missing on path {i}"
            else:
                assert got != marker(f"{tag}{r}"), f"region {r}: marker on path {i}, expected {want}"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session", autouse=True)
def our_module():
    load_module()
    yield
    assert module_is_ours(), "the dm_switch module under test was replaced"


class Cleanup:
    """Collects devices to tear down in reverse order."""

    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)
        return item

    def nullb(self, *a, **kw):
        return self.add(NullBlk(*a, **kw))

    def loop(self, *a, **kw):
        return self.add(LoopDev(*a, **kw))

    def dm(self, *a, **kw):
        return self.add(Dm(*a, **kw))

    def close(self):
        for item in reversed(self.items):
            item.remove()


@pytest.fixture
def env():
    c = Cleanup()
    yield c
    c.close()


@pytest.fixture
def client():
    c = nl.Client()
    yield c
    c.close()


def shared_paths(env, n, sectors_each):
    """`n` paths as (device, start) pairs: disjoint slices of one null_blk,
    with slightly different gaps so no two paths share an offset pattern.
    Returns (devices, starts), both of length `n`."""
    gap = 16
    mb = (n * (sectors_each + 8 * gap) + 2047) // 2048 + 1
    base = env.nullb(mb)
    starts = [i * (sectors_each + 8 * gap) + gap * (i % 4) for i in range(n)]
    return [base.path] * n, starts


def switch_table(length, region, paths, starts, fmt="rfc"):
    """A switch table line in RFC or upstream format."""
    opt = " 0" if fmt == "upstream" else ""
    pairs = " ".join(f"{p} {s}" for p, s in zip(paths, starts))
    return f"0 {length} switch {len(paths)} {region}{opt} {pairs}"


class Switch:
    """A switch device over `npaths` slices of one null_blk.

    With `guard` > 0 the switch target sits between two `zero` targets of
    `guard` sectors, so udev's blkid probes (start and end of the device)
    never reach it and its counters see only the test's own bios."""

    def __init__(self, env, name, npaths=3, regions=64, region=64, fmt="rfc", guard=0):
        self.paths, self.starts = shared_paths(env, npaths, regions * region)
        self.region, self.regions, self.fmt, self.guard = region, regions, fmt, guard
        self.length = regions * region
        self.dev = env.dm(name, self.table())

    def table(self, region=None, fmt=None):
        line = switch_table(self.length, region or self.region, self.paths, self.starts, fmt or self.fmt)
        if not self.guard:
            return line
        g, n = self.guard, self.length
        return f"0 {g} zero\n{g} {n} {line.split(' ', 2)[2]}\n{g + n} {g} zero"

    def offset(self, sector):
        """Byte offset in the DM device of target sector `sector`."""
        return (self.guard + sector) * SECTOR

    def placed(self, expect, regions, tag, region=None):
        """Asserts placement of fresh markers in `regions` (see check_placement)."""
        check_placement(self.dev, self.paths, self.starts, region or self.region,
                        expect if callable(expect) else expect.__getitem__, regions,
                        begin_sector=self.guard, tag=tag)

def ctr_error(table, name="swbad"):
    """Tries to create a switch device from `table`; returns the kernel's
    error text for it (the device must not be created)."""
    mark = kmsg_mark()
    r = sh(f"dmsetup create {name}", check=False, input=table + "\n")
    if r.returncode == 0 or os.path.exists(f"/dev/mapper/{name}"):
        sh(f"dmsetup remove {name}", check=False)
    if r.returncode == 0:
        raise AssertionError(f"table accepted: {table}")
    log = kmsg_since(mark)
    m = re.findall(r"switch: (.*?)\n", log)
    return m[-1] if m else log


# ---------------------------------------------------------------- kernel log

@pytest.fixture
def kernel_log_guard(request):
    """Follows /dev/kmsg during each test: any report fails the test, even if
    the ring buffer wraps before the harness reads it."""
    scan = KmsgScanner()
    yield scan
    reports = scan.stop()
    out = os.environ.get("DM_SWITCH_OUT")
    if reports and out:
        (Path(out) / f"reports-{request.node.name}.txt").write_text(scan.summary())
    assert not reports, f"kernel reports during {request.node.name}:\n{scan.summary()}"
    assert scan.lost == 0, f"{scan.lost} kernel log records were overwritten before they could be scanned"
