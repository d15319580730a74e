//! The edge's OpenAI-compatible HTTP front door (HTTP/1.1 and HTTP/2 over TCP):
//! `POST /v1/chat/completions`, `POST /v1/completions` (streaming SSE and whole responses)
//! and `GET /v1/models`. The edge reads only `model`, `stream`, `stream_options` and
//! `max_tokens` from the body and forwards the body unchanged to the worker; routing inputs
//! come from headers (`x-meridian-area`, `x-meridian-session`) and the configured tenant.
//! Responses name the serving region and worker (`x-meridian-region`, `x-meridian-worker`).
//! A client that disconnects cancels the request end to end.

pub mod h3;
mod openai;
mod sse;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use bytes::BytesMut;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame as HttpFrame, Incoming};
use hyper::header::HeaderMap;
use hyper::server::conn::{http1, http2};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meridian_fabric::edge::{Delivery, Submission, Submitter};
use meridian_fabric::sync::Reservation;
use meridian_fabric::telemetry::TraceContext;
use meridian_protocol::{body_format, Credential, ErrorCode, ErrorFrame, Frame, RequestHeaders};
use serde_json::json;

use crate::listen::Version;
use openai::{error_body, status_of, usage, Kind, Meta, Peek};
use sse::SseBody;

/// What the front door needs.
#[derive(Clone)]
pub struct Front {
    pub submitter: Submitter,
    /// Tenant applied to every request (until authentication exists).
    pub tenant: Option<String>,
    /// Largest request body (`[edge] max_prompt_bytes`).
    pub max_body: usize,
    /// Longest time a client may take to send its request head and body
    /// (`[edge] intake_timeout_ms`, as for QUIC clients).
    pub intake_timeout: Duration,
    /// Models whose requests are resumable without the header (`[edge]
    /// http_resumable_models`).
    pub resumable_models: Arc<[String]>,
    /// Most concurrent HTTP/2 streams per connection (`[edge] max_streams_per_connection`).
    pub max_streams: u32,
    /// `Alt-Svc` advertising HTTP/3 on the edge's UDP port, on every response.
    pub alt_svc: Option<hyper::header::HeaderValue>,
}

impl Front {
    /// The front door of the edge behind `submitter`, with the edge's limits.
    pub fn new(submitter: Submitter, tenant: Option<String>) -> Front {
        let cfg = submitter.config();
        Front {
            submitter,
            tenant,
            max_body: cfg.edge.max_prompt_bytes,
            intake_timeout: cfg.edge.intake_timeout,
            resumable_models: cfg.edge.http_resumable_models.clone().into(),
            max_streams: cfg.edge.max_streams_per_connection,
            alt_svc: None,
        }
    }

    /// This front door with the running config's limits (body size, intake and head
    /// timeout, resumable models, HTTP/2 streams): what a new connection uses.
    fn refreshed(&self) -> Front {
        Front {
            alt_svc: self.alt_svc.clone(),
            ..Front::new(self.submitter.clone(), self.tenant.clone())
        }
    }

    /// Advertises HTTP/3 on UDP `port` (RFC 9114 §3.1.1: `Alt-Svc: h3=":port"`) on every
    /// HTTP/1.1 and HTTP/2 response, so browsers and HTTP/3-capable clients move to QUIC;
    /// 0 advertises nothing. Behind a load balancer, the port clients reach.
    pub fn with_alt_svc(mut self, port: u16) -> Front {
        self.alt_svc = (port != 0)
            .then(|| format!("h3=\":{port}\"; ma=86400"))
            .and_then(|v| hyper::header::HeaderValue::from_str(&v).ok());
        self
    }

    /// The HTTP/1.1 and HTTP/2 connection builders with this front door's limits.
    fn builders(&self) -> (http1::Builder, http2::Builder<TokioExecutor>) {
        let mut h1 = http1::Builder::new();
        // A bounded read buffer per connection (hyper's default grows to ~400 KB): request
        // bodies are held in the budgeted buffer below, not in hyper's.
        h1.timer(TokioTimer::new())
            .header_read_timeout(self.intake_timeout)
            .max_buf_size(64 * 1024);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(self.max_streams)
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
        (h1, h2)
    }

    /// The answer to a client that did not send its whole body in time.
    fn too_slow(&self) -> Resp {
        let msg = format!("request body not received within {:?}", self.intake_timeout);
        json_response(
            StatusCode::REQUEST_TIMEOUT,
            error_body(ErrorCode::DEADLINE_EXCEEDED, &msg),
        )
    }
}

/// Binds `addr` and serves the front door in the background; returns the bound address.
/// At most `[edge] max_connections` TCP connections are served at once (further ones wait in
/// the listen backlog); a request head must arrive within the intake timeout (idle HTTP/1.1
/// keep-alive connections close after it); HTTP/2 allows `[edge] max_streams_per_connection`
/// concurrent streams and pings idle peers every 20 s. A reload applies to the connections
/// opened after it, except `max_connections` (bound here).
pub async fn spawn(addr: SocketAddr, front: Front) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let limit = front.submitter.config().edge.max_connections as usize;
    let slots = Arc::new(tokio::sync::Semaphore::new(limit));
    let front = Arc::new(front);
    let ids = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let tcp = crate::listen::accept(&listener, "http").await;
            // Each connection takes the running config's limits (a reload applies to the
            // connections opened after it).
            let front = Arc::new(front.refreshed());
            let ids = ids.clone();
            tokio::spawn(async move {
                let builders = front.builders();
                let limit = front.intake_timeout;
                // `[edge] http_tls`: HTTPS with the edge's (renewable) certificate.
                let io: Box<dyn crate::listen::Io> = match front.submitter.http_tls() {
                    Some(tls) => match crate::listen::tls(tcp, tls, limit).await {
                        Some(io) => io,
                        None => return,
                    },
                    None => Box::new(tcp),
                };
                let Some((version, io)) = crate::listen::detect(io, limit).await else {
                    return;
                };
                let activity = Arc::new(Activity::default());
                let seen = activity.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let (front, ids) = (front.clone(), ids.clone());
                    let busy = Busy::new(seen.clone());
                    async move {
                        let mut resp = handle_hyper(req, &front, &ids).await;
                        if let Some(v) = &front.alt_svc {
                            resp.headers_mut().insert(hyper::header::ALT_SVC, v.clone());
                        }
                        // The request counts as in flight until its body is sent.
                        Ok::<_, Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
                    }
                });
                let io = TokioIo::new(io);
                let _ = match version {
                    Version::H1 => builders.0.serve_connection(io, svc).await,
                    Version::H2 => {
                        // hyper has no HTTP/2 idle timeout, and a peer that answers PINGs
                        // would hold its connection slot forever: after `limit` with no
                        // request in flight, GOAWAY and close.
                        let conn = builders.1.serve_connection(io, svc);
                        tokio::pin!(conn);
                        tokio::select! {
                            r = conn.as_mut() => r,
                            _ = activity.idle_for(limit) => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        }
                    }
                };
                drop(slot);
            });
        }
    });
    Ok(bound)
}

type Resp = Response<FrontBody>;

/// Requests in flight on one connection and when the last one ended.
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Bumped whenever a request ends.
    ended: tokio::sync::Notify,
}

impl Activity {
    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {
                        if self.in_flight.load(Ordering::Acquire) == 0 {
                            return;
                        }
                    }
                    _ = ended => {}
                }
            } else {
                ended.await;
            }
        }
    }
}

/// One request in flight on a connection, until dropped (with the response body).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(a)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked {
    body: FrontBody,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<HttpFrame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(FrontBody::Full(Full::new(Bytes::from(v.to_string()))))
        .expect("valid response")
}

fn error(code: ErrorCode, message: &str) -> Resp {
    json_response(status_of(code).0, error_body(code, message))
}

/// The answer to an ERROR from the edge or a worker; a retry-after hint becomes
/// `Retry-After` (whole seconds, rounded up).
fn error_frame(e: &ErrorFrame) -> Resp {
    let mut resp = error(e.code, &e.message);
    if let Some(ms) = e.retry_after_ms {
        let secs = ms.div_ceil(1000).max(1);
        resp.headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from(secs));
    }
    resp
}

/// The credential of `Authorization: Bearer <credential>`; `Err` for any other
/// `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<Option<Credential>, &'static str> {
    let Some(v) = headers.get(hyper::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| "Authorization header is not visible ASCII")?;
    let (scheme, cred) = v
        .split_once(' ')
        .ok_or("Authorization must be `Bearer <API key or token>`")?;
    let cred = cred.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || cred.is_empty() {
        return Err("Authorization must be `Bearer <API key or token>`");
    }
    if cred.len() > meridian_protocol::limits::MAX_CREDENTIAL_LEN {
        return Err("the bearer credential is longer than 2048 bytes");
    }
    Ok(Some(Credential(cred.to_owned())))
}

impl Front {
    fn too_large(&self) -> Resp {
        let msg = format!("request body exceeds {} bytes", self.max_body);
        error(ErrorCode::TOO_LARGE, &msg)
    }

    fn budget_spent(&self) -> Resp {
        let msg = format!(
            "the edge is buffering its limit of {} request bytes; retry shortly",
            self.submitter.budget()
        );
        error_frame(&ErrorFrame::new(ErrorCode::OVERLOADED, msg).retry_after(100))
    }

    /// Takes one received body chunk into `buf` within the body limit and the edge's buffer
    /// budget (held in `held` until the request ends).
    /// `Err(TOO_LARGE | OVERLOADED)`: answer with [`Front::refusal`].
    fn take(
        &self,
        buf: &mut BytesMut,
        held: &mut Reservation,
        data: &[u8],
    ) -> Result<(), ErrorCode> {
        if buf.len() + data.len() > self.max_body {
            return Err(ErrorCode::TOO_LARGE);
        }
        if !held.grow(data.len() as u64) {
            return Err(ErrorCode::OVERLOADED);
        }
        buf.extend_from_slice(data);
        Ok(())
    }

    /// The answer to a body [`Front::take`] refused.
    fn refusal(&self, code: ErrorCode) -> Resp {
        if code == ErrorCode::TOO_LARGE {
            self.too_large()
        } else {
            self.budget_spent()
        }
    }
}

/// Reads a hyper body within the limits: a declared length over the limit is 413 at once, a
/// body that breaks its framing (bad chunked encoding) is 400.
async fn read_body(mut body: Incoming, front: &Front) -> Result<(Bytes, Reservation), Resp> {
    if body.size_hint().lower() > front.max_body as u64 {
        return Err(front.too_large());
    }
    let mut held = front.submitter.reservation();
    // Sized once from the declared length, so a body is never copied into a buffer twice its
    // size while growing.
    let hint = usize::try_from(body.size_hint().lower()).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(hint.min(front.max_body));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error(
                ErrorCode::BAD_REQUEST,
                &format!("malformed request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            front
                .take(&mut buf, &mut held, &data)
                .map_err(|c| front.refusal(c))?;
        }
    }
    Ok((buf.freeze(), held))
}

/// Authenticates a request from its head alone, so a refused one is answered before its body
/// is read (and held against the edge's buffer budget): `Some` is the refusal.
pub(crate) fn refused(headers: &HeaderMap, front: &Front) -> Option<Resp> {
    let credential = match bearer(headers) {
        Ok(c) => c,
        Err(m) => return Some(error(ErrorCode::UNAUTHORIZED, m)),
    };
    let mut h = RequestHeaders::new("-");
    if credential.is_none() {
        h.tenant = front.tenant.clone();
    }
    h.credential = credential;
    front.submitter.identify(&h).err().map(|e| error_frame(&e))
}

/// The hyper (HTTP/1.1, HTTP/2) adapter: reads the body within the limits, then [`handle`].
async fn handle_hyper(req: Request<Incoming>, front: &Front, ids: &AtomicU64) -> Resp {
    let (parts, body) = req.into_parts();
    if let Some(resp) = refused(&parts.headers, front) {
        return resp;
    }
    let (body, held) =
        match tokio::time::timeout(front.intake_timeout, read_body(body, front)).await {
            Ok(Ok(b)) => b,
            Ok(Err(resp)) => return resp,
            Err(_) => return front.too_slow(),
        };
    handle(
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        (body, held),
        front,
        ids,
    )
    .await
}

/// The front door for any HTTP version: a request whose body was read.
pub(crate) async fn handle(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: (Bytes, Reservation),
    front: &Front,
    ids: &AtomicU64,
) -> Resp {
    match (method, path) {
        (&Method::GET, "/v1/models") => {
            let data: Vec<_> = front
                .submitter
                .models()
                .into_iter()
                .map(
                    |m| json!({ "id": m, "object": "model", "created": 0, "owned_by": "meridian" }),
                )
                .collect();
            json_response(StatusCode::OK, json!({ "object": "list", "data": data }))
        }
        (&Method::POST, "/v1/chat/completions") => {
            completion(headers, body, front, ids, Kind::Chat).await
        }
        (&Method::POST, "/v1/completions") => {
            completion(headers, body, front, ids, Kind::Completions).await
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            error_body(
                ErrorCode::BAD_REQUEST,
                &format!("no route for {method} {path}"),
            ),
        ),
    }
}

/// Request headers the edge reads besides the body's `model` and `stream`.
struct Inputs {
    area: Option<String>,
    session: Option<Bytes>,
    /// A valid W3C `traceparent`: the edge's spans join the caller's trace. An invalid one
    /// is ignored (a new trace starts), as Trace Context asks.
    traceparent: Option<String>,
    /// `x-meridian-resumable`: `Some(true|false)` overrides the model's configured default.
    resumable: Option<bool>,
}

fn routing_headers(headers: &HeaderMap) -> Result<Inputs, String> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().map(str::to_owned));
    let area = match header("x-meridian-area") {
        Some(Ok(a))
            if !a.is_empty()
                && a.len() <= 16
                && a.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Some(a)
        }
        Some(_) => {
            return Err("x-meridian-area must be a lowercase area code like `jp` or `eu`".into())
        }
        None => None,
    };
    let session = match header("x-meridian-session") {
        Some(Ok(s)) if s.len() <= meridian_protocol::limits::MAX_SHARD_KEY_LEN => {
            Some(Bytes::from(s))
        }
        Some(_) => {
            return Err("x-meridian-session must be visible ASCII of at most 256 bytes".into())
        }
        None => None,
    };
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| TraceContext::parse(v).is_some())
        .map(str::to_owned);
    let resumable = match header("x-meridian-resumable") {
        None => None,
        Some(Ok(v)) if v == "1" || v.eq_ignore_ascii_case("true") => Some(true),
        Some(Ok(v)) if v == "0" || v.eq_ignore_ascii_case("false") => Some(false),
        Some(_) => return Err("x-meridian-resumable must be true or false (1 or 0)".into()),
    };
    Ok(Inputs {
        area,
        session,
        traceparent,
        resumable,
    })
}

async fn completion(
    headers: &HeaderMap,
    (body, held): (Bytes, Reservation),
    front: &Front,
    ids: &AtomicU64,
    kind: Kind,
) -> Resp {
    let credential = match bearer(headers) {
        Ok(c) => c,
        Err(m) => return error(ErrorCode::UNAUTHORIZED, m),
    };
    let inputs = match routing_headers(headers) {
        Ok(h) => h,
        Err(m) => return error(ErrorCode::BAD_REQUEST, &m),
    };
    let peek: Peek = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return error(
                ErrorCode::BAD_REQUEST,
                &format!("invalid request body: {e}"),
            )
        }
    };
    if peek.model.is_empty() || peek.model.len() > meridian_protocol::limits::MAX_MODEL_LEN {
        return error(ErrorCode::BAD_REQUEST, "`model` must be 1-128 bytes");
    }
    let mut headers = RequestHeaders::new(peek.model.clone());
    headers.area = inputs.area;
    headers.shard_key = inputs.session;
    headers.trace_context = inputs.traceparent;
    // A credential names its own tenant; the configured one applies only without one (on an
    // edge with `[auth] required = false`).
    if credential.is_none() {
        headers.tenant = front.tenant.clone();
    }
    headers.credential = credential;
    // The larger of the two: backends differ in which one wins, and the edge reserves the
    // tenant's tokens for it (the worker lowers both to it).
    headers.max_tokens = match (peek.max_tokens, peek.max_completion_tokens) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if headers
        .max_tokens
        .is_some_and(|n| n > meridian_protocol::varint::MAX)
    {
        return error(
            ErrorCode::BAD_REQUEST,
            "`max_tokens` must be at most 4611686018427387903 (2^62 - 1)",
        );
    }
    headers.body_format = Some(match kind {
        Kind::Chat => body_format::OPENAI_CHAT,
        Kind::Completions => body_format::OPENAI_COMPLETIONS,
    });
    // PROTOCOL.md §4.10: asked for (header) or configured for the model, and only for
    // bodies another worker can continue faithfully (no tools, one choice, no logprobs, no
    // constrained decoding); the answer says which with `x-meridian-resumable`.
    let wanted = (inputs.resumable).unwrap_or_else(|| front.resumable_models.contains(&peek.model));
    headers.resumable = wanted
        && serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| meridian_fabric::worker::not_resumable(&v).is_none());
    let resumable = headers.resumable;
    let mut sub = match front.submitter.submit_held(headers, body, held) {
        Ok(s) => s,
        Err(e) => return error(e.code(), &e.to_string()),
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prefix = if kind == Kind::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    let n = ids.fetch_add(1, Ordering::Relaxed);
    let meta = Meta {
        kind,
        id: format!("{prefix}-{created:x}{n:08x}"),
        created,
        model: peek.model,
    };
    // Wait for the first answer, so errors before any token get their HTTP status.
    let mut route = None;
    let first = loop {
        match sub.next().await {
            Some(Delivery::Routed(r)) => route = Some(r),
            Some(Delivery::Frame(Frame::Error(e)) | Delivery::Failed(e)) => return error_frame(&e),
            Some(Delivery::Frame(f)) => break f,
            None => {
                return error(
                    ErrorCode::UPSTREAM_FAILED,
                    "the request ended without an answer",
                )
            }
        }
    };
    let (region, worker) = route.map_or_else(Default::default, |r| (r.region, r.worker));
    let include_usage = peek.stream_options.is_some_and(|o| o.include_usage);
    let response = Response::builder()
        .header("x-meridian-region", region)
        .header("x-meridian-worker", worker)
        .header(
            "x-meridian-resumable",
            if resumable { "true" } else { "false" },
        );
    if peek.stream.unwrap_or(false) {
        let body = SseBody::new(sub, first, meta, include_usage);
        response
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(FrontBody::Stream(Box::new(body)))
            .expect("valid response")
    } else {
        match whole(sub, first, &meta).await {
            Ok(v) => response
                .header("content-type", "application/json")
                .body(FrontBody::Full(Full::new(Bytes::from(v.to_string()))))
                .expect("valid response"),
            Err(resp) => resp,
        }
    }
}

/// Collects a whole response.
async fn whole(mut sub: Submission, first: Frame, meta: &Meta) -> Result<serde_json::Value, Resp> {
    let mut text = String::new();
    let mut next = Some(first);
    loop {
        let Some(frame) = (match next.take() {
            Some(f) => Some(f),
            None => sub.next_frame().await,
        }) else {
            return Err(error(
                ErrorCode::UPSTREAM_FAILED,
                "the request ended without END",
            ));
        };
        match frame {
            Frame::Tokens(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Frame::End(end) => {
                return Ok(meta.whole(
                    &text,
                    end.finish_reason,
                    usage(end.prompt_tokens, end.completion_tokens),
                ))
            }
            Frame::Error(e) => return Err(error(e.code, &e.message)),
            _ => {}
        }
    }
}

/// A whole body or a stream of SSE events.
pub enum FrontBody {
    Full(Full<Bytes>),
    Stream(Box<SseBody>),
}

impl Body for FrontBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<HttpFrame<Bytes>, Infallible>>> {
        match self.get_mut() {
            FrontBody::Full(f) => Pin::new(f).poll_frame(cx),
            FrontBody::Stream(sse) => Pin::new(sse.as_mut()).poll_frame(cx),
        }
    }
}
