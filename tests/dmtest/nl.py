"""A small, independent DM_SWITCH netlink client (raw AF_NETLINK sockets).

It implements the ABI from include/uapi/dm-switch.h alone, without the agent,
so the tests prove the wire format as an RFC-era agent would use it.
"""
import errno
import socket
import struct

from dmtest.wire import (ATTR_MSG, ATTR_RESPONSE, CMD_GET_PAGE_TBL, FAMILY_NAME, FAMILY_VERSION,
                         Response, windows)

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4



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
    """The genetlink core refused the request with NLMSG_ERROR."""

    def __init__(self, err):
        super().__init__(f"NLMSG_ERROR {err} ({errno.errorcode.get(-err, '?')})")
        self.errno = -err


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


def upload(client, major, minor, values, dev_count, pte_bits, page_total=None, userland=(0, 0)):
    """Uploads a whole table in maximal windows; returns the responses."""
    return [client.send(m) for m in windows(major, minor, values, dev_count, pte_bits, page_total, userland)]
