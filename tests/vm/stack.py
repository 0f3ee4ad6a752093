"""The RFC's two-tier stack for test_stack.py (issue 15).

    stk-sw              switch: routes each region to the member that owns it
    +-- stk-m0          dm-multipath, bio-based, queue_if_no_path
    |     group 1       stk-m0a stk-m0b           (direct paths, round-robin)
    |     group 2       stk-m1a ... stk-m2b       (the other members' paths)
    +-- stk-m1, stk-m2  likewise
    stk-mKx             dm-linear over the whole store (a "path"), made with DM ioctls
    store               one memory-backed null_blk: every path sees the same data

A path fails for real: its table is swapped for dm-flakey with no up time
(every bio fails, empty flushes and discards included: the `error` target
has no flush bios, so a flush through it would succeed), and multipath
sees the I/O errors itself and fails the path. Restoring loads the linear
table again and sends `reinstate_path` (as multipathd does once its path
checker sees the path back); failback to group 1 is `switch_group 1` (what
multipathd's failback does: the kernel keeps using group 2 until told).

Table swaps and messages are direct DM ioctls (tests/dmtest/dmioctl.py)
with udev flags that spare the path a blkid probe (a probe of a failed path
would be failed I/O in its counters). The devices themselves are created
with dmsetup, as the RFC's agent did.
"""
import errno
import os
import signal
import subprocess
import time

from campaign import FIO_VERIFY, Uploader, fio_json, fio_summary, pte_bits_for
from conftest import AGENT, IN_FLIGHT, READS, SECTOR, WRITES, Dm, NullBlk, blkstat, read_at, sh
from dmtest import dmioctl, wire

# fio's mixed block sizes: with 512 KiB regions and 4 KiB alignment, the
# 16 KiB and 64 KiB blocks straddle region (hence member) boundaries.
BSSPLIT = "--bssplit=4k/50:16k/30:64k/20"


def wait_for(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns something true; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def devno(d):
    return f"{d.major}:{d.minor}"


def ios(counters):
    """Reads plus writes completed."""
    return counters[READS] + counters[WRITES]


def fio_stack_jobs(path, ranges, io_kib=None):
    """fio arguments (after campaign.FIO_VERIFY) for one job per byte range
    (offset, size): io_uring, queue depth 4, mixed block sizes; each job
    writes `io_kib` KiB at random places in its range (the whole range if
    None; a time-based run goes on writing)."""
    args = ["--ioengine=io_uring", "--iodepth=4", BSSPLIT, "--verify_state_save=0", f"--filename={path}"]
    for i, (off, size) in enumerate(ranges):
        args += [f"--name=member{i}", f"--offset={off}", f"--size={size}"]
        if io_kib:
            args.append(f"--io_size={io_kib}k")
    return args


class VerifiedLoad:
    """Verified I/O for as long as a scenario lasts: one time-based fio
    process per job list, writing with crc32c and reading back every block
    soon after it is written (verify_backlog), until stop() interrupts it.
    One process per member's range, so a member that stalls stalls only its
    own fio (and no fio start-up, slow under TCG, interrupts the I/O)."""

    def __init__(self, job_lists, limit=900):
        cmd = ["fio"] + FIO_VERIFY + ["--verify_backlog=16", "--randrepeat=0", "--time_based", f"--runtime={limit}"]
        self.procs = [subprocess.Popen(cmd + jobs, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                      for jobs in job_lists]
        self.outputs = None

    def halt(self, timeout=300):
        """Interrupts every fio (SIGINT: it ends its I/O and reports);
        returns [(returncode, stdout, stderr)]."""
        if self.outputs is None:
            for p in self.procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            self.outputs = []
            for p in self.procs:
                try:
                    out, err = p.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, err = p.communicate()
                    err += f"\nfio did not end within {timeout} s of SIGINT"
                self.outputs.append((p.returncode, out, err))
        return self.outputs

    def stop(self):
        """halt(), then the totals. Fails on any I/O error or verify
        mismatch (fio reports either as the job's error and on stderr)."""
        reports = []
        for rc, out, err in self.halt():
            assert "{" in out, f"fio (exit {rc}) gave no report: {err[-3000:]}"
            j = fio_json(out)
            assert all(job["error"] == 0 for job in j["jobs"]) and "verify:" not in err and "err=" not in err, \
                f"fio (exit {rc}): {err[-3000:]}"
            assert rc in (0, 128), f"fio exit {rc}: {err[-3000:]}"  # 128: ended by our SIGINT
            reports.append(fio_summary(j))
        errors, written, read = (sum(x) for x in zip(*reports))
        assert read > 0, "nothing was verified"
        return {"fio_processes": len(reports), "io_errors": errors, "bytes_written": written,
                "bytes_verified": read}


class IoctlDm:
    """A DM device made with direct ioctls: no dmsetup process and no udev
    wait (the paths: six of them per stack, ~10 s each with dmsetup under a
    loaded TCG guest)."""

    def __init__(self, ctl, name, table):
        start, length, kind, params = table.split(" ", 3)
        self.ctl, self.name = ctl, name
        ctl.create(name)
        try:
            ctl.load(name, int(start), int(length), kind, params)
            ctl.resume(name)
        except OSError:
            ctl.remove(name)
            raise
        self.major, self.minor = ctl.devt(name)
        self.path = f"/dev/dm-{self.minor}"


class Stack:
    """The stack above: `members` multipath members of `per_member` direct
    paths each over one store, and the switch over the members."""

    def __init__(self, prefix="stk", members=3, per_member=2, store_mb=32, region=512, cache_mb=8):
        self.ctl = dmioctl.Control(cookie=dmioctl.QUIET_UDEV)
        # A write-back cache, so the whole stack advertises one and flushes
        # reach the store (null_blk counts them); discard for the discard test.
        self.store = NullBlk(store_mb, blocksize=4096, cache_mb=cache_mb, discard=True)
        self.sectors, self.region = self.store.sectors, region
        self.regions = self.sectors // region
        self.devices, self.dead, self.loads = [], set(), []
        self.removed = False
        self.mapping = [0] * self.regions
        try:
            self.paths = [[self._add(IoctlDm(self.ctl, f"{prefix}-m{m}{chr(97 + j)}", self.path_table("linear")))
                           for j in range(per_member)] for m in range(members)]
            # The members and the switch with dmsetup, as the RFC's agent did.
            self.members = [self._add(Dm(f"{prefix}-m{m}", self.member_table(m))) for m in range(members)]
            self.switch = self._add(Dm(f"{prefix}-sw", f"0 {self.sectors} switch {members} {region} " +
                                       " ".join(f"{d.path} 0" for d in self.members)))
            # udev watches a DM device it probed, and probes it again (blkid
            # reads at both ends, through the members) each time a process
            # that opened it for writing closes it: every fio run would add
            # reads to the counters the tests compare, and with no path
            # left they fail ("Buffer I/O error"). A resume whose udev
            # cookie disables the disk rules ends the watch.
            self.ctl.suspend(self.switch.name)
            self.ctl.resume(self.switch.name)
        except BaseException:
            self.remove()
            raise

    def _add(self, d):
        self.devices.append(d)
        return d

    # ------------------------------------------------------------ tables

    def path_table(self, kind):
        """A path's table: `linear` (healthy) or `flakey` with no up time
        (dead: every bio fails, flushes and discards too)."""
        args = f"{self.store.path} 0" + (" 0 1" if kind == "flakey" else "")
        return f"0 {self.sectors} {kind} {args}"

    def member_table(self, m):
        """Bio-based multipath (dm-linear paths are bio-based too): group 1
        the member's own paths, group 2 every other member's, round-robin
        with a repeat count of 1, queue_if_no_path."""
        own = self.paths[m]
        others = [p for k, ps in enumerate(self.paths) if k != m for p in ps]

        def group(ps):
            return f"round-robin 0 {len(ps)} 1 " + " ".join(f"{devno(p)} 1" for p in ps)
        return f"0 {self.sectors} multipath 3 queue_if_no_path queue_mode bio 0 2 1 {group(own)} {group(others)}"

    @property
    def all_paths(self):
        return [p for ps in self.paths for p in ps]

    # ------------------------------------------------------------ state

    def mpath(self, m):
        """Member m's multipath status: {"pg": group in use (1-based),
        "groups": [{"state": A/E/D, "paths": {"MAJ:MIN": "A" or "F"}}]}."""
        ((_, _, kind, params),) = self.ctl.status(self.members[m].name)
        assert kind == "multipath", kind
        t = params.split()
        i = 1 + int(t[0])
        i += 1 + int(t[i])
        npg, cur = int(t[i]), int(t[i + 1])
        i += 2
        groups = []
        for _ in range(npg):
            state = t[i]
            i += 2 + int(t[i + 1])
            npaths, info = int(t[i]), int(t[i + 1])
            i += 2
            paths = {}
            for _ in range(npaths):
                paths[t[i]] = t[i + 1]
                i += 3 + info
            groups.append({"state": state, "paths": paths})
        return {"pg": cur, "groups": groups}

    def path_states(self, m):
        """{"MAJ:MIN": "A"/"F"} over both groups of member m."""
        return {k: v for g in self.mpath(m)["groups"] for k, v in g["paths"].items()}

    def stat(self, d):
        return blkstat(f"dm-{d.minor}")

    def snapshot(self):
        snap = {d.name: self.stat(d) for d in self.devices}
        snap["store"] = self.store.stat()
        return snap

    def member_ios(self):
        return [ios(self.stat(d)) for d in self.members]

    # ------------------------------------------------------------ faults

    def fail_path(self, p):
        self.ctl.load(p.name, 0, self.sectors, "flakey", self.path_table("flakey").split(" ", 3)[3])
        self.ctl.resume(p.name)
        self.dead.add(p)

    def restore_path(self, p):
        """Healthy table back, then reinstated in every member (a no-op where
        it was never failed)."""
        self.ctl.load(p.name, 0, self.sectors, "linear", self.path_table("linear").split(" ", 3)[3])
        self.ctl.resume(p.name)
        self.dead.discard(p)
        for mem in self.members:
            self.ctl.message(mem.name, f"reinstate_path {devno(p)}")

    def set_queueing(self, queue):
        for mem in self.members:
            self.ctl.message(mem.name, "queue_if_no_path" if queue else "fail_if_no_path")

    def switch_group(self, m, group):
        self.ctl.message(self.members[m].name, f"switch_group {group}")

    def load(self, ranges):
        """Verified I/O (VerifiedLoad) on each byte range (offset, size) of
        the switch: one fio process per range."""
        ld = VerifiedLoad([fio_stack_jobs(self.switch.path, [r]) for r in ranges])
        self.loads.append(ld)
        return ld

    def heal(self):
        """Every path healthy and active, every member on group 1 with
        queue_if_no_path; stops a load a failed test left running."""
        for p in list(self.dead):
            self.restore_path(p)
        for ld in self.loads:
            ld.halt()
        self.loads = []
        for m, mem in enumerate(self.members):
            for dev, state in self.path_states(m).items():
                if state != "A":
                    self.ctl.message(mem.name, f"reinstate_path {dev}")
            if self.mpath(m)["pg"] != 1:
                self.switch_group(m, 1)
        self.set_queueing(True)

    # ------------------------------------------------------------ mapping and I/O

    def upload(self, values, userland=(0, 0)):
        """Uploads a whole mapping over netlink (tests/dmtest)."""
        up = Uploader()
        try:
            for w in wire.windows(self.switch.major, self.switch.minor, values, len(self.members),
                                  pte_bits_for(len(self.members)), userland=userland):
                r = up.send(w)
                assert r.status == 0, r
        finally:
            up.close()
        self.mapping = list(values)

    def upload_with_agent(self, values, tmpdir):
        """Uploads a whole mapping with the dm-switch agent, from a mapping file."""
        f = tmpdir / "stack.map"
        f.write_text("".join(f"{r} {v}\n" for r, v in enumerate(values)))
        sh(f"{AGENT} upload {self.switch.name} --file {f}")
        self.mapping = list(values)

    def bands(self, rng):
        """A mapping giving each member one contiguous band of regions, in a
        random order, and the byte range (offset, size) of each member's band
        in member order: one fio job per member, so a member that stalls
        stalls only its own job."""
        n = len(self.members)
        order = rng.sample(range(n), n)
        bounds = [k * self.regions // n for k in range(n + 1)]
        values = [order[k] for k in range(n) for _ in range(bounds[k], bounds[k + 1])]
        ranges = {order[k]: (bounds[k] * self.region * SECTOR, (bounds[k + 1] - bounds[k]) * self.region * SECTOR)
                  for k in range(n)}
        return values, [ranges[m] for m in range(n)]

    def regions_of(self, m):
        return [r for r, v in enumerate(self.mapping) if v == m]

    def probe(self, regions):
        """One 4 KiB O_DIRECT read at the start of each region, through the switch."""
        for r in regions:
            read_at(self.switch.path, r * self.region * SECTOR, 4096)

    def fsync(self):
        """fsync() on the switch (an empty flush, sent to every member):
        0 or the errno. Opened read-only: closing a device opened for
        writing makes udev probe it."""
        fd = os.open(self.switch.path, os.O_RDONLY)
        try:
            os.fsync(fd)
            return 0
        except OSError as e:
            return e.errno
        finally:
            os.close(fd)

    def wait_idle(self, devices, timeout=30):
        wait_for(lambda: all(self.stat(d)[IN_FLIGHT] == 0 for d in devices), timeout, "no I/O in flight")

    # ------------------------------------------------------------ teardown

    def remove_device(self, d, tries=100):
        """Removes one device of the stack (a DM ioctl, retried while udev
        holds it open for a moment); gone already is fine."""
        try:
            self.ctl.remove(d.name, tries)
        except dmioctl.DmError as e:
            if e.errno != errno.ENXIO:
                raise

    def remove(self):
        """fail_if_no_path first (nothing may stay queued), paths healthy,
        then every device top-down, then the store."""
        if self.removed:
            return
        for mem in getattr(self, "members", []):
            try:
                self.ctl.message(mem.name, "fail_if_no_path")
            except OSError:
                pass  # already removed
        for p in list(self.dead):
            try:
                self.restore_path(p)
            except OSError:
                pass
        for ld in self.loads:
            ld.halt()
        for d in reversed(self.devices):
            self.remove_device(d)
        self.store.remove()
        self.ctl.close()
        self.removed = True
