"""Issue 8: reliability and security campaign.

1. table churn under verified I/O (paths are dm-linear views of one disk),
2. fault injection (fail-nth over every allocation under our code, and
   probabilistic failslab/fail_page_alloc aimed at the uploading task),
3. netlink fuzzing against a reference model, and set_region_mappings fuzzing,
4. lifecycle races (create/remove/reload/suspend under uploads, rmmod),
5. privilege and isolation.

Bounded by default (make check); DM_SWITCH_SOAK=1 runs the long variants.
Numbers go to $DM_SWITCH_OUT/reliability.json (docs/reliability.md).
"""
import errno
import json
import os
import random
import shlex
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import (MODULE, SECTOR, SYS, Cleanup, Switch, check_placement, load_module,
                      module_is_ours, sh, switch_table)
import nl

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))
import dmioctl  # noqa: E402
import faults  # noqa: E402
import klog  # noqa: E402
import model  # noqa: E402

SOAK = os.environ.get("DM_SWITCH_SOAK", "") not in ("", "0")
OUT = os.environ.get("DM_SWITCH_OUT")
# Sender i of the netlink fuzzer draws from seed FUZZ_SEED + i: a run is
# repeatable, and another seed explores other messages.
FUZZ_SEED = int(os.environ.get("DM_SWITCH_FUZZ_SEED") or 1000)
EPERM, ENOENT, ENOMEM, ENODEV, EINVAL, EACCES = (errno.EPERM, errno.ENOENT, errno.ENOMEM, errno.ENODEV,
                                                  errno.EINVAL, errno.EACCES)
PY = sys.executable


def bounded(normal, soak):
    return soak if SOAK else normal


def record(key, data):
    """Prints a result and merges it into $DM_SWITCH_OUT/reliability.json."""
    print(f"\nreliability {key}: {json.dumps(data, sort_keys=True)}")
    if not OUT:
        return
    p = Path(OUT) / "reliability.json"
    try:
        d = json.loads(p.read_text()) if p.exists() else {}
    except ValueError:
        d = {}
    d[key] = data
    d["soak"] = SOAK
    p.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")


# ---------------------------------------------------------------- kernel log

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


@pytest.fixture(autouse=True)
def kernel_log_guard(request):
    """Follows /dev/kmsg during each test: any report fails the test, even if
    the ring buffer wraps before the harness reads it."""
    scan = klog.KmsgScanner()
    yield scan
    reports = scan.stop()
    if reports and OUT:
        (Path(OUT) / f"reports-{request.node.name}.txt").write_text(scan.summary())
    assert not reports, f"kernel reports during {request.node.name}:\n{scan.summary()}"
    assert scan.lost == 0, f"{scan.lost} kernel log records were overwritten before they could be scanned"


# ---------------------------------------------------------------- helpers

class Uploader:
    """A netlink client with the family id looked up once."""

    def __init__(self, timeout=60):
        self.c = nl.Client()
        self.c.sock.settimeout(timeout)
        self.fid = self.c.family_id()

    def send(self, msg):
        """Returns the Response; raises nl.NetlinkError for NLMSG_ERROR."""
        gcmd, attrs, _ = self.c.request(self.fid, nl.CMD_GET_PAGE_TBL, 1, nl._attr(nl.ATTR_MSG, msg))
        assert gcmd == nl.CMD_GET_PAGE_TBL and set(attrs) == {nl.ATTR_RESPONSE}, (gcmd, sorted(attrs))
        return nl.Response(attrs[nl.ATTR_RESPONSE])

    def post(self, msg):
        """Sends without waiting: the kernel handles the request inside this
        send() (genetlink runs the handler in the sender's context)."""
        self.c.seq += 1
        body = struct.pack("=BBH", nl.CMD_GET_PAGE_TBL, 1, 0) + nl._attr(nl.ATTR_MSG, msg)
        self.c.sock.send(struct.pack("=IHHII", 16 + len(body), self.fid, nl.NLM_F_REQUEST, self.c.seq, 0) + body)

    def reply(self):
        """The answer to the last post(): a Response, or raises nl.NetlinkError."""
        while True:
            data = self.c.sock.recv(1 << 17)
            _n, kind, _f, seq, _pid = struct.unpack_from("=IHHII", data)
            if seq != self.c.seq:
                continue
            if kind == nl.NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, 16)
                raise nl.NetlinkError(err)
            attrs = nl._parse_attrs(data[20:_n])
            return nl.Response(attrs[nl.ATTR_RESPONSE])

    def close(self):
        self.c.close()


def pte_bits_for(dev_count):
    return model.min_pte_bits(dev_count)


class Hammer:
    """A thread uploading as fast as it can to whatever target() names
    ((major, minor, dev_count) or None), counting the answers. Any answer
    outside `allowed` (statuses; 'nlerr' for NLMSG_ERROR) is kept in .bad."""

    def __init__(self, target, allowed=(0, ENODEV), regions=64):
        self.target, self.allowed, self.regions = target, set(allowed), regions
        self.stats, self.bad = Counter(), []
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._busy = threading.Lock()
        self._cache = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _msg(self, t, i):
        key = (t, i % t[2])
        if key not in self._cache:
            ma, mi, dc = t
            self._cache[key] = nl.pgtable(ma, mi, self.regions, 0, [i % dc] * self.regions, dc, pte_bits_for(dc),
                                          userland=(0x4A4A, i % dc))
        return self._cache[key]

    def _run(self):
        up = None
        i = 0
        while not self._stop.is_set():
            t = self.target()
            if t is None or self._paused.is_set():
                time.sleep(0.01)
                continue
            self._busy.acquire()
            try:
                if up is None:
                    up = Uploader(timeout=60)
                r = up.send(self._msg(t, i))
                self.stats[r.status] += 1
                if r.status not in self.allowed:
                    self.bad.append(f"status {r.status}: {r.err_str}")
                elif r.status and not r.err_str:
                    self.bad.append(f"status {r.status} without err_str")
            except nl.NetlinkError as e:
                self.stats[f"nlerr{e.errno}"] += 1
                if "nlerr" not in self.allowed:
                    self.bad.append(f"NLMSG_ERROR {e.errno}")
                time.sleep(0.005)
            except (OSError, AssertionError, KeyError, struct.error) as e:
                self.stats["error"] += 1
                if "error" not in self.allowed:
                    self.bad.append(repr(e))
                if up is not None:
                    up.close()
                up = None
                time.sleep(0.01)
            finally:
                self._busy.release()
            i += 1
        if up is not None:
            up.close()

    def pause(self):
        """Context manager: no request in flight while the block runs."""
        hammer = self

        class _Pause:
            def __enter__(self):
                hammer._paused.set()
                hammer._busy.acquire()

            def __exit__(self, *exc):
                hammer._busy.release()
                hammer._paused.clear()
        return _Pause()

    def stop(self):
        self._stop.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "hammer thread stuck (a netlink request never returned)"
        return self.stats


def fio_json(text):
    return json.loads(text[text.index("{"):])


def fio_summary(j):
    """(I/O errors, bytes written, bytes read) over all jobs of a fio JSON report."""
    errs = sum(job["error"] for job in j["jobs"])
    w = sum(job["write"]["io_bytes"] for job in j["jobs"])
    r = sum(job["read"]["io_bytes"] for job in j["jobs"])
    return errs, w, r


def shared_backing_paths(env, tag, size_mb, n=3):
    """`n` paths that are different dm-linear views of the SAME null_blk
    (like multipath paths to one LUN): data written through any path is read
    back through any other, so routing can never corrupt it."""
    base = env.nullb(size_mb)
    sectors = size_mb * 2048
    lins = [env.dm(f"{tag}l{i}", f"0 {sectors} linear {base.path} 0") for i in range(n)]
    return base, lins, sectors


def random_mapping(rng, regions, dev_count):
    return [rng.randrange(dev_count) for _ in range(regions)]


def windows(major, minor, values, dev_count, bits, page_total=None, userland=(0, 0)):
    """The messages of a whole-table upload in maximal windows (as nl.upload)."""
    page_total = len(values) if page_total is None else page_total
    fields = 32 // bits
    per = ((65480 - nl.HEADER_LEN) // 4) * fields
    return [nl.pgtable(major, minor, page_total, off, values[off:off + per], dev_count, bits, userland)
            for off in range(0, len(values), per)]


# ================================================================ 1. churn

FIO_VERIFY = ["--direct=1", "--ioengine=libaio", "--iodepth=8", "--rw=randwrite", "--verify=crc32c",
              "--verify_fatal=1", "--do_verify=1", "--randrepeat=1", "--output-format=json"]


def fio_jobs(path, sizes_mb, gap_mb):
    """Three jobs on disjoint ranges, with block sizes 4k, 16k and 64k: with a
    6 KiB region every one of them straddles region boundaries."""
    args = [f"--filename={path}"]
    for i, (bs, mb) in enumerate(zip(("4k", "16k", "64k"), sizes_mb)):
        args += [f"--name=j{bs}", f"--bs={bs}", f"--offset={i * gap_mb}M", f"--size={mb}M"]
    return args


def fio_verify_pass(jobs, timeout):
    """fio writes (verifying each block soon after it is written), then a
    second run verifies everything again; returns the two JSON reports.
    Raises AssertionError with fio's output if fio fails (I/O or verify error)."""
    reports = []
    for extra in (["--verify_backlog=16"], ["--verify_only"]):
        r = subprocess.run(["fio"] + FIO_VERIFY + extra + jobs, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, f"fio failed ({r.returncode}): {r.stdout[-3000:]}{r.stderr[-3000:]}"
        reports.append(fio_json(r.stdout))
    return reports


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
        tables.append((total, bits, windows(ma, mi, vals[:total], dev_count, bits, total, (k, bits))))
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
                if send(nl.pgtable(ma, mi, total, off, vals, dev_count, bits, (7, 7))):
                    stats["partial"] += 1
            elif roll < 0.75:
                total, bits = cur
                chunk = rng.randrange(0, (total + 8191) // 8192)
                if (chunk * 8192) % (32 // bits):
                    # A free must also be a window start (a multiple of the
                    # entries per word): impossible past chunk 0 when
                    # 32 / pte_bits does not divide 8192.
                    chunk = 0
                if send(nl.pgtable(ma, mi, total, chunk * 8192, [], dev_count, bits, (8, chunk))):
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
    budget = bounded(40, 900)
    _, lins, sectors = shared_backing_paths(env, "relch", size_mb)
    regions = sectors // region
    length = regions * region
    table = f"0 {length} switch 3 {region} " + " ".join(f"{d.path} 0" for d in lins)
    sw = env.dm("relchsw", table)
    jobs = fio_jobs(sw.path, job_mb, size_mb // 3)
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


# ================================================================ 2. fault injection

@pytest.fixture
def fault_attrs():
    if not faults.available():
        pytest.skip("kernel without FAILSLAB/FAIL_PAGE_ALLOC debugfs")
    fa = faults.FaultAttrs()
    lo, hi = faults.module_text_range(MODULE)
    # Nothing fails unless asked (probability 0; fail-nth is per thread), no
    # report per fault (verbose 2 would dump a stack trace each time), sleeping
    # allocations included, only allocations with a dm_switch frame on the stack.
    rlo, rhi = faults.vmalloc_range()
    fa.both(probability=0, verbose=0, ignore_gfp_wait=False, task_filter=False, interval=1, times=-1, space=0,
            stacktrace_depth=32, require_start=lo, require_end=hi, reject_start=rlo, reject_end=rhi)
    fa.set("fail_page_alloc", min_order=0)
    fa.text = (lo, hi)
    yield fa
    fa.restore()


def placed_as(sw, dev_model, regions, tag):
    """Placement of fresh markers in `regions` matches the model."""
    sw.placed(dev_model.lookup, regions, tag)


def placement_ok(sw, dev_model, regions, tag):
    try:
        placed_as(sw, dev_model, regions, tag)
        return True
    except AssertionError:
        return False


class Outcomes(Counter):
    pass


def enumerate_faults(op, check, limit=200):
    """Systematic fault injection: for n = 1, 2, ... fail the n-th allocation
    made under dm_switch code during op() (this thread's fail-nth, filtered
    by the module's text range), until op() runs without reaching an n-th
    one. op() returns an outcome; check(outcome, injected) validates it.
    Returns the number of allocation points found."""
    fn = faults.FailNth()
    try:
        for n in range(1, limit):
            fn.arm(n)
            try:
                outcome = op()
            finally:
                injected = fn.injected()
            check(outcome, injected)
            if not injected:
                return n - 1
    finally:
        fn.close()
    raise AssertionError(f"more than {limit} allocation points: fail-nth never ran out")


def upload_outcome(up, msg):
    try:
        r = up.send(msg)
        return ("status", r.status, r.err_str)
    except nl.NetlinkError as e:
        return ("nlerr", e.errno, "")
    except OSError as e:
        return ("oserr", e.errno, str(e))


UPLOAD_SHAPES = {
    # name: (window builder over the device model, sample regions)
    "merge_in_one_chunk": (lambda M, m: nl.pgtable(M, m, 20000, 64, [2] * 64, 3, 2, (1, 1)), [63, 64, 127, 128]),
    "window_across_chunks": (lambda M, m: nl.pgtable(M, m, 20000, 8160, [1, 2] * 32, 3, 2, (2, 2)),
                             [8159, 8160, 8191, 8192, 8223, 8224]),
    "new_geometry_replaces_table": (lambda M, m: nl.pgtable(M, m, 20000, 0, [2] * 16, 3, 4, (3, 3)),
                                    [0, 15, 16, 8192, 19999]),
    "free_chunk": (lambda M, m: nl.pgtable(M, m, 20000, 8192, [], 3, 2, (4, 4)), [8191, 8192, 16383, 16384]),
    "new_page_total": (lambda M, m: nl.pgtable(M, m, 9000, 8960, [1] * 40, 3, 2, (5, 5)),
                       [0, 8191, 8192, 8959, 8960, 8999, 9000]),
}


# The bug the test below found (fixed in db434d7: the reply is allocated
# before the upload is acted on): the handler committed the new table, then
# allocated the reply, and if that failed the sender got NLMSG_ERROR ENOMEM
# although the upload had taken effect.
KNOWN_BUG_REPLY_AFTER_COMMIT = ("BUG reply-after-commit: an upload whose reply skb cannot be allocated "
                                "is reported as failed (NLMSG_ERROR ENOMEM) but was committed")


def test_fault_every_allocation_in_upload(env, fault_attrs):
    """fail-nth over every allocation dm_switch makes while handling an
    upload, for several kinds of window: each injected failure must reach the
    sender as an error (status ENOMEM from our handler, or an NLMSG_ERROR),
    and the device must then route exactly as before the failed upload; when
    the failure was absorbed (status 0), exactly as after it."""
    sw = Switch(env, "relfn", regions=20000, region=8)
    dev = sw.dev
    M, m = dev.major, dev.minor
    up = Uploader()
    rng = random.Random(3)
    base_vals = random_mapping(rng, 20000, 3)
    base_msgs = windows(M, m, base_vals, 3, 2)
    base = model.Device(M, m, 3, 20000)
    for msg in base_msgs:
        base.apply_upload(model.Request(msg))
    counts = Counter()
    problems = []
    committed = []  # failure reported, upload committed: KNOWN_BUG_REPLY_AFTER_COMMIT
    points = {}
    for shape, (build, sample) in UPLOAD_SHAPES.items():
        msg = build(M, m)
        after = model.Device(M, m, 3, 20000)
        after.table = base.table
        after.apply_upload(model.Request(msg))
        sample = sorted(set(sample) | {0, 19999})

        def reset():
            for w in base_msgs:
                assert up.send(w).status == 0

        def check(outcome, injected, shape=shape, sample=sample, after=after):
            kind, code, text = outcome
            if not injected:
                if outcome[:2] != ("status", 0):
                    problems.append(f"{shape}: upload without injected fault failed: {outcome}")
                return
            counts[f"{kind}{code}"] += 1
            ok_before = placement_ok(sw, base, sample, f"b{shape[:3]}{counts.total()}")
            if kind == "status" and code == 0:
                counts["absorbed"] += 1
                if not placement_ok(sw, after, sample, f"a{shape[:3]}{counts.total()}"):
                    problems.append(f"{shape}: accepted under an injected fault, but does not route as uploaded")
            elif kind == "status" and code == ENOMEM:
                counts["ours_enomem"] += 1
                if "out of memory" not in text:
                    problems.append(f"{shape}: ENOMEM with err_str {text!r}")
                if not ok_before:
                    problems.append(f"{shape}: ENOMEM reply but the mapping changed")
            elif kind in ("nlerr", "oserr"):
                counts["netlink_error"] += 1
                if not ok_before:
                    if placement_ok(sw, after, sample, f"n{shape[:3]}{counts.total()}"):
                        committed.append(f"{shape}: sender got {kind} {code} (failure) but the upload was "
                                         "committed (the mapping is the new one)")
                    else:
                        problems.append(f"{shape}: sender got {kind} {code} (failure) and the mapping changed "
                                        "to neither the old nor the new table")
            else:
                problems.append(f"{shape}: unexpected outcome {outcome}")
            reset()

        reset()
        assert placement_ok(sw, base, sample, f"s{shape[:3]}")
        points[shape] = enumerate_faults(lambda msg=msg: upload_outcome(up, msg), check)
    up.close()
    record("fault_nth_upload", {"allocation_points": points, "outcomes": dict(counts),
                                "problems": len(problems), "reported_failed_but_committed": len(committed)})
    assert all(points.values()), f"no allocation under dm_switch found for some shapes: {points}"
    assert not problems, "\n".join(problems[:20])
    assert not committed, f"{KNOWN_BUG_REPLY_AFTER_COMMIT} ({len(committed)} cases, e.g. {committed[0]})"


def test_fault_every_allocation_in_message_and_table_load(env, fault_attrs):
    """fail-nth over every allocation under dm_switch in (a) a
    set_region_mappings message (one DM ioctl) and (b) a table load of each
    format (the constructor): the ioctl fails (ENOMEM from our code, or
    whatever errno the allocation's owner returns), the mapping stays as it
    was, a device whose load failed can load again and works, and kmemleak
    (checked by the harness at the end) finds nothing."""
    sw = Switch(env, "relfm", regions=20000, region=8)
    dev = sw.dev
    ctl = dmioctl.Control()
    base = model.Device(dev.major, dev.minor, 3, 20000)
    # Covers every region, so a reset undoes whatever the tested message did.
    base_args = ["set_region_mappings", "0:1", ":2", "R2,4e1e", "1fc0:2", "R1,80"]
    assert base.message([a.encode() for a in base_args]) == 0
    msg = ["set_region_mappings", "2000:2", ":1", "R2,40", "10:0", "4e1f:1"]
    after = model.Device(dev.major, dev.minor, 3, 20000)
    after.table = base.table
    assert after.message([a.encode() for a in msg]) == 0
    sample = [0, 16, 17, 8191, 8192, 8193, 8234, 19999]
    counts, problems = Counter(), []

    def reset():
        ctl.message(dev.name, " ".join(base_args))

    def msg_op():
        try:
            ctl.message(dev.name, " ".join(msg))
            return 0
        except OSError as e:
            return e.errno

    def msg_check(code, injected):
        if not injected:
            if code:
                problems.append(f"message without injected fault failed: {code}")
            return
        counts[f"message_errno{code}"] += 1
        if code == 0:
            if not placement_ok(sw, after, sample, f"ma{counts.total()}"):
                problems.append("message accepted under an injected fault but the mapping is not the new one")
        elif not placement_ok(sw, base, sample, f"mb{counts.total()}"):
            problems.append(f"message failed ({code}) but the mapping changed")
        reset()

    reset()
    msg_points = enumerate_faults(msg_op, msg_check)

    # Table loads: RFC format (empty table) and upstream (round-robin table).
    nb = env.nullb(8)
    paths = f"{nb.path} 0 {nb.path} 4096 {nb.path} 8192"
    load_points = {}
    for fmt, params in (("rfc", f"3 64 {paths}"), ("upstream", f"3 64 0 {paths}")):
        seq = [0]

        def load_op(params=params):
            seq[0] += 1
            name = f"relfl{seq[0]}"
            ctl.create(name)
            try:
                ctl.load(name, 0, 4096, "switch", params)
                return name, 0
            except OSError as e:
                return name, e.errno

        def load_check(outcome, injected, params=params, fmt=fmt):
            name, code = outcome
            counts[f"load_{fmt}_errno{code}"] += 1 if injected else 0
            try:
                if code:
                    if not injected:
                        problems.append(f"{fmt} load failed without an injected fault: {code}")
                    ctl.load(name, 0, 4096, "switch", params)
                ctl.resume(name)
                M, m = ctl.devt(name)
                up = Uploader()
                r = up.send(nl.pgtable(M, m, 64, 0, [2] * 64, 3, 2))
                up.close()
                if r.status:
                    problems.append(f"{fmt} device after load fault {code}: upload refused {r}")
            finally:
                ctl.remove(name)

        load_points[fmt] = enumerate_faults(load_op, load_check)
    ctl.close()
    record("fault_nth_message_and_load", {"message_points": msg_points, "load_points": load_points,
                                          "outcomes": dict(counts)})
    assert msg_points and all(load_points.values())
    assert not problems, "\n".join(problems[:20])


# The bug the test below found (fixed in db434d7: the device slot is reserved
# when the table is loaded): resume cannot fail, and when growing the registry
# failed there, the device went live unreachable by netlink (every upload
# ENODEV) with only a log line. Now resume allocates nothing under dm_switch.
KNOWN_BUG_SILENT_RESUME = ("BUG silent-resume: a resumed device is unreachable by netlink after an "
                           "allocation failure in resume")


def test_fault_in_resume_is_not_silent(env, fault_attrs):
    """Resume registers the device for netlink uploads, which may allocate
    (the registry grows). If that allocation fails, the failure must not be
    silent: either the resume fails, or the device stays reachable. Each
    device is resumed with its first allocation under dm_switch failing."""
    nb = env.nullb(8)
    paths = f"{nb.path} 0 {nb.path} 4096 {nb.path} 8192"
    ctl = dmioctl.Control()
    names = []
    injected_any, problems = 0, []
    fn = faults.FailNth()
    try:
        for i in range(bounded(12, 24)):
            name = f"relfr{i}"
            ctl.create(name)
            names.append(name)
            ctl.load(name, 0, 4096, "switch", f"3 64 {paths}")
            fn.arm(1)
            try:
                ctl.resume(name)
                code = 0
            except OSError as e:
                code = e.errno
            injected = fn.injected()
            injected_any += injected
            if code:
                continue  # refused: not silent
            M, m = ctl.devt(name)
            up = Uploader()
            r = up.send(nl.pgtable(M, m, 64, 0, [1] * 64, 3, 2))
            up.close()
            if r.status:
                problems.append(f"{name} (fault injected in resume: {injected}): resume succeeded, "
                                f"but uploads get {r.status} {r.err_str!r}")
    finally:
        fn.close()
        for name in names:
            try:
                ctl.remove(name)
            except OSError:
                sh(f"dmsetup remove --retry {name}", check=False)
        ctl.close()
    record("fault_nth_resume", {"devices": len(names), "faults_injected": injected_any, "silent": len(problems)})
    assert not problems, KNOWN_BUG_SILENT_RESUME + ":\n" + "\n".join(problems)


class MakeItFail:
    """make-it-fail of the calling thread (task-filter=Y fails only such tasks)."""

    def __init__(self):
        self.fd = os.open(f"/proc/self/task/{threading.get_native_id()}/make-it-fail", os.O_WRONLY)

    def __call__(self, fn):
        os.write(self.fd, b"1")
        try:
            return fn()
        finally:
            os.write(self.fd, b"0")

    def close(self):
        os.close(self.fd)


def test_fault_probabilistic_uploads_messages_and_loads(env, fault_attrs, kernel_log_guard):
    """failslab + fail_page_alloc with task-filter: only this thread fails
    allocations, at random, and only inside its netlink send() and DM ioctls.
    'aimed' restricts faults to allocations under dm_switch code (stack-trace
    filter), 'broad' lets them hit anything those system calls allocate
    (netlink core, DM core). Uploads alternate between two mappings, messages
    too, and a device is created (create, load, resume: each may fail) now
    and then; after every step the device must route exactly as the last
    request that succeeded said, and a device whose load or resume failed
    must load, resume and take uploads once faults stop.

    Not dmsetup children with make-it-fail: broad faults then hit exec, and
    an allocation failure while exec reads the binary over the guest's 9p
    root left every later exec failing with EINVAL (a 9p client problem,
    not ours), which broke the rest of the run."""
    sw = Switch(env, "relfp", regions=64, region=64)
    dev = sw.dev
    M, m = dev.major, dev.minor
    maps = [[r % 3 for r in range(64)], [(r * 5 + 1) % 3 for r in range(64)]]
    msgs = [nl.pgtable(M, m, 64, 0, mp, 3, 2, (9, k)) for k, mp in enumerate(maps)]
    dm_msgs = ["set_region_mappings 0:2 :0 :1 R3,3d", "set_region_mappings 0:1 :1 :0 R3,3d"]
    states = []
    for text in dm_msgs:
        d = model.Device(M, m, 3, 64)
        assert d.message(model.dm_split_args(text.encode())) == 0
        states.append(d)
    upload_states = []
    for msg in msgs:
        d = model.Device(M, m, 3, 64)
        d.apply_upload(model.Request(msg))
        upload_states.append(d)
    up = Uploader(timeout=30)
    assert up.send(msgs[0]).status == 0
    current = upload_states[0]
    nb = env.nullb(8)
    ctl = dmioctl.Control()
    mif = MakeItFail()
    lo, hi = fault_attrs.text
    kernel_log_guard.count("ours_upload", r"upload refused: out of memory")
    kernel_log_guard.count("ours_message", r"set_region_mappings: out of memory")
    kernel_log_guard.count("ours_ctr", r"switch: (Cannot allocate|Device lookup failed|Cannot register)")
    budget = 1_000_000
    results, problems = {}, []
    sample = [0, 1, 2, 17, 31, 40, 62, 63]
    # 'broad' faults need a frame of the system call's entry on the stack:
    # with none (0..ULONG_MAX), a page fault of this thread's own user code
    # in the make-it-fail window failed its page-cache allocation and the
    # test process died of SIGBUS (its code is mapped from the 9p root).
    phases = [("aimed", lo, hi, 15, bounded(24, 300)),
              ("broad_netlink", *faults.symbol_range("netlink_sendmsg"), 3, bounded(12, 150)),
              ("broad_dm", *faults.symbol_range("dm_ctl_ioctl"), 3, bounded(12, 150))]
    for phase, rng_lo, rng_hi, prob, steps in phases:
        tag = phase.split("_")[-1][0]  # a, n, d: markers unique per phase
        counts = Counter()
        fault_attrs.both(require_start=rng_lo, require_end=rng_hi, task_filter=True, times=budget)
        fault_attrs.both(probability=prob)
        t0 = time.time()
        for i in range(steps):
            kind = ("upload", "upload", "upload", "message", "upload", "create")[i % 6]
            if kind == "upload":
                k = i % 2
                try:
                    # Only the send() fails allocations: the handler runs in it.
                    mif(lambda k=k: up.post(msgs[k]))
                    r = up.reply()
                    outcome = r.status
                    if r.status == 0:
                        current = upload_states[k]
                    elif r.status == ENOMEM:
                        counts["upload_enomem_ours"] += 1
                    else:
                        problems.append(f"{phase}: upload status {r.status} {r.err_str}")
                except nl.NetlinkError as e:
                    outcome = f"nlerr{e.errno}"
                    counts["upload_nlerr"] += 1
                except MemoryError:
                    outcome = "client"
                    counts["upload_client_oom"] += 1
                except OSError as e:
                    outcome = f"oserr{e.errno}"
                    counts["upload_oserr"] += 1
                    up.close()
                    up = Uploader(timeout=30)
                counts[f"upload_{outcome}"] += 1
                if outcome != 0 and placement_ok(sw, upload_states[k], sample, f"{tag}k{i}") \
                        and not placement_ok(sw, current, sample, f"{tag}c{i}"):
                    # Reported as failed, committed: KNOWN_BUG_REPLY_AFTER_COMMIT.
                    counts["upload_failed_but_committed"] += 1
                    current = upload_states[k]
                if not placement_ok(sw, current, sample, f"{tag}u{i}"):
                    problems.append(f"{phase} step {i}: after upload ({outcome}) the mapping is not the last "
                                    f"successful one")
                    sh(f"dmsetup message {dev.name} 0 set_region_mappings 0:0 R1,3f")
                    assert up.send(msgs[0]).status == 0
                    current = upload_states[0]
            elif kind == "message":
                k = (i // 6) % 2
                try:
                    mif(lambda k=k: ctl.message(dev.name, dm_msgs[k]))
                    code = 0
                    current = states[k]
                except OSError as e:
                    code = e.errno
                counts[f"message_errno{code}"] += 1
                if not placement_ok(sw, current, sample, f"{tag}m{i}"):
                    problems.append(f"{phase} step {i}: after a message (errno {code}) the mapping is not the "
                                    "last successful one")
            else:
                name = f"relfc{tag}{i}"
                params = f"3 64 0 {nb.path} 0 {nb.path} 4096 {nb.path} 8192"
                step = "create"
                try:
                    mif(lambda: ctl.create(name))
                    step = "load"
                    mif(lambda: ctl.load(name, 0, 4096, "switch", params))
                    step = "resume"
                    mif(lambda: ctl.resume(name))
                    step = "ok"
                except OSError as e:
                    counts[f"create_{step}_errno{e.errno}"] += 1
                if step == "ok":
                    counts["create_ok"] += 1
                if step == "load" and phase != "aimed":
                    # A broad fault may fail add_disk() in DM core's first
                    # table load; DM then calls add_disk() again on the next
                    # load of that device and the block layer warns
                    # "kobject: tried to init an initialized object" (6.12,
                    # seen in the soak run; not dm_switch code). Check a new
                    # device instead of that one.
                    ctl.remove(name)
                    name += "n"
                    ctl.create(name)
                if step in ("load", "resume", "ok"):
                    # The device exists: without faults it must take (or
                    # keep) the table, go live and accept an upload.
                    try:
                        if step == "load":
                            ctl.load(name, 0, 4096, "switch", params)
                        ctl.resume(name)
                        cM, cm = ctl.devt(name)
                        r = up.send(nl.pgtable(cM, cm, 64, 0, [1] * 64, 3, 2))
                        if r.status:
                            problems.append(f"{phase}: device {name} (faulted at {step}) refuses uploads: "
                                            f"{r.status} {r.err_str}")
                    except OSError as e:
                        problems.append(f"{phase}: device {name} (faulted at {step}) cannot be loaded/resumed "
                                        f"without faults: {e}")
                    finally:
                        try:
                            ctl.remove(name)
                        except OSError:
                            sh(f"dmsetup remove --retry {name}", check=False)
        fault_attrs.both(probability=0)
        counts["faults_failslab"] = budget - fault_attrs.times_left("failslab")
        counts["faults_fail_page_alloc"] = budget - fault_attrs.times_left("fail_page_alloc")
        counts["seconds"] = round(time.time() - t0, 1)
        results[phase] = dict(counts)
        record("fault_probabilistic", results)
        # Still fine without faults.
        assert up.send(msgs[1]).status == 0
        current = upload_states[1]
        assert placement_ok(sw, current, sample, f"{tag}z")
    mif.close()
    ctl.close()
    up.close()
    ours = {k: v for k, v in kernel_log_guard.counts.items()}
    results["landed_in_dm_switch"] = ours
    results["problems"] = len(problems)
    record("fault_probabilistic", results)
    assert results["aimed"]["faults_failslab"] + results["aimed"]["faults_fail_page_alloc"] > 0
    assert not problems, "\n".join(problems[:20])
    committed = sum(results[p[0]].get("upload_failed_but_committed", 0) for p in phases)
    assert not committed, f"{KNOWN_BUG_REPLY_AFTER_COMMIT} ({committed} uploads)"


# ================================================================ 3. fuzzing

def test_netlink_fuzz_against_model_under_io(env):
    """Concurrent fuzzers (one process per device) send malformed and mutated
    DM_SWITCH messages at live devices while fio does I/O on two of them. Every
    reply must be well-formed and carry the status the reference validator
    allows; the model of each table changes only with replies of status 0,
    and data placement is compared with it during and after the run."""
    # Four senders: an accepted upload waits for an RCU grace period (about
    # 10 ms under TCG), and the waits of concurrent senders overlap (about
    # 230 messages/s in all on an idle machine: 100,000 in about 7 minutes).
    nworkers = 4
    seconds = bounded(600, 7200)
    target = bounded(100_000, 400_000)
    regions, region = 20000, 8
    u = Uploader()
    fid = u.fid
    u.close()
    sws = [Switch(env, f"relfz{i}", regions=regions, region=region, fmt=("rfc", "upstream")[i % 2])
           for i in range(nworkers)]
    others = [env.dm(f"relfzl{i}", f"0 2048 linear {sws[0].paths[0]} 0") for i in range(2)]
    half = regions // 2
    fios = [subprocess.Popen(["fio", "--name=bg", f"--filename={sw.dev.path}", "--direct=1", "--rw=randrw",
                              "--bs=4k", "--ioengine=libaio", "--iodepth=4", "--time_based",
                              f"--runtime={seconds + 60}", "--offset=0", f"--size={half * region * SECTOR}",
                              "--output-format=json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for sw in sws[:2]]
    procs = []
    for i, sw in enumerate(sws):
        cfg = {"seed": FUZZ_SEED + i, "family_id": fid, "major": sw.dev.major, "minor": sw.dev.minor, "dev_count": 3,
               "regions": regions, "fmt": sw.fmt, "seconds": seconds, "messages": target // nworkers,
               "check_every": bounded(5000, 10000), "sample": 8, "check_from": half, "name": sw.dev.name,
               "path": sw.dev.path, "paths": sw.paths, "starts": sw.starts, "region": region,
               "forbidden": [[o.dev.major, o.dev.minor] for o in sws if o is not sw],
               "other_devts": [[o.major, o.minor] for o in others],
               "log": str(Path(OUT or "/tmp") / f"nlfuzz-{i}.log")}
        procs.append(subprocess.Popen([PY, str(FUZZ / "nlfuzz.py"), json.dumps(cfg)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            results.append(p.communicate(timeout=seconds + 900))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        fio_outs = []
        for f in fios:
            if f.poll() is None:
                f.send_signal(signal.SIGINT)
            fio_outs.append(f.communicate(timeout=300)[0])
    crashed = [f"sender {i} exited {p.returncode}: {err[-3000:]}"
               for i, (p, (_out, err)) in enumerate(zip(procs, results)) if p.returncode]
    assert not crashed, "\n".join(crashed)
    outs = [json.loads(out.strip().splitlines()[-1]) for out, _err in results]
    fio_errs = [fio_summary(fio_json(out))[0] for out in fio_outs]
    total = Counter()
    statuses = Counter()
    violations = []
    for o in outs:
        total.update(o["stats"])
        statuses.update(o["statuses"])
        violations += o["violations"]
    rate = sum(o["stats"].get("rate", 0) for o in outs)
    record("netlink_fuzz", {"messages": total["messages"], "accepted": total["accepted"], "refused": total["refused"],
                            "checkpoints": total["checkpoints"], "regions_checked": total["regions_checked"],
                            "workers": nworkers, "seed": FUZZ_SEED, "messages_per_s": round(rate, 1),
                            "statuses": dict(statuses),
                            "kinds": {k[5:]: v for k, v in total.items() if k.startswith("kind:")},
                            "violations": len(violations), "fio_errors": fio_errs})
    assert not violations, json.dumps(violations[:10], indent=1)
    assert fio_errs == [0] * len(fios), fio_errs
    assert total["checkpoints"] >= 2 * nworkers
    # The time cap ends a run on a slow machine early; below this it proves too little.
    assert total["messages"] >= bounded(50_000, 100_000), f"only {total['messages']} messages"


def message_cases(rng, regions, dev_count):
    """set_region_mappings arguments, valid and not: (text as bytes)."""
    hexd = "0123456789abcdef"
    r = rng.random()

    def tok():
        t = rng.random()
        if t < 0.3:
            return f"{rng.randrange(regions + 3):x}:{rng.randrange(dev_count + 1):x}"
        if t < 0.5:
            return f":{rng.randrange(dev_count + 1):x}"
        if t < 0.65:
            return f"R{rng.choice([0, 1, 2, 3, 5, 0x100, 0xffffffff]):x},{rng.choice([0, 1, 7, 40, regions, 0xffffffff]):x}"
        if t < 0.7:
            return "f" * rng.choice([8, 9, 16, 300]) + ":" + rng.choice(["0", "1", "f" * 9])
        if t < 0.75:
            return rng.choice(["0x1:1", "-1:0", "1:-1", "1:1:1", "R1", "R,1", "R1,", "r1,2", ":", "::", "1:", "g:1",
                               "R1,2,3", "1 :2", "\\:1", "1\\ :2"])
        if t < 0.8:
            return "".join(rng.choice(hexd + ":,Rr \\") for _ in range(rng.randrange(1, 12)))
        return "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(rng.randrange(1, 10)))

    if r < 0.05:
        return rng.choice([b"", b" ", b"set_region_mappings", b"SET_REGION_MAPPINGS 0:1", b"set_region_mapping 0:1",
                           b"no_such_message 1", b"set_region_mappings\t0:1\n:2", b"set_region_mappings \xa00:1",
                           b"set_region_mappings 0:1 \xff"])
    if r < 0.15:
        # A long valid run with one bad argument at the end: all or nothing.
        first = rng.randrange(regions - 205)
        toks = [f"{first:x}:{rng.randrange(dev_count):x}"] + [f":{rng.randrange(dev_count):x}" for _ in range(200)]
        toks.append(rng.choice([f"{regions:x}:0", f":{dev_count:x}", "R0,1", "zz", f"R1,{regions:x}"]))
        return ("set_region_mappings " + " ".join(toks)).encode()
    if r < 0.45:
        # Valid: absolute, relative and repeats inside the table.
        first = rng.randrange(regions - 100)
        toks = [f"{first:x}:{rng.randrange(dev_count):x}"]
        n = 1
        for _ in range(rng.randrange(0, 8)):
            if rng.random() < 0.3:
                c = rng.randrange(1, n + 1)
                k = rng.randrange(0, 20)
                toks.append(f"R{c:x},{k:x}")
                n += k
            else:
                toks.append(f":{rng.randrange(dev_count):x}")
                n += 1
        return ("set_region_mappings " + " ".join(toks)).encode()
    return ("set_region_mappings " + " ".join(tok() for _ in range(rng.randrange(1, 6)))).encode()


def test_dm_message_fuzz_against_model(env):
    """set_region_mappings with valid, overlong, overflowing, repeated,
    empty and garbage arguments, through the DM ioctl (one per message) and
    through dmsetup itself: the outcome is the model's (success exactly when
    every argument is valid; a refused message changes nothing), checked by
    data placement every so often."""
    regions = 300
    sw = Switch(env, "relmf", regions=regions, region=8)
    dev = sw.dev
    ctl = dmioctl.Control()
    mdl = model.Device(dev.major, dev.minor, 3, regions)
    rng = random.Random(11)
    n = bounded(1000, 30000)
    deadline = time.time() + bounded(30, 1800)
    counts, problems = Counter(), []
    done = 0
    for i in range(n):
        if time.time() > deadline:
            break
        text = message_cases(rng, regions, 3)
        argv = model.dm_split_args(text.split(b"\0", 1)[0])
        if argv and argv[0][:1] == b"@":
            continue
        trial = model.Device(dev.major, dev.minor, 3, regions)
        trial.table = mdl.table
        want = EINVAL if not argv else trial.message(argv)
        use_dmsetup = i % 50 == 0 and argv and all(0x20 < c < 0x7F and c != 0x5C for a in argv for c in a)
        if use_dmsetup:
            r = subprocess.run(["dmsetup", "message", dev.name, "0"] + [a.decode() for a in argv],
                               capture_output=True, text=True)
            got = 0 if r.returncode == 0 else EINVAL
            counts["via_dmsetup"] += 1
        else:
            try:
                ctl.message(dev.name, text)
                got = 0
            except OSError as e:
                got = e.errno
        done += 1
        counts["accepted" if got == 0 else f"refused_{errno.errorcode.get(got, got)}"] += 1
        if got == 0 and want == 0:
            mdl.table = trial.table
        if (got == 0) != (want == 0) or (want and not use_dmsetup and got != want):
            problems.append(f"message {text[:120]!r}: kernel {got}, model {want}")
            if got == 0 and want:
                break  # model and table diverged
        if i % 100 == 99:
            sample = sorted({rng.randrange(regions) for _ in range(8)} | {0, regions - 1})
            if not placement_ok(sw, mdl, sample, f"mf{i}"):
                problems.append(f"after message {i}: placement differs from the model")
                break
    sample = sorted({rng.randrange(regions) for _ in range(16)} | {0, regions - 1})
    if not problems:
        placed_as(sw, mdl, sample, "mfend")
    ctl.close()
    record("message_fuzz", {"messages": done, **dict(counts), "problems": len(problems)})
    assert not problems, "\n".join(problems[:10])
    assert counts["accepted"] > 10 and done - counts["accepted"] > 10


# ================================================================ 4. lifecycle

def test_lifecycle_devices_come_and_go_under_upload_hammer(env):
    """For a bounded time: create a switch device, upload, reload it with the
    same and with other geometry (and path count), suspend/resume, message,
    and remove it — while two threads hammer uploads at its major:minor the
    whole time (so uploads race with resume, suspend, reload and removal).
    Every answer is 0, ENODEV (no live target) or EINVAL (path count
    changed under the sender); nothing else, no splat, no hang.

    The DM operations are direct ioctls (tests/fuzz/dmioctl.py): a dmsetup
    process per step, with its udev wait, took tens of seconds per device
    under TCG and left the races few and far between."""
    seconds = bounded(30, 600)
    nb = env.nullb(16)
    paths3 = [nb.path] * 3
    starts3 = [0, 8192, 16384]
    cur = {"t": None}
    hammers = [Hammer(lambda: cur["t"], allowed=(0, ENODEV, EINVAL)).start() for _ in range(bounded(1, 2))]
    up = Uploader()
    ctl = dmioctl.Control()
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
            r = up.send(nl.pgtable(M, m, 64, 0, [2] * 64, 3, 2))
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
            r = up.send(nl.pgtable(M, m, 64, 0, [2] * 64, 3, 2))
            # Nothing else creates devices here, so the number is free again.
            assert r.status == ENODEV, r
            counts["devices"] += 1
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
    hs = sum(stats, Counter())
    record("lifecycle_hammer", {"seconds": seconds, "devices": counts["devices"], "reloads": counts["reloads"],
                                "suspends": counts["suspends"], "placement_checks": counts["placement_checks"],
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
    seconds = bounded(30, 600)
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
        jobs = fio_jobs(sw.path, bounded([1, 1, 2], [4, 4, 8]), 16)
        while not stop.is_set():
            try:
                fio_runs.extend(fio_summary(j) for j in fio_verify_pass(jobs, 900))
            except AssertionError as e:
                fio_fail.append(str(e))
                return

    th = threading.Thread(target=fio_loop, daemon=True)
    th.start()
    up = Uploader()
    ctl = dmioctl.Control()
    rng = random.Random(5)
    counts = Counter()
    deadline = time.time() + seconds
    try:
        geo = (12, 3)
        while time.time() < deadline and not fio_fail:
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
                for w in windows(M, m, vals, geo[1], bits):
                    r = up.send(w)
                    assert r.status == 0, r
            else:
                # Below 256: the hammer's windows make 256-region tables, and a
                # message edits the live table in its own geometry.
                ctl.message(sw.name, f"set_region_mappings 0:{rng.randrange(geo[1])} R1,{rng.randrange(1, 255):x}")
            counts[op] += 1
        while not fio_runs and not fio_fail and th.is_alive():
            time.sleep(1)  # at least one complete write+verify pass
    finally:
        stop.set()
        th.join(900)
        hs = hammer.stop()
        up.close()
        ctl.close()
    assert not fio_fail, fio_fail[0]
    assert fio_runs
    errs = sum(x[0] for x in fio_runs)
    assert errs == 0
    assert not hammer.bad, hammer.bad[:10]
    record("lifecycle_verified_io", {"seconds": seconds, "operations": dict(counts), "fio_runs": len(fio_runs),
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
                    assert u.send(nl.pgtable(live.major, live.minor, 64, 0, [2, 0] * 32, 3, 2)).status == 0
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
    assert up.send(nl.pgtable(sw.dev.major, sw.dev.minor, 64, 0, [1] * 64, 3, 2)).status == 0
    up.close()
    sw.placed(lambda r: 1, [0, 31, 63], "rn")
    record("rmmod", {"refused_attempts": refused, "hammer_answers": {str(k): v for k, v in hs.items()}})


# ================================================================ 5. privilege and isolation

NOBODY = "setpriv --reuid 65534 --regid 65534 --clear-groups --inh-caps=-all --bounding-set=-all"

UPLOAD_SCRIPT = """
import sys
sys.path.insert(0, {dir!r})
import nl
try:
    c = nl.Client()
    fid = {fid}
    if fid is None:
        fid = c.family_id()
    gcmd, attrs, _ = c.request(fid, 1, 1, nl._attr(1, nl.pgtable({M}, {m}, 64, 0, [2] * 64, 3, 2)))
    r = nl.Response(attrs[11])
    print("status", r.status, r.err_str)
except nl.NetlinkError as e:
    print("nlerr", e.errno)
"""


FLOOD_SCRIPT = """
import sys
sys.path.insert(0, {dir!r})
import nl
c = nl.Client()
fid = c.family_id()
msg = nl._attr(1, nl.pgtable({M}, {m}, 64, 0, [2] * 64, 3, 2))
st = {{}}
for _ in range({n}):
    gcmd, attrs, _ = c.request(fid, 1, 1, msg)
    s = nl.Response(attrs[11]).status
    st[s] = st.get(s, 0) + 1
print(st)
"""


def run_as(prefix, cmd):
    """Runs `cmd` under `prefix` (setpriv/unshare ..., or capsh ... which
    takes a shell command after '-- -c')."""
    if prefix.startswith("capsh"):
        return sh(f"{prefix} -- -c {shlex.quote(cmd)}", check=False)
    return sh(f"{prefix} {cmd}", check=False)


def upload_as(prefix, dev, fid=None):
    script = UPLOAD_SCRIPT.format(dir=os.path.dirname(nl.__file__), M=dev.major, m=dev.minor, fid=fid)
    r = run_as(prefix, f"{PY} -c {shlex.quote(script)}")
    return (r.stdout + r.stderr).strip()


@pytest.fixture(scope="module")
def priv_device():
    """One device for the privilege tests, with a known mapping (every region
    on path 1, userland words 1, 2)."""
    c = Cleanup()
    try:
        sw = Switch(c, "relpv", regions=64, region=64)
        up = Uploader()
        assert up.send(nl.pgtable(sw.dev.major, sw.dev.minor, 64, 0, [1] * 64, 3, 2, (1, 2))).status == 0
        up.close()
        yield sw
    finally:
        c.close()


@pytest.fixture
def mapped(priv_device):
    """After each test: nothing the refused requests carried took effect."""
    yield priv_device
    priv_device.placed(lambda r: 1, [0, 13, 63], "pv")
    assert priv_device.dev.status()["userland"] == (1, 2)


@pytest.mark.parametrize("name", ["familyid", "version"])
def test_unprivileged_user_cannot_write_sysfs(name):
    p = SYS / name
    before = p.read_text()
    r = sh(f"{NOBODY} sh -c {shlex.quote(f'echo 7 > {p}')}", check=False)
    assert r.returncode != 0 and "ermission denied" in r.stderr, r
    # Reading is allowed (the files are 0444).
    r = sh(f"{NOBODY} cat {p}", check=False)
    assert r.returncode == 0 and r.stdout == before
    assert p.read_text() == before


def test_unprivileged_user_cannot_upload_or_message(mapped):
    """uid 65534 with no capabilities: the genetlink core refuses the upload
    (NLMSG_ERROR EPERM, GENL_ADMIN_PERM), and dmsetup cannot even open the
    DM control device."""
    dev = mapped.dev
    assert upload_as(NOBODY, dev) == "nlerr 1"
    assert upload_as(NOBODY, dev, fid=int((SYS / "familyid").read_text())) == "nlerr 1"
    r = sh(f"{NOBODY} dmsetup message {dev.name} 0 set_region_mappings 0:2", check=False)
    assert r.returncode != 0


def test_sys_admin_without_net_admin_cannot_upload(mapped):
    """CAP_SYS_ADMIN alone is not enough: the family is admin-only, which the
    genetlink core checks as CAP_NET_ADMIN."""
    assert upload_as("capsh --drop=cap_net_admin", mapped.dev) == "nlerr 1"


def test_user_namespace_root_cannot_upload(mapped):
    """Root in a new user namespace has every capability there, none in the
    initial namespace, which is where the checks are made."""
    if sh("unshare -U -r true", check=False).returncode:
        pytest.skip("kernel without user namespaces")
    assert upload_as("unshare -U -r", mapped.dev) == "nlerr 1"


def test_other_network_namespace_cannot_reach_family(mapped):
    """The family exists in the initial network namespace only: from another
    one (root, every capability) it cannot be resolved, and a message sent to
    its id is refused by the genetlink core."""
    out = upload_as("unshare -n", mapped.dev)
    assert out == f"nlerr {ENOENT}", out
    out = upload_as("unshare -n", mapped.dev, fid=int((SYS / "familyid").read_text()))
    assert out.startswith("nlerr "), out


def test_refusals_do_not_flood_kernel_log(mapped, kernel_log_guard):
    """A sender with CAP_NET_ADMIN but without CAP_SYS_ADMIN gets EPERM for
    every upload; it must not be able to fill the kernel log with one line per
    refused request (the log is a shared resource, and a flood hides real
    reports); the kernel has printk_ratelimited and DM its *_LIMIT macros for this."""
    n = 300
    script = FLOOD_SCRIPT.format(dir=os.path.dirname(nl.__file__), M=mapped.dev.major, m=mapped.dev.minor, n=n)
    kernel_log_guard.count("refusals", r"upload refused")
    r = run_as("capsh --drop=cap_sys_admin", f"{PY} -c {shlex.quote(script)}")
    assert r.returncode == 0 and r.stdout.strip() == f"{{{EPERM}: {n}}}", (r.stdout, r.stderr)
    assert r.returncode == 0, r.stderr
    time.sleep(1)
    lines = kernel_log_guard.counts["refusals"]
    record("log_flood", {"refused_uploads": n, "kernel_log_lines": lines})
    assert lines <= 50, f"{n} refused uploads wrote {lines} lines to the kernel log"
