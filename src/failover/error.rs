//! [`FailoverError`]: what can go wrong installing or removing failover
//! state, worded for an operator reading the log.

use nix::errno::Errno;

/// Failover could not read or change the kernel's routing state.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// The `[failover]` config names a reserved table, protocol, priority or
    /// mark.
    #[error("invalid failover config: {0}")]
    InvalidConfig(String),
    /// The process lacks CAP_NET_ADMIN (EPERM / EACCES from the kernel).
    #[error(
        "failover needs CAP_NET_ADMIN (run meshnode as root or grant it the capability): \
         {op} was refused"
    )]
    PermissionDenied {
        /// What was refused, e.g. "adding route default via 10.0.0.2 ...".
        op: String,
    },
    /// The kernel refused an operation. `message` is the kernel's own
    /// explanation (netlink extended ack) when it gave one, e.g. "Nexthop has
    /// invalid gateway" for a gateway that is not reachable on-link.
    #[error("{op}: {}", crate::netlink::describe(*.errno, .message.as_deref()))]
    Kernel {
        /// What was attempted.
        op: String,
        /// The errno the kernel answered with (positive, e.g. 101 ENETUNREACH).
        errno: i32,
        /// The kernel's extended-ack text, if any.
        message: Option<String>,
    },
    /// The netlink route socket could not be opened.
    #[error("cannot open a netlink route socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The netlink connection task is gone (it only ends when the runtime
    /// shuts down or the socket fails).
    #[error("netlink connection closed while {op}")]
    ConnectionClosed {
        /// What was attempted.
        op: String,
    },
    /// The kernel answered something a well-behaved kernel does not send
    /// (e.g. an overrun while dumping).
    #[error("{op}: unexpected netlink reply: {detail}")]
    UnexpectedReply {
        /// What was attempted.
        op: String,
        /// What came back.
        detail: String,
    },
}

impl From<crate::netlink::NetlinkError> for FailoverError {
    fn from(e: crate::netlink::NetlinkError) -> Self {
        use crate::netlink::NetlinkError as N;
        match e {
            N::Kernel { op, errno, message } => FailoverError::from_kernel(op, errno, message),
            N::Closed { op } => FailoverError::ConnectionClosed { op },
            N::Overrun { op } => FailoverError::UnexpectedReply {
                op,
                detail: "overrun (the kernel dropped part of the answer)".into(),
            },
        }
    }
}

impl FailoverError {
    /// The error for a kernel answer of `-errno` to `op`, with the kernel's
    /// extended-ack `message` if any. EPERM and EACCES become
    /// [`FailoverError::PermissionDenied`].
    pub fn from_kernel(op: String, errno: i32, message: Option<String>) -> FailoverError {
        if crate::netlink::NetlinkError::is_permission(errno) {
            FailoverError::PermissionDenied { op }
        } else {
            FailoverError::Kernel { op, errno, message }
        }
    }

    /// The kernel's errno, for the variants that carry one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            FailoverError::Kernel { errno, .. } => Some(Errno::from_raw(*errno)),
            FailoverError::PermissionDenied { .. } => Some(Errno::EPERM),
            FailoverError::Socket(e) => e.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_and_eacces_say_what_to_do() {
        for errno in [Errno::EPERM as i32, Errno::EACCES as i32] {
            let e = FailoverError::from_kernel("adding route x".into(), errno, None);
            let text = e.to_string();
            assert!(matches!(e, FailoverError::PermissionDenied { .. }), "{e:?}");
            assert!(text.contains("needs CAP_NET_ADMIN"), "{text}");
            assert!(text.contains("run meshnode as root"), "{text}");
            assert!(text.contains("adding route x"), "{text}");
        }
    }

    #[test]
    fn kernel_errors_carry_the_ext_ack_text() {
        let e = FailoverError::from_kernel(
            "adding route default via 10.99.9.9".into(),
            Errno::ENETUNREACH as i32,
            Some("Nexthop has invalid gateway".into()),
        );
        assert_eq!(
            e.to_string(),
            "adding route default via 10.99.9.9: Nexthop has invalid gateway \
             (ENETUNREACH: Network is unreachable)"
        );
        assert_eq!(e.errno(), Some(Errno::ENETUNREACH));
        let e = FailoverError::from_kernel("x".into(), Errno::EEXIST as i32, None);
        assert_eq!(e.to_string(), "x: EEXIST: File exists");
    }
}
