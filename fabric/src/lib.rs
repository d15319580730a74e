//! The Meridian fabric: topology and config model, routing policy, the consistent-hash
//! ring with bounded loads, the lock-free routing table, the zero-copy relay, QUIC/TLS
//! endpoint setup, the edge and worker servers and their backends.
//!
//! It does not parse command-line flags or print to stdout: the `meridian` binary
//! (`meridian-edge`) does that. Built with `--cfg loom`, only the lock-free [`sync`]
//! module is compiled, for the `loom_*` model tests.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod sync;

#[cfg(not(loom))]
pub mod auth;
#[cfg(not(loom))]
pub mod config;
#[cfg(not(loom))]
pub mod demo;
#[cfg(not(loom))]
pub mod discovery;
#[cfg(not(loom))]
pub mod edge;
#[cfg(not(loom))]
mod http1;
#[cfg(not(loom))]
pub mod quic_lb;
#[cfg(not(loom))]
pub mod redis;
#[cfg(not(loom))]
pub mod route;
#[cfg(not(loom))]
mod server;
#[cfg(not(loom))]
pub mod shutdown;
#[cfg(not(loom))]
pub mod telemetry;
#[cfg(not(loom))]
pub mod tls;
#[cfg(not(loom))]
pub mod transport;
#[cfg(not(loom))]
pub mod worker;
