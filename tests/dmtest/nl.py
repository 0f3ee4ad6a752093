"""A small, independent DM_SWITCH netlink client (raw AF_NETLINK sockets).

It implements the ABI from include/uapi/dm-switch.h alone, without the agent,
so the tests prove the wire format as an RFC-era agent would use it.
"""
import errno
import socket
import struct

from dmtest.wire import (ATTR_DEV_MAJOR, ATTR_DEV_MINOR, ATTR_MSG, ATTR_PATH_STATS, ATTR_RESPONSE,
                         CMD_DUMP_PAGE_TBL, CMD_DUMP_PATH_STATS, CMD_GET_PAGE_TBL, FAMILY_NAME, FAMILY_VERSION,
                         Response, path_stats_records, windows)

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLM_F_ACK_TLVS = 0x200
NLM_F_DUMP = 0x300
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NLMSGERR_ATTR_MSG = 1



def _attr(kind, payload):
    a = struct.pack("=HH", 4 + len(payload), kind) + payload
    return a + b"\0" * ((4 - len(a) % 4) % 4)


def _parse_attrs(data):
    attrs = {}
    while len(data) >= 4:
        length, kind = struct.unpack_from("=HH", data)
        if length < 4:
            break
        attrs[kind & 0x3FFF] = data[4:length]
        data = data[(length + 3) & ~3:]
    return attrs


class NetlinkError(Exception):
    """The request was refused with NLMSG_ERROR (errno positive here; `msg`
    is the extended-ack text, if any)."""

    def __init__(self, err, msg=None):
        super().__init__(f"NLMSG_ERROR {err} ({errno.errorcode.get(-err, '?')}){': ' + msg if msg else ''}")
        self.errno = -err
        self.msg = msg


def _ext_ack_msg(data, length, flags):
    """The NLMSGERR_ATTR_MSG text of an NLMSG_ERROR message, if any."""
    if not flags & NLM_F_ACK_TLVS:
        return None
    (inner_len,) = struct.unpack_from("=I", data, 20)
    # The echoed request is capped to its header when NLM_F_CAPPED is set.
    start = 20 + (16 if flags & 0x100 else (inner_len + 3) & ~3)
    attrs = _parse_attrs(data[start:length])
    text = attrs.get(NLMSGERR_ATTR_MSG)
    return text.split(b"\0", 1)[0].decode() if text else None


class Client:
    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.sock.settimeout(120)
        self.seq = 0

    def close(self):
        self.sock.close()

    def request(self, family, cmd, version, payload, flags=NLM_F_REQUEST):
        """Sends one genl message and returns (genl cmd, attrs) of the reply."""
        self.seq += 1
        body = struct.pack("=BBH", cmd, version, 0) + payload
        hdr = struct.pack("=IHHII", 16 + len(body), family, flags, self.seq, 0)
        self.sock.send(hdr + body)
        while True:
            data = self.sock.recv(1 << 17)
            length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data)
            if kind == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, 16)
                if err == 0:
                    continue  # an ACK
                raise NetlinkError(err)
            gcmd, _ver, _res = struct.unpack_from("=BBH", data, 16)
            return gcmd, _parse_attrs(data[20:length]), seq

    def family_id(self, name=FAMILY_NAME):
        _, attrs, _ = self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1,
                                   _attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"))
        return struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID])[0]

    def send_raw(self, payload_attr_bytes, cmd=CMD_GET_PAGE_TBL):
        """Sends raw attribute bytes; returns the decoded IpcResponse."""
        gcmd, attrs, _ = self.request(self.family_id(), cmd, FAMILY_VERSION, payload_attr_bytes)
        assert gcmd == CMD_GET_PAGE_TBL, f"reply command {gcmd}"
        assert ATTR_RESPONSE in attrs, f"reply attributes {sorted(attrs)}"
        return Response(attrs[ATTR_RESPONSE])

    def send(self, msg):
        return self.send_raw(_attr(ATTR_MSG, msg))

    def dump_raw(self, attrs, cmd=CMD_DUMP_PAGE_TBL, flags=NLM_F_REQUEST | NLM_F_DUMP, between=None):
        """Sends a dump request with raw attribute bytes; returns the
        payloads of the reply's messages' one attribute (NETLINK_ATTR_MSG,
        or DM_SWITCH_ATTR_PATH_STATS for that command), in order. Raises
        NetlinkError for an NLMSG_ERROR. `between(i)` runs after the i-th
        datagram is read (to act while the dump is in progress)."""
        self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        fid = self.family_id()
        self.seq += 1
        body = struct.pack("=BBH", cmd, FAMILY_VERSION, 0) + attrs
        self.sock.send(struct.pack("=IHHII", 16 + len(body), fid, flags, self.seq, 0) + body)
        out, n = [], 0
        while True:
            data = self.sock.recv(1 << 17)
            n += 1
            off = 0
            while off < len(data):
                length, kind, mflags, seq, _pid = struct.unpack_from("=IHHII", data, off)
                msg = data[off:off + length]
                off += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if kind == NLMSG_DONE:
                    (err,) = struct.unpack_from("=i", msg, 16)
                    if err:
                        raise NetlinkError(err)
                    return out
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", msg, 16)
                    if err:
                        raise NetlinkError(err, _ext_ack_msg(msg, length, mflags))
                    continue
                gcmd, _ver, _res = struct.unpack_from("=BBH", msg, 16)
                assert gcmd == cmd, f"dump message with command {gcmd}"
                got = _parse_attrs(msg[20:length])
                attr = ATTR_PATH_STATS if cmd == CMD_DUMP_PATH_STATS else ATTR_MSG
                assert set(got) == {attr}, f"dump message attributes {sorted(got)}"
                out.append(got[attr])
            if between:
                between(n)

    def dump(self, major, minor, **kw):
        """The windows of a dump of device major:minor."""
        return self.dump_raw(_attr(ATTR_DEV_MAJOR, struct.pack("=I", major)) +
                             _attr(ATTR_DEV_MINOR, struct.pack("=I", minor)), **kw)

    def path_stats(self, major, minor):
        """Each path's (ios, sectors) of device major:minor, by stat group
        (read, write, discard, flush), from DM_SWITCH_CMD_DUMP_PATH_STATS;
        checks the records come one per path, in order."""
        payloads = self.dump(major, minor, cmd=CMD_DUMP_PATH_STATS)
        records = [r for p in payloads for r in path_stats_records(p)]
        assert [r[0] for r in records] == list(range(len(records))), "records out of path order"
        return [(ios, sectors) for _, ios, sectors in records]


def upload(client, major, minor, values, dev_count, pte_bits, page_total=None, userland=(0, 0)):
    """Uploads a whole table in maximal windows; returns the responses."""
    return [client.send(m) for m in windows(major, minor, values, dev_count, pte_bits, page_total, userland)]
