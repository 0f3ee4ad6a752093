"""A minimal device-mapper ioctl client (/dev/mapper/control), for tests that
need one DM operation per system call: fault injection with fail-nth counts
the allocations of exactly that call, and message fuzzing runs without
spawning a dmsetup per message.

Only what the tests use: create, load, resume, suspend, remove, target
message, status. Layouts from include/uapi/linux/dm-ioctl.h (version 4).
"""
import errno
import fcntl
import os
import struct
import time

DM_IOCTL = 0xFD
DM_STRUCT_SIZE = 312  # sizeof(struct dm_ioctl)
SPEC_SIZE = 40  # sizeof(struct dm_target_spec)

DM_VERSION_CMD = 0
DM_DEV_CREATE_CMD = 3
DM_DEV_REMOVE_CMD = 4
DM_DEV_SUSPEND_CMD = 6
DM_DEV_STATUS_CMD = 7
DM_TABLE_LOAD_CMD = 9
DM_TABLE_CLEAR_CMD = 10
DM_TABLE_STATUS_CMD = 12
DM_TARGET_MSG_CMD = 14

DM_SUSPEND_FLAG = 1 << 1
DM_STATUS_TABLE_FLAG = 1 << 4
DM_BUFFER_FULL_FLAG = 1 << 8
DM_DATA_OUT_FLAG = 1 << 16

# libdevmapper's udev flags, sent in the upper 16 bits of event_nr (the
# "cookie"): the kernel puts it in the uevent as DM_COOKIE and the rules
# (55-dm.rules, 60-persistent-storage-dm.rules) read the flags from it.
# QUIET_UDEV: this event comes from the primary source and needs no disk,
# subsystem or other rules, so udev runs no blkid probe on the device (a
# probe of a path swapped to a failing table would itself be failed I/O).
DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG = 0x0002
DM_UDEV_DISABLE_DISK_RULES_FLAG = 0x0004
DM_UDEV_DISABLE_OTHER_RULES_FLAG = 0x0008
DM_UDEV_PRIMARY_SOURCE_FLAG = 0x0040
QUIET_UDEV = (DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG | DM_UDEV_DISABLE_DISK_RULES_FLAG |
              DM_UDEV_DISABLE_OTHER_RULES_FLAG | DM_UDEV_PRIMARY_SOURCE_FLAG) << 16


def _iowr(nr):
    return (3 << 30) | (DM_STRUCT_SIZE << 16) | (DM_IOCTL << 8) | nr


class DmError(OSError):
    pass


class Control:
    """An open /dev/mapper/control; every method is one ioctl."""

    def __init__(self, path="/dev/mapper/control", cookie=0):
        self.fd = os.open(path, os.O_RDWR)
        # event_nr of every call: the udev cookie of resume and remove (QUIET_UDEV).
        self.cookie = cookie
        # Buffers are built once per call; small (< one page) so the kernel's
        # copy of the parameters is a kmalloc, never a vmalloc.
        self.size = 4096

    def close(self):
        os.close(self.fd)

    def _header(self, name, flags=0, data_size=None, target_count=0):
        size = self.size if data_size is None else data_size
        nm = name.encode()
        assert len(nm) < 128
        return struct.pack("=3IIIIiIII", 4, 0, 0, size, DM_STRUCT_SIZE, target_count, 0, flags, self.cookie, 0) + \
            struct.pack("=Q", 0) + nm.ljust(128, b"\0") + b"\0" * 129 + b"\0" * 7

    def call(self, nr, name, flags=0, payload=b"", target_count=0):
        """One DM ioctl; returns the output buffer. Raises DmError(errno)."""
        hdr = self._header(name, flags, target_count=target_count)
        assert len(hdr) == DM_STRUCT_SIZE
        buf = bytearray(hdr + payload)
        assert len(buf) <= self.size, "parameters too long for the buffer"
        buf += b"\0" * (self.size - len(buf))
        try:
            fcntl.ioctl(self.fd, _iowr(nr), buf, True)
        except OSError as e:
            raise DmError(e.errno, f"dm ioctl {nr} on {name}: {os.strerror(e.errno)}") from None
        return bytes(buf)

    def create(self, name):
        self.call(DM_DEV_CREATE_CMD, name)

    def remove(self, name, tries=100):
        """Removes the device, retrying while it is busy (udev probes each
        new device for a moment), like `dmsetup remove --retry`."""
        for _ in range(tries - 1):
            try:
                return self.call(DM_DEV_REMOVE_CMD, name)
            except DmError as e:
                if e.errno != EBUSY:
                    raise
            time.sleep(0.1)
        self.call(DM_DEV_REMOVE_CMD, name)

    def load(self, name, start, length, target, params):
        spec = struct.pack("=QQiI16s", start, length, 0, 0, target.encode())
        self.call(DM_TABLE_LOAD_CMD, name, payload=spec + params.encode() + b"\0", target_count=1)

    def clear(self, name):
        self.call(DM_TABLE_CLEAR_CMD, name)

    def resume(self, name):
        self.call(DM_DEV_SUSPEND_CMD, name)

    def suspend(self, name):
        self.call(DM_DEV_SUSPEND_CMD, name, flags=DM_SUSPEND_FLAG)

    def message(self, name, text, sector=0):
        """`dmsetup message NAME SECTOR TEXT`; `text` may be bytes (raw)."""
        raw = text if isinstance(text, bytes) else text.encode()
        self.call(DM_TARGET_MSG_CMD, name, payload=struct.pack("=Q", sector) + raw + b"\0")

    def status(self, name, table=False):
        """The lines of `dmsetup status NAME` (`dmsetup table NAME` with
        table=True) as [(start, length, target type, parameters)]."""
        out = self.call(DM_TABLE_STATUS_CMD, name, flags=DM_STATUS_TABLE_FLAG if table else 0)
        data_start, count = struct.unpack_from("=2I", out, 16)
        (flags,) = struct.unpack_from("=I", out, 28)
        assert not flags & DM_BUFFER_FULL_FLAG, f"status of {name} does not fit {self.size} bytes"
        lines, off = [], data_start
        for _ in range(count):
            start, length, _status, nxt, kind = struct.unpack_from("=QQiI16s", out, off)
            params = out[off + SPEC_SIZE:].split(b"\0", 1)[0].decode()
            lines.append((start, length, kind.split(b"\0", 1)[0].decode(), params))
            off = data_start + nxt
        return lines

    def devt(self, name):
        out = self.call(DM_DEV_STATUS_CMD, name)
        (dev,) = struct.unpack_from("=Q", out, 40)
        # Kernel dev_t encoded by huge_encode_dev: major in bits 8..19, minor split.
        major = (dev >> 8) & 0xFFF
        minor = (dev & 0xFF) | ((dev >> 12) & 0xFFF00)
        return major, minor


ENOMEM, EINVAL, ENODEV, ENXIO, EBUSY = errno.ENOMEM, errno.EINVAL, errno.ENODEV, errno.ENXIO, errno.EBUSY
