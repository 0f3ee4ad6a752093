"""Issue 6: the dm-switch agent, driven as a user would, with placement read
back from the paths."""
import json
import random

import pytest

from conftest import AGENT, Switch, sh


def agent(*args, check=True):
    return sh(f"{AGENT} " + " ".join(args), check=check)


@pytest.mark.parametrize("form", ["name", "mapper", "dmN", "majmin"])
def test_round_robin_upload_any_device_form(env, form):
    sw = Switch(env, "swag1")
    dev = sw.dev
    spec = {"name": dev.name, "mapper": dev.path, "dmN": f"/dev/dm-{dev.minor}",
            "majmin": f"{dev.major}:{dev.minor}"}[form]
    out = agent("upload", spec, "--round-robin").stdout
    assert "64" in out
    sw.placed(lambda r: r % 3, range(0, 64, 3), "a" + form)


def test_mapping_file_and_userland(env, tmp_path):
    sw = Switch(env, "swag2")
    dev = sw.dev
    f = tmp_path / "map"
    f.write_text("# test\n0-9 2\n10 1  # one\n20-63 1\n")
    agent("upload", dev.name, "--file", str(f), "--userland", "0x10,20")
    expect = lambda r: 2 if r < 10 else (1 if r == 10 or r >= 20 else 0)
    sw.placed(expect, range(64), "f")
    st = json.loads(agent("status", dev.name, "--json").stdout)
    assert st["userland"] == [16, 20] and st["dev_count"] == 3
    assert st["remapped"] >= 64
    human = agent("status", dev.name).stdout
    assert "remapped" in human and "00000010" in human.lower() or "0x10" in human.lower() or "16" in human


def test_region_mappings_source(env):
    sw = Switch(env, "swag3")
    dev = sw.dev
    agent("upload", dev.name, "--region-mappings", "'0:1 :2 R2,3e'")
    sw.placed(lambda r: 1 if r % 2 == 0 else 2, range(64), "m")


def test_large_upload_multi_window(env):
    regions = 600000
    sw = Switch(env, "swag4", regions=regions, region=8)
    dev = sw.dev
    out = agent("upload", dev.name, "--round-robin").stdout
    assert "600000" in out.replace(",", "")
    rng = random.Random(3)
    sample = sorted({rng.randrange(regions) for _ in range(30)} | {0, 523519, 523520, regions - 1})
    sw.placed(lambda r: r % 3, sample, "l")


def test_free_chunk(env):
    sw = Switch(env, "swag5", regions=20000, region=8)
    dev = sw.dev
    agent("upload", dev.name, "--round-robin")
    agent("upload", dev.name, "--free-chunk", "1")
    sw.placed(lambda r: 0 if 8192 <= r < 16384 else r % 3, [8191, 8192, 10000, 16383, 16384], "c")


def test_failures_exit_codes_and_messages(env, tmp_path):
    sw = Switch(env, "swag6")
    dev = sw.dev
    agent("upload", dev.name, "--round-robin")
    bad = tmp_path / "bad"
    bad.write_text("0 7\n")
    r = agent("upload", dev.name, "--file", str(bad), check=False)
    assert r.returncode != 0 and "7" in r.stderr
    r = agent("upload", dev.name, "--pte-bits", "1", "--round-robin", check=False)
    assert r.returncode == 1 and r.stderr.strip(), r
    r = agent("upload", "nosuchdev", "--round-robin", check=False)
    assert r.returncode == 1 and "nosuchdev" in r.stderr
    r = agent("upload", dev.name, "--file", str(tmp_path / "missing"), check=False)
    assert r.returncode == 1 and "missing" in r.stderr
    r = agent("upload", dev.name, "--page-total", "0", "--round-robin", check=False)
    assert r.returncode == 1
    r = agent("frobnicate", check=False)
    assert r.returncode != 0
    # A kernel refusal: the err_str and exit code 2. Ask for more regions than
    # the window allows to be valid: free-chunk at an offset past the table is
    # refused by the agent; a bad pte_bits by the kernel.
    r = agent("upload", dev.name, "--round-robin", "--pte-bits", "32", check=False)
    assert r.returncode == 0, r.stderr
    sw.placed(lambda r: r % 3, range(0, 64, 7), "e")


def test_kernel_refusal_is_reported(env):
    sw = Switch(env, "swag7")
    dev = sw.dev
    # Suspend: the device has no live instance; the kernel says so.
    sh(f"dmsetup suspend {dev.name}")
    r = agent("upload", dev.name, "--round-robin", check=False)
    sh(f"dmsetup resume {dev.name}")
    assert r.returncode == 2, r
    assert "no live switch target" in r.stderr


def test_agent_speaks_dm_ioctls_not_dmsetup(env, tmp_path):
    """The agent reads tables and status through the DM ioctls: traced, its
    upload, status and dump start no other program; a device whose target is
    not `switch` gets a clear error."""
    sw = Switch(env, "swag8")
    dev = sw.dev
    trace = tmp_path / "trace"
    for cmd in (f"upload {dev.name} --round-robin", f"status {dev.name} --json", f"dump {dev.name}"):
        sh(f"strace -f -qq -e trace=execve -o {trace} {AGENT} {cmd}")
        execs = [line for line in trace.read_text().splitlines() if "execve(" in line]
        assert len(execs) == 1 and str(AGENT) in execs[0], (cmd, execs)
    sw.placed(lambda r: r % 3, range(0, 64, 5), "i")
    lin = env.dm("swag8l", f"0 64 linear {sw.paths[0]} {sw.starts[0]}")
    for cmd in ("status", "upload"):
        r = agent(cmd, lin.name, *(["--round-robin"] if cmd == "upload" else []), check=False)
        assert r.returncode == 1 and "`linear`, not `switch`" in r.stderr, r


def test_help_documents_every_command():
    top = agent("--help").stdout
    for word in ["upload", "status", "Example", "mapping"]:
        assert word.lower() in top.lower(), word
    for sub in ["upload", "status", "dump", "activate", "deactivate", "check-config"]:
        assert "example" in agent(sub, "--help").stdout.lower()
