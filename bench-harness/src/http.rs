//! An OpenAI-compatible streaming client (`POST …/chat/completions`, `stream: true`, SSE)
//! over kept-alive HTTP/1.1 connections, so any gateway is measured with the same tool.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::target::{Job, Outcome};

/// An HTTP endpoint and its pool of idle connections.
#[derive(Clone, Debug)]
pub struct HttpTarget {
    /// The URL as given.
    pub url: String,
    authority: String,
    path: String,
    addr: SocketAddr,
    idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
}

impl HttpTarget {
    /// Parses `http://host:port/path` and resolves the host.
    pub async fn new(url: &str) -> anyhow::Result<HttpTarget> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("only http:// URLs are supported: {url}")
        };
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        let addr = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("resolving {authority}"))?
            .next()
            .with_context(|| format!("{authority} has no address"))?;
        Ok(HttpTarget {
            url: url.to_owned(),
            authority: authority.to_owned(),
            path,
            addr,
            idle: Arc::default(),
        })
    }

    async fn connection(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        loop {
            let idle = self.idle.lock().expect("not poisoned").pop();
            match idle {
                Some(mut sr) => {
                    if sr.ready().await.is_ok() {
                        return Ok(sr);
                    }
                }
                None => break,
            }
        }
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let (sr, conn) = http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(sr)
    }

    /// Sends one streaming chat completion and measures it from `intended`.
    pub async fn send(&self, job: &Job, intended: Instant) -> Outcome {
        let mut out = Outcome::default();
        if let Err(e) = self.stream(job, intended, &mut out).await {
            out.error.get_or_insert_with(|| format!("HTTP: {e}"));
        }
        out.e2e = intended.elapsed();
        out
    }

    async fn stream(&self, job: &Job, intended: Instant, out: &mut Outcome) -> anyhow::Result<()> {
        let body = chat_body(job);
        let mut req = hyper::Request::post(&self.path)
            .header("host", &self.authority)
            .header("content-type", "application/json");
        req = routing_headers(req, job);
        let req = req.body(Full::new(body))?;
        let mut sr = self.connection().await?;
        let resp = sr.send_request(req).await?;
        if !resp.status().is_success() {
            out.error = Some(format!("HTTP_{}", resp.status().as_u16()));
            return Ok(());
        }
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        let mut last = None;
        let mut done = false;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
            }
            done |= drain_events(&mut buf, out, intended, &mut last);
        }
        if !done && out.error.is_none() {
            out.error = Some("SSE_TRUNCATED".into());
        }
        self.idle.lock().expect("not poisoned").push(sr);
        Ok(())
    }
}

/// The routing headers for `job`: Meridian's (`x-meridian-session`, `x-meridian-area`) and
/// the `x-session-id` that the peers' ring hash is configured on.
pub(crate) fn routing_headers(
    mut req: hyper::http::request::Builder,
    job: &Job,
) -> hyper::http::request::Builder {
    if let Some(s) = &job.session {
        req = req
            .header("x-meridian-session", s)
            .header("x-session-id", s);
    }
    if let Some(a) = &job.area {
        req = req.header("x-meridian-area", a);
    }
    if let Some(c) = &job.credential {
        req = req.header("authorization", format!("Bearer {c}"));
    }
    req
}

/// A streaming chat completion request body for `job`.
pub(crate) fn chat_body(job: &Job) -> Bytes {
    let prompt = String::from_utf8_lossy(&job.prompt);
    let mut body = serde_json::json!({
        "model": job.model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
    });
    if let Some(m) = job.max_tokens {
        body["max_tokens"] = m.into();
    }
    Bytes::from(serde_json::to_vec(&body).expect("JSON values serialise"))
}

/// Consumes complete SSE events at the front of `buf`, recording tokens; returns whether
/// `[DONE]` was seen.
pub(crate) fn drain_events(
    buf: &mut BytesMut,
    out: &mut Outcome,
    intended: Instant,
    last: &mut Option<Instant>,
) -> bool {
    let mut done = false;
    while let Some(end) = find(buf, b"\n\n") {
        let event = buf.split_to(end + 2);
        match sse_event(&event) {
            SseEvent::Token => out.token(intended, last),
            SseEvent::Done => done = true,
            SseEvent::Error => out.error = Some("SSE_ERROR".into()),
            SseEvent::Other => {}
        }
    }
    done
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SseEvent {
    Token,
    Done,
    Error,
    Other,
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Classifies one SSE event without a full JSON parse: a chunk whose delta carries
/// non-empty `content` (chat) or `text` (completions) is a token.
pub(crate) fn sse_event(event: &[u8]) -> SseEvent {
    let mut e = event;
    while e.has_remaining() {
        let line_end = find(e, b"\n").unwrap_or(e.len());
        let line = &e[..line_end];
        e = &e[(line_end + 1).min(e.len())..];
        let Some(data) = line.strip_prefix(b"data:") else {
            continue;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data == b"[DONE]" {
            return SseEvent::Done;
        }
        if find(data, b"\"error\"").is_some() && find(data, b"\"choices\"").is_none() {
            return SseEvent::Error;
        }
        for key in [&b"\"content\":\""[..], b"\"text\":\""] {
            if let Some(i) = find(data, key) {
                if data.get(i + key.len()) != Some(&b'"') {
                    return SseEvent::Token;
                }
            }
        }
    }
    SseEvent::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_openai_chunks() {
        let tok =
            br#"data: {"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}

"#;
        let role = br#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

"#;
        assert_eq!(sse_event(tok), SseEvent::Token);
        assert_eq!(sse_event(role), SseEvent::Other);
        assert_eq!(sse_event(b"data: [DONE]\n\n"), SseEvent::Done);
        assert_eq!(sse_event(b"data: {\"text\":\"x\"}\n\n"), SseEvent::Token);
        assert_eq!(
            sse_event(b"data: {\"error\":{\"message\":\"no\"}}\n\n"),
            SseEvent::Error
        );
    }
}
