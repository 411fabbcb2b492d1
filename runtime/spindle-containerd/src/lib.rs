//! Containers for the Spindle node agent, through containerd's gRPC API.
//!
//! This crate owns everything between a pulled container image (from
//! `spindle-image`) and a process running under runc:
//!
//! * [`daemon`]: a private containerd (its own socket, root and state under the
//!   agent's data dir) when the node was given none;
//! * [`Containerd::import`]: writing an image's manifest, config and layers into
//!   containerd's content store and unpacking the layers into snapshots (the
//!   diff service applies each layer onto its parent's snapshot, named by chain
//!   ID, as containerd's own unpacker does), all held by a lease per image;
//! * [`spec`]: the OCI runtime spec of a container (pod netns, volume bind
//!   mounts, cgroup limits, user, capabilities, hostname, DNS files);
//! * [`Containerd::run`] / [`Containerd::exec`]: containers, tasks and exec
//!   processes with their stdio on FIFOs ([`io`]), waiting, signals, TTY
//!   resize, and removal of task, container and snapshot.
//!
//! [`cgroup`] reads what a container uses, for the agent's resource metrics.
//!
//! It knows nothing of pods; the agent maps pods onto these calls.

pub mod cgroup;
pub mod daemon;
pub mod io;
pub mod spec;

mod client;
pub use client::oom_kills;

pub use client::{Containerd, ExecSpec, Exited, RunSpec};

/// What went wrong talking to containerd; messages are for a container's status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("containerd: {what}: {status}")]
    Rpc {
        what: String,
        status: Box<containerd_client::tonic::Status>,
    },
    #[error("containerd: cannot connect to {socket}: {source}")]
    Connect {
        socket: String,
        source: containerd_client::tonic::transport::Error,
    },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn rpc(what: impl Into<String>, status: containerd_client::tonic::Status) -> Self {
        Error::Rpc {
            what: what.into(),
            status: Box::new(status),
        }
    }

    /// Whether containerd said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Rpc { status, .. } if status.code() == containerd_client::tonic::Code::NotFound)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
