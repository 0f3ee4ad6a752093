"""The DM_SWITCH ABI for the Python tests, defined once.

Mirrors include/uapi/dm-switch.h (and pure/abi.rs, the Rust definition the
kernel and the agent compile): family, command and attribute numbers, the
byte layout of struct IpcPgTable (request) and struct IpcResponse (reply),
the chunk size, entry packing and the size limits. Written from the header,
not from the kernel's code, so the VM tests prove the ABI as an RFC-era agent
would use it. Integers are in host byte order.
"""
import struct

FAMILY_NAME = "DM_SWITCH"
FAMILY_VERSION = 1
CMD_GET_PAGE_TBL = 1
CMD_DUMP_PAGE_TBL = 2       # read-back: a dump of IpcPgTable windows
ATTR_MSG = 1
ATTR_DEV_MAJOR = 2          # u32, dump requests
ATTR_DEV_MINOR = 3          # u32, dump requests
ATTR_RESPONSE = 11          # the RFC used the policy constant NLA_BINARY
CMD_DUMP_PATH_STATS = 3     # a dump of struct dm_switch_path_stats records
ATTR_PATH_STATS = 4         # consecutive records, one per path
# struct dm_switch_path_stats: path, reserved, ios[4], sectors[4]; the stat
# groups are read, write (write-zeroes included), discard, flush.
PATH_STATS = struct.Struct("=II4Q4Q")
assert PATH_STATS.size == 72
STAT_READ, STAT_WRITE, STAT_DISCARD, STAT_FLUSH = range(4)
OPCODE_PAGE_TABLE_UPLOAD = 1
CHUNK = 8192                # CHUNK_PTE_COUNT: entries per chunk
MAX_MSG = 65480             # MAX_IPC_MSG_LEN: largest NETLINK_ATTR_MSG payload
MAX_ERR_STR_LEN = 255


def path_stats_records(payload):
    """The records of one DM_SWITCH_ATTR_PATH_STATS payload, as
    (path, ios, sectors) with 4-tuples by stat group."""
    assert len(payload) % PATH_STATS.size == 0, f"{len(payload)} bytes of path records"
    out = []
    for off in range(0, len(payload), PATH_STATS.size):
        f = PATH_STATS.unpack_from(payload, off)
        assert f[1] == 0, "reserved is not 0"
        out.append((f[0], f[2:6], f[6:10]))
    return out

# struct IpcPgTable: "=9IHBB" then the packed words.
HEADER = struct.Struct("=9IHBB")
HEADER_LEN = HEADER.size    # 40: IPC_PG_TABLE_HDR_LEN
assert HEADER_LEN == 40
# Byte offsets of the header fields.
OFF_TOTAL_LEN, OFF_OPCODE, OFF_USERLAND = 0, 4, 8
OFF_DEV_MAJOR, OFF_DEV_MINOR = 16, 20
OFF_PAGE_TOTAL, OFF_PAGE_OFFSET, OFF_PAGE_COUNT = 24, 28, 32
OFF_DEV_COUNT, OFF_PTE_BITS, OFF_RESERVED = 36, 38, 39
# (offset, size) of every header field, in order.
FIELDS = [(OFF_TOTAL_LEN, 4), (OFF_OPCODE, 4), (OFF_USERLAND, 4), (OFF_USERLAND + 4, 4),
          (OFF_DEV_MAJOR, 4), (OFF_DEV_MINOR, 4), (OFF_PAGE_TOTAL, 4), (OFF_PAGE_OFFSET, 4),
          (OFF_PAGE_COUNT, 4), (OFF_DEV_COUNT, 2), (OFF_PTE_BITS, 1), (OFF_RESERVED, 1)]
# Most packed words one request holds.
MAX_WORDS = (MAX_MSG - HEADER_LEN) // 4

# struct IpcResponse: seven u32 then err_str[256].
RESPONSE = struct.Struct("=7I")
OFF_STATUS, OFF_ERR_STR = 24, 28
RESPONSE_LEN = OFF_ERR_STR + MAX_ERR_STR_LEN + 1  # 284


def fields_per_word(bits):
    """Entries of `bits` bits per u32 word (fields never straddle words)."""
    return 32 // max(1, bits)


def pack(values, bits):
    """RFC packing: least significant field first, 32 // bits per word."""
    fields = fields_per_word(bits)
    out = bytearray()
    for i in range(0, len(values), fields):
        w = 0
        for j, v in enumerate(values[i:i + fields]):
            w |= v << (j * bits)
        out += struct.pack("=I", w & 0xFFFFFFFF)
    return bytes(out)


_UNPACKED = {}


def unpack(packed, bits, count):
    """The first `count` fields of `bits` bits in the packed u32 words, least
    significant field first (the payload must hold them). Words are memoised
    per width (the fuzzer draws most of them from small pools), which keeps
    the model fast enough under TCG."""
    fields = fields_per_word(bits)
    mask = (1 << bits) - 1
    nwords = (count + fields - 1) // fields
    cache = _UNPACKED.setdefault(bits, {})
    out = []
    for (w,) in struct.iter_unpack("=I", packed[:4 * nwords]):
        t = cache.get(w)
        if t is None:
            t = tuple((w >> (f * bits)) & mask for f in range(fields))
            if len(cache) < 65536:
                cache[w] = t
        out.extend(t)
    del out[count:]
    return out


def pgtable(major, minor, page_total, page_offset, values, dev_count, pte_bits,
            userland=(0, 0), opcode=OPCODE_PAGE_TABLE_UPLOAD, page_count=None, packed=None):
    """A struct IpcPgTable message: the header, then `packed` (default: the
    packed `values`); page_count defaults to len(values)."""
    if packed is None:
        packed = pack(values, pte_bits)
    count = len(values) if page_count is None else page_count
    return HEADER.pack(HEADER_LEN + len(packed), opcode, userland[0], userland[1], major, minor,
                       page_total, page_offset, count, dev_count, pte_bits, 0) + packed


def window_size(pte_bits):
    """Most entries of `pte_bits` bits one request carries."""
    return MAX_WORDS * fields_per_word(pte_bits)


def windows(major, minor, values, dev_count, pte_bits, page_total=None, userland=(0, 0)):
    """The messages of a whole-table upload of `values`, in maximal windows."""
    page_total = len(values) if page_total is None else page_total
    per = window_size(pte_bits)
    return [pgtable(major, minor, page_total, off, values[off:off + per], dev_count, pte_bits, userland)
            for off in range(0, len(values), per)]


class Response:
    """A decoded struct IpcResponse."""

    def __init__(self, raw):
        assert len(raw) == RESPONSE_LEN, f"response is {len(raw)} bytes"
        (self.total_len, self.opcode, u0, u1, self.dev_major, self.dev_minor,
         self.status) = RESPONSE.unpack_from(raw)
        self.userland = (u0, u1)
        text = raw[OFF_ERR_STR:]
        assert b"\0" in text, "err_str not NUL-terminated"
        self.err_str = text.split(b"\0", 1)[0].decode()

    def __repr__(self):
        return f"Response(status={self.status}, err={self.err_str!r})"
