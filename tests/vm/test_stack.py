"""Issue 15: the RFC's two-tier stack, for real (tests/vm/stack.py builds it).

Three members, each a bio-based dm-multipath device: group 1 its two direct
paths, group 2 the four paths of the other members; the switch routes each
region to its member. Every path is a dm-linear view of one shared store, so
data cannot prove routing: the I/O counters of each member and each path
(/sys/block/dm-N/stat) do, and fio --verify=crc32c proves the data. The
stack is built once for the module; each test starts from a healed stack
(every path healthy and active, group 1, queue_if_no_path), and the last
one tears it down.
"""
import errno
import os
import random
import threading
import time
from pathlib import Path

import pytest

from campaign import Uploader, bounded, fio_verify_run, record, udev_catch_up
from conftest import (DISCARD_SECTORS, DISCARDS, FLUSHES, IN_FLIGHT, READ_SECTORS, READS, SECTOR, WRITE_SECTORS,
                      WRITES, marker, read_at, sh, write_at)
from dmtest import wire
from stack import Stack, devno, fio_stack_jobs, ios, wait_for

pytestmark = pytest.mark.usefixtures("kernel_log_guard")

@pytest.fixture(scope="module")
def built():
    st = Stack()
    yield st
    st.remove()


@pytest.fixture
def stack(built):
    assert not built.removed, "the stack was torn down by an earlier test"
    built.heal()
    yield built
    if not built.removed:
        built.heal()


def delta(s0, s1, dev, field):
    key = dev if isinstance(dev, str) else dev.name
    return s1[key][field] - s0[key][field]


def start_load(stack, rng):
    """A banded mapping and verified I/O on every member; returns the load
    once every member has completed some of it."""
    values, ranges = stack.bands(rng)
    stack.upload(values)
    base = stack.member_ios()
    load = stack.load(ranges)
    wait_for(lambda: all(a >= b + 8 for a, b in zip(stack.member_ios(), base)), 180, "I/O on every member")
    return load


def test_routing_through_both_tiers(stack, tmp_path):
    """A random mapping uploaded by the agent; fio reads the whole switch
    once in random order (64 KiB blocks, fio's random map: every block
    exactly once). Each member reads exactly its regions' sectors, and only
    its own direct paths carry them, both of them (round-robin).

    Tolerance: a quarter of a region (128 sectors) per member, for a stray
    probe; one misrouted region is 512 sectors."""
    n = len(stack.members)
    rng = random.Random(1501)
    values = [rng.randrange(n) for _ in range(stack.regions)]
    stack.upload_with_agent(values, tmp_path)
    want = [values.count(m) * stack.region for m in range(n)]
    tol = stack.region // 4
    s0 = stack.snapshot()
    sh(f"fio --name=route --filename={stack.switch.path} --direct=1 --ioengine=io_uring --iodepth=8 "
       f"--rw=randread --bs=64k --output-format=terse")
    s1 = stack.snapshot()
    got = [delta(s0, s1, d, READ_SECTORS) for d in stack.members]
    per_path = {p.name: delta(s0, s1, p, READ_SECTORS) for p in stack.all_paths}
    for m in range(n):
        assert abs(got[m] - want[m]) <= tol, f"member {m}: read {got[m]} sectors, mapping gives {want[m]}"
        direct = [per_path[p.name] for p in stack.paths[m]]
        assert abs(sum(direct) - got[m]) <= tol, f"member {m} read {got[m]} sectors, its paths {direct}"
        assert min(direct) >= got[m] // 4, f"member {m}: round-robin did not use both paths: {direct}"
    assert abs(delta(s0, s1, "store", READ_SECTORS) - stack.sectors) <= tol
    record("stack_routing", {"regions": stack.regions, "mapping_regions": [values.count(m) for m in range(n)],
                             "mapping_share": [round(w / sum(want), 4) for w in want],
                             "member_share": [round(g / sum(got), 4) for g in got],
                             "member_sectors": got, "expected_sectors": want, "path_sectors": per_path,
                             "tolerance_sectors": tol})


def test_path_failure_and_restore_under_verified_io(stack):
    """Each direct path in turn dies (its table swapped for failing
    dm-flakey) under verified I/O: multipath fails it on its own errors, the
    failed path's counters stop, the sibling carries the member alone, the
    member stays on group 1; restored and reinstated, the path carries I/O
    again. 0 I/O errors, 0 verify errors."""
    rng = random.Random(1502)
    load = start_load(stack, rng)
    per_path = {}
    for m, paths in enumerate(stack.paths):
        for j, p in enumerate(paths):
            sib = paths[1 - j]
            t0 = time.monotonic()
            stack.fail_path(p)
            wait_for(lambda: stack.path_states(m)[devno(p)] == "F", 120, f"member {m} to fail {p.name}")
            detect = time.monotonic() - t0
            stack.wait_idle([p])
            dead0, sib0 = ios(stack.stat(p)), ios(stack.stat(sib))
            wait_for(lambda: ios(stack.stat(sib)) >= sib0 + 8, 180, f"{sib.name} to carry member {m}")
            assert ios(stack.stat(p)) == dead0, f"{p.name} still completes I/O after it failed"
            st = stack.mpath(m)
            assert st["pg"] == 1 and st["groups"][0]["paths"][devno(sib)] == "A", st
            took_over = ios(stack.stat(sib)) - sib0
            stack.restore_path(p)
            wait_for(lambda: ios(stack.stat(p)) > dead0, 180, f"{p.name} to carry I/O again")
            per_path[p.name] = {"seconds_to_fail": round(detect, 2), "sibling_ios_while_failed": took_over}
    totals = load.stop()
    assert totals["io_errors"] == 0
    record("stack_path_failure", {"paths": per_path, **totals})


def test_member_direct_paths_lost(stack):
    """Both direct paths of member 0 die under verified I/O: multipath moves
    it to group 2 (the other members' paths), every member goes on (member 0
    with its own paths idle), 0 errors.
    Then, without other I/O, reads of member 0's regions go through member 0
    to the other members' paths only (exact counts). Restored: the member
    stays on group 2 until `switch_group 1` (multipathd's failback), then
    its reads are back on its own paths."""
    rng = random.Random(1503)
    load = start_load(stack, rng)
    a, others = 0, [1, 2]
    own = stack.paths[a]
    foreign = [p for k in others for p in stack.paths[k]]
    for p in own:
        stack.fail_path(p)
    wait_for(lambda: stack.mpath(a)["pg"] == 2, 120, "member 0 on group 2")
    assert all(stack.path_states(a)[devno(p)] == "F" for p in own), stack.mpath(a)
    stack.wait_idle(own)
    s0 = stack.snapshot()
    t0 = time.monotonic()
    wait_for(lambda: all(ios(stack.stat(stack.members[k])) >= ios(s0[stack.members[k].name]) + 16 for k in range(3)),
             180, "I/O on every member, member 0 through group 2")
    s1 = stack.snapshot()
    outage = time.monotonic() - t0
    sectors = [delta(s0, s1, d, READ_SECTORS) + delta(s0, s1, d, WRITE_SECTORS) for d in stack.members]
    foreign_sectors = sum(delta(s0, s1, p, READ_SECTORS) + delta(s0, s1, p, WRITE_SECTORS) for p in foreign)
    assert all(ios(s1[p.name]) == ios(s0[p.name]) for p in own), "a failed path completed I/O"
    totals = load.stop()
    assert totals["io_errors"] == 0

    regions = rng.sample(stack.regions_of(a), 12)

    def probe():
        s0 = stack.snapshot()
        stack.probe(regions)
        s1 = stack.snapshot()
        return ([delta(s0, s1, d, READS) for d in stack.members],
                {p.name: delta(s0, s1, p, READS) for p in stack.all_paths})

    members_g2, paths_g2 = probe()
    assert members_g2 == [12, 0, 0], members_g2
    assert sum(paths_g2[p.name] for p in own) == 0 and sum(paths_g2[p.name] for p in foreign) == 12, paths_g2
    assert sum(1 for p in foreign if paths_g2[p.name]) >= 2, f"round-robin in group 2: {paths_g2}"
    for p in own:
        stack.restore_path(p)
    assert stack.mpath(a)["pg"] == 2, "multipath failed back by itself"
    stack.switch_group(a, 1)
    members_g1, paths_g1 = probe()
    assert stack.mpath(a)["pg"] == 1
    assert members_g1 == [12, 0, 0], members_g1
    assert sum(paths_g1[p.name] for p in own) == 12 and sum(paths_g1[p.name] for p in foreign) == 0, paths_g1
    assert all(paths_g1[p.name] for p in own), f"round-robin in group 1: {paths_g1}"
    record("stack_member_lost", {"outage_seconds": round(outage, 1), "member_sectors_during_outage": sectors,
                                 "other_members_paths_sectors": foreign_sectors, "probe_group2": paths_g2,
                                 "probe_group1": paths_g1, **totals})


class Fsync(threading.Thread):
    """fsync() on the switch in a thread: .result is the errno (0: success)."""

    def __init__(self, stack):
        super().__init__(daemon=True)
        self.stack, self.result = stack, None
        self.start()

    def run(self):
        self.result = self.stack.fsync()


def fail_every_path(stack):
    t0 = time.monotonic()
    for p in stack.all_paths:
        stack.fail_path(p)
    return t0


def all_failed(stack):
    return all(set(stack.path_states(m).values()) == {"F"} for m in range(len(stack.members)))


def test_path_flapping_and_member_loss_under_verified_io(stack):
    """Random faults under verified I/O for a while (20 s in make check, 600 s
    in make soak): a direct path fails and comes back once multipath has
    failed it, a path flaps (failed and restored before multipath may have
    noticed), or a member loses both direct paths (group 2 takes over) and
    gets them back with multipathd's failback. At most one member is without
    its own paths at a time. After every event every member completes I/O
    again; at the end every path is active, every member back on group 1,
    and fio saw 0 I/O errors and 0 verify errors."""
    seconds = bounded(20, 600)
    rng = random.Random(1507)
    load = start_load(stack, rng)
    counts = {"path_failures": 0, "flaps": 0, "member_losses": 0}
    udev_wait, events = 0.0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        m = rng.randrange(len(stack.members))
        event = rng.choice(["path", "path", "flap", "member"])
        if event == "member":
            for p in stack.paths[m]:
                stack.fail_path(p)
            wait_for(lambda: stack.mpath(m)["pg"] == 2, 120, f"member {m} on group 2")
            for p in stack.paths[m]:
                stack.restore_path(p)
            stack.switch_group(m, 1)
            counts["member_losses"] += 1
        else:
            p = rng.choice(stack.paths[m])
            stack.fail_path(p)
            if event == "path":
                wait_for(lambda: stack.path_states(m)[devno(p)] == "F", 120, f"member {m} to fail {p.name}")
            else:
                time.sleep(rng.uniform(0, 0.3))
            stack.restore_path(p)
            counts["path_failures" if event == "path" else "flaps"] += 1
        base = stack.member_ios()
        wait_for(lambda: all(a >= b + 4 for a, b in zip(stack.member_ios(), base)), 180,
                 f"I/O on every member after a {event} event")
        # Each fault and restore is a uevent (two table swaps per path).
        events += 1
        if events % 8 == 0:
            udev_wait += udev_catch_up()
    totals = load.stop()
    assert totals["io_errors"] == 0
    for m in range(len(stack.members)):
        st = stack.mpath(m)
        assert st["pg"] == 1 and set(stack.path_states(m).values()) == {"A"}, f"member {m}: {st}"
    record("stack_flapping", {"seconds": seconds, "udev_wait_seconds": round(udev_wait, 1), **counts, **totals})


def test_whole_array_lost_queue_if_no_path(stack):
    """Every path dies under verified I/O with queue_if_no_path (fio's I/O
    makes every member try, and fail, all six paths), then an fsync() on the
    switch starts (its flush goes to every member): I/O waits (no member
    completes any for `hold` seconds, the switch has I/O in flight, the
    fsync() waits too); restored, everything completes and verifies. The
    fsync() starts only once every path has failed, so the time it sleeps
    uninterruptibly (hold + restore) stays far below the 120 s hung-task
    limit however slowly the members notice the failures."""
    hold = 5
    load = start_load(stack, random.Random(1504))
    t0 = fail_every_path(stack)
    wait_for(lambda: all_failed(stack), 120, "every member to fail every path")
    flush = Fsync(stack)
    base = stack.member_ios()
    end = time.monotonic() + hold
    while time.monotonic() < end:  # nothing may move: a negative condition, held for `hold` s
        assert stack.member_ios() == base, "a member completed I/O with no path"
        assert stack.stat(stack.switch)[IN_FLIGHT] > 0, "no I/O waiting in the switch"
        assert flush.is_alive(), f"fsync returned ({flush.result}) with every path down"
        time.sleep(0.25)
    t1 = time.monotonic()
    for p in stack.all_paths:
        stack.restore_path(p)
    outage = time.monotonic() - t0
    flush.join(120)
    assert not flush.is_alive() and flush.result == 0, f"fsync after restore: {flush.result}"
    resumed = time.monotonic() - t1
    wait_for(lambda: all(a > b for a, b in zip(stack.member_ios(), base)), 120, "I/O on every member again")
    totals = load.stop()
    assert totals["io_errors"] == 0
    record("stack_array_lost_queue", {"outage_seconds": round(outage, 1), "held_seconds": hold,
                                      "fsync_returned_after_restore_seconds": round(resumed, 2),
                                      "fsync_result": flush.result, **totals})


def test_whole_array_lost_fail_if_no_path(stack):
    """fio writes and verifies the first region of each member's band; with
    fail_if_no_path and every path dead, reads, writes (over those verified
    blocks) and fsync() on the switch fail with EIO; restored, a verify-only
    pass finds every block as it was: nothing was corrupted."""
    rng = random.Random(1505)
    values, ranges = stack.bands(rng)
    stack.upload(values)
    first = [(off, stack.region * SECTOR) for off, _ in ranges]
    jobs = fio_stack_jobs(stack.switch.path, first)
    written = fio_verify_run(jobs, ["--verify_backlog=16"], 600)
    stack.set_queueing(False)
    fail_every_path(stack)
    results = {}
    for m, (off, _) in enumerate(first):
        for op in ("read", "write"):
            try:
                if op == "read":
                    read_at(stack.switch.path, off, 64 * 1024)
                else:
                    write_at(stack.switch.path, off, marker(f"lost{m}", 64 * 1024))
                results[f"{op}{m}"] = 0
            except OSError as e:
                results[f"{op}{m}"] = e.errno
    results["fsync"] = stack.fsync()
    assert set(results.values()) == {errno.EIO}, results
    assert all_failed(stack), [stack.mpath(m) for m in range(3)]
    for p in stack.all_paths:
        stack.restore_path(p)
    stack.set_queueing(True)
    assert stack.fsync() == 0
    verify = fio_verify_run(jobs, ["--verify_only"], 600)
    assert sum(j["error"] for j in verify["jobs"]) == 0
    verified = sum(j["read"]["io_bytes"] for j in verify["jobs"])
    assert verified == len(first) * stack.region * SECTOR
    record("stack_array_lost_fail", {"errnos": results, "verified_bytes_after_restore": verified,
                                     "bytes_written_before": sum(j["write"]["io_bytes"] for j in written["jobs"])})


def test_rebalancing_under_verified_io(stack):
    """A new random mapping every 300 ms for 10 s while verified I/O runs: 0 errors;
    then the counters follow the mapping: with every region on one member,
    reads go to that member only."""
    rng = random.Random(1506)
    load = start_load(stack, rng)
    n = len(stack.members)
    uploads = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline or uploads < 10:
        stack.upload([rng.randrange(n) for _ in range(stack.regions)], userland=(0x15, uploads))
        uploads += 1
        time.sleep(0.3)  # pacing of the uploads, not a synchronisation
    totals = load.stop()
    assert totals["io_errors"] == 0
    assert stack.switch.status()["userland"] == (0x15, uploads - 1)
    follow = {}
    regions = rng.sample(range(stack.regions), 16)
    for k in (2, 0):
        stack.upload([k] * stack.regions)
        s0 = stack.snapshot()
        stack.probe(regions)
        s1 = stack.snapshot()
        got = [delta(s0, s1, d, READS) for d in stack.members]
        assert got == [16 if m == k else 0 for m in range(n)], (k, got)
        assert sum(delta(s0, s1, p, READS) for p in stack.paths[k]) == 16
        follow[k] = got
    record("stack_rebalancing", {"uploads": uploads, "follow": follow, **totals})


def test_flush_and_discard_through_both_tiers(stack):
    """fsync() on the switch: each member gets exactly one empty flush
    (a write of 0 sectors in its counters) and passes it to exactly one of
    its own direct paths; the store completes at least one flush. A discard
    from the middle of one region to the middle of another, over a random
    mapping, reaches each member with exactly the sectors of its regions in
    the range, and the member's direct paths with the same; the data in the
    range reads back as zeros, the blocks around it are intact."""
    n = len(stack.members)
    rng = random.Random(1507)
    stack.upload([rng.randrange(n) for _ in range(stack.regions)])
    assert open(f"/sys/block/dm-{stack.switch.minor}/queue/write_cache").read().strip() == "write back"
    s0 = stack.snapshot()
    assert stack.fsync() == 0
    s1 = stack.snapshot()
    flushes = {}
    for m, d in enumerate(stack.members):
        assert (delta(s0, s1, d, WRITES), delta(s0, s1, d, WRITE_SECTORS)) == (1, 0), f"member {m}"
        per = [delta(s0, s1, p, WRITES) for p in stack.paths[m]]
        assert sum(per) == 1 and all(delta(s0, s1, p, WRITE_SECTORS) == 0 for p in stack.paths[m]), (m, per)
        flushes[d.name] = {"member_flushes": 1, "paths": {p.name: delta(s0, s1, p, WRITES) for p in stack.paths[m]}}
    store_flushes = delta(s0, s1, "store", FLUSHES)
    assert 1 <= store_flushes <= n, store_flushes

    region = stack.region
    start, length = 20 * region + region // 2, 9 * region
    want = [0] * n
    for s in range(start, start + length, region // 2):  # half-region steps: the ends are half regions
        want[stack.mapping[s // region]] += region // 2
    edges = {"before": start - 8, "first": start, "last": start + length - 8, "after": start + length}
    for name, s in edges.items():
        write_at(stack.switch.path, s * SECTOR, marker(f"edge-{name}", 4096))
    s0 = stack.snapshot()
    sh(f"blkdiscard -o {start * SECTOR} -l {length * SECTOR} {stack.switch.path}")
    s1 = stack.snapshot()
    got = [delta(s0, s1, d, DISCARD_SECTORS) for d in stack.members]
    assert got == want, f"discard sectors per member {got}, mapping gives {want}"
    paths = {p.name: delta(s0, s1, p, DISCARD_SECTORS) for p in stack.all_paths}
    for m in range(n):
        assert sum(paths[p.name] for p in stack.paths[m]) == want[m], (m, paths)
    assert delta(s0, s1, "store", DISCARD_SECTORS) == length
    for name, s in edges.items():
        got_data = read_at(stack.switch.path, s * SECTOR, 4096)
        if name in ("first", "last"):
            assert got_data == bytes(4096), f"{name} block of the discarded range not zero"
        else:
            assert got_data == marker(f"edge-{name}", 4096), f"block {name} the range changed"
    record("stack_flush_discard", {"flushes": flushes, "store_flushes": store_flushes,
                                   "discard_sectors_expected": want, "discard_sectors_members": got,
                                   "discard_ios_members": [delta(s0, s1, d, DISCARDS) for d in stack.members],
                                   "discard_sectors_paths": paths})


def test_teardown_top_down(stack):
    """fail_if_no_path on every member first (nothing can stay queued), a
    member cannot go while the switch holds it, then switch, members, paths
    and store go in that order; nothing of the stack is left."""
    stack.set_queueing(False)
    for mem in stack.members:
        ((_, _, _, table),) = stack.ctl.status(mem.name, table=True)
        assert "queue_if_no_path" not in table, table
    try:
        stack.remove_device(stack.members[0], tries=1)
        raise AssertionError("a member was removed under the switch")
    except OSError as e:
        assert e.errno == errno.EBUSY, e
    for d in reversed(stack.devices):  # DM ioctls: a dmsetup remove waits for udev, ~10 s each here
        stack.remove_device(d)
    left = sh("dmsetup ls").stdout
    assert not [ln for ln in left.splitlines() if ln.startswith("stk-")], left
    assert not list(Path(f"/sys/block/{stack.store.name}/holders").iterdir())
    stack.store.remove()
    assert not os.path.exists(stack.store.path)
    stack.ctl.close()
    stack.removed = True
    # The old switch's number answers no more (nothing dangling in the target).
    up = Uploader()
    try:
        r = up.send(wire.pgtable(stack.switch.major, stack.switch.minor, 4, 0, [0] * 4, 3, 2))
    finally:
        up.close()
    assert r.status == errno.ENODEV, r
