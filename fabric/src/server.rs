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

/// What to do with a connection attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Start the handshake.
    Accept,
    /// Ask the client to prove its address first (a stateless QUIC Retry): spoofed sources
    /// never get past it, and it costs no connection state.
    Retry,
    /// Refuse (CONNECTION_CLOSE with CONNECTION_REFUSED).
    Refuse,
}

/// Accepts connections until `shutdown` (refusing or retrying them as `admit` says), then
/// lets the connections drain for up to [`DRAIN_TIMEOUT`] and closes the endpoint.
pub(crate) async fn accept_loop<Fut>(
    endpoint: &Endpoint,
    shutdown: &Shutdown,
    name: &str,
    mut admit: impl FnMut(&Endpoint, &Incoming) -> Admit,
    mut connection: impl FnMut(Incoming) -> Fut,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                match admit(endpoint, &incoming) {
                    Admit::Accept => { conns.spawn(connection(incoming)); }
                    Admit::Retry if incoming.may_retry() => { let _ = incoming.retry(); }
                    Admit::Retry | Admit::Refuse => incoming.refuse(),
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

/// Completes a connection's handshake within `limit`; `None` (logged) if it failed, took
/// longer, or the server started draining (the half-open connection is dropped, freeing its
/// state).
pub(crate) async fn handshake(
    incoming: Incoming,
    limit: Duration,
    shutdown: &Shutdown,
) -> Option<quinn::Connection> {
    let done = tokio::select! {
        r = tokio::time::timeout(limit, incoming) => r,
        _ = shutdown.wait() => return None,
    };
    match done {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => {
            debug!("handshake failed: {e}");
            None
        }
        Err(_) => {
            debug!("handshake not completed within {limit:?}; dropped");
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
                Err(e) => {
                    debug!(peer = %conn.remote_address(), "connection ended: {e}");
                    while requests.join_next().await.is_some() {}
                    return;
                }
            },
            _ = shutdown.wait() => break,
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    // Draining (GOAWAY sent): in-flight requests finish. A request the peer opened before it
    // saw GOAWAY is answered UNAVAILABLE (retryable) at once, so it never hangs and the peer
    // knows to send it again elsewhere (PROTOCOL.md §5.4).
    while !requests.is_empty() {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => { requests.spawn(refuse_draining(send, recv)); }
                Err(_) => break,
            },
            Some(_) = requests.join_next() => {}
        }
    }
    while requests.join_next().await.is_some() {}
}

/// Answers a request opened after GOAWAY: ERROR UNAVAILABLE, retryable.
async fn refuse_draining(mut send: SendStream, mut recv: RecvStream) {
    let e = meridian_protocol::ErrorFrame::new(
        meridian_protocol::ErrorCode::UNAVAILABLE,
        "draining (GOAWAY sent): send the request on another connection",
    );
    let _ = recv.stop(e.code.0.try_into().unwrap_or(quinn::VarInt::MAX));
    let _ = send.write_chunk(Frame::Error(e).to_bytes()).await;
    let _ = send.finish();
    delivered(send.stopped()).await;
}

/// Longest a finished response waits for the peer to acknowledge its last bytes.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until the peer has acknowledged everything sent on a finished (or reset) stream, or
/// stopped it, at most [`DELIVERY_TIMEOUT`]. A request task that awaits this before it ends
/// keeps a draining server from closing the connection while answers are still in flight
/// (closing discards unacknowledged stream data).
pub(crate) async fn delivered(
    stopped: impl Future<Output = Result<Option<quinn::VarInt>, quinn::StoppedError>>,
) {
    let _ = tokio::time::timeout(DELIVERY_TIMEOUT, stopped).await;
}

/// Answers every unidirectional stream the peer opens with STOP_SENDING (NO_ERROR) and
/// discards it: clients open none in this version (PROTOCOL.md §5.1).
pub(crate) async fn refuse_uni_streams(conn: quinn::Connection) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let _ = recv.stop(0u32.into());
    }
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
