//! The OpenAI-compatible streaming client over HTTP/3 (h3 + h3-quinn), so HTTP/3 gateways
//! (Envoy's HTTP/3 listener, Meridian's own) are measured with the same tool. Requests are
//! streams on `connections` QUIC connections.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use h3::client::SendRequest;
use meridian_protocol::client::tls::client_crypto;
use meridian_protocol::client::Trust;

use crate::http::{chat_body, drain_events, routing_headers};
use crate::target::{Job, Outcome};

/// An HTTP/3 endpoint reached over a few QUIC connections.
#[derive(Clone)]
pub struct Http3Target {
    /// The URL as given.
    pub url: String,
    path: String,
    conns: Vec<SendRequest<h3_quinn::OpenStreams, Bytes>>,
}

impl std::fmt::Debug for Http3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http3Target")
            .field("url", &self.url)
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl Http3Target {
    /// Connects `connections` QUIC connections (ALPN h3) to `https://host:port/path`,
    /// trusting exactly the certificate in `cert`.
    pub async fn new(url: &str, cert: &Path, connections: usize) -> anyhow::Result<Http3Target> {
        let Some(rest) = url.strip_prefix("https://") else {
            bail!("HTTP/3 URLs start with https://: {url}")
        };
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        let addr: SocketAddr = tokio::net::lookup_host(authority)
            .await?
            .next()
            .with_context(|| format!("{authority} has no address"))?;
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_owned();
        let trust = Trust::pin_file(cert).with_context(|| format!("reading {}", cert.display()))?;
        let crypto = Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(
            client_crypto(&trust, &[b"h3"])?,
        )?);
        let mut conns = Vec::new();
        for _ in 0..connections.max(1) {
            let bind: SocketAddr = if addr.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            }
            .parse()?;
            let mut ep = quinn::Endpoint::client(bind)?;
            ep.set_default_client_config(quinn::ClientConfig::new(crypto.clone()));
            let conn = ep
                .connect(addr, &host)?
                .await
                .with_context(|| format!("HTTP/3 handshake with {addr}"))?;
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
            tokio::spawn(async move {
                let _ep = ep; // keep the endpoint alive with its connection
                std::future::poll_fn(|cx| driver.poll_close(cx)).await
            });
            conns.push(send);
        }
        Ok(Http3Target {
            url: url.to_owned(),
            path,
            conns,
        })
    }

    /// Sends one streaming chat completion on connection `slot`, measured from `intended`.
    pub async fn send(&self, job: &Job, slot: usize, intended: Instant) -> Outcome {
        let mut out = Outcome::default();
        if let Err(e) = self.stream(job, slot, intended, &mut out).await {
            out.error.get_or_insert_with(|| format!("HTTP3: {e}"));
        }
        out.e2e = intended.elapsed();
        out
    }

    async fn stream(
        &self,
        job: &Job,
        slot: usize,
        intended: Instant,
        out: &mut Outcome,
    ) -> anyhow::Result<()> {
        let mut sr = self.conns[slot % self.conns.len()].clone();
        let mut req = hyper::Request::post(format!("https://localhost{}", self.path))
            .header("content-type", "application/json");
        req = routing_headers(req, job);
        let mut stream = sr.send_request(req.body(())?).await?;
        stream.send_data(chat_body(job)).await?;
        stream.finish().await?;
        let resp = stream.recv_response().await?;
        if !resp.status().is_success() {
            out.error = Some(format!("HTTP_{}", resp.status().as_u16()));
            return Ok(());
        }
        let (mut buf, mut last, mut done) = (BytesMut::new(), None, false);
        while let Some(mut chunk) = stream.recv_data().await? {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                buf.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
            done |= drain_events(&mut buf, out, intended, &mut last);
        }
        if !done && out.error.is_none() {
            out.error = Some("SSE_TRUNCATED".into());
        }
        Ok(())
    }
}
