//! What every `meridian/1` server (edge and worker) does the same way: accept connections
//! within a limit, serve each connection's request streams, open the control stream with
//! SETTINGS, and drain on shutdown.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use meridian_protocol::{varint, Frame, GoAway, Settings, CONTROL_STREAM_TYPE};
use quinn::{Endpoint, Incoming, RecvStream, SendStream};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::shutdown::Shutdown;

/// How long a draining server lets in-flight requests finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` (refusing them while `admit` says no), then lets the
/// connections drain for up to [`DRAIN_TIMEOUT`] and closes the endpoint.
pub(crate) async fn accept_loop<Fut>(
    endpoint: &Endpoint,
    shutdown: &Shutdown,
    name: &str,
    mut admit: impl FnMut(&Endpoint) -> bool,
    mut connection: impl FnMut(Incoming) -> Fut,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if admit(endpoint) {
                    conns.spawn(connection(incoming));
                } else {
                    incoming.refuse();
                }
            }
            _ = shutdown.wait() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Connections saw the signal, sent GOAWAY, and finish their requests.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(%name, "drain timed out; closing with requests in flight");
    }
    endpoint.close(0u32.into(), b"shutting down");
}

/// Completes a connection's handshake; `None` (logged) if it failed.
pub(crate) async fn handshake(incoming: Incoming) -> Option<quinn::Connection> {
    match incoming.await {
        Ok(c) => Some(c),
        Err(e) => {
            debug!("handshake failed: {e}");
            None
        }
    }
}

/// The ALPN protocol a connection negotiated.
pub(crate) fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Serves request streams with `request` until the peer goes away or `shutdown` fires;
/// in-flight requests always finish.
pub(crate) async fn serve_streams<Fut>(
    conn: &quinn::Connection,
    shutdown: &Shutdown,
    mut request: impl FnMut(SendStream, RecvStream) -> Fut,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => { requests.spawn(request(send, recv)); }
                Err(e) => { debug!(peer = %conn.remote_address(), "connection ended: {e}"); break; }
            },
            _ = shutdown.wait() => break,
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    while requests.join_next().await.is_some() {}
}

/// A server's control stream (PROTOCOL.md §5.1): opened with SETTINGS first.
pub(crate) struct ControlStream {
    send: SendStream,
    buf: BytesMut,
}

impl ControlStream {
    /// Opens the stream and sends its type and `settings`; `None` if the connection is gone.
    pub(crate) async fn open(
        conn: &quinn::Connection,
        settings: Settings,
    ) -> Option<ControlStream> {
        let send = conn.open_uni().await.ok()?;
        let mut c = ControlStream {
            send,
            buf: BytesMut::new(),
        };
        varint::encode(CONTROL_STREAM_TYPE, &mut c.buf);
        c.send(&Frame::Settings(settings)).await.then_some(c)
    }

    /// Sends one frame; false if the peer is gone.
    pub(crate) async fn send(&mut self, frame: &Frame) -> bool {
        frame.encode(&mut self.buf);
        self.send
            .write_chunk(self.buf.split().freeze())
            .await
            .is_ok()
    }

    /// Sends GOAWAY (PROTOCOL.md §5.4).
    pub(crate) async fn goaway(mut self) {
        self.send(&Frame::GoAway(GoAway)).await;
    }
}
