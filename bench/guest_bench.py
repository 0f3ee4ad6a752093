#!/usr/bin/env python3
"""dm-switch benchmark, run inside the VM (as root) by scripts/bench.sh.

One boot measures, for one QEMU mode (plain TCG or icount):
  * I/O path: fio 4 KiB random read/write at QD1 and QD32, one job per vCPU, on
    raw null_blk, dm-linear, upstream C `switch` and ours, in three scenarios;
  * upload: regions/s of our agent over netlink vs `dmsetup message
    set_region_mappings` on upstream C and on ours;
  * memory: page-table bytes per region read from the kernel's accounting.

The two switch modules share the module name dm_switch, so the run is split in
phases with one of them loaded; phases alternate (upstream, ours, upstream,
...). Within a phase every configuration is run in turn, round after round.

Raw results go to OUT/raw-MODE.json (rewritten after every section, so a run
that dies half-way still leaves what it measured). Python stdlib only.
"""
import argparse
import json
import mmap
import os
import platform
import statistics
import subprocess
import sys
import time

NULLB_CFG = "/sys/kernel/config/nullb"
NPATHS = 17                 # null_blk devices created (paths are picked from them)
NULLB_MB = 262144           # 256 GiB each, no memory backing: the memory test needs 2^29 sectors
IO_LEN = 1 << 23            # sectors (4 GiB) of every I/O-test device
SCENARIOS = {
    # name: (paths, region sectors, mapping)
    "S1": (3, 128, "round-robin"),       # 3 paths, 64 KiB regions
    "S2": (16, 120, "round-robin"),      # 16 paths, non-power-of-two regions (60 KiB)
    "S3": (16, 8, "random r20p16"),      # 2^20 regions of 4 KiB, random mapping
    "S4": (5, 8, "random r20p5"),        # as S3 over 5 paths: 3-bit entries, 21 per word
    "S5": (17, 8, "random r20p17"),      # as S3 over 17 paths: 5-bit entries, 12 per word
}
WORKLOADS = [("randread", 1), ("randread", 32), ("randwrite", 1), ("randwrite", 32)]
# Every stored width (1..16 bits), both ends of some widths, and the most paths.
MEM_DEVS = [2, 3, 5, 8, 9, 16, 17, 33, 65, 129, 255, 256, 300, 1000, 4096, 65535]

T0 = time.monotonic()


def log(msg):
    print(f"[bench {time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def run(*cmd, check=True, quiet=False, timeout=None):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))[:300]}: exit {p.returncode}: "
                           f"{p.stderr.strip()[:2000]}")
    return p.stdout


def write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def read(path):
    with open(path) as f:
        return f.read()


def summary(values):
    v = sorted(values)
    return {
        "median": statistics.median(v), "min": v[0], "max": v[-1],
        "stdev": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v),
    }


# ---------------------------------------------------------------- null_blk

def nullb_setup(ncpu):
    run("modprobe", "null_blk", "nr_devices=0")
    if not os.path.isdir(NULLB_CFG):
        run("mount", "-t", "configfs", "none", "/sys/kernel/config", check=False)
    names = []
    for i in range(NPATHS):
        name = f"bnull{i}"
        d = f"{NULLB_CFG}/{name}"
        os.mkdir(d)
        for k, v in [("size", NULLB_MB), ("memory_backed", 0), ("completion_nsec", 0),
                     ("irqmode", 0), ("blocksize", 512), ("submit_queues", ncpu),
                     ("hw_queue_depth", 128), ("power", 1)]:
            write(f"{d}/{k}", v)
        names.append(name)
    for _ in range(100):
        if all(os.path.exists(f"/dev/{n}") for n in names):
            break
        time.sleep(0.1)
    for n in names:
        # mq-deadline would be the default for a single hardware queue.
        sched = f"/sys/block/{n}/queue/scheduler"
        if os.path.exists(sched):
            write(sched, "none")
    return [f"/dev/{n}" for n in names]


def nullb_teardown():
    for i in range(NPATHS):
        d = f"{NULLB_CFG}/bnull{i}"
        if os.path.isdir(d):
            write(f"{d}/power", 0)
            os.rmdir(d)


def reads_completed(devs):
    out = []
    for d in devs:
        out.append(int(read(f"/sys/block/{os.path.basename(d)}/stat").split()[0]))
    return out


# ---------------------------------------------------------------- modules

class Modules:
    def __init__(self, ours, upstream):
        self.ko = {"ours": ours, "upstream": upstream}
        self.loaded = None

    def which(self):
        if not os.path.isdir("/sys/module/dm_switch"):
            return None
        return "ours" if os.path.exists("/sys/module/dm_switch/familyid") else "upstream"

    def load(self, name):
        self.unload()
        run("insmod", self.ko[name])
        got = self.which()
        if got != name:
            raise RuntimeError(f"loaded {self.ko[name]} but /sys/module says {got}")
        self.loaded = name

    def unload(self):
        for dev in dm_devices():
            if dm_target(dev) == "switch":
                dm_remove(dev)
        if os.path.isdir("/sys/module/dm_switch"):
            run("rmmod", "dm_switch")
        self.loaded = None

    def assert_loaded(self, name):
        got = self.which()
        if got != name:
            raise RuntimeError(f"expected the {name} dm_switch module, found {got}")


def dm_devices():
    out = run("dmsetup", "ls", check=False)
    return [l.split()[0] for l in out.splitlines() if l.strip() and "No devices" not in l]


def dm_target(name):
    t = run("dmsetup", "table", name, check=False).split()
    return t[2] if len(t) > 2 else None


def dm_create(name, table):
    # On standard input: a table line over thousands of paths is longer than
    # one command-line argument may be (128 KiB).
    p = subprocess.run(["dmsetup", "create", name], input=table + "\n", capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"dmsetup create {name}: exit {p.returncode}: {p.stderr.strip()[:2000]}")
    return f"/dev/mapper/{name}"


def dm_remove(name):
    for i in range(20):
        p = subprocess.run(["dmsetup", "remove", name], capture_output=True, text=True)
        if p.returncode == 0:
            return
        time.sleep(0.2 * (i + 1))
    raise RuntimeError(f"dmsetup remove {name}: {p.stderr.strip()}")


def random_map(mapping):
    """The mapping file name of a `random NAME` scenario mapping (None for round-robin)."""
    return mapping.split()[1] if mapping.startswith("random") else None


def switch_table(paths, region, length, fmt="upstream"):
    pairs = " ".join(f"{p} 0" for p in paths)
    if fmt == "upstream":
        return f"0 {length} switch {len(paths)} {region} 0 {pairs}"
    return f"0 {length} switch {len(paths)} {region} {pairs}"


# ---------------------------------------------------------------- bench

class Bench:
    def __init__(self, a):
        self.a = a
        unknown = set(a.scenarios) - set(SCENARIOS)
        if unknown:
            raise SystemExit(f"unknown scenario(s) {','.join(sorted(unknown))}; known: {','.join(SCENARIOS)}")
        self.scenarios = a.scenarios
        self.ncpu = os.cpu_count()
        self.mods = Modules(a.ours_ko, a.upstream_ko)
        self.out_file = os.path.join(a.out, f"raw-{a.mode}.json")
        self.res = {
            "mode": a.mode,
            "meta": {
                "kernel": platform.release(), "vcpus": self.ncpu,
                "cpu_model": next((l.split(":", 1)[1].strip() for l in read("/proc/cpuinfo").splitlines()
                                   if l.startswith("model name")), "?"),
                "mem_total_kb": int(read("/proc/meminfo").split()[1]),
                "params": vars(a), "fio": run("fio", "--version").strip(),
                "scenarios": {k: {"paths": v[0], "region_sectors": v[1], "mapping": v[2],
                                  "len_sectors": IO_LEN} for k, v in SCENARIOS.items()
                              if k in self.scenarios},
            },
            "io": [], "upload": [], "memory": [], "checks": [], "timing": {}, "profiles": {},
        }
        self.maps = {}

    def save(self):
        self.res["timing"]["guest_seconds"] = time.monotonic() - T0
        tmp = self.out_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.res, f, indent=1)
        os.replace(tmp, self.out_file)

    def stage_maps(self):
        """Copies the host-made mapping files to tmpfs, so file reads over 9p
        stay out of every timing."""
        os.makedirs("/tmp/bench-maps", exist_ok=True)
        names = ["r18p16.map", "r18p16.msg"]
        for sc in self.scenarios:
            m = random_map(SCENARIOS[sc][2])
            if m:
                names += [f"{m}.map", f"{m}.msg", f"{m}.probe"]
        if 24 in self.a.upload_sizes:
            names.append("r24p16.map")
        for name in names:
            dst = f"/tmp/bench-maps/{name}"
            if not os.path.exists(dst):
                run("cp", os.path.join(self.a.maps, name), dst)
            self.maps[name] = dst

    # ---- fio: one process per round (fio's start-up costs seconds under TCG),
    # one stonewalled section per configuration, run one after the other.
    def fio_round(self, configs):
        """configs: list of (key, device, rw, qd). Returns {key: result}."""
        a = self.a
        lines = ["[global]", "ioengine=io_uring", "direct=1", "bs=4k", "size=4g", "time_based",
                 f"runtime={int(a.runtime * 1000)}ms", f"ramp_time={int(a.ramp * 1000)}ms",
                 "norandommap", "randrepeat=0", f"numjobs={self.ncpu}",
                 f"cpus_allowed=0-{self.ncpu - 1}", "cpus_allowed_policy=split", ""]
        for i, (key, dev, rw, qd) in enumerate(configs):
            lines += [f"[c{i}]", "stonewall", f"filename={dev}", f"rw={rw}", f"iodepth={qd}", ""]
        with open("/tmp/bench.fio", "w") as f:
            f.write("\n".join(lines))
        outf = "/tmp/fio.json"
        run("fio", "--output-format=json", f"--output={outf}", "/tmp/bench.fio", timeout=3600)
        j = json.loads(read(outf))
        acc = {}
        for job in j["jobs"]:
            i = int(job["jobname"][1:])
            key, dev, rw, qd = configs[i]
            st = job["read" if rw.endswith("read") else "write"]
            a_ = acc.setdefault(i, {"iops": 0.0, "ios": 0, "cpu_s": 0.0, "pct": [], "lat": []})
            a_["iops"] += st["iops"]
            a_["ios"] += st["total_ios"]
            a_["cpu_s"] += (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * job["job_runtime"] / 1000.0
            a_["pct"].append(job["usr_cpu"] + job["sys_cpu"])
            a_["lat"].append(st.get("clat_ns", {}).get("mean", 0.0))
        out = {}
        for i, a_ in acc.items():
            out[configs[i][0]] = {
                "iops": a_["iops"], "ios": a_["ios"],
                "cpu_us_per_io": a_["cpu_s"] * 1e6 / a_["ios"] if a_["ios"] else None,
                "usr_sys_pct": statistics.mean(a_["pct"]), "clat_mean_ns": statistics.mean(a_["lat"])}
        return out

    # ---- devices of one phase
    def create_io_devices(self, module, paths):
        self.mods.assert_loaded(module)
        devs = {}
        for sc in self.scenarios:
            n, region, mapping = SCENARIOS[sc]
            name = f"b{sc.lower()}"
            devs[sc] = dm_create(name, switch_table(paths[:n], region, IO_LEN))
            m = random_map(mapping)
            if m:
                t = time.monotonic()
                if module == "ours":
                    run(self.a.agent, "upload", name, "--file", self.maps[f"{m}.map"], "--quiet")
                    how = "agent"
                else:
                    self.messages(name, self.maps[f"{m}.msg"])
                    how = "set_region_mappings (16384 tokens/message)"
                self.res["checks"].append({"check": f"{module} {sc}: random mapping loaded via {how}",
                                           "seconds": time.monotonic() - t, "ok": True})
            self.probe(module, sc, devs[sc], paths[:n], region, mapping)
        return devs

    def probe(self, module, sc, dev, paths, region, mapping):
        """Reads one block in a few regions and checks which path served it."""
        if mapping == "round-robin":
            regions = [0, 1, 2, 5, 17, 100, 1001, (IO_LEN // region) - 1]
            expect = {r: r % len(paths) for r in regions}
        else:
            expect = {}
            for line in read(self.maps[f"{random_map(mapping)}.probe"]).split("\n"):
                if line.strip():
                    r, p = line.split()
                    expect[int(r)] = int(p)
        bad = []
        buf = mmap.mmap(-1, 4096)                  # page-aligned, as O_DIRECT needs
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        try:
            for r, want in expect.items():
                before = reads_completed(paths)
                os.preadv(fd, [buf], r * region * 512)
                after = reads_completed(paths)
                hit = [i for i, (x, y) in enumerate(zip(before, after)) if y > x]
                if hit != [want]:
                    bad.append({"region": r, "want": want, "got": hit})
        finally:
            os.close(fd)
            buf.close()
        ok = not bad
        self.res["checks"].append({"check": f"{module} {sc}: placement of {len(expect)} probed regions",
                                   "ok": ok, "bad": bad[:8]})
        if not ok:
            log(f"PLACEMENT MISMATCH {module} {sc}: {bad[:4]}")

    def messages(self, name, msgfile):
        with open(msgfile) as f:
            for line in f:
                toks = line.split()
                if toks:
                    run("dmsetup", "message", name, "0", "set_region_mappings", *toks)

    # ---- I/O rounds
    def io_rounds(self, module, phase, devs, raw, linear, rounds):
        targets = [("raw", None, raw), ("linear", None, linear)] + \
                  [(module, sc, devs[sc]) for sc in self.scenarios]
        for rnd in range(rounds):
            self.mods.assert_loaded(module)
            configs = [((tgt, sc, rw, qd), dev, rw, qd)
                       for rw, qd in WORKLOADS for tgt, sc, dev in targets]
            t = time.monotonic()
            res = self.fio_round(configs)
            self.mods.assert_loaded(module)
            for (tgt, sc, rw, qd), r in res.items():
                r.update({"target": tgt, "scenario": sc, "rw": rw, "qd": qd,
                          "phase": phase, "round": rnd, "module_loaded": module})
                self.res["io"].append(r)
            log(f"io: phase {phase} ({module}) round {rnd + 1}/{rounds}: {len(res)} configs "
                f"in {time.monotonic() - t:.0f} s")
            self.save()

    # ---- profile (perf with the cpu-clock event: under icount, samples ~ instructions)
    def profile(self, module, devs, linear):
        if not self.a.profile or not os.path.exists("/usr/bin/perf"):
            return
        write("/proc/sys/kernel/kptr_restrict", 0)
        write("/proc/sys/kernel/perf_event_paranoid", -1)
        todo = [(module, sc, devs[sc]) for sc in ("S1", "S3") if sc in self.scenarios]
        if module == "upstream":
            todo.insert(0, ("linear", None, linear))
        for tgt, sc, dev in todo:
            key = f"{tgt}{'/' + sc if sc else ''} randread qd1"
            try:
                run("perf", "record", "-q", "-a", "-B", "--no-buildid-cache", "-e", "cpu-clock", "-F", "20000",
                    "-o", "/tmp/perf.data", "--", "fio", "--name=p", f"--filename={dev}",
                    "--ioengine=io_uring", "--direct=1", "--rw=randread", "--bs=4k", "--iodepth=1",
                    "--numjobs=1", "--size=4g", "--time_based", "--runtime=1", "--norandommap",
                    "--randrepeat=0", "--output=/dev/null", timeout=300)
                lines = []
                for sort in ("dso", "dso,sym"):
                    rep = run("perf", "report", "-i", "/tmp/perf.data", "--stdio", "--sort", sort,
                              "--percent-limit", "0.2", timeout=300)
                    lines += [f"[{sort}] " + l.strip() for l in rep.splitlines()
                              if l.strip() and not l.startswith("#")][:60]
                self.res["profiles"][key] = lines
            except Exception as e:    # a profile is a hint, never a failure
                self.res["profiles"][key] = [f"perf failed: {e!r}"[:500]]
        self.save()

    # ---- upload
    def upload_tests(self, module, paths):
        a = self.a
        p16 = paths[:16]
        if module == "ours":
            for log2n in a.upload_sizes:
                mapname = f"r{log2n}p16.map"
                name = f"bup{log2n}"
                dm_create(name, switch_table(p16, 8, (1 << log2n) * 8))
                reps = a.upload_reps if log2n < 24 else max(3, a.upload_reps - 2)
                for rep in range(reps):
                    t = time.monotonic()
                    out = run(a.agent, "upload", name, "--file", self.maps[mapname])
                    wall = time.monotonic() - t
                    # "uploaded N regions to ... in K windows, S s, R regions/s"
                    secs = float(out.split(", ")[-2].split()[0])
                    self.res["upload"].append({
                        "method": "agent-netlink", "module": module, "log2_regions": log2n,
                        "regions": 1 << log2n, "rep": rep, "wall_s": wall, "agent_netlink_s": secs,
                        "regions_per_s_wall": (1 << log2n) / wall,
                        "regions_per_s_netlink": (1 << log2n) / secs, "agent_output": out.strip()})
                dm_remove(name)
                log(f"upload: agent 2^{log2n}: {self.res['upload'][-1]['regions_per_s_wall']:.0f} regions/s (wall)")
                self.save()
        # the message path, explicit IDX:PATH tokens, 4096 per message
        name = "bupmsg"
        dm_create(name, switch_table(p16, 8, (1 << 18) * 8))
        lines = [l.split() for l in read(self.maps["r18p16.msg"]).splitlines() if l.strip()]
        for rep in range(max(3, a.upload_reps - 2)):
            t = time.monotonic()
            for toks in lines:
                run("dmsetup", "message", name, "0", "set_region_mappings", *toks)
            wall = time.monotonic() - t
            self.res["upload"].append({
                "method": "dmsetup-message", "module": module, "log2_regions": 18,
                "regions": 1 << 18, "rep": rep, "wall_s": wall, "messages": len(lines),
                "tokens_per_message": len(lines[0]), "regions_per_s_wall": (1 << 18) / wall})
        dm_remove(name)
        log(f"upload: {module} message path 2^18: {self.res['upload'][-1]['regions_per_s_wall']:.0f} regions/s")
        self.save()

    # ---- memory
    @staticmethod
    def mem_snapshot():
        # Flush SLUB's per-CPU slabs and drop empty slabs, so that active
        # object counts are exact and free slab space is not reused unseen.
        for c in os.listdir("/sys/kernel/slab"):
            try:
                write(f"/sys/kernel/slab/{c}/shrink", 1)
            except OSError:
                pass
        mi = {}
        for l in read("/proc/meminfo").splitlines():
            k, v = l.split(":", 1)
            mi[k] = int(v.split()[0]) * 1024
        slabs, slab_pages = {}, 0
        for l in read("/proc/slabinfo").splitlines()[2:]:
            f = l.split()
            # name active_objs num_objs objsize objperslab pagesperslab : tunables ... : slabdata active_slabs num_slabs ...
            slabs[f[0]] = (int(f[1]), int(f[3]))
            slab_pages += int(f[14]) * int(f[5])
        # vmalloc areas, without kernel stacks of tasks that come and go
        vm_all = vm_mod = 0
        for l in read("/proc/vmallocinfo").splitlines():
            f = l.split()
            if "vmalloc" not in l or "thread_stack" in l or "dup_task_struct" in l:
                continue
            size = int(f[1]) - 4096            # minus the guard page
            vm_all += size
            if "[dm_switch]" in l:
                vm_mod += size
        return {"sunreclaim": mi["SUnreclaim"], "vmalloc": mi["VmallocUsed"],
                "slab": mi["Slab"], "slabs": slabs, "slab_pages_bytes": slab_pages * 4096,
                "vmallocinfo": vm_all, "vmalloc_dm_switch": vm_mod}

    def mem_settled(self):
        time.sleep(1.0)                  # RCU-delayed frees of exited helper processes
        prev = self.mem_snapshot()
        for _ in range(20):
            time.sleep(0.5)
            cur = self.mem_snapshot()
            if abs((cur["sunreclaim"] + cur["vmalloc"]) - (prev["sunreclaim"] + prev["vmalloc"])) <= 4096:
                return cur
            prev = cur
        return cur

    @staticmethod
    def mem_delta(a, b):
        """kernel_bytes: kmalloc'd objects (their slab object sizes) + large
        kmallocs (Slab pages not in any cache) + vmalloc areas, allocated between
        the two snapshots. meminfo_bytes: the page-level Δ(SUnreclaim + VmallocUsed)."""
        caches, kmalloc = {}, 0
        for k, (n, size) in b["slabs"].items():
            n0 = a["slabs"].get(k, (0, size))[0]
            if n != n0:
                caches[k] = {"objs": n - n0, "objsize": size, "bytes": (n - n0) * size}
                if k.startswith("kmalloc-") and not k.startswith("kmalloc-rcl"):
                    kmalloc += (n - n0) * size
        large = (b["slab"] - b["slab_pages_bytes"]) - (a["slab"] - a["slab_pages_bytes"])
        vm = b["vmallocinfo"] - a["vmallocinfo"]
        return {"kernel_bytes": kmalloc + large + vm,
                "kmalloc_object_bytes": kmalloc, "large_kmalloc_bytes": large, "vmalloc_bytes": vm,
                "meminfo_bytes": (b["sunreclaim"] + b["vmalloc"]) - (a["sunreclaim"] + a["vmalloc"]),
                "vmallocinfo_dm_switch_bytes": b["vmalloc_dm_switch"] - a["vmalloc_dm_switch"],
                "slab_caches": {k: v for k, v in caches.items() if abs(v["bytes"]) >= 2048}}

    def memory_tests(self, module, paths):
        a = self.a
        nreg = 1 << a.mem_log2
        length = nreg * 8
        for ndev in MEM_DEVS:
            dpaths = [paths[i % len(paths)] for i in range(ndev)]
            for rep in range(a.mem_reps):
                name = "bmem"
                if module == "ours":
                    # RFC format: the device starts without a table.
                    dm_create(name, switch_table(dpaths, 8, length, fmt="rfc"))
                    s0 = self.mem_settled()
                    t = time.monotonic()
                    run(a.agent, "upload", name, "--round-robin", "--quiet")
                    up = time.monotonic() - t
                    s1 = self.mem_settled()
                    d = self.mem_delta(s0, s1)
                    dm_remove(name)
                    d["method"] = "after - before a full round-robin upload (device created without a table)"
                    d["upload_s"] = up
                else:
                    # Upstream allocates its table in the constructor: compare a
                    # full-size device with a one-region one.
                    s0 = self.mem_settled()
                    dm_create(name, switch_table(dpaths, 8, 8))
                    s1 = self.mem_settled()
                    dm_remove(name)
                    s2 = self.mem_settled()
                    t = time.monotonic()
                    dm_create(name, switch_table(dpaths, 8, length))
                    ctr = time.monotonic() - t
                    s3 = self.mem_settled()
                    dm_remove(name)
                    small, full = self.mem_delta(s0, s1), self.mem_delta(s2, s3)
                    d = {k: full[k] - small[k] for k in ("kernel_bytes", "kmalloc_object_bytes",
                                                          "large_kmalloc_bytes", "vmalloc_bytes",
                                                          "meminfo_bytes", "vmallocinfo_dm_switch_bytes")}
                    d["slab_caches"] = full["slab_caches"]
                    d["method"] = "(create full device) - (create one-region device)"
                    d["ctr_s"] = ctr
                d.update({"module": module, "devices": ndev, "regions": nreg, "rep": rep,
                          "bytes_per_region": d["kernel_bytes"] / nreg})
                self.res["memory"].append(d)
            log(f"memory: {module} {ndev} devices: {d['bytes_per_region']:.4f} B/region")
            self.save()

    # ---- the whole run
    def main(self):
        a = self.a
        log(f"mode {a.mode}: {self.ncpu} vCPU(s), kernel {platform.release()}")
        self.stage_maps()
        paths = nullb_setup(self.ncpu)
        raw = paths[0]
        linear = dm_create("blinear", f"0 {IO_LEN} linear {paths[0]} 0")
        self.save()
        order = ["upstream", "ours"] * a.phases
        for phase, module in enumerate(order):
            t_phase = time.monotonic()
            self.mods.load(module)
            first = phase < 2
            if first and not a.skip_memory:
                self.memory_tests(module, paths)
            if first and not a.skip_upload:
                self.upload_tests(module, paths)
            if not a.skip_io:
                devs = self.create_io_devices(module, paths)
                self.save()
                self.io_rounds(module, phase, devs, raw, linear, a.rounds)
                if first:
                    self.profile(module, devs, linear)
            self.mods.unload()
            self.res["timing"][f"phase{phase}_{module}_s"] = time.monotonic() - t_phase
            self.save()
        dm_remove("blinear")
        nullb_teardown()
        self.save()
        log("done")
        return 0 if all(c["ok"] for c in self.res["checks"]) else 3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", required=True)
    p.add_argument("--out", default=os.environ.get("DM_SWITCH_OUT", "/tmp"))
    p.add_argument("--ours-ko", required=True)
    p.add_argument("--upstream-ko", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--maps", required=True)
    p.add_argument("--runtime", type=float, default=2)
    p.add_argument("--ramp", type=float, default=0.5)
    p.add_argument("--phases", type=int, default=1, help="upstream/ours phase pairs")
    p.add_argument("--rounds", type=int, default=5, help="rounds of every I/O config per phase")
    p.add_argument("--upload-reps", type=int, default=5)
    p.add_argument("--upload-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[18, 20, 24],
                   help="log2 of the region counts the agent uploads (18, 20, 24)")
    p.add_argument("--mem-log2", type=int, default=26)
    p.add_argument("--mem-reps", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="perf profiles of randread QD1 (first phases)")
    p.add_argument("--scenarios", type=lambda v: v.split(","), default=list(SCENARIOS),
                   help=f"comma-separated I/O scenarios (default: all of {','.join(SCENARIOS)})")
    p.add_argument("--skip-io", action="store_true")
    p.add_argument("--skip-upload", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    a = p.parse_args()
    b = Bench(a)
    try:
        return b.main()
    except Exception as e:
        b.res["error"] = repr(e)
        b.save()
        log(f"FAILED: {e!r}")
        raise


if __name__ == "__main__":
    sys.exit(main())
