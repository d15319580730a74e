//! Accepting TCP connections for the HTTP listeners (front door, admin) without spinning:
//! an accept error (out of file descriptors, buffers) is logged and retried with backoff.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// Longest pause after repeated accept errors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The next connection on `listener` (TCP_NODELAY set). `what` names the listener in logs.
pub async fn accept(listener: &TcpListener, what: &str) -> TcpStream {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                return tcp;
            }
            Err(e) => {
                warn!(listener = what, error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Whether the client sends its first byte within `limit` (a connection that sends nothing
/// would otherwise hold a connection slot: protocol detection has no timeout of its own).
pub async fn first_byte_within(tcp: &TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(tokio::time::timeout(limit, tcp.peek(&mut b)).await, Ok(Ok(n)) if n > 0)
}
