"""A reference model of one switch device's page table, written from the
README's description of the DM_SWITCH ABI and of set_region_mappings, and a
reference validator that predicts the kernel's answer to any request.

The model is updated only by requests the kernel accepted (reply status 0,
or a message ioctl that succeeded); the tests then compare the device's data
placement with model.lookup() on sampled regions.
"""
import errno
import struct

from dmtest.wire import CHUNK, HEADER, HEADER_LEN, OFF_DEV_MAJOR, OFF_DEV_MINOR, OFF_USERLAND, unpack
EINVAL, ENODEV, ENOMEM, EPERM = errno.EINVAL, errno.ENODEV, errno.ENOMEM, errno.EPERM


def min_pte_bits(dev_count):
    return max(1, (dev_count - 1).bit_length())


class Table:
    def __init__(self, page_total, pte_bits, userland=(0, 0)):
        self.page_total, self.pte_bits, self.userland = page_total, pte_bits, tuple(userland)
        self.chunks = {}

    def copy(self):
        t = Table(self.page_total, self.pte_bits, self.userland)
        t.chunks = dict(self.chunks)  # chunks are copied on first write (set)
        return t

    def nchunks(self):
        return (self.page_total + CHUNK - 1) // CHUNK

    def get(self, region):
        if region >= self.page_total:
            return None
        c = self.chunks.get(region // CHUNK)
        if c is None:
            return None
        return c[region % CHUNK]

    def set_run(self, first, values, fresh):
        """Sets entries first, first + 1, ... to `values` (chunk by chunk)."""
        i, n = 0, len(values)
        while i < n:
            region = first + i
            c, at = divmod(region, CHUNK)
            take = min(n - i, CHUNK - at)
            if c not in fresh:
                old = self.chunks.get(c)
                self.chunks[c] = list(old) if old is not None else [0] * CHUNK
                fresh.add(c)
            self.chunks[c][at:at + take] = values[i:i + take]
            i += take

    def set(self, region, path, fresh):
        """Sets an entry; `fresh` holds chunk indices already copied in this update."""
        i = region // CHUNK
        if i not in fresh:
            old = self.chunks.get(i)
            self.chunks[i] = list(old) if old is not None else [0] * CHUNK
            fresh.add(i)
        self.chunks[i][region % CHUNK] = path


class Request:
    """A decoded IpcPgTable payload (None fields when too short)."""

    def __init__(self, payload):
        self.raw = payload
        b = payload + b"\0" * max(0, HEADER_LEN - len(payload))
        (self.total_len, self.opcode, u0, u1, self.major, self.minor, self.page_total,
         self.page_offset, self.page_count, self.dev_count, self.pte_bits, self.reserved) = \
            HEADER.unpack_from(b)
        self.userland = (u0, u1)

    def echo(self):
        """The fields a reply echoes (read from whatever part of the header is present)."""
        def u32(off):
            return struct.unpack_from("=I", self.raw, off)[0] if len(self.raw) >= off + 4 else 0
        return (u32(OFF_USERLAND), u32(OFF_USERLAND + 4)), u32(OFF_DEV_MAJOR), u32(OFF_DEV_MINOR)

    def values(self):
        """The page_count entries of the window (the payload must hold them)."""
        return unpack(self.raw[HEADER_LEN:], self.pte_bits, self.page_count)


def replay(windows, table=None):
    """The table the upload windows make when applied in order to `table`
    (None: no table yet), as the kernel applies uploads."""
    dev = Device(0, 0, 0, 0)
    dev.table = table
    for w in windows:
        dev.apply_upload(Request(w))
    return dev.table


def same_state(a, b):
    """Whether two tables have the same placement, userland words and
    allocated chunks (pte_bits aside). None is the empty table."""
    if a is None or b is None:
        t = a or b
        return t is None or (not t.chunks and t.userland == (0, 0))
    if (a.page_total, a.userland, set(a.chunks)) != (b.page_total, b.userland, set(b.chunks)):
        return False
    return all(a.chunks[c] == b.chunks[c] for c in a.chunks)


class Device:
    """One switch device: geometry, live flag, and the model of its table."""

    def __init__(self, major, minor, dev_count, regions, fmt="rfc"):
        self.major, self.minor, self.dev_count, self.regions = major, minor, dev_count, regions
        self.table = None
        if fmt == "upstream":
            t = Table(regions, min_pte_bits(dev_count))
            for r in range(regions):
                t.set(r, r % dev_count, set())
            self.table = t

    def lookup(self, region):
        """The path a bio to `region` goes to."""
        if self.table is None:
            return 0
        v = self.table.get(region)
        return 0 if v is None else v

    def userland(self):
        return (0, 0) if self.table is None else self.table.userland

    # ------------------------------------------------------------ uploads

    def predict_upload(self, payload, live):
        """Errnos the kernel may answer with (empty: it must accept) and the
        decoded request. `live` maps (major, minor) to the dev_count of every
        live switch device (this one included)."""
        if payload is None:
            return {EINVAL}, None
        errs = set()
        if len(payload) < HEADER_LEN:
            return {EINVAL}, None
        q = Request(payload)
        if q.opcode != 1:
            errs.add(EINVAL)
        if q.pte_bits == 0 or q.pte_bits > 32:
            errs.add(EINVAL)
            return errs, q
        if q.dev_count == 0 or (q.dev_count - 1) >> q.pte_bits:
            errs.add(EINVAL)
        fields = 32 // q.pte_bits
        if q.page_offset % fields:
            errs.add(EINVAL)
        if q.page_offset + q.page_count > q.page_total:
            errs.add(EINVAL)
        if q.page_count == 0 and q.page_offset % CHUNK:
            errs.add(EINVAL)
        need = (q.page_count + fields - 1) // fields * 4
        if len(payload) - HEADER_LEN < need:
            errs.add(EINVAL)
        if errs:
            return errs, q
        target = live.get((q.major, q.minor)) if q.major < 4096 and q.minor < (1 << 20) else None
        if target is None:
            return {ENODEV}, q
        if q.dev_count != target:
            return {EINVAL}, q
        if q.page_count and max(q.values()) >= q.dev_count:
            return {EINVAL}, q
        return set(), q

    def apply_upload(self, q):
        cur = self.table
        if cur is not None and cur.page_total == q.page_total and cur.pte_bits == q.pte_bits:
            t = cur.copy()
        else:
            t = Table(q.page_total, q.pte_bits)
        if q.page_count == 0:
            t.chunks.pop(q.page_offset // CHUNK, None)
        else:
            t.set_run(q.page_offset, q.values(), set())
        t.userland = q.userland
        self.table = t

    # ------------------------------------------------------------ messages

    def message(self, argv):
        """Applies a target message (already split into words) as the kernel
        would; returns 0 or the errno it must fail with (then nothing changes)."""
        if not argv:
            return EINVAL
        if argv[0].lower() != b"set_region_mappings":
            return EINVAL
        cur = self.table
        if cur is None:
            t = Table(self.regions, min_pte_bits(self.dev_count))
        else:
            t = cur.copy()
        fresh = set()
        last = None
        args = argv[1:]
        if not args:
            return EINVAL

        def hexnum(s):
            if not s or any(c not in b"0123456789abcdefABCDEF" for c in s):
                raise ValueError
            v = int(s, 16)
            if v > 0xFFFFFFFF:
                raise ValueError
            return v

        try:
            for arg in args:
                if arg[:1] in (b"R", b"r"):
                    rest = arg[1:]
                    if b"," not in rest:
                        return EINVAL
                    a, b = rest.split(b",", 1)
                    cycle, count = hexnum(a), hexnum(b)
                    if last is None or cycle == 0 or cycle - 1 > last:
                        return EINVAL
                    if last + count >= t.page_total:
                        return EINVAL
                    for region in range(last + 1, last + count + 1):
                        v = t.get(region - cycle)
                        t.set(region, 0 if v is None else v, fresh)
                    last = last + count
                    continue
                if b":" not in arg:
                    return EINVAL
                a, b = arg.split(b":", 1)
                if a == b"":
                    if last is None:
                        return EINVAL
                    region = last + 1
                else:
                    region = hexnum(a)
                path = hexnum(b)
                if region >= t.page_total or path >= self.dev_count:
                    return EINVAL
                t.set(region, path, fresh)
                last = region
        except ValueError:
            return EINVAL
        self.table = t
        return 0


SPACES = b" \t\n\v\f\r\xa0"


def dm_split_args(text):
    """DM core's dm_split_args(): whitespace-separated words, backslash quotes
    the next character. Kernel isspace() includes 0xA0."""
    out = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in SPACES:
            i += 1
        if i >= n:
            return out
        word = bytearray()
        while i < n:
            c = text[i]
            if c == 0x5C and i + 1 < n:  # backslash
                word.append(text[i + 1])
                i += 2
                continue
            if c in SPACES:
                break
            word.append(c)
            i += 1
        out.append(bytes(word))
