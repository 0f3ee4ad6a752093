"""Issue 19: `dm-switch activate`, `deactivate` and `check-config` driven
by a configuration file, as an admin would; placement is read back from the
paths, and the agent's execve calls are traced (it must not run dmsetup)."""
import os
import re

from conftest import AGENT, SECTOR, marker, read_at, sh, write_at


def agent(*args, check=True):
    return sh(f"{AGENT} " + " ".join(str(a) for a in args), check=check)


def exists(name):
    return os.path.exists(f"/dev/mapper/{name}")


class Layout:
    """A switch's paths: `n` slices of one null_blk, `length` sectors each."""

    def __init__(self, env, n, length, blocksize=512):
        self.length, self.stride = length, length + 64
        self.nb = env.nullb((n * self.stride) // 2048 + 1, blocksize=blocksize)
        self.starts = [i * self.stride for i in range(n)]

    def toml(self):
        paths = ", ".join(f'"{self.nb.path}"' for _ in self.starts)
        return f"paths = [{paths}]\noffsets = [{', '.join(map(str, self.starts))}]\n"

    def placed(self, name, region_size, expect, regions, tag):
        """Markers written through /dev/mapper/NAME land on path expect(r)."""
        for r in regions:
            write_at(f"/dev/mapper/{name}", r * region_size * SECTOR, marker(f"{tag}{r}"))
        for r in regions:
            for i, start in enumerate(self.starts):
                got = read_at(self.nb.path, (start + r * region_size) * SECTOR, SECTOR)
                assert (got == marker(f"{tag}{r}")) == (i == expect(r)), f"{name} region {r}: path {i}"


def test_activate_deactivate_from_a_config(env, tmp_path):
    # A: RFC, 3 paths, 600,000 one-sector regions (3 upload windows at 2 bits
    # per entry), from a mapping file. B: upstream, 2 paths, from a file.
    # C: RFC, round robin, grown later by a reload.
    a, b, c = Layout(env, 3, 600_000), Layout(env, 2, 4096), Layout(env, 2, 8192)
    (tmp_path / "a.map").write_text("0-599999 1\n0-9 2\n599990-599999 0\nuserland 7,0x2a\n")
    (tmp_path / "b.map").write_text("0-31 1\n")
    cfg = tmp_path / "switch.toml"

    def write_config(c_sectors):
        cfg.write_text(f"""path_timeout = 5
[[switch]]
name = "cfga"
region_size = 1
{a.toml()}sectors = 600000
mapping_file = "a.map"

[[switch]]
name = "cfgb"
format = "upstream"
region_size = 64
{b.toml()}mapping_file = "{tmp_path}/b.map"

[[switch]]
name = "cfgc"
region_size = 128
{c.toml()}sectors = {c_sectors}
round_robin = true
""")

    write_config(4096)
    try:
        out = agent("check-config", "--config", cfg).stdout
        assert "3 switch devices (cfga, cfgb, cfgc)" in out
        trace = tmp_path / "trace"
        out = sh(f"strace -f -qq -e trace=execve -o {trace} {AGENT} activate --all --config {cfg}").stdout
        execs = [ln for ln in trace.read_text().splitlines() if "execve(" in ln]
        assert len(execs) == 1 and str(AGENT) in execs[0], execs
        lines = out.splitlines()
        assert len(lines) == 3, out
        assert re.match(r"cfga \(\d+:\d+\): created \(3 paths, 600000 regions of 1 sectors\); mapping: sent 3 of 3", lines[0]), out
        # B's length is its shortest path's room: 10,240 sectors less offset 4,160.
        assert "cfgb" in lines[1] and "created (2 paths, 95 regions of 64 sectors)" in lines[1], out
        assert "cfgc" in lines[2] and "created (2 paths, 32 regions of 128 sectors)" in lines[2], out
        tables = {n: sh(f"dmsetup table {n}").stdout.split() for n in ("cfga", "cfgb", "cfgc")}
        assert tables["cfgb"][3:6] == ["2", "64", "0"], "upstream format"
        assert tables["cfga"][3:5] == ["3", "1"] and len(tables["cfga"]) == 5 + 6, "RFC format"
        assert "00000007 0000002a" in sh("dmsetup status cfga").stdout, "userland words from the mapping file"
        a.placed("cfga", 1, lambda r: 2 if r < 10 else (0 if r >= 599990 else 1), [0, 9, 10, 300_000, 599_995], "a")
        b.placed("cfgb", 64, lambda r: 1 if r < 32 else 0, [0, 31, 32, 94], "b")
        c.placed("cfgc", 128, lambda r: r % 2, [0, 1, 30, 31], "c")

        # Idempotent: nothing changes, and it says so.
        out = agent("activate", "--all", "--config", cfg).stdout
        assert out.count("table unchanged; mapping already live (nothing sent)") == 3, out

        # One region of A's last window changes: only that window is sent.
        (tmp_path / "a.map").write_text("0-599999 1\n0-9 2\n599990-599999 0\n550000 2\nuserland 7,0x2a\n")
        out = agent("activate", "cfga", "--config", cfg).stdout
        assert "table unchanged; mapping: sent 1 of 3 windows" in out, out
        a.placed("cfga", 1, lambda r: 2 if r in (5, 550_000) else 1, [5, 549_999, 550_000, 550_001], "a2")

        # C grows: the table is reloaded (the kernel keeps the old regions'
        # entries), then only what differs from round robin is sent.
        write_config(8192)
        out = agent("activate", "cfgc", "--config", cfg).stdout
        assert "table reloaded (length 4096 -> 8192 sectors); mapping: sent 1 of 1 window" in out, out
        c.placed("cfgc", 128, lambda r: r % 2, [0, 1, 31, 32, 33, 63], "c2")

        out = agent("deactivate", "--all", "--config", cfg).stdout
        assert out.count(": removed") == 3, out
        assert not any(exists(n) for n in ("cfga", "cfgb", "cfgc"))
        out = agent("deactivate", "cfga", "--config", cfg).stdout
        assert "cfga: not active (nothing to do)" in out
    finally:
        for n in ("cfga", "cfgb", "cfgc"):
            sh(f"dmsetup remove --retry {n}", check=False)


def test_activate_refuses_bad_input_and_leaves_nothing(env, tmp_path):
    ok = Layout(env, 2, 4096)
    big = Layout(env, 2, 4096, blocksize=4096)
    cfg = tmp_path / "switch.toml"

    def refused(body, *words, name="cfgbad", command="activate"):
        cfg.write_text("path_timeout = 1\n" + body)
        r = agent(command, name if command != "check-config" else "", "--config", cfg, check=False)
        assert r.returncode == 1, r
        for w in words:
            assert w in r.stderr, (w, r.stderr)
        assert not exists("cfgbad"), "a refused activation left a device behind"
        return r.stderr

    def switch(paths, extra="round_robin = true\n", name="cfgbad", region=64):
        return f'[[switch]]\nname = "{name}"\nregion_size = {region}\n{paths}{extra}'

    refused(switch('paths = ["/dev/nonexistent0"]\n'),
            "path /dev/nonexistent0 (line 5) did not appear within 1 s")
    refused(switch(ok.toml()) + switch(big.toml(), name="cfgbad"),
            "switch.toml:9: switch `cfgbad` is already defined at line 3", command="check-config")
    refused(switch(big.toml(), region=4), "has 4096-byte logical blocks: region_size 4")
    (tmp_path / "bad.map").write_text("0-9 1\n10 7\n")
    refused(switch(ok.toml(), extra='mapping_file = "bad.map"\n'), "bad.map:2", "path 7")
    env.dm("cfgholder", f"0 64 linear {ok.nb.path} 0")
    refused(switch(ok.toml()), "is already held by device `cfgholder`")
    sh("dmsetup remove cfgholder")

    # An open device is not removed unless --force; the message names the opener.
    cfg.write_text(switch(ok.toml()))
    agent("activate", "cfgbad", "--config", cfg)
    holder = open("/dev/mapper/cfgbad", "rb")
    try:
        r = agent("deactivate", "cfgbad", "--config", cfg, check=False)
        assert r.returncode == 1 and "is open (1 opener" in r.stderr and f"pid {os.getpid()}" in r.stderr, r
        assert exists("cfgbad")
        out = agent("deactivate", "cfgbad", "--force", "--config", cfg).stdout
        assert "removed when its last opener closes it" in out, out
        try:
            holder.read(512)
            raise AssertionError("I/O to a force-deactivated device succeeded")
        except OSError:
            pass
    finally:
        holder.close()
    for _ in range(50):
        sh("udevadm settle", check=False)
        if not exists("cfgbad"):
            break
    assert not exists("cfgbad"), "the deferred removal did not happen on close"
