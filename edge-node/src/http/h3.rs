//! HTTP/3 for the front door, on the edge's own UDP port (ALPN `h3` beside `meridian/1`):
//! each request's body is read within the limit, answered by the same handler as HTTP/1.1
//! and HTTP/2, and its SSE events are sent as DATA frames. A client that resets or goes
//! away stops the event stream, which cancels the request upstream.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use meridian_fabric::edge::{H3Handler, Submitter};
use meridian_protocol::ErrorCode;
use tracing::debug;

use super::{error, handle, Front, FrontBody};

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
        .build(h3_quinn::Connection::new(conn))
        .await?;
    while let Some(resolver) = h3c.accept().await? {
        let (front, ids) = (front.clone(), ids.clone());
        tokio::spawn(async move {
            let Ok((req, mut stream)) = resolver.resolve_request().await else {
                return;
            };
            let read = read_body(&mut stream, front.max_body);
            let resp = match tokio::time::timeout(front.intake_timeout, read).await {
                Err(_) => front.too_slow(),
                Ok(None) => return,
                Ok(Some(Err(resp))) => resp,
                Ok(Some(Ok(body))) => {
                    let (method, path) = (req.method(), req.uri().path());
                    handle(method, path, req.headers(), body, &front, &ids).await
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
    Ok(())
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Reads a request body within `max` bytes: `None` if the client went away, `Err` with the
/// answer if it is too large.
async fn read_body(stream: &mut Stream, max: usize) -> Option<Result<Bytes, super::Resp>> {
    let mut body = BytesMut::new();
    loop {
        match stream.recv_data().await {
            Ok(Some(mut chunk)) => {
                if body.len() + chunk.remaining() > max {
                    let msg = format!("request body exceeds {max} bytes");
                    return Some(Err(error(ErrorCode::TOO_LARGE, &msg)));
                }
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    body.extend_from_slice(part);
                    let n = part.len();
                    chunk.advance(n);
                }
            }
            Ok(None) => return Some(Ok(body.freeze())),
            Err(_) => return None,
        }
    }
}
