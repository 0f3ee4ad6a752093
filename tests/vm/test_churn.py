"""Reliability, churn: tables replaced at random under verified I/O (paths
are dm-linear views of one disk), data intact throughout.
"""
import random
import shlex
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import sh
from dmtest import dmioctl, klog, nl, wire
from campaign import (OUT, SOAK, Uploader, bounded, fio_jobs, fio_summary, fio_verify_pass,
                      pte_bits_for, random_mapping, record, shared_backing_paths)

pytestmark = pytest.mark.usefixtures("kernel_log_guard")


def test_kernel_log_clean_before_this_suite():
    """This suite makes the module log thousands of refusals, which wraps the
    kernel's ring buffer: reports from earlier suites would vanish before the
    harness scans dmesg. Keep a copy of the log as it is now and fail here if
    it already holds a report."""
    log = sh("dmesg").stdout
    if OUT:
        (Path(OUT) / "dmesg-before-reliability.txt").write_text(log)
    # Like finish.sh: boot-time reports (before the tests started) are not ours.
    start = log.rfind("dm-switch-tests: start")
    reports = klog.reports_in(log[start:] if start >= 0 else log)
    assert not reports, "kernel reports before this suite (kept in dmesg-before-reliability.txt):\n" + \
        "\n".join(reports[:20])


def churn(stop, sw_name, ma, mi, regions, dev_count, stats, problems, seed):
    """Re-uploads random mappings as fast as it can: whole tables with random
    pte_bits (each change replaces the table), windows, chunk frees and
    re-allocations, smaller page_totals, and set_region_mappings messages
    (DM ioctl, sometimes dmsetup itself). Every request is valid."""
    rng = random.Random(seed)
    up = Uploader()
    ctl = dmioctl.Control()
    bits_choices = [b for b in (2, 3, 4, 8, 16, 32) if b >= pte_bits_for(dev_count)]
    # Precomputed whole-table uploads (Python is slow under TCG).
    tables = []
    for k in range(6):
        bits = bits_choices[k % len(bits_choices)]
        vals = random_mapping(rng, regions, dev_count)
        total = regions if k % 3 else regions - rng.randrange(1, 2000)
        tables.append((total, bits, wire.windows(ma, mi, vals[:total], dev_count, bits, total, (k, bits))))
    cur = None  # (page_total, pte_bits) of the live table

    def send(msg):
        r = up.send(msg)
        stats["windows"] += 1
        if r.status:
            problems.append(f"upload refused: {r.status} {r.err_str}")
        return r.status == 0

    t0 = time.time()
    last_spawn = [0.0]
    while not stop.is_set():
        roll = rng.random()
        try:
            if roll < 0.35 or cur is None:
                total, bits, msgs = rng.choice(tables)
                if all(send(m) for m in msgs):
                    stats["tables"] += 1
                    cur = (total, bits)
            elif roll < 0.6:
                total, bits = cur
                fields = 32 // bits
                off = rng.randrange(0, total) // fields * fields
                cnt = min(total - off, rng.choice([1, 7, 64, 500, 3000]))
                vals = [rng.randrange(dev_count)] * cnt
                if send(wire.pgtable(ma, mi, total, off, vals, dev_count, bits, (7, 7))):
                    stats["partial"] += 1
            elif roll < 0.75:
                total, bits = cur
                chunk = rng.randrange(0, (total + 8191) // 8192)
                if (chunk * 8192) % (32 // bits):
                    # A free must also be a window start (a multiple of the
                    # entries per word): impossible past chunk 0 when
                    # 32 / pte_bits does not divide 8192.
                    chunk = 0
                if send(wire.pgtable(ma, mi, total, chunk * 8192, [], dev_count, bits, (8, chunk))):
                    stats["frees"] += 1
            elif roll < 0.97:
                first = rng.randrange(1, regions - 200)
                args = [f"{first:x}:{rng.randrange(dev_count):x}"] + \
                    [f":{rng.randrange(dev_count):x}" for _ in range(rng.randrange(0, 6))] + \
                    [f"R{rng.randrange(1, 3):x},{rng.randrange(0, 100):x}"]
                # The message edits the live table in its own geometry; it
                # needs regions below that table's page_total.
                if cur is not None and first + 200 > cur[0]:
                    continue
                if rng.random() < 0.05 and time.time() - last_spawn[0] > 8:
                    last_spawn[0] = time.time()
                    r = sh(f"dmsetup message {sw_name} 0 set_region_mappings " + " ".join(args), check=False)
                    if r.returncode:
                        problems.append(f"dmsetup message refused: {r.stderr}")
                else:
                    ctl.message(sw_name, "set_region_mappings " + " ".join(args))
                stats["messages"] += 1
            elif time.time() - last_spawn[0] > 8:
                # A process per request costs about a second under TCG: the
                # agent and dmsetup run now and then, the rest is in-process.
                last_spawn[0] = time.time()
                r = sh(f"{shlex.quote(str(Path(__file__).resolve().parents[2] / 'tools/target/release/dm-switch'))}"
                       f" upload {sw_name} --round-robin -q", check=False)
                if r.returncode:
                    problems.append(f"agent upload failed: {r.stdout}{r.stderr}")
                else:
                    stats["agent"] += 1
                    cur = (regions, pte_bits_for(dev_count))
        except (OSError, AssertionError, nl.NetlinkError) as e:
            problems.append(repr(e))
            time.sleep(0.05)
        if len(problems) > 20:
            break
    stats["seconds"] = time.time() - t0
    up.close()
    ctl.close()


@pytest.mark.parametrize("region", [12] + ([8] if SOAK else []))
def test_churn_under_load_keeps_data_intact(env, region):
    """fio writes random blocks with crc32c headers through the switch and
    verifies them (during the writes and in a second, verify-only pass) while
    another thread rewrites the table as fast as it can. The paths are views
    of one disk, so any lost, misdirected or corrupted bio fails verification."""
    size_mb = bounded(128, 256)
    job_mb = bounded([1, 1, 2], [16, 16, 32])
    budget = bounded(40, 300)
    _, lins, sectors = shared_backing_paths(env, "relch", size_mb)
    regions = sectors // region
    length = regions * region
    table = f"0 {length} switch 3 {region} " + " ".join(f"{d.path} 0" for d in lins)
    sw = env.dm("relchsw", table)
    jobs = fio_jobs(sw.path, [mb * 1024 for mb in job_mb], size_mb // 3)
    stats, problems = Counter(), []
    stop = threading.Event()
    th = threading.Thread(target=churn, args=(stop, sw.name, sw.major, sw.minor, regions, 3, stats, problems, 8),
                          daemon=True)
    th.start()
    t0 = time.time()
    reports = []
    try:
        # Passes until the time budget is spent (at least one, started after
        # the churn thread has begun uploading).
        while not stats["windows"] and th.is_alive() and time.time() - t0 < 120:
            time.sleep(0.2)
        while not reports or time.time() - t0 < budget:
            reports += fio_verify_pass(jobs, bounded(900, 3600))
            if problems:
                break
    finally:
        stop.set()
        th.join(120)
    elapsed = time.time() - t0
    assert not problems, problems[:10]
    errs = sum(fio_summary(j)[0] for j in reports)
    written = sum(fio_summary(j)[1] for j in reports)
    verified = sum(fio_summary(j)[2] for j in reports)
    assert errs == 0
    assert written >= sum(job_mb) << 20 and verified >= written
    st = sw.status()
    assert st["remapped"] + st["unmapped"] > 0
    uploads = stats["tables"] + stats["partial"] + stats["frees"]
    assert uploads >= 5 and stats["messages"] >= 1, dict(stats)
    record(f"churn_region{region}", {
        "seconds": round(elapsed, 1), "bytes_written": written, "bytes_verified": verified,
        "whole_tables": stats["tables"], "windows": stats["windows"], "partial_windows": stats["partial"],
        "chunk_frees": stats["frees"], "messages": stats["messages"], "agent_uploads": stats["agent"],
        "uploads_per_s": round(uploads / max(stats["seconds"], 0.1), 1),
        "windows_per_s": round(stats["windows"] / max(stats["seconds"], 0.1), 1),
        "fio_passes": len(reports) // 2, "fio_errors": errs, "verify_errors": 0})
