"""Fault injection helpers (CONFIG_FAILSLAB, CONFIG_FAIL_PAGE_ALLOC,
CONFIG_FAULT_INJECTION_STACKTRACE_FILTER, debugfs).

Two ways of failing allocations are used:

* fail-nth (/proc/thread-self/fail-nth): the N-th fault point reached by the
  calling thread fails, exactly once. With the stack-trace filter set to the
  module's text, only allocations with a dm_switch frame on the stack count,
  so N = 1, 2, ... enumerates every allocation made under our code in one
  system call, one at a time (systematic fault injection).
* probabilistic: failslab/fail_page_alloc with task-filter (only tasks with
  make-it-fail set), ignore-gfp-wait off, and a probability; `times` is set to
  a large budget so the number of injected faults can be read back.

Every knob touched is saved and restored by FaultAttrs.
"""
import os
import struct
import threading
from pathlib import Path

DEBUGFS = Path("/sys/kernel/debug")
ATTRS = ("failslab", "fail_page_alloc")
ULONG_MAX = (1 << 64) - 1
KNOBS = ("probability", "interval", "times", "space", "verbose", "task-filter", "ignore-gfp-wait",
         "require-start", "require-end", "reject-start", "reject-end", "stacktrace-depth")


def available():
    return all((DEBUGFS / a / "probability").exists() for a in ATTRS)


def _elf_exec_sections(ko):
    """(name, size) of the allocated, executable sections of an ELF64 .ko."""
    data = Path(ko).read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "not an ELF64 file"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(shnum):
        name, _typ, flags, _addr, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        sections.append((name, flags, off, size))
    stroff = sections[shstrndx][2]
    out = []
    for name_off, flags, _off, size in sections:
        end = data.index(b"\0", stroff + name_off)
        name = data[stroff + name_off:end].decode()
        if flags & 0x2 and flags & 0x4 and size:  # SHF_ALLOC | SHF_EXECINSTR
            out.append((name, size))
    return out


def module_text_range(ko, module="dm_switch"):
    """[start, end) of the loaded module's (non-init) code, from its ELF
    section sizes and the load addresses in /sys/module/M/sections."""
    lo, hi = None, None
    for name, size in _elf_exec_sections(ko):
        p = Path(f"/sys/module/{module}/sections/{name}")
        if name.startswith(".init") or name.startswith(".exit") or not p.exists():
            continue
        addr = int(p.read_text(), 16)
        if addr == 0:
            continue
        lo = addr if lo is None else min(lo, addr)
        hi = addr + size if hi is None else max(hi, addr + size)
    assert lo is not None, "no text section address (kptr_restrict?)"
    return lo, hi


def symbol_range(*names):
    """[start, end) of the first of `names` found in /proc/kallsyms (end:
    the next symbol's address)."""
    syms = []
    with open("/proc/kallsyms") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tTwW":
                syms.append((int(parts[0], 16), parts[2]))
    syms.sort()
    for name in names:
        for i, (addr, sym) in enumerate(syms):
            if sym == name and addr:
                nxt = next((a for a, _ in syms[i + 1:] if a > addr), addr + 4096)
                return addr, nxt
    raise LookupError(f"none of {names} in /proc/kallsyms")


def vmalloc_range():
    """The vmalloc core: its page-allocation failures print a warning with a
    stack trace (warn_alloc, no __GFP_NOWARN in kvmalloc's fallback), which
    the harness's log scan rightly counts as a report. Faults are kept out of
    it (reject range); kvmalloc's kmalloc attempt can still fail."""
    return symbol_range("__vmalloc_node_range_noprof", "__vmalloc_node_range")


class FaultAttrs:
    """Sets failslab and fail_page_alloc knobs; restore() puts the old values back."""

    def __init__(self):
        self.saved = {}
        for a in ATTRS:
            for k in KNOBS + (("min-order", "ignore-gfp-highmem") if a == "fail_page_alloc" else ()):
                p = DEBUGFS / a / k
                if p.exists():
                    self.saved[p] = p.read_text().strip()

    def set(self, attr, **knobs):
        for k, v in knobs.items():
            p = DEBUGFS / attr / k.replace("_", "-")
            if isinstance(v, bool):
                v = "Y" if v else "N"
            elif k in ("require_start", "require_end", "reject_start", "reject_end"):
                v = hex(v)
            p.write_text(f"{v}\n")

    def both(self, **knobs):
        for a in ATTRS:
            self.set(a, **knobs)

    def times_left(self, attr):
        return int((DEBUGFS / attr / "times").read_text())

    def restore(self):
        # Probability first, so nothing fails while the rest is restored.
        for a in ATTRS:
            (DEBUGFS / a / "probability").write_text("0\n")
        for p, v in self.saved.items():
            if p.name == "probability":
                continue
            try:
                if p.name in ("require-start", "require-end", "reject-start", "reject-end"):
                    v = hex(int(v, 0))
                p.write_text(v + "\n")
            except OSError:
                pass
        for p, v in self.saved.items():
            if p.name == "probability":
                p.write_text(v + "\n")


class FailNth:
    """fail-nth of the calling thread. arm(n) makes the n-th fault point
    (counted from now) fail; injected() says whether it did, and disarms."""

    def __init__(self):
        self.fd = os.open(f"/proc/self/task/{threading.get_native_id()}/fail-nth", os.O_RDWR)

    def arm(self, n):
        os.pwrite(self.fd, f"{n}".encode(), 0)

    def injected(self):
        left = int(os.pread(self.fd, 32, 0).decode().strip() or "0")
        if left:
            os.pwrite(self.fd, b"0", 0)
        return left == 0

    def close(self):
        os.pwrite(self.fd, b"0", 0)
        os.close(self.fd)
