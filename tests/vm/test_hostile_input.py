"""Reliability, hostile input: netlink fuzzing against a reference model
under I/O, and set_region_mappings fuzzing.
"""
import errno
import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import SECTOR, Switch
from dmtest import dmioctl, model
from campaign import (EINVAL, FUZZ_SEED, OUT, PY, Uploader, bounded, fio_json, fio_summary,
                      placed_as, placement_ok, record)

pytestmark = pytest.mark.usefixtures("kernel_log_guard")


def test_netlink_fuzz_against_model_under_io(env):
    """Concurrent fuzzers (one process per device) send malformed and mutated
    DM_SWITCH messages at live devices while fio does I/O on two of them. Every
    reply must be well-formed and carry the status the reference validator
    allows; the model of each table changes only with replies of status 0,
    and data placement is compared with it during and after the run."""
    # Four senders: an accepted upload waits for an RCU grace period (about
    # 10 ms under TCG), and the waits of concurrent senders overlap. The run
    # is a number of messages, not a time: 8,000 (104 messages/s in all on
    # an idle machine on 2026-12-07, 73/s seen on a busy one); the soak run
    # sends 100,000 (about 16 minutes: a whole `make soak` has to fit in one
    # working session). The time limit only catches a sender that stops
    # progressing.
    nworkers = 4
    target = bounded(8_000, 100_000)
    seconds = bounded(1200, 7200)
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
               "check_every": bounded(500, 10000), "sample": 8, "check_from": half, "name": sw.dev.name,
               "path": sw.dev.path, "paths": sw.paths, "starts": sw.starts, "region": region,
               "forbidden": [[o.dev.major, o.dev.minor] for o in sws if o is not sw],
               "other_devts": [[o.major, o.minor] for o in others],
               "log": str(Path(OUT or "/tmp") / f"nlfuzz-{i}.log")}
        procs.append(subprocess.Popen([PY, "-m", "dmtest.nlfuzz", json.dumps(cfg)], stdout=subprocess.PIPE,
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
    assert total["messages"] >= target, f"only {total['messages']} of {target} messages within {seconds} s"


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
    n = bounded(500, 30000)
    deadline = time.time() + bounded(30, 600)
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
