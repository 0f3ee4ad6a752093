//! The generic-netlink channel to the kernel module: the `DM_SWITCH` family
//! as a [`GenlFamily`], family-id resolution through the controller
//! (`CTRL_CMD_GETFAMILY`, falling back to `/sys/module/dm_switch/familyid`),
//! one request/reply exchange per uploaded window, and the dumps that read
//! the live table back (`NETLINK_CMD_DUMP_PAGE_TBL`) and the I/O sent to
//! each path (`DM_SWITCH_CMD_DUMP_PATH_STATS`).
//!
//! Framing is done by `netlink-packet-core`/`-generic`; the socket is
//! `netlink-sys`. This module only adds the family's attributes.

use std::io;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, NetlinkBuffer, NetlinkDeserializable,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

use crate::wire;

/// Where the RFC module publishes its family id.
pub const SYSFS_FAMILY_ID: &str = "/sys/module/dm_switch/familyid";

/// How long to wait for the kernel's answer to one message.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// `NLM_F_CAPPED`: the error echoes only the request's header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended-ack attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the extended-ack text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// One attribute of a `DM_SWITCH` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmSwitchAttr {
    /// `NETLINK_ATTR_MSG`: an encoded `IpcPgTable`.
    Msg(Vec<u8>),
    /// `DM_SWITCH_ATTR_RESPONSE`: an encoded `IpcResponse`.
    Response(Vec<u8>),
    /// `DM_SWITCH_ATTR_DEV_MAJOR`: the device a dump reads.
    DevMajor(u32),
    /// `DM_SWITCH_ATTR_DEV_MINOR`: the device a dump reads.
    DevMinor(u32),
    /// `DM_SWITCH_ATTR_PATH_STATS`: `struct dm_switch_path_stats` records.
    PathStats(Vec<u8>),
    /// Anything else, kept as is.
    Other(DefaultNla),
}

impl Nla for DmSwitchAttr {
    fn value_len(&self) -> usize {
        match self {
            DmSwitchAttr::Msg(v) | DmSwitchAttr::Response(v) | DmSwitchAttr::PathStats(v) => {
                v.len()
            }
            DmSwitchAttr::DevMajor(_) | DmSwitchAttr::DevMinor(_) => 4,
            DmSwitchAttr::Other(n) => n.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            DmSwitchAttr::Msg(_) => wire::ATTR_MSG,
            DmSwitchAttr::Response(_) => wire::ATTR_RESPONSE,
            DmSwitchAttr::DevMajor(_) => wire::ATTR_DEV_MAJOR,
            DmSwitchAttr::DevMinor(_) => wire::ATTR_DEV_MINOR,
            DmSwitchAttr::PathStats(_) => wire::ATTR_PATH_STATS,
            DmSwitchAttr::Other(n) => n.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            DmSwitchAttr::Msg(v) | DmSwitchAttr::Response(v) | DmSwitchAttr::PathStats(v) => {
                buffer.copy_from_slice(v)
            }
            DmSwitchAttr::DevMajor(n) | DmSwitchAttr::DevMinor(n) => {
                buffer.copy_from_slice(&n.to_ne_bytes())
            }
            DmSwitchAttr::Other(n) => n.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DmSwitchAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        Ok(match buf.kind() {
            wire::ATTR_MSG => DmSwitchAttr::Msg(buf.value().to_vec()),
            wire::ATTR_RESPONSE => DmSwitchAttr::Response(buf.value().to_vec()),
            wire::ATTR_PATH_STATS => DmSwitchAttr::PathStats(buf.value().to_vec()),
            kind @ (wire::ATTR_DEV_MAJOR | wire::ATTR_DEV_MINOR) if buf.value().len() == 4 => {
                let v = wire::read_u32(buf.value(), 0);
                if kind == wire::ATTR_DEV_MAJOR {
                    DmSwitchAttr::DevMajor(v)
                } else {
                    DmSwitchAttr::DevMinor(v)
                }
            }
            _ => DmSwitchAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The payload of a `DM_SWITCH` generic-netlink message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmSwitchMsg {
    /// Generic-netlink command (`NETLINK_CMD_GET_PAGE_TBL`).
    pub cmd: u8,
    /// Attributes.
    pub nlas: Vec<DmSwitchAttr>,
}

impl DmSwitchMsg {
    /// A page-table upload request carrying one encoded `IpcPgTable`.
    pub fn upload(payload: Vec<u8>) -> Self {
        Self {
            cmd: wire::CMD_GET_PAGE_TBL,
            nlas: vec![DmSwitchAttr::Msg(payload)],
        }
    }

    /// A dump request of `cmd` (`NETLINK_CMD_DUMP_PAGE_TBL` or
    /// `DM_SWITCH_CMD_DUMP_PATH_STATS`) for the device `major:minor`.
    pub fn dump(cmd: u8, major: u32, minor: u32) -> Self {
        Self {
            cmd,
            nlas: vec![DmSwitchAttr::DevMajor(major), DmSwitchAttr::DevMinor(minor)],
        }
    }

    /// The records of the `DM_SWITCH_ATTR_PATH_STATS` attribute, if present;
    /// an error if its length is not a whole number of records.
    pub fn path_stats(&self) -> Option<Result<Vec<wire::PathStats>>> {
        self.nlas.iter().find_map(|n| match n {
            DmSwitchAttr::PathStats(v) if v.len() % wire::path_stats::LEN == 0 => Some(Ok(v
                .chunks_exact(wire::path_stats::LEN)
                .filter_map(wire::PathStats::read)
                .collect())),
            DmSwitchAttr::PathStats(v) => Some(Err(anyhow!(
                "a DM_SWITCH_ATTR_PATH_STATS of {} bytes is not a whole number of {}-byte records",
                v.len(),
                wire::path_stats::LEN
            ))),
            _ => None,
        })
    }

    /// The `NETLINK_ATTR_MSG` attribute (an `IpcPgTable`), if present.
    pub fn window(&self) -> Option<&[u8]> {
        self.nlas.iter().find_map(|n| match n {
            DmSwitchAttr::Msg(v) => Some(v.as_slice()),
            _ => None,
        })
    }

    /// The `IpcResponse` attribute, if present.
    pub fn response(&self) -> Option<&[u8]> {
        self.nlas.iter().find_map(|n| match n {
            DmSwitchAttr::Response(v) => Some(v.as_slice()),
            _ => None,
        })
    }
}

impl GenlFamily for DmSwitchMsg {
    fn family_name() -> &'static str {
        wire::FAMILY_NAME
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        wire::FAMILY_VERSION
    }
}

impl Emitable for DmSwitchMsg {
    fn buffer_len(&self) -> usize {
        self.nlas.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.nlas.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for DmSwitchMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let nlas = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| DmSwitchAttr::parse(&nla)))
            .collect::<Result<Vec<_>, _>>();
        let nlas = ErrorContext::context(nlas, "failed to parse DM_SWITCH attributes")?;
        Ok(Self {
            cmd: header.cmd,
            nlas,
        })
    }
}

/// Serializes `inner` as a request (`NLM_F_REQUEST | NLM_F_ACK`).
pub fn serialize_request<I>(inner: I, seq: u32) -> Vec<u8>
where
    I: NetlinkSerializable + Into<NetlinkPayload<I>>,
{
    serialize(inner, seq, NLM_F_REQUEST | NLM_F_ACK)
}

/// Serializes `inner` as a message with `flags`.
fn serialize<I>(inner: I, seq: u32, flags: u16) -> Vec<u8>
where
    I: NetlinkSerializable + Into<NetlinkPayload<I>>,
{
    let mut msg = NetlinkMessage::from(inner);
    msg.header.flags = flags;
    msg.header.sequence_number = seq;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Builds the bytes of one upload request.
pub fn build_upload(family_id: u16, seq: u32, payload: Vec<u8>) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(DmSwitchMsg::upload(payload));
    genl.set_resolved_family_id(family_id);
    serialize_request(genl, seq)
}

/// What one netlink message in a reply datagram says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<T> {
    /// A family message.
    Inner(T),
    /// `NLMSG_ERROR` with code 0: the request is done.
    Ack,
    /// `NLMSG_ERROR` with a negative errno (kept positive here), and the
    /// extended-ack text if the kernel sent one.
    Error(i32, Option<String>),
    /// `NLMSG_DONE`: a dump ended, with this (positive) errno if not 0.
    Done(i32),
    /// Anything else (`NLMSG_NOOP`, `NLMSG_OVERRUN`, ...).
    Other,
}

/// Splits a datagram into messages and keeps those answering `seq`
/// (family messages with sequence 0 count as answers too).
pub fn parse_datagram<I>(data: &[u8], seq: u32) -> Result<Vec<Event<I>>>
where
    I: NetlinkDeserializable,
{
    let mut events = Vec::new();
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        let len = NetlinkBuffer::new_checked(rest)
            .map_err(|e| anyhow!("malformed netlink reply: {e}"))?
            .length() as usize;
        let msg = NetlinkMessage::<I>::deserialize(&rest[..len])
            .map_err(|e| anyhow!("cannot decode netlink reply: {e}"))?;
        off += len.div_ceil(4) * 4;
        // Requests are strictly one at a time, so a family message with
        // sequence 0 (a module that does not echo it) is still our answer.
        let ours = msg.header.sequence_number == seq
            || (msg.header.sequence_number == 0
                && matches!(msg.payload, NetlinkPayload::InnerMessage(_)));
        if !ours {
            continue;
        }
        let flags = msg.header.flags;
        events.push(match msg.payload {
            NetlinkPayload::InnerMessage(m) => Event::Inner(m),
            NetlinkPayload::Error(e) => match e.code {
                None => Event::Ack,
                Some(code) => Event::Error(-code.get(), ext_ack_msg(flags, &e.header)),
            },
            NetlinkPayload::Done(d) => Event::Done(-d.code),
            _ => Event::Other,
        });
    }
    Ok(events)
}

/// Extracts `NLMSGERR_ATTR_MSG` from the bytes after an error code.
fn ext_ack_msg(flags: u16, echoed: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || echoed.len() < 16 {
        return None;
    }
    let start = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes([echoed[0], echoed[1], echoed[2], echoed[3]]) as usize;
        len.div_ceil(4) * 4
    };
    let tlvs = echoed.get(start..)?;
    NlasIterator::new(tlvs)
        .filter_map(Result::ok)
        .find(|n| n.kind() == NLMSGERR_ATTR_MSG)
        .map(|n| {
            let v = n.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
}

/// A genetlink-core error: errno (positive) and the extended-ack text.
pub type CoreError = (i32, Option<String>);

/// The family messages answering a request, and the error that ended it.
type Exchange<I> = (Vec<I>, Option<CoreError>);

/// Outcome of one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The module's `IpcResponse` (its status may still be an errno).
    Response(wire::Response),
    /// The genetlink core refused the request: errno (positive) and text.
    CoreError(i32, Option<String>),
}

/// An open channel to the `DM_SWITCH` family.
pub struct Channel {
    socket: Socket,
    family_id: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl Channel {
    /// Opens a generic-netlink socket and resolves the `DM_SWITCH` family.
    pub fn open() -> Result<Self> {
        let mut ch = Self::connect()?;
        ch.family_id = ch.resolve_family()?;
        Ok(ch)
    }

    /// Opens and connects a generic-netlink socket (no family resolved).
    pub fn connect() -> Result<Self> {
        let mut socket =
            Socket::new(NETLINK_GENERIC).context("cannot open a generic-netlink socket")?;
        socket
            .bind_auto()
            .context("cannot bind the generic-netlink socket")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("cannot connect the generic-netlink socket")?;
        // Best effort: shorter error echoes, and error texts when available.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .context("cannot set the netlink receive timeout")?;
        Ok(Self {
            socket,
            family_id: 0,
            seq: 0,
            buf: Vec::with_capacity(256 * 1024),
        })
    }

    /// The resolved family id.
    pub fn family_id(&self) -> u16 {
        self.family_id
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<()> {
        let n = self
            .socket
            .send(bytes, 0)
            .context("cannot send to the kernel")?;
        if n != bytes.len() {
            bail!("short netlink send: {n} of {} bytes", bytes.len());
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<&[u8]> {
        self.buf.clear();
        match self.socket.recv(&mut self.buf, 0) {
            Ok(_) => Ok(&self.buf),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                bail!(
                    "no reply from the kernel within {} s",
                    REPLY_TIMEOUT.as_secs()
                )
            }
            Err(e) => Err(e).context("cannot receive from the kernel"),
        }
    }

    /// Sends `bytes` (a request with sequence `seq`) and collects the
    /// family messages answering it, up to the final ACK or error.
    fn exchange<I: NetlinkDeserializable>(
        &mut self,
        bytes: &[u8],
        seq: u32,
    ) -> Result<Exchange<I>> {
        self.send(bytes)?;
        let mut inner = Vec::new();
        loop {
            let data = self.recv()?;
            for ev in parse_datagram::<I>(data, seq)? {
                match ev {
                    Event::Inner(m) => inner.push(m),
                    Event::Ack => return Ok((inner, None)),
                    Event::Error(errno, text) => return Ok((inner, Some((errno, text)))),
                    Event::Done(0) => return Ok((inner, None)),
                    Event::Done(errno) => return Ok((inner, Some((errno, None)))),
                    Event::Other => {}
                }
            }
        }
    }

    /// Asks the generic-netlink controller for the id of family `name`.
    pub fn ctrl_family_id(&mut self, name: &str) -> Result<u16> {
        let seq = self.next_seq();
        let req = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_string())],
        });
        let bytes = serialize_request(req, seq);
        let (replies, err) = self.exchange::<GenlMessage<GenlCtrl>>(&bytes, seq)?;
        let id = replies.iter().find_map(|m| {
            m.payload.nlas.iter().find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
        });
        match (id, err) {
            (Some(id), _) => Ok(id),
            (None, Some((errno, _))) => Err(io::Error::from_raw_os_error(errno).into()),
            (None, None) => bail!("the controller answered without a family id"),
        }
    }

    fn resolve_family(&mut self) -> Result<u16> {
        match self.ctrl_family_id(wire::FAMILY_NAME) {
            Ok(id) => Ok(id),
            Err(ctrl_err) => match std::fs::read_to_string(SYSFS_FAMILY_ID) {
                Ok(text) => text.trim().parse::<u16>().map_err(|_| {
                    anyhow!("{SYSFS_FAMILY_ID} holds `{}`, not a family id", text.trim())
                }),
                Err(_) => bail!(
                    "generic-netlink family {} not found ({ctrl_err:#}); is the dm_switch module loaded?",
                    wire::FAMILY_NAME
                ),
            },
        }
    }

    /// Sends one encoded `IpcPgTable` and returns the kernel's answer.
    pub fn send_window(&mut self, payload: Vec<u8>) -> Result<Outcome> {
        let seq = self.next_seq();
        let bytes = build_upload(self.family_id, seq, payload);
        let (replies, err) = self.exchange::<GenlMessage<DmSwitchMsg>>(&bytes, seq)?;
        let resp = replies
            .iter()
            .find_map(|m| m.payload.response())
            .map(wire::decode_response)
            .transpose()
            .map_err(|e| anyhow!("bad reply from the kernel: {e}"))?;
        match (resp, err) {
            (Some(r), _) => Ok(Outcome::Response(r)),
            (None, Some((errno, text))) => Ok(Outcome::CoreError(errno, text)),
            (None, None) => bail!("the kernel acknowledged the request without an IpcResponse"),
        }
    }
}

impl Channel {
    /// Runs dump `cmd` for `major:minor`: its messages, or the error that
    /// refused it.
    fn run_dump(
        &mut self,
        cmd: u8,
        major: u32,
        minor: u32,
    ) -> Result<Result<Vec<DmSwitchMsg>, CoreError>> {
        let seq = self.next_seq();
        let mut genl = GenlMessage::from_payload(DmSwitchMsg::dump(cmd, major, minor));
        genl.set_resolved_family_id(self.family_id);
        let bytes = serialize(genl, seq, NLM_F_REQUEST | NLM_F_DUMP);
        let (messages, err) = self.exchange::<GenlMessage<DmSwitchMsg>>(&bytes, seq)?;
        Ok(match err {
            Some(e) => Err(e),
            None => Ok(messages.into_iter().map(|m| m.payload).collect()),
        })
    }

    /// Reads the live table of `major:minor` back: the `IpcPgTable` windows
    /// of the dump, in order, or the error that refused it.
    pub fn dump(&mut self, major: u32, minor: u32) -> Result<Result<Vec<Vec<u8>>, CoreError>> {
        let messages = match self.run_dump(wire::CMD_DUMP_PAGE_TBL, major, minor)? {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        messages
            .iter()
            .map(|m| {
                m.window()
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| anyhow!("a dump message without NETLINK_ATTR_MSG"))
            })
            .collect::<Result<Vec<_>>>()
            .map(Ok)
    }

    /// Reads the I/O the live target of `major:minor` sent to each path:
    /// one record per path, in path order, or the error that refused it.
    pub fn path_stats(
        &mut self,
        major: u32,
        minor: u32,
    ) -> Result<Result<Vec<wire::PathStats>, CoreError>> {
        let messages = match self.run_dump(wire::CMD_DUMP_PATH_STATS, major, minor)? {
            Ok(m) => m,
            Err(e) => return Ok(Err(e)),
        };
        let mut records = Vec::new();
        for m in &messages {
            let part = m.path_stats().ok_or_else(|| {
                anyhow!("a path statistics message without DM_SWITCH_ATTR_PATH_STATS")
            })??;
            records.extend(part);
        }
        for (i, r) in records.iter().enumerate() {
            if r.path as usize != i {
                bail!("the kernel sent path {} where path {i} was due", r.path);
            }
        }
        Ok(Ok(records))
    }
}

/// The symbolic name of a (positive) errno, e.g. `EINVAL`.
pub fn errno_name(errno: i32) -> String {
    let names: &[(i32, &str)] = &[
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::ESRCH, "ESRCH"),
        (libc::EINTR, "EINTR"),
        (libc::EIO, "EIO"),
        (libc::ENXIO, "ENXIO"),
        (libc::E2BIG, "E2BIG"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EFAULT, "EFAULT"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::ENODEV, "ENODEV"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::EPROTO, "EPROTO"),
        (libc::EBADMSG, "EBADMSG"),
        (libc::EOVERFLOW, "EOVERFLOW"),
        (libc::EMSGSIZE, "EMSGSIZE"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::ENOBUFS, "ENOBUFS"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
        (524, "ENOTSUPP"),
    ];
    names
        .iter()
        .find(|(n, _)| *n == errno)
        .map_or_else(|| format!("errno {errno}"), |(_, s)| (*s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_request_framing() {
        let payload = wire::encode_request(&wire::PgTableHeader::default(), &[7, 8]).unwrap();
        let bytes = build_upload(0x1234, 9, payload.clone());
        // nlmsghdr(16) + genlmsghdr(4) + nlattr(4) + 48 bytes.
        assert_eq!(bytes.len(), 16 + 4 + 4 + 48);
        assert_eq!(&bytes[0..4], &(bytes.len() as u32).to_ne_bytes());
        assert_eq!(&bytes[4..6], &0x1234u16.to_ne_bytes());
        assert_eq!(&bytes[6..8], &(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        assert_eq!(&bytes[8..12], &9u32.to_ne_bytes());
        assert_eq!(bytes[16], wire::CMD_GET_PAGE_TBL);
        assert_eq!(bytes[17], wire::FAMILY_VERSION);
        assert_eq!(&bytes[18..20], &[0, 0], "genlmsghdr.reserved is 0");
        assert_eq!(&bytes[20..22], &(4u16 + 48).to_ne_bytes());
        assert_eq!(&bytes[22..24], &wire::ATTR_MSG.to_ne_bytes());
        assert_eq!(&bytes[24..], payload.as_slice());
    }

    #[test]
    fn largest_window_fits_one_attribute() {
        let words = vec![0u32; wire::MAX_WORDS_PER_MSG];
        let payload = wire::encode_request(&wire::PgTableHeader::default(), &words).unwrap();
        let bytes = build_upload(20, 1, payload);
        assert_eq!(bytes.len(), 16 + 4 + 4 + wire::MAX_IPC_MSG_LEN);
        assert_eq!(
            u16::from_ne_bytes([bytes[20], bytes[21]]) as usize,
            4 + wire::MAX_IPC_MSG_LEN
        );
    }

    fn reply_bytes(family: u16, seq: u32, status: u32, text: &str) -> Vec<u8> {
        let mut reply = wire::kernel::Response::new(wire::kernel::Echo::default());
        if status != 0 {
            reply.fail(status, format_args!("{text}"));
        }
        let resp = reply.as_bytes().to_vec();
        let mut genl = GenlMessage::from_payload(DmSwitchMsg {
            cmd: wire::CMD_GET_PAGE_TBL,
            nlas: vec![DmSwitchAttr::Response(resp)],
        });
        genl.set_resolved_family_id(family);
        let mut msg = NetlinkMessage::from(genl);
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    fn error_bytes(seq: u32, code: i32, flags: u16, tlv_msg: Option<&str>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_ne_bytes()); // length, fixed below
        b.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        // Echoed request header (capped).
        b.extend_from_slice(&100u32.to_ne_bytes());
        b.extend_from_slice(&[0u8; 12]);
        if let Some(m) = tlv_msg {
            let len = 4 + m.len() + 1;
            b.extend_from_slice(&(len as u16).to_ne_bytes());
            b.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
            b.extend_from_slice(m.as_bytes());
            b.push(0);
            while b.len() % 4 != 0 {
                b.push(0);
            }
        }
        let n = b.len() as u32;
        b[0..4].copy_from_slice(&n.to_ne_bytes());
        b
    }

    #[test]
    fn reply_then_ack_in_one_datagram() {
        let mut data = reply_bytes(30, 5, 22, "Invalid Page Table message");
        data.extend(error_bytes(5, 0, NLM_F_CAPPED, None));
        let ev = parse_datagram::<GenlMessage<DmSwitchMsg>>(&data, 5).unwrap();
        assert_eq!(ev.len(), 2);
        let Event::Inner(m) = &ev[0] else {
            panic!("expected a family message, got {:?}", ev[0]);
        };
        let r = wire::decode_response(m.payload.response().unwrap()).unwrap();
        assert_eq!(r.status, 22);
        assert_eq!(r.err_str, "Invalid Page Table message");
        assert_eq!(ev[1], Event::Ack);
        // Messages for another sequence number are skipped.
        assert!(parse_datagram::<GenlMessage<DmSwitchMsg>>(&data, 6)
            .unwrap()
            .is_empty());
        // A reply with sequence 0 still counts; a stray ACK does not.
        let mut data = reply_bytes(30, 0, 0, "");
        data.extend(error_bytes(0, 0, NLM_F_CAPPED, None));
        let ev = parse_datagram::<GenlMessage<DmSwitchMsg>>(&data, 8).unwrap();
        assert_eq!(ev.len(), 1);
        assert!(matches!(ev[0], Event::Inner(_)));
    }

    #[test]
    fn core_error_with_extended_ack() {
        let data = error_bytes(
            3,
            -libc::EPERM,
            NLM_F_CAPPED | NLM_F_ACK_TLVS,
            Some("no way"),
        );
        let ev = parse_datagram::<GenlMessage<DmSwitchMsg>>(&data, 3).unwrap();
        assert_eq!(ev, vec![Event::Error(libc::EPERM, Some("no way".into()))]);
        let data = error_bytes(3, -libc::EOPNOTSUPP, NLM_F_CAPPED, None);
        let ev = parse_datagram::<GenlMessage<DmSwitchMsg>>(&data, 3).unwrap();
        assert_eq!(ev, vec![Event::Error(libc::EOPNOTSUPP, None)]);
    }

    #[test]
    fn truncated_datagram_is_an_error() {
        let data = reply_bytes(30, 5, 0, "");
        assert!(parse_datagram::<GenlMessage<DmSwitchMsg>>(&data[..10], 5).is_err());
    }

    /// Talks to the running kernel's genetlink controller (no privileges
    /// needed): the controller's own id is fixed, and an unknown family is
    /// refused with ENOENT.
    #[test]
    fn controller_resolves_families() {
        let mut ch = Channel::connect().unwrap();
        assert_eq!(ch.ctrl_family_id("nlctrl").unwrap(), 0x10);
        let e = ch.ctrl_family_id("DMSW_NO_SUCH").unwrap_err();
        let io = e.downcast_ref::<io::Error>().unwrap();
        assert_eq!(io.raw_os_error(), Some(libc::ENOENT));
        // DM_SWITCH resolves when the module is loaded, else says so.
        match Channel::open() {
            Ok(ch) => assert_ne!(ch.family_id(), 0),
            Err(e) => assert!(
                format!("{e:#}").contains("is the dm_switch module loaded?"),
                "{e:#}"
            ),
        }
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(22), "EINVAL");
        assert_eq!(errno_name(12), "ENOMEM");
        assert_eq!(errno_name(1), "EPERM");
        assert_eq!(errno_name(9999), "errno 9999");
    }
}
