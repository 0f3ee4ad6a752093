"""Reliability, lifecycle races: devices created, removed, reloaded and
suspended under uploads and verified I/O; rmmod refused while a table
holds the target.
"""
import random
import threading
import time
from collections import Counter

import pytest

from conftest import (SYS, Switch, check_placement, load_module, module_is_ours, sh,
                      switch_table)
from dmtest import dmioctl, wire
from campaign import (EINVAL, ENODEV, Hammer, Uploader, bounded, fio_jobs, fio_summary, udev_catch_up,
                      fio_verify_pass, pte_bits_for, record, shared_backing_paths)

pytestmark = pytest.mark.usefixtures("kernel_log_guard")


def test_lifecycle_devices_come_and_go_under_upload_hammer(env):
    """For a bounded time: create a switch device, upload, reload it with the
    same and with other geometry (and path count), suspend/resume, message,
    and remove it — while two threads hammer uploads at its major:minor the
    whole time (so uploads race with resume, suspend, reload and removal).
    Every answer is 0, ENODEV (no live target) or EINVAL (path count
    changed under the sender); nothing else, no splat, no hang.

    The DM operations are direct ioctls (tests/dmtest/dmioctl.py): a dmsetup
    process per step, with its udev wait, took tens of seconds per device
    under TCG and left the races few and far between."""
    seconds = bounded(15, 300)
    nb = env.nullb(16)
    paths3 = [nb.path] * 3
    starts3 = [0, 8192, 16384]
    cur = {"t": None}
    hammers = [Hammer(lambda: cur["t"], allowed=(0, ENODEV, EINVAL)).start() for _ in range(bounded(1, 2))]
    up = Uploader()
    # Quiet udev events: no udev probe per swap (a probe reads through the
    # device under test).
    ctl = dmioctl.Control(cookie=dmioctl.QUIET_UDEV)
    counts = Counter()
    deadline = time.time() + seconds
    i = 0

    def params(table):
        return table.split(" ", 3)[3]

    try:
        while time.time() < deadline or i < 3:
            i += 1
            name = f"rellc{i % 3}"
            fmt = ("rfc", "upstream")[i % 2]
            t64 = switch_table(4096, 64, paths3, starts3, fmt)
            t32 = switch_table(4096, 32, paths3, starts3, fmt)
            t2p = switch_table(4096, 64, paths3[:2], starts3[:2], fmt)
            ctl.create(name)
            ctl.load(name, 0, 4096, "switch", params(t64))
            ctl.resume(name)
            M, m = ctl.devt(name)
            cur["t"] = (M, m, 3)
            r = up.send(wire.pgtable(M, m, 64, 0, [2] * 64, 3, 2))
            assert r.status == 0, r
            for table, dc in ((t64, 3), (t32, 3), (t2p, 2), (t64, 3)):
                ctl.load(name, 0, 4096, "switch", params(table))
                ctl.resume(name)
                cur["t"] = (M, m, dc)
                counts["reloads"] += 1
            ctl.suspend(name)
            ctl.resume(name)
            counts["suspends"] += 1
            if i % 2:
                ctl.message(name, "set_region_mappings 0:1 R1,3f")
            else:
                pauses = [h.pause() for h in hammers]
                for p in pauses:
                    p.__enter__()
                try:
                    ctl.message(name, "set_region_mappings 0:1 R1,3f")
                    check_placement(type("D", (), {"path": f"/dev/dm-{m}"}), paths3, starts3, 64,
                                    lambda r: 1, [0, 17, 63], tag=f"lc{i}")
                    counts["placement_checks"] += 1
                finally:
                    for p in pauses:
                        p.__exit__(None, None, None)
            ctl.remove(name)
            r = up.send(wire.pgtable(M, m, 64, 0, [2] * 64, 3, 2))
            # Nothing else creates devices here, so the number is free again.
            assert r.status == ENODEV, r
            counts["devices"] += 1
            # About eight uevents per round: udev handles them before the next.
            counts["udev_wait"] += udev_catch_up()
        cur["t"] = None
    finally:
        stats = [h.stop() for h in hammers]
        up.close()
        for k in range(3):
            try:
                ctl.remove(f"rellc{k}")
            except OSError:
                pass
        ctl.close()
        counts["udev_wait"] += udev_catch_up()
    hs = sum(stats, Counter())
    record("lifecycle_hammer", {"seconds": seconds, "devices": counts["devices"], "reloads": counts["reloads"],
                                "suspends": counts["suspends"], "placement_checks": counts["placement_checks"],
                                "udev_wait_seconds": round(counts["udev_wait"], 1),
                                "hammer_answers": {str(k): v for k, v in hs.items()}})
    for h in hammers:
        assert not h.bad, h.bad[:10]
    assert counts["devices"] >= 3 and counts["placement_checks"] >= 1 and hs[0] > 0 and hs[ENODEV] > 0


def test_lifecycle_reload_suspend_under_verified_io(env):
    """fio writes and verifies (crc32c) through a switch over three views of
    one disk while the table is suspended/resumed, reloaded with the same
    geometry (inheriting the mapping), with another region size, with two
    paths instead of three, and uploaded to / messaged, with an upload
    hammer running. Data must stay intact through every swap."""
    seconds = bounded(15, 300)
    size_mb = 48
    _, lins, sectors = shared_backing_paths(env, "relrv", size_mb)
    length = sectors
    tables = {
        (12, 3): f"0 {length} switch 3 12 " + " ".join(f"{d.path} 0" for d in lins),
        (8, 3): f"0 {length} switch 3 8 0 " + " ".join(f"{d.path} 0" for d in lins),
        (12, 2): f"0 {length} switch 2 12 " + " ".join(f"{d.path} 0" for d in lins[:2]),
    }
    sw = env.dm("relrvsw", tables[(12, 3)])
    M, m = sw.major, sw.minor
    cur = {"t": (M, m, 3)}
    hammer = Hammer(lambda: cur["t"], allowed=(0, ENODEV, EINVAL), regions=256).start()
    stop = threading.Event()
    fio_runs, fio_fail = [], []

    def fio_loop():
        # Passes until the deadline: the swaps below go on until the pass
        # under way ends, so no pass runs without them (one pass in CI). A
        # pass is slow under the swaps (each suspend drains fio's I/O): 3 MiB
        # took 500-790 s, so make check writes 1 MiB.
        jobs = fio_jobs(sw.path, bounded([256, 256, 512], [4096, 4096, 8192]), 16)
        while not stop.is_set():
            try:
                fio_runs.extend(fio_summary(j) for j in fio_verify_pass(jobs, 900))
            except AssertionError as e:
                fio_fail.append(str(e))
                return
            if time.time() >= deadline:
                return

    deadline = time.time() + seconds
    th = threading.Thread(target=fio_loop, daemon=True)
    th.start()
    up = Uploader()
    # Quiet udev events: no udev probe per swap (a probe reads through the
    # device under test).
    ctl = dmioctl.Control(cookie=dmioctl.QUIET_UDEV)
    rng = random.Random(5)
    counts = Counter()
    udev_wait = 0.0
    try:
        geo = (12, 3)
        while (time.time() < deadline or th.is_alive()) and not fio_fail:
            op = rng.choice(["suspend", "same", "other", "upload", "upload", "message"])
            # Direct ioctls: a dmsetup process (and its udev wait) per step
            # took seconds under TCG, and the swaps were few.
            if op == "suspend":
                ctl.suspend(sw.name)
                ctl.resume(sw.name)
            elif op in ("same", "other"):
                if op == "other":
                    geo = rng.choice([g for g in tables if g != geo])
                ctl.load(sw.name, 0, length, "switch", tables[geo].split(" ", 3)[3])
                ctl.resume(sw.name)
                cur["t"] = (M, m, geo[1])
            elif op == "upload":
                regions = length // geo[0]
                vals = [rng.randrange(geo[1])] * regions if rng.random() < 0.5 else \
                    [k % geo[1] for k in range(regions)]
                bits = pte_bits_for(geo[1])
                for w in wire.windows(M, m, vals, geo[1], bits):
                    r = up.send(w)
                    assert r.status == 0, r
            else:
                # Below 256: the hammer's windows make 256-region tables, and a
                # message edits the live table in its own geometry.
                ctl.message(sw.name, f"set_region_mappings 0:{rng.randrange(geo[1])} R1,{rng.randrange(1, 255):x}")
            counts[op] += 1
            if op in ("suspend", "same", "other"):
                # One uevent per resume: udev catches up every few.
                counts["resumes"] += 1
                if counts["resumes"] % 4 == 0:
                    udev_wait += udev_catch_up()
    finally:
        stop.set()
        th.join(900)
        hs = hammer.stop()
        up.close()
        ctl.close()
        udev_wait += udev_catch_up()
    assert not fio_fail, fio_fail[0]
    assert fio_runs
    errs = sum(x[0] for x in fio_runs)
    assert errs == 0
    assert not hammer.bad, hammer.bad[:10]
    record("lifecycle_verified_io", {"seconds": seconds, "operations": dict(counts), "fio_runs": len(fio_runs),
                                     "udev_wait_seconds": round(udev_wait, 1),
                                     "bytes_written": sum(x[1] for x in fio_runs),
                                     "bytes_verified": sum(x[2] for x in fio_runs),
                                     "hammer_answers": {str(k): v for k, v in hs.items()}})


class NamedDm:
    """Cleanup for a DM device made by hand."""

    def __init__(self, name):
        self.name = name

    def remove(self):
        sh(f"dmsetup remove --retry {self.name}", check=False)


def switch_devices():
    out = sh("dmsetup table", check=False).stdout
    return sorted({line.split(":")[0] for line in out.splitlines() if " switch " in line})


def test_rmmod_refused_while_any_table_holds_the_target(env):
    """rmmod dm_switch is refused while a live device, a suspended device or
    a loaded-but-inactive table exists — with an upload hammer running at a
    live device — and the module keeps working; once every table is gone,
    rmmod succeeds (the hammer still sending), and the module loads again."""
    foreign = switch_devices()
    assert not foreign, f"switch devices left by other tests block this one: {foreign}"
    nb = env.nullb(16)
    paths3, starts3 = [nb.path] * 3, [0, 8192, 16384]
    table = switch_table(4096, 64, paths3, starts3)
    live = env.dm("relrmlive", table)
    susp = env.dm("relrmsusp", table)
    sh(f"dmsetup suspend {susp.name}")
    env.add(NamedDm("relrminact"))
    sh("dmsetup create relrminact --notable")
    sh("dmsetup load relrminact", input=table + "\n")
    cur = {"t": (live.major, live.minor, 3)}
    hammer = Hammer(lambda: cur["t"], allowed=(0, ENODEV, "nlerr", "error")).start()
    fid = int((SYS / "familyid").read_text())
    refused = 0
    try:
        for name in ("relrmlive", "relrmsusp", "relrminact"):
            for _ in range(bounded(1, 5)):
                r = sh("rmmod dm_switch", check=False)
                assert r.returncode != 0, f"rmmod succeeded while {name} exists"
                refused += 1
                assert module_is_ours() and int((SYS / "familyid").read_text()) == fid
            if name == "relrmlive":
                # Still serving (the hammer paused so the mapping holds still).
                with hammer.pause():
                    u = Uploader()
                    assert u.send(wire.pgtable(live.major, live.minor, 64, 0, [2, 0] * 32, 3, 2)).status == 0
                    u.close()
                    check_placement(live, paths3, starts3, 64, lambda r: 0 if r % 2 else 2, [1, 2, 3], tag="rm")
            sh(f"dmsetup remove --retry {name}")
        time.sleep(0.5)
        hs_before = sum(v for k, v in hammer.stats.items() if k == ENODEV)
        r = sh("rmmod dm_switch", check=False)
        assert r.returncode == 0, f"rmmod failed with no device left: {r.stderr}"
        assert not SYS.exists()
        # Every table claim was released, by the error paths of the fault
        # tests above included (the module reports leftovers when it goes).
        leaks = [line for line in sh("dmesg").stdout.splitlines() if "table claim(s) leaked" in line]
        assert not leaks, leaks
        time.sleep(1)  # the hammer keeps sending to the vanished family
    finally:
        hs = hammer.stop()
        load_module()
    assert hs_before > 0
    assert not hammer.bad, hammer.bad[:10]
    # The reloaded module works.
    sw = Switch(env, "relrmnew", regions=64, region=64)
    up = Uploader()
    assert up.send(wire.pgtable(sw.dev.major, sw.dev.minor, 64, 0, [1] * 64, 3, 2)).status == 0
    up.close()
    sw.placed(lambda r: 1, [0, 31, 63], "rn")
    record("rmmod", {"refused_attempts": refused, "hammer_answers": {str(k): v for k, v in hs.items()}})
