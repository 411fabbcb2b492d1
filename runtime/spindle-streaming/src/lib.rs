//! The wire protocols of the node's streaming endpoint (the kubelet's port 10250), with
//! no knowledge of pods or runtimes, and the accept loop that serves an endpoint with
//! bounded resources.
//!
//! - [`upgrade`]: choosing WebSocket or SPDY/3.1 from what the client offers, and the
//!   `101 Switching Protocols` answer.
//! - [`channel`]: the `v4.channel.k8s.io` / `v5.channel.k8s.io` framing (one byte of
//!   channel before each WebSocket message), terminal sizes and the exit Status.
//! - [`remotecommand`]: an exec or attach session (stdin, stdout, stderr, resize, error)
//!   over either protocol, as the kubelet's `remotecommand` server speaks it.
//! - [`portforward`]: `portforward.k8s.io` over SPDY, raw or tunnelled in WebSocket.
//! - [`spdy`]: the SPDY/3.1 framer and session.
//! - [`serve`]: the accept loop with its limits (connection cap, TLS handshake and
//!   header timeouts, accept back-off), HTTP/1.1 with upgrades.
//!
//! # Why SPDY is written here
//!
//! SPDY was superseded by HTTP/2 years ago and no maintained Rust crate implements it;
//! kube-rs, the Rust Kubernetes client, speaks only WebSocket for exec, attach and
//! port-forward. Yet kubectl up to 1.29 uses SPDY for all three (1.30 still for
//! port-forward), later ones fall back to it when a WebSocket upgrade fails, and
//! kubectl's WebSocket port-forward still carries SPDY frames inside its messages. A
//! node that wants every kubectl to work must speak it, so [`spdy`] implements the
//! subset client-go uses, with its memory bounded.
//!
//! The channel protocol's base64 variants (`base64.channel.k8s.io`), which only
//! browsers needed, are not offered; kubectl and client-go never ask for them.

pub mod channel;
pub mod portforward;
pub mod remotecommand;
pub mod serve;
pub mod spdy;
pub mod upgrade;
