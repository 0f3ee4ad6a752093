"""Kernel log guard for tests that make the kernel log a lot.

Refused uploads and messages are logged by the module, so a fuzzing run
writes thousands of lines and the 256 KiB ring buffer wraps: a report
(KASAN, lockdep, WARNING...) printed early in the run would be gone by the
time tests/guest/finish.sh reads dmesg. KmsgScanner follows /dev/kmsg while a
test runs, record by record, and keeps every report with its context; it also
notices records it could not read in time (the reader fell behind the ring
buffer), which must not happen either.
"""
import errno
import os
import re
import threading
import time

# The same reports tests/guest/finish.sh fails on.
REPORT = re.compile(r"BUG:|WARNING:|KASAN:|UBSAN:|general protection fault|Oops|kernel BUG at|"
                    r"possible recursive locking|possible circular locking|suspicious RCU usage|"
                    r"rcu_.* detected stall|INFO: task .* blocked for more than|unreferenced object|"
                    r"inconsistent lock state|sleeping function called from invalid context|Call Trace:")


def reports_in(text):
    return [line for line in text.splitlines() if REPORT.search(line)]


def kernel_log():
    """The messages in the kernel's ring buffer now, one per line, oldest
    first (what `dmesg` prints, without timestamps). Read from /dev/kmsg in
    this process: starting `dmesg` takes seconds under TCG."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    lines = []
    try:
        while True:
            try:
                raw = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:
                    continue  # overwritten while we read: go on with the oldest left
                raise
            lines.append(raw.decode(errors="replace").partition(";")[2].split("\n", 1)[0])
    finally:
        os.close(fd)
    return "\n".join(lines) + "\n"


class KmsgScanner:
    """Reads /dev/kmsg from now on in a thread; stop() returns the findings."""

    def __init__(self, context=40):
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)
        self.context = context
        self.reports = []  # lists of lines: a report and what followed it
        self.lost = 0  # records overwritten before we read them
        self.records = 0
        self.counts = {}
        self.patterns = {}
        self._open = None
        self._stop = threading.Event()
        self._last_seq = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def count(self, name, regex):
        """Counts records matching `regex` (call before the activity)."""
        self.patterns[name] = re.compile(regex)
        self.counts[name] = 0

    def _record(self, raw):
        text = raw.decode(errors="replace")
        head, _, msg = text.partition(";")
        fields = head.split(",")
        if len(fields) >= 2 and fields[1].isdigit():
            seq = int(fields[1])
            if self._last_seq is not None and seq > self._last_seq + 1:
                self.lost += seq - self._last_seq - 1
            self._last_seq = seq
        msg = msg.split("\n", 1)[0]
        self.records += 1
        for name, rx in self.patterns.items():
            if rx.search(msg):
                self.counts[name] += 1
        if self._open is not None:
            self._open.append(msg)
            if len(self._open) >= self.context:
                self._open = None
        if REPORT.search(msg):
            self._open = [msg]
            self.reports.append(self._open)

    def _drain(self):
        n = 0
        while True:
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                return n
            except OSError as e:
                if e.errno == errno.EPIPE:
                    # Records were overwritten before we read them; the next
                    # read continues with the oldest one left (seq shows the gap).
                    continue
                raise
            self._record(raw)
            n += 1

    def _run(self):
        while not self._stop.is_set():
            if not self._drain():
                time.sleep(0.02)

    def stop(self):
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(10)
        self._drain()
        os.close(self.fd)
        return self.reports

    def summary(self):
        out = []
        for rep in self.reports[:5]:
            out.append("\n".join(rep[:self.context]))
        return "\n---\n".join(out)
