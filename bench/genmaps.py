#!/usr/bin/env python3
"""Generates the random region mappings the benchmark loads (on the host, where
it is fast; the guest only reads them).

For every (regions, paths) pair it writes, with a fixed seed so every run and
both modules get the same table:
  NAME.map  agent mapping file: `REGION PATH` per line (decimal)
  NAME.probe a few `REGION PATH` lines of NAME.map the guest checks placement of
  NAME.msg  upstream `set_region_mappings` arguments, one message per line:
            `explicit` mode: `IDX:PATH` tokens (hex), BATCH per message;
            `compact` mode:  `IDX:PATH` then `:PATH` tokens, BATCH per message.

Usage: genmaps.py OUTDIR   (files already present are kept)
"""
import os
import random
import sys

# name, log2(regions), paths, message mode (None: no .msg), tokens per message
MAPS = [
    ("r18p16", 18, 16, "explicit", 4096),   # upload: message path vs agent, 2^18
    ("r20p16", 20, 16, "compact", 16384),   # S3 I/O table; upload 2^20
    ("r24p16", 24, 16, None, 0),            # upload 2^24 (agent only)
    ("r20p5", 20, 5, "compact", 16384),     # S4 I/O table (3-bit entries, 21 per word)
    ("r20p17", 20, 17, "compact", 16384),   # S5 I/O table (5-bit entries, 12 per word)
]
SEED = 0x5157_1C4


def paths_for(log2_regions, paths):
    rng = random.Random(SEED + log2_regions * 1000 + paths)
    n = 1 << log2_regions
    assert 1 <= paths <= 256
    if paths & (paths - 1) == 0:
        # getrandbits is fast (and keeps the tables of earlier runs).
        bits = paths.bit_length() - 1
        return bytes(rng.getrandbits(bits) for _ in range(n)) if bits else bytes(n)
    return bytes(rng.randrange(paths) for _ in range(n))


def write_atomic(path, chunks):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, log2n, paths, mode, batch in MAPS:
        mapf = os.path.join(out, name + ".map")
        msgf = os.path.join(out, name + ".msg")
        need_map = not os.path.exists(mapf)
        need_msg = mode is not None and not os.path.exists(msgf)
        probef = os.path.join(out, name + ".probe")
        need_probe = not os.path.exists(probef)
        if not (need_map or need_msg or need_probe):
            continue
        p = paths_for(log2n, paths)
        n = len(p)
        if need_map:
            step = 1 << 16
            write_atomic(mapf, (
                "".join(f"{r} {p[r]}\n" for r in range(lo, min(n, lo + step)))
                for lo in range(0, n, step)))
        if need_msg:
            def lines():
                for lo in range(0, n, batch):
                    hi = min(n, lo + batch)
                    if mode == "explicit":
                        toks = [f"{r:x}:{p[r]:x}" for r in range(lo, hi)]
                    else:
                        toks = [f"{lo:x}:{p[lo]:x}"] + [f":{p[r]:x}" for r in range(lo + 1, hi)]
                    yield " ".join(toks) + "\n"
            write_atomic(msgf, lines())
        if need_probe:
            # 48 regions spread over the table: the guest checks their placement.
            probe = sorted({(i * 2654435761) % n for i in range(48)} | {0, n - 1})
            write_atomic(probef, (f"{r} {p[r]}\n" for r in probe))
        print(f"genmaps: {name}: {n} regions over {paths} paths", file=sys.stderr)


if __name__ == "__main__":
    main()
