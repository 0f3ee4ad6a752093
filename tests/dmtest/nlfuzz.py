"""DM_SWITCH netlink fuzzer: malformed and mutated IpcPgTable uploads sent at
a live switch device, every reply checked against a reference model.

One worker owns one device and keeps a model of its table (model.Device),
updated only by replies with status 0. Messages are sent in batches (several
netlink messages per datagram, as the kernel allows), and "special" ones
(broken netlink or attribute headers, odd flags) one per datagram followed by
a ping whose reply marks the end of what the special one caused.

Checks, per message: every reply is an NLMSG_ERROR or a well-formed reply
(command 1, one attribute of type 11 holding a 284-byte IpcResponse, fields
echoed, err_str NUL-terminated, empty iff status is 0); the status is one the
reference validator allows (0 exactly when it predicts acceptance). Every
`check_every` messages, data placement on sampled regions is compared with
the model (markers written through the switch, read back from the paths) and
the userland words in `dmsetup status` with the model's.

Run as a process: python3 -m dmtest.nlfuzz CONFIG_JSON (with tests/ on the
import path); prints one JSON line of stats.
"""
import errno
import json
import random
import socket
import struct
import subprocess
import sys
import time
import traceback

from dmtest import model, placement
from dmtest.wire import (ATTR_MSG, ATTR_RESPONSE, FIELDS, HEADER, HEADER_LEN, MAX_MSG, OFF_DEV_COUNT,
                         OFF_DEV_MAJOR, OFF_ERR_STR, OFF_OPCODE, OFF_PAGE_COUNT, OFF_PAGE_OFFSET,
                         OFF_PAGE_TOTAL, OFF_PTE_BITS, RESPONSE, RESPONSE_LEN, window_size)
from dmtest.wire import CMD_GET_PAGE_TBL as CMD

NETLINK_GENERIC = 16
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP = 1, 4, 8, 0x300
SOL_NETLINK, NETLINK_CAP_ACK = 270, 10
SO_RCVBUFFORCE = 33
U32_EDGES = [0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 127, 128, 255, 256, 4095, 4096, 8191, 8192, 8193,
             16383, 16384, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0xFFFFF, 0x100000, 0x7FFFFFFF, 0x80000000,
             0xFFFFDFFF, 0xFFFFE000, 0xFFFFFFE0, 0xFFFFFFF0, 0xFFFFFFFE, 0xFFFFFFFF]
U16_EDGES = [0, 1, 2, 3, 4, 5, 255, 256, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
U8_EDGES = [0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 64, 127, 128, 255]
# (offset, size) of the header fields the kernel checks.
HOT_FIELDS = [(OFF_OPCODE, 4), (OFF_DEV_MAJOR, 4), (OFF_DEV_MAJOR + 4, 4), (OFF_PAGE_TOTAL, 4),
              (OFF_PAGE_OFFSET, 4), (OFF_PAGE_COUNT, 4), (OFF_DEV_COUNT, 2), (OFF_PTE_BITS, 1)]


def attr(kind, payload, length=None):
    n = 4 + len(payload) if length is None else length
    a = struct.pack("=HH", n & 0xFFFF, kind) + payload
    return a + b"\0" * ((4 - len(a) % 4) % 4)


def kernel_attr_view(attrs):
    """What a legacy (liberal) genetlink parse with maxattr 1 leaves in
    tb[1]: ('err',) if validation fails, else the payload or None."""
    tb = None
    rem = attrs
    while len(rem) >= 4:
        n, kind = struct.unpack_from("=HH", rem)
        if n < 4 or n > len(rem):
            break
        t = kind & 0x3FFF
        if t == ATTR_MSG:
            if n - 4 > MAX_MSG:
                return ("err",)
            tb = rem[4:n]
        rem = rem[(n + 3) & ~3:]
    return tb


class Stats(dict):
    def bump(self, key, n=1):
        self[key] = self.get(key, 0) + n


class NoReply(Exception):
    """The kernel did not answer (recorded as a violation)."""


class Fuzzer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rng = random.Random(cfg["seed"])
        self.fid = cfg["family_id"]
        self.dev = model.Device(cfg["major"], cfg["minor"], cfg["dev_count"], cfg["regions"], cfg.get("fmt", "rfc"))
        self.live = {(cfg["major"], cfg["minor"]): cfg["dev_count"]}
        self.forbidden = {tuple(x) for x in cfg.get("forbidden", [])}
        self.other_devts = [tuple(x) for x in cfg.get("other_devts", [])]
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        self.sock.settimeout(120)
        self.seq = self.rng.randrange(1 << 30)
        self.pending = b""
        self.stats = Stats()
        self.violations = []
        self.statuses = Stats()
        self.pools = {}
        self.logf = open(cfg["log"], "a") if cfg.get("log") else None
        self.t0 = time.time()

    def log(self, text):
        if self.logf:
            self.logf.write(f"{time.time() - self.t0:8.1f} {text}\n")
            self.logf.flush()

    # ------------------------------------------------------------ framing

    def next_seq(self):
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def frame(self, attrs, seq, cmd=CMD, version=1, reserved=0, flags=NLM_F_REQUEST, length=None):
        body = struct.pack("=BBH", cmd, version, reserved) + attrs
        n = 16 + len(body) if length is None else length
        return struct.pack("=IHHII", n, self.fid, flags, seq, 0) + body

    def recv_msgs(self, pending=()):
        """The messages of one datagram from the kernel. No reply within the
        socket's timeout is a violation (naming the `pending` cases) that
        ends the run."""
        try:
            data = self.sock.recv(1 << 18)
        except TimeoutError:
            self.violation("no reply within 120 s", pending=[
                {"kind": c["kind"], "seq": c["seq"], "len": len(c["view"]) if isinstance(c["view"], bytes) else None,
                 "head": c["view"][:48].hex() if isinstance(c["view"], bytes) else str(c["view"])}
                for c in pending])
            raise NoReply from None
        out = []
        while len(data) >= 16:
            n, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data)
            if n < 16 or n > len(data):
                self.violation("malformed reply framing", n=n, left=len(data))
                break
            out.append((kind, flags, seq, data[16:n]))
            data = data[(n + 3) & ~3:]
        return out

    # ------------------------------------------------------------ checks

    def violation(self, what, **kw):
        self.stats.bump("violations")
        if len(self.violations) < 30:
            kw["what"] = what
            self.violations.append({k: (v.hex() if isinstance(v, bytes) else v) for k, v in kw.items()})
            # In the log at once: a sender that dies later still leaves it.
            self.log(f"violation: {json.dumps(self.violations[-1], default=str)}")

    def check_reply(self, case, kind, payload):
        """Validates one reply message to `case`; returns the status (or
        ('nlerr', errno))."""
        if kind == NLMSG_ERROR:
            (err,) = struct.unpack_from("=i", payload)
            if err > 0:
                self.violation("NLMSG_ERROR with positive error", err=err)
            if err == 0:
                return ("ack",)
            self.statuses.bump(f"nlerr{-err}")
            return ("nlerr", -err)
        if kind != self.fid:
            self.violation("reply of unexpected type", kind=kind)
            return ("bad",)
        gcmd, ver, _res = struct.unpack_from("=BBH", payload)
        attrs = {}
        rem = payload[4:]
        while len(rem) >= 4:
            n, t = struct.unpack_from("=HH", rem)
            if n < 4 or n > len(rem):
                self.violation("malformed reply attribute", n=n)
                return ("bad",)
            if t in attrs:
                self.violation("duplicate reply attribute", t=t)
            attrs[t] = rem[4:n]
            rem = rem[(n + 3) & ~3:]
        if gcmd != CMD or ver != 1 or set(attrs) != {ATTR_RESPONSE}:
            self.violation("reply header", cmd=gcmd, ver=ver, attrs=sorted(attrs))
            return ("bad",)
        raw = attrs[ATTR_RESPONSE]
        if len(raw) != RESPONSE_LEN:
            self.violation("reply length", n=len(raw))
            return ("bad",)
        total, opcode, u0, u1, ma, mi, status = RESPONSE.unpack_from(raw)
        text = raw[OFF_ERR_STR:]
        if b"\0" not in text:
            self.violation("err_str not NUL-terminated", raw=raw)
            return ("bad",)
        msg = text.split(b"\0", 1)[0]
        if total != RESPONSE_LEN or opcode != 1:
            self.violation("reply total_len/opcode", total=total, opcode=opcode)
        view = case["view"]
        if view is not None and not isinstance(view, tuple):
            req = model.Request(view)
            if ((u0, u1), ma, mi) != req.echo():
                self.violation("reply echo", got=[u0, u1, ma, mi], want=list(req.echo()))
        if (status == 0) != (msg == b""):
            self.violation("err_str vs status", status=status, msg=msg.decode(errors="replace"))
        if any(c < 0x20 or c > 0x7E for c in msg):
            self.violation("err_str not printable", msg=msg)
        self.statuses.bump(f"s{status}")
        return status

    def judge(self, case, status):
        """Compares a genl reply's status with the prediction and updates the model."""
        view = case["view"]
        if view is None or isinstance(view, tuple):
            allowed, q = {errno.EINVAL}, None
        else:
            allowed, q = self.dev.predict_upload(view, self.live)
        if status == 0:
            if allowed:
                self.violation("accepted a message the model refuses", allowed=sorted(allowed),
                               payload=view[:96] if isinstance(view, bytes) else None, kind=case["kind"])
                # Follow the kernel so the model stays in step.
                if q is not None and isinstance(view, bytes):
                    try:
                        self.dev.apply_upload(q)
                    except Exception:  # noqa: BLE001  unparseable: resync at the next checkpoint
                        self.stats.bump("model_lost")
            else:
                self.dev.apply_upload(q)
                self.stats.bump("accepted")
        else:
            if not allowed:
                self.violation("refused a valid message", status=status, kind=case["kind"],
                               payload=view[:96])
            elif status not in allowed:
                self.violation("wrong errno", status=status, allowed=sorted(allowed), kind=case["kind"])
            self.stats.bump("refused")

    # ------------------------------------------------------------ generators

    def devt_ok(self, payload):
        """False if `payload` (what the kernel parses: bytes, or None/('err',)
        when it gets no attribute) addresses another sender's device."""
        if not isinstance(payload, bytes) or len(payload) < OFF_DEV_MAJOR + 8:
            return True
        ma, mi = struct.unpack_from("=II", payload, OFF_DEV_MAJOR)
        return (ma, mi) not in self.forbidden

    def word_pool(self, bits):
        """Packed words whose every field is a valid path (random, or one path repeated)."""
        pool = self.pools.get(bits)
        if pool is None:
            r, dc, fields = self.rng, self.dev.dev_count, 32 // bits
            words = []
            for k in range(192):
                if k < dc:
                    vals = [k] * fields
                else:
                    vals = [r.randrange(dc) for _ in range(fields)]
                w = 0
                for f, v in enumerate(vals):
                    w |= v << (f * bits)
                words.append(struct.pack("=I", w))
            pool = self.pools[bits] = words
        return pool

    def packed_values(self, count, bits):
        fields = 32 // bits
        n = (count + fields - 1) // fields
        pool = self.word_pool(bits)
        if self.rng.random() < 0.3:
            return pool[self.rng.randrange(self.dev.dev_count)] * n
        return b"".join(self.rng.choices(pool, k=n))

    def valid_request(self):
        """A request the model expects to be accepted (mostly)."""
        r, d = self.rng, self.dev
        dc, regions = d.dev_count, d.regions
        mb = model.min_pte_bits(dc)
        cur = d.table
        roll = r.random()
        if cur is not None and roll < 0.55:
            total, bits = cur.page_total, cur.pte_bits
        else:
            total = r.choice([regions, regions, regions + r.randrange(1, 100), r.randrange(1, regions + 1),
                              3 * model.CHUNK, 1 << 20, r.randrange(0, 64)])
            if r.random() < 0.01:
                total = 0xFFFFFFFF
            bits = r.choice([mb, mb, mb + 1, 4, 8, 16, 31, 32, r.randrange(mb, 33)])
        fields = 32 // bits
        if total and r.random() < 0.08:
            # Free a chunk (page_count 0 at a chunk boundary, page_offset <= page_total).
            nch = (total + model.CHUNK - 1) // model.CHUNK
            off = r.randrange(0, nch + 1) * model.CHUNK
            off = min(off, total - total % model.CHUNK) if off > total else off
            return self.build(total, off, b"", bits, count=0)
        if total == 0:
            return self.build(0, 0, b"", bits, count=0)
        # Window: aligned offset, mostly small, sometimes near the table end,
        # a chunk boundary, or the largest one a message holds.
        maxcount = window_size(bits)
        pick = r.random()
        if pick < 0.5:
            off = r.randrange(0, min(total, regions + 64))
        elif pick < 0.65:
            off = max(0, min(total - 1, r.choice([model.CHUNK, 2 * model.CHUNK]) - r.randrange(0, 64)))
        elif pick < 0.8:
            # Up to the table's last region (2^32 - 2 for the largest table:
            # bug 4 in docs/reliability.md).
            off = max(0, total - r.randrange(1, 700))
        else:
            off = r.randrange(0, total)
        off -= off % fields
        room = total - off
        count = min(room, r.choice([1, 2, fields, fields + 1, r.randrange(1, 64), r.randrange(1, 600)]))
        if r.random() < 0.004:
            count = min(room, maxcount)
        count = max(1, count)
        return self.build(total, off, self.packed_values(count, bits), bits, count=count)

    def build(self, total, off, packed, bits, count, major=None, minor=None, dev_count=None):
        d = self.dev
        u = (self.rng.getrandbits(32), self.rng.getrandbits(32))
        hdr = HEADER.pack(HEADER_LEN + len(packed), 1, u[0], u[1], d.major if major is None else major,
                          d.minor if minor is None else minor, total, off, count,
                          d.dev_count if dev_count is None else dev_count, bits, 0)
        return hdr + packed

    def mutate(self, p):
        r = self.rng
        b = bytearray(p)
        for _ in range(r.choice([1, 1, 1, 2, 3])):
            m = r.random()
            if m < 0.35 and len(b) >= HEADER_LEN:
                off, size = r.choice(FIELDS if r.random() < 0.3 else HOT_FIELDS)
                edges = {4: U32_EDGES, 2: U16_EDGES, 1: U8_EDGES}[size]
                v = r.choice(edges) if r.random() < 0.8 else r.getrandbits(8 * size)
                if size == 4 and off in (OFF_PAGE_TOTAL, OFF_PAGE_OFFSET, OFF_PAGE_COUNT) and r.random() < 0.3:
                    v = (self.dev.regions + r.randrange(-3, 4)) & 0xFFFFFFFF
                b[off:off + size] = v.to_bytes(size, "little")
            elif m < 0.5:
                b = b[:r.randrange(0, len(b) + 1)]
            elif m < 0.6:
                b += r.randbytes(r.choice([1, 3, 4, 8, 64]))
            elif m < 0.75 and len(b):
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
            elif m < 0.85 and len(b) > HEADER_LEN:
                # An entry past dev_count somewhere in the window.
                bits = b[OFF_PTE_BITS] or 1
                if bits <= 32:
                    fields = 32 // bits
                    nwords = (len(b) - HEADER_LEN) // 4
                    if nwords:
                        w = r.randrange(nwords)
                        (word,) = struct.unpack_from("=I", b, HEADER_LEN + 4 * w)
                        f = r.randrange(fields)
                        mask = (1 << bits) - 1
                        val = r.choice([self.dev.dev_count, mask, self.dev.dev_count + 1]) & mask
                        word = (word & ~(mask << (f * bits))) | (val << (f * bits))
                        struct.pack_into("=I", b, HEADER_LEN + 4 * w, word & 0xFFFFFFFF)
            elif m < 0.95 and len(b) >= OFF_DEV_MAJOR + 8:
                ma, mi = r.choice(self.other_devts + [(0, 0), (4095, 0xFFFFF), (4096, 0), (0, 1 << 20),
                                                      (0xFFFFFFFF, 0xFFFFFFFF),
                                                      (self.dev.major, (self.dev.minor + r.randrange(1, 9)))])
                struct.pack_into("=II", b, OFF_DEV_MAJOR, ma & 0xFFFFFFFF, mi & 0xFFFFFFFF)
            else:
                # Huge page_count / page_offset near 2^32 with a short payload.
                if len(b) >= HEADER_LEN:
                    struct.pack_into("=III", b, OFF_PAGE_TOTAL, 0xFFFFFFFF, r.choice([0xFFFFFFE0, 0xFFFFE000, 0x80000000]),
                                     r.choice([32, 0x1FFF, 0xFFFFFFFF, 0x2000]))
        return bytes(b)

    def random_payload(self):
        r = self.rng
        n = r.choice([0, 1, 4, 39, 40, 41, 44, 48, 64, 100, 284, r.randrange(0, 200), r.randrange(0, 4096)])
        return r.randbytes(n)

    def regular_case(self):
        r = self.rng
        roll = r.random()
        while True:
            if roll < self.cfg.get("valid_share", 0.08):
                p, kind = self.valid_request(), "valid"
            elif roll < 0.85:
                p, kind = self.mutate(self.valid_request()), "mutated"
            else:
                p, kind = self.random_payload(), "random"
            # The kernel judges what it parses: past 65,531 bytes nla_len
            # wraps (mod 2^16) and announces a short attribute, and the rest
            # of the payload is parsed as further attributes.
            a = attr(ATTR_MSG, p)
            view = kernel_attr_view(a)
            if self.devt_ok(view):
                break
        cmd, version, reserved = CMD, 1, 0
        if r.random() < 0.05:
            version = r.choice([0, 2, 255])
        if r.random() < 0.03:
            reserved = r.choice([1, 0x8000, 0xFFFF])
        return {"kind": kind, "attrs": a, "view": view, "cmd": cmd, "version": version,
                "reserved": reserved, "nlerr": isinstance(view, tuple)}

    def special_case(self):
        """Broken netlink/attribute framing; returns (datagram, case)."""
        r = self.rng
        while True:
            p = self.valid_request() if r.random() < 0.5 else self.mutate(self.valid_request())
            if self.devt_ok(p):
                break
        seq = self.next_seq()
        what = r.choice(["badcmd", "noattr", "attr0", "attr2", "nested", "byteorder", "short_nla", "long_nla",
                         "tiny_nla", "two_attrs", "oversize", "nlmsg_short", "nlmsg_long", "nlmsg_nogenl",
                         "dump", "noreq_ack", "ack", "echo", "trailing"])
        flags = NLM_F_REQUEST | NLM_F_ACK
        cmd, length = CMD, None
        a = attr(ATTR_MSG, p)
        if what == "badcmd":
            cmd = r.choice([0, 2, 3, 127, 255])
        elif what == "noattr":
            a = b""
        elif what == "attr0":
            a = attr(0, p)
        elif what == "attr2":
            a = attr(2, p)
        elif what == "nested":
            a = attr(ATTR_MSG | 0x8000, p)
        elif what == "byteorder":
            a = attr(ATTR_MSG | 0x4000, p)
        elif what == "short_nla":
            a = attr(ATTR_MSG, p, length=4 + r.randrange(0, max(1, len(p))))
        elif what == "long_nla":
            a = attr(ATTR_MSG, p, length=4 + len(p) + r.randrange(1, 64))
        elif what == "tiny_nla":
            a = attr(ATTR_MSG, p, length=r.randrange(0, 4))
        elif what == "two_attrs":
            q = self.mutate(self.valid_request())
            if not self.devt_ok(q):
                q = p
            a = attr(ATTR_MSG, q) + attr(ATTR_MSG, p)
        elif what == "oversize":
            a = attr(ATTR_MSG, p + b"\0" * (MAX_MSG + 1 - len(p)))
        elif what == "nlmsg_short":
            length = r.randrange(0, 16)
        elif what == "nlmsg_long":
            length = 20 + len(a) + r.randrange(1, 4096)
        elif what == "nlmsg_nogenl":
            length = r.randrange(16, 20)
            a = b""
        elif what == "dump":
            flags = NLM_F_REQUEST | NLM_F_DUMP
        elif what == "noreq_ack":
            flags = NLM_F_ACK
        elif what == "ack":
            flags = NLM_F_REQUEST | NLM_F_ACK
        elif what == "echo":
            flags = NLM_F_REQUEST | NLM_F_ECHO
        elif what == "trailing":
            a = a + struct.pack("=HH", 0xFFFF, 1) + b"\x01\x02"
        dgram = self.frame(a, seq, cmd=cmd, flags=flags, length=length)
        # The kernel's view of the request.
        if length is not None and (length < 16 or length > len(dgram)):
            view, expect = None, "silent"
        elif length is not None and length < 20:
            view, expect = None, "nlerr"
        elif not flags & NLM_F_REQUEST:
            view, expect = None, "ack_only"
        elif cmd != CMD or flags & NLM_F_DUMP == NLM_F_DUMP:
            view, expect = None, "nlerr"
        else:
            view = kernel_attr_view(dgram[20:])
            expect = "nlerr" if isinstance(view, tuple) else "reply"
        if not self.devt_ok(view):
            return None, None
        return dgram, {"kind": "special:" + what, "seq": seq, "view": view, "expect": expect}

    # ------------------------------------------------------------ running

    def ping(self):
        seq = self.next_seq()
        p = self.build(64, 0, b"\0" * 8, 2, 32, major=4095, minor=0xFFFF0 + (seq & 0xF))
        self.sock.send(self.frame(attr(ATTR_MSG, p), seq))
        return seq

    def run_batch(self, n):
        cases = [self.regular_case() for _ in range(n)]
        dgram = b""
        for c in cases:
            c["seq"] = self.next_seq()
            dgram += self.frame(c["attrs"], c["seq"], cmd=c["cmd"], version=c["version"], reserved=c["reserved"])
        self.sock.send(dgram)
        got = 0
        while got < len(cases):
            for kind, _flags, seq, payload in self.recv_msgs(cases[got:]):
                if got >= len(cases):
                    self.violation("extra reply", seq=seq)
                    continue
                c = cases[got]
                if seq != c["seq"]:
                    self.violation("reply out of order", seq=seq, want=c["seq"])
                got += 1
                st = self.check_reply(c, kind, payload)
                if c["nlerr"]:
                    if not (isinstance(st, tuple) and st[0] == "nlerr"):
                        self.violation("expected NLMSG_ERROR for an oversized attribute", got=str(st))
                    continue
                if isinstance(st, tuple):
                    if st[0] == "nlerr":
                        self.violation("NLMSG_ERROR for a well-framed message", errno=st[1], kind=c["kind"])
                    continue
                self.judge(c, st)
        self.stats.bump("messages", len(cases))
        for c in cases:
            self.stats.bump("kind:" + c["kind"])

    def run_special(self):
        dgram, case = self.special_case()
        if dgram is None:
            return
        self.sock.send(dgram)
        ping = self.ping()
        replies = []
        while True:
            msgs = self.recv_msgs([case])
            done = False
            for kind, _flags, seq, payload in msgs:
                if seq == ping:
                    done = True
                    continue
                if seq != case["seq"]:
                    self.violation("reply with unknown seq", seq=seq)
                    continue
                replies.append((kind, payload))
            if done:
                break
        self.stats.bump("messages")
        self.stats.bump("kind:" + case["kind"])
        genl = [(k, p) for k, p in replies if k != NLMSG_ERROR]
        errs = [struct.unpack_from("=i", p)[0] for k, p in replies if k == NLMSG_ERROR]
        exp = case["expect"]
        if exp == "silent" and replies:
            self.violation("reply to a message the kernel must drop", kind=case["kind"], n=len(replies))
        if exp == "nlerr" and (genl or not any(e < 0 for e in errs)):
            self.violation("expected NLMSG_ERROR", kind=case["kind"], errs=errs, genl=len(genl))
        if exp == "ack_only" and (genl or errs != [0]):
            self.violation("expected a bare ACK", kind=case["kind"], errs=errs, genl=len(genl))
        if exp == "reply":
            if len(genl) != 1:
                self.violation("expected one reply", kind=case["kind"], n=len(genl), errs=errs)
            if any(e < 0 for e in errs):
                self.violation("NLMSG_ERROR next to a reply", kind=case["kind"], errs=errs)
        for kind, payload in genl:
            st = self.check_reply(case, kind, payload)
            if not isinstance(st, tuple):
                self.judge(case, st)
        for e in errs:
            if e > 0:
                self.violation("positive errno in NLMSG_ERROR", err=e)
            elif e < 0:
                self.statuses.bump(f"nlerr{-e}")

    # ------------------------------------------------------------ placement

    def checkpoint(self, tag):
        self.log(f"checkpoint {tag}: {dict(self.stats)}")

        cfg = self.cfg
        lo = cfg.get("check_from", 0)
        regions = self.dev.regions
        r = self.rng
        sample = sorted({lo, regions - 1} | {r.randrange(lo, regions) for _ in range(cfg.get("sample", 8))})

        bad = placement.mismatches(cfg["path"], cfg["paths"], cfg["starts"], cfg["region"], self.dev.lookup, sample,
                                   f"{cfg['name']}{tag}")
        if bad:
            self.violation("placement differs from the model", regions=bad[:8])
            self.resync()
        st = subprocess.run(["dmsetup", "status", cfg["name"]], capture_output=True, text=True).stdout.split()
        u = (int(st[-4], 16), int(st[-3], 16))
        if u != self.dev.userland():
            self.violation("status userland differs from the model", got=list(u), want=list(self.dev.userland()))
        self.stats.bump("checkpoints")
        self.stats.bump("regions_checked", len(sample))
        self.log(f"checkpoint {tag} done")

    def resync(self):
        """After a divergence: put a known table in place (and in the model)."""
        d = self.dev
        bits = model.min_pte_bits(d.dev_count)
        fields = 32 // bits
        p = self.build(d.regions, 0, b"\0\0\0\0" * ((d.regions + fields - 1) // fields), bits, d.regions)
        seq = self.next_seq()
        self.sock.send(self.frame(attr(ATTR_MSG, p), seq))
        for kind, _f, s, payload in self.recv_msgs():
            st = self.check_reply({"view": p}, kind, payload)
            if st == 0:
                d.apply_upload(model.Request(p))

    def run(self):
        cfg = self.cfg
        deadline = time.time() + cfg["seconds"]
        target = cfg["messages"]
        every = cfg.get("check_every", 2000)
        next_check = every
        t0 = time.time()
        self.log(f"start: {cfg['seconds']} s, {target} messages")
        self.checkpoint("c0")
        while self.stats.get("messages", 0) < target and time.time() < deadline:
            try:
                if self.rng.random() < cfg.get("special_share", 0.12):
                    self.run_special()
                else:
                    self.run_batch(self.rng.randrange(1, cfg.get("batch", 16) + 1))
            except NoReply:
                break
            if self.stats.get("messages", 0) >= next_check:
                self.checkpoint(f"c{next_check}")
                next_check += every
            if len(self.violations) >= 30:
                break
        self.log(f"loop done: {dict(self.stats)}")
        self.checkpoint("end")
        self.stats["seconds"] = round(time.time() - t0, 1)
        self.stats["rate"] = round(self.stats.get("messages", 0) / max(0.001, time.time() - t0), 1)
        return {"stats": dict(self.stats), "statuses": dict(self.statuses), "violations": self.violations}


def main():
    cfg = json.loads(sys.argv[1])
    fz = Fuzzer(cfg)
    try:
        out = fz.run()
    except BaseException:
        # The sender's log keeps the cause even if the test never reads stderr.
        fz.log("crashed: " + traceback.format_exc())
        raise
    print(json.dumps(out))


if __name__ == "__main__":
    main()
