//! Errors of the netlink adapter. Each names the operation and the object it
//! touched, so a chain reads "adding address 10.0.0.1/24 to br0: File exists".

use std::io;
use std::path::PathBuf;

/// errno values the kernel answers with when the object of a change is absent.
const MISSING_ERRNOS: [i32; 4] = [libc::ENOENT, libc::ENODEV, libc::ESRCH, libc::EADDRNOTAVAIL];

/// A failed netlink query or change, or a bad argument to one.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink route socket")]
    Connect(#[source] io::Error),

    /// The kernel refused the request; `source` carries its errno.
    #[error("{op}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },

    /// The kernel has no driver for the requested link type.
    #[error(
        "{op}: the running kernel has no '{kind}' link type \
         (load its module with `modprobe {module}`, or use a kernel that has it)"
    )]
    UnsupportedKind {
        op: String,
        kind: &'static str,
        module: &'static str,
    },

    #[error("{op}: no link named '{name}'")]
    LinkNotFound { op: String, name: String },

    /// The netlink conversation itself failed (closed socket, unexpected reply).
    #[error("{op}")]
    Protocol {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },

    #[error(
        "unknown bond mode '{0}': expected balance-rr, active-backup, balance-xor, \
         broadcast, 802.3ad, balance-tlb or balance-alb"
    )]
    InvalidBondMode(String),

    #[error("invalid link name '{0}': use 1 to 15 characters, without '/', ':' or whitespace")]
    InvalidLinkName(String),

    #[error("{op}: {reason}")]
    InvalidRoute { op: String, reason: String },

    #[error("invalid MAC address '{0}': write six hex pairs, aa:bb:cc:dd:ee:ff")]
    InvalidMac(String),

    #[error("invalid DNS search domain '{0}': it must be non-empty and contain no whitespace")]
    InvalidSearchDomain(String),

    #[error("writing {}", path.display())]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// Wraps an rtnetlink failure of `op`; kernel refusals keep their errno.
    pub(crate) fn from_rtnl(op: impl Into<String>, err: rtnetlink::Error) -> Self {
        let op = op.into();
        match err {
            rtnetlink::Error::NetlinkError(msg) => NetlinkError::Kernel {
                op,
                source: msg.to_io(),
            },
            source => NetlinkError::Protocol { op, source },
        }
    }

    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The object to create already exists (`EEXIST`).
    pub fn is_already_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The object to change or delete does not exist: a missing link, or the
    /// kernel answering ENOENT, ENODEV, ESRCH (route) or EADDRNOTAVAIL (address).
    pub fn is_missing(&self) -> bool {
        matches!(self, NetlinkError::LinkNotFound { .. })
            || self.errno().is_some_and(|e| MISSING_ERRNOS.contains(&e))
    }
}
