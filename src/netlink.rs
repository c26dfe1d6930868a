//! rtnetlink plumbing shared by the modules that change the kernel
//! (`failover`: routes and rules; `shaping`: traffic control): a route
//! socket with extended acks, requests that expect an acknowledgement,
//! dumps redone when a concurrent change interrupts them, and the kernel's
//! errors with their text. Each module turns a [`NetlinkError`] into its
//! own error type.
//!
//! Requests are built by hand and sent with [`Handle::request`] because
//! rtnetlink's builders drop the reply header that says whether the error
//! carries extended-ack text.

use futures_util::StreamExt;
use nix::errno::Errno;
use rtnetlink::Handle;
// Always through rtnetlink's re-exports: two netlink-packet-core versions
// exist in the registry and only these match rtnetlink's types.
use rtnetlink::packet_core::{
    NLA_TYPE_MASK, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use tracing::debug;

/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute holding the text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`, which a capped error reply echoes.
const NLMSG_HDRLEN: usize = 16;
/// A dump interrupted by a concurrent change (`NLM_F_DUMP_INTR`) is redone
/// this many times before its possibly inconsistent result is used anyway.
const DUMP_ATTEMPTS: usize = 3;

/// A request or dump that did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkError {
    /// The kernel answered `-errno`, with its extended-ack text if any.
    Kernel {
        /// What was attempted.
        op: String,
        /// Positive errno.
        errno: i32,
        /// The kernel's own explanation.
        message: Option<String>,
    },
    /// The connection task is gone.
    Closed {
        /// What was attempted.
        op: String,
    },
    /// The kernel dropped part of an answer.
    Overrun {
        /// What was attempted.
        op: String,
    },
}

impl NetlinkError {
    /// Is this the kernel refusing for lack of privilege (EPERM / EACCES)?
    pub fn is_permission(errno: i32) -> bool {
        errno == Errno::EPERM as i32 || errno == Errno::EACCES as i32
    }
}

/// Opens a route socket in the calling thread's network namespace, with
/// extended and capped acks where the kernel has them (before 4.12 errors
/// come with their errno only), and spawns its connection task on the
/// current tokio runtime. Abort the returned task when done.
pub fn open() -> std::io::Result<(Handle, tokio::task::JoinHandle<()>)> {
    let (mut conn, handle, _unsolicited) = rtnetlink::new_connection()?;
    {
        use rtnetlink::sys::AsyncSocket;
        let socket = conn.socket_mut().socket_mut();
        if let Err(e) = socket.set_ext_ack(true) {
            debug!(error = %e, "netlink extended ack not available");
        }
        if let Err(e) = socket.set_cap_ack(true) {
            debug!(error = %e, "netlink capped ack not available");
        }
    }
    Ok((handle, tokio::spawn(conn)))
}

/// Sends a request that expects an acknowledgement.
pub async fn request(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    flags: u16,
    what: &str,
) -> Result<(), NetlinkError> {
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut replies = handle
        .clone()
        .request(req)
        .map_err(|_| NetlinkError::Closed { op: what.into() })?;
    while let Some(reply) = replies.next().await {
        check(&reply, what)?;
    }
    Ok(())
}

/// Runs a dump, redoing it when the kernel flags it as interrupted.
pub async fn dump(
    handle: &Handle,
    msg: RouteNetlinkMessage,
    what: &str,
) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = NetlinkMessage::from(msg.clone());
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut replies = handle
            .clone()
            .request(req)
            .map_err(|_| NetlinkError::Closed { op: what.into() })?;
        let mut out = Vec::new();
        let mut interrupted = false;
        while let Some(reply) = replies.next().await {
            interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            check(&reply, what)?;
            if let NetlinkPayload::InnerMessage(m) = reply.payload {
                out.push(m);
            }
        }
        if !interrupted || attempt >= DUMP_ATTEMPTS {
            if interrupted {
                debug!(
                    what,
                    "dump interrupted by concurrent changes; using it anyway"
                );
            }
            return Ok(out);
        }
    }
}

/// Turns an error reply into a [`NetlinkError`]; everything else is fine.
pub fn check(reply: &NetlinkMessage<RouteNetlinkMessage>, what: &str) -> Result<(), NetlinkError> {
    match &reply.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(NetlinkError::Kernel {
                op: what.into(),
                errno: -code.get(),
                message: ext_ack_message(reply.header.flags, &e.header),
            }),
        },
        NetlinkPayload::Overrun(_) => Err(NetlinkError::Overrun { op: what.into() }),
        _ => Ok(()),
    }
}

/// The kernel's extended-ack text in an `NLMSG_ERROR` reply. `flags` are
/// the reply's header flags, `payload` the error payload after the errno:
/// the echoed request (only its header when `NLM_F_CAPPED`), then TLVs when
/// `NLM_F_ACK_TLVS`.
pub fn ext_ack_message(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        let len: [u8; 4] = payload.get(0..4)?.try_into().ok()?;
        u32::from_ne_bytes(len) as usize
    };
    let mut off = align4(echoed)?;
    while let Some(head) = payload.get(off..off.checked_add(4)?) {
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        // strip the nested / byte-order flag bits
        let kind = u16::from_ne_bytes([head[2], head[3]]) & NLA_TYPE_MASK;
        let value = payload.get(off + 4..off.checked_add(len)?)?;
        if kind == NLMSGERR_ATTR_MSG {
            let text = value.split(|&b| b == 0).next().unwrap_or_default();
            let text = String::from_utf8_lossy(text).trim().to_string();
            return (!text.is_empty()).then_some(text);
        }
        if len < 4 {
            return None;
        }
        off = off.checked_add(align4(len)?)?;
    }
    None
}

fn align4(n: usize) -> Option<usize> {
    Some(n.checked_add(3)? & !3)
}

/// "HTB class in use (EBUSY: Device or resource busy)", or just the errno
/// part when the kernel gave no text.
pub fn describe(errno: i32, message: Option<&str>) -> String {
    let e = Errno::from_raw(errno);
    match message {
        Some(m) => format!("{m} ({e:?}: {})", e.desc()),
        None => format!("{e:?}: {}", e.desc()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `NLMSG_ERROR` payload (after the errno) as the kernel sends it on a
    /// socket with NETLINK_CAP_ACK and NETLINK_EXT_ACK: the echoed request
    /// header, then TLVs. Captured shape of `ip route add default via
    /// 10.99.9.9 table 7734` on an unreachable gateway.
    fn capped_payload() -> Vec<u8> {
        let mut p = Vec::new();
        // echoed nlmsghdr: len 60, type RTM_NEWROUTE (24), flags, seq, pid
        p.extend_from_slice(&60u32.to_ne_bytes());
        p.extend_from_slice(&24u16.to_ne_bytes());
        p.extend_from_slice(&0x0605u16.to_ne_bytes());
        p.extend_from_slice(&7u32.to_ne_bytes());
        p.extend_from_slice(&0u32.to_ne_bytes());
        // NLMSGERR_ATTR_MSG "Nexthop has invalid gateway\0": 4 + 28 bytes
        let text = b"Nexthop has invalid gateway\0";
        p.extend_from_slice(&(4 + text.len() as u16).to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(text);
        // NLMSGERR_ATTR_OFFS (2), u32
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&2u16.to_ne_bytes());
        p.extend_from_slice(&36u32.to_ne_bytes());
        p
    }

    #[test]
    fn ext_ack_text_is_found_in_capped_and_full_replies() {
        let p = capped_payload();
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        // Without NLM_F_ACK_TLVS there is nothing to read.
        assert_eq!(ext_ack_message(NLM_F_CAPPED, &p), None);
        // Not capped: the whole 60-byte request is echoed before the TLVs.
        let mut full = p[..16].to_vec();
        full.extend_from_slice(&[0u8; 44]);
        full.extend_from_slice(&p[16..]);
        assert_eq!(
            ext_ack_message(NLM_F_ACK_TLVS, &full).as_deref(),
            Some("Nexthop has invalid gateway")
        );
        // Truncated or garbage input never panics.
        for n in 0..p.len() {
            let _ = ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p[..n]);
            let _ = ext_ack_message(NLM_F_ACK_TLVS, &full[..n]);
        }
        assert_eq!(ext_ack_message(NLM_F_ACK_TLVS, &[0xff; 8]), None);
    }

    #[test]
    fn a_short_echo_with_the_text_right_after_it() {
        let mut p = Vec::new();
        p.extend_from_slice(&36u32.to_ne_bytes());
        p.extend_from_slice(&[0u8; 12]);
        let text = b"HTB class in use\0";
        p.extend_from_slice(&(4 + text.len() as u16).to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(text);
        assert_eq!(
            ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).as_deref(),
            Some("HTB class in use")
        );
        for n in 0..p.len() {
            let _ = ext_ack_message(NLM_F_ACK_TLVS, &p[..n]);
        }
    }

    #[test]
    fn errors_read_like_tc() {
        assert_eq!(
            describe(16, Some("HTB class in use")),
            "HTB class in use (EBUSY: Device or resource busy)"
        );
        assert_eq!(describe(17, None), "EEXIST: File exists");
    }
}
