"""Shared helpers of the reliability campaign (test_churn, test_faults,
test_hostile_input, test_lifecycle, test_privilege): soak/bounded sizes, the
JSON record of the numbers (the per-test kernel-log guard, kernel_log_guard,
is in conftest), netlink
uploaders and hammers, fio verify runs and placement checks.

Bounded by default (make check); DM_SWITCH_SOAK=1 runs the long variants.
Numbers go to $DM_SWITCH_OUT/reliability.json (docs/reliability.md).
"""
import errno
import json
import os
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from dmtest import model, nl, wire

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


def udev_catch_up(timeout=600):
    """Waits until udev has handled every queued event; returns the seconds
    waited. A test that creates, resumes or removes DM devices with direct
    ioctls emits a uevent each time without waiting for udev as dmsetup
    does, and under TCG the guest's udev is slow with DM events (each runs
    up to three dmsetup processes from 55-dm and 95-dm-notify.rules, about
    2.6 s of udev time per event since the guest's root is cached; 3 rounds
    of the lifecycle hammer took 279 s before, 50 s after). A loop of such
    ioctls left a backlog that stalled the next test's dmsetup for 8 to 40
    minutes; called between rounds, this paces the loop at udev's speed and
    keeps the wait in the test that caused it."""
    t0 = time.time()
    subprocess.run(["udevadm", "settle", f"--timeout={timeout}"], check=False)
    return time.time() - t0


# ---------------------------------------------------------------- helpers

class Uploader:
    """A netlink client with the family id looked up once."""

    def __init__(self, timeout=60):
        self.c = nl.Client()
        self.c.sock.settimeout(timeout)
        self.fid = self.c.family_id()

    def send(self, msg):
        """Returns the Response; raises nl.NetlinkError for NLMSG_ERROR."""
        gcmd, attrs, _ = self.c.request(self.fid, wire.CMD_GET_PAGE_TBL, 1, nl._attr(wire.ATTR_MSG, msg))
        assert gcmd == wire.CMD_GET_PAGE_TBL and set(attrs) == {wire.ATTR_RESPONSE}, (gcmd, sorted(attrs))
        return wire.Response(attrs[wire.ATTR_RESPONSE])

    def post(self, msg):
        """Sends without waiting: the kernel handles the request inside this
        send() (genetlink runs the handler in the sender's context)."""
        self.c.seq += 1
        body = struct.pack("=BBH", wire.CMD_GET_PAGE_TBL, 1, 0) + nl._attr(wire.ATTR_MSG, msg)
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
            return wire.Response(attrs[wire.ATTR_RESPONSE])

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
            self._cache[key] = wire.pgtable(ma, mi, self.regions, 0, [i % dc] * self.regions, dc, pte_bits_for(dc),
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


FIO_VERIFY = ["--direct=1", "--ioengine=libaio", "--iodepth=8", "--rw=randwrite", "--verify=crc32c",
              "--verify_fatal=1", "--do_verify=1", "--randrepeat=1", "--output-format=json"]


def fio_jobs(path, sizes_kib, gap_mb):
    """Three jobs on disjoint ranges `gap_mb` MiB apart, writing `sizes_kib`
    KiB each, with block sizes 4k, 16k and 64k: with a 6 KiB region every
    one of them straddles region boundaries."""
    args = [f"--filename={path}"]
    for i, (bs, kib) in enumerate(zip(("4k", "16k", "64k"), sizes_kib)):
        args += [f"--name=j{bs}", f"--bs={bs}", f"--offset={i * gap_mb}M", f"--size={kib}k"]
    return args


def fio_verify_run(jobs, extra, timeout):
    """One fio run of FIO_VERIFY + `extra` + `jobs`; returns its JSON report.
    Raises AssertionError with fio's output if fio fails (I/O or verify error)."""
    r = subprocess.run(["fio"] + FIO_VERIFY + extra + jobs, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"fio failed ({r.returncode}): {r.stdout[-3000:]}{r.stderr[-3000:]}"
    return fio_json(r.stdout)


def fio_verify_pass(jobs, timeout):
    """fio writes (verifying each block soon after it is written), then a
    second run verifies everything again; returns the two JSON reports.
    Raises AssertionError with fio's output if fio fails (I/O or verify error)."""
    return [fio_verify_run(jobs, extra, timeout) for extra in (["--verify_backlog=16"], ["--verify_only"])]


def placed_as(sw, dev_model, regions, tag):
    """Placement of fresh markers in `regions` matches the model."""
    sw.placed(dev_model.lookup, regions, tag)


def placement_ok(sw, dev_model, regions, tag):
    try:
        placed_as(sw, dev_model, regions, tag)
        return True
    except AssertionError:
        return False
