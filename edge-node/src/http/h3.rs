//! HTTP/3 for the front door, on the edge's own UDP port (ALPN `h3` beside `meridian/1`):
//! each request's body is read within the limit, answered by the same handler as HTTP/1.1
//! and HTTP/2, and its SSE events are sent as DATA frames. A client that resets or goes
//! away stops the event stream, which cancels the request upstream.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use meridian_fabric::edge::{H3Handler, Submitter};
use meridian_fabric::sync::Reservation;
use tracing::debug;

use super::{handle, Front, FrontBody};

/// The handler the edge calls for every `h3` connection.
pub fn handler(tenant: Option<String>) -> H3Handler {
    let ids = Arc::new(AtomicU64::new(1 << 40));
    H3Handler(Arc::new(
        move |conn: quinn::Connection, submitter: Submitter| {
            let front = Arc::new(Front::new(submitter, tenant.clone()));
            let ids = ids.clone();
            Box::pin(async move {
                if let Err(e) = serve(conn, front, ids).await {
                    debug!("HTTP/3 connection ended: {e}");
                }
            })
        },
    ))
}

async fn serve(
    conn: quinn::Connection,
    front: Arc<Front>,
    ids: Arc<AtomicU64>,
) -> Result<(), h3::error::ConnectionError> {
    let mut h3c = h3::server::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .build(h3_quinn::Connection::new(conn.clone()))
        .await?;
    let draining = front.submitter.clone().draining();
    tokio::pin!(draining);
    let mut requests = tokio::task::JoinSet::new();
    loop {
        let resolver = tokio::select! {
            r = h3c.accept() => match r? {
                Some(r) => r,
                None => break,
            },
            // The edge is shutting down: GOAWAY, accept nothing more, let open requests
            // finish (the connection's future ends with them, which the edge's drain awaits).
            _ = &mut draining => {
                h3c.shutdown(0).await?;
                break;
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
        };
        let (front, ids, conn) = (front.clone(), ids.clone(), conn.clone());
        requests.spawn(async move {
            // Head and body within the intake timeout, as on TCP.
            let deadline = tokio::time::Instant::now() + front.intake_timeout;
            let Ok(Ok((req, mut stream))) =
                tokio::time::timeout_at(deadline, resolver.resolve_request()).await
            else {
                return;
            };
            // Authenticated from the head alone: a refused request's body is never read.
            let resp = match super::refused(req.headers(), &front) {
                Some(resp) => resp,
                None => {
                    let read = read_body(&mut stream, &front);
                    match tokio::time::timeout_at(deadline, read).await {
                        Err(_) => front.too_slow(),
                        Ok(None) => return,
                        Ok(Some(Err(resp))) => resp,
                        Ok(Some(Ok(body))) => {
                            let (method, path) = (req.method(), req.uri().path());
                            // Until the response starts, only the connection closing tells us
                            // the client is gone: stop waiting (dropping the submission
                            // cancels it).
                            tokio::select! {
                                r = handle(method, path, req.headers(), body, &front, &ids) => r,
                                _ = conn.closed() => return,
                            }
                        }
                    }
                }
            };
            let (parts, body) = resp.into_parts();
            if stream
                .send_response(hyper::Response::from_parts(parts, ()))
                .await
                .is_err()
            {
                return;
            }
            match body {
                FrontBody::Full(full) => {
                    let bytes: Bytes = full
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let _ = stream.send_data(bytes).await;
                }
                FrontBody::Stream(mut sse) => {
                    while let Some(Ok(frame)) = sse.frame().await {
                        let Ok(event) = frame.into_data() else {
                            continue;
                        };
                        if stream.send_data(event).await.is_err() {
                            return; // dropping `sse` cancels the request upstream
                        }
                    }
                }
            }
            let _ = stream.finish().await;
        });
    }
    while requests.join_next().await.is_some() {}
    // Linger before the connection closes: closing discards response bytes the client has
    // not acknowledged yet, and h3 exposes no per-stream delivery signal. The client closing
    // first ends the wait; otherwise a few RTTs give loss recovery time to deliver them.
    let linger = (conn.rtt() * 3 + std::time::Duration::from_millis(100))
        .min(meridian_fabric::edge::DRAIN_TIMEOUT);
    let _ = tokio::time::timeout(linger, conn.closed()).await;
    drop(h3c);
    Ok(())
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Largest request header section accepted (h3's default is unbounded).
const MAX_FIELD_SECTION: u64 = 16 * 1024;

/// Reads a request body within `max` bytes: `None` if the client went away, `Err` with the
/// answer if it is too large.
async fn read_body(
    stream: &mut Stream,
    front: &Front,
) -> Option<Result<(Bytes, Reservation), super::Resp>> {
    let mut body = BytesMut::new();
    let mut held = front.submitter.reservation();
    loop {
        match stream.recv_data().await {
            Ok(Some(mut chunk)) => {
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    if let Err(code) = front.take(&mut body, &mut held, part) {
                        return Some(Err(front.refusal(code)));
                    }
                    let n = part.len();
                    chunk.advance(n);
                }
            }
            Ok(None) => return Some(Ok((body.freeze(), held))),
            Err(_) => return None,
        }
    }
}
