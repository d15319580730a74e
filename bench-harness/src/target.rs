//! What a run sends requests to: Meridian's native protocol (an edge, or a worker directly
//! as the baseline) or any OpenAI-compatible HTTP endpoint (SSE).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use meridian_protocol::client::{Client, ClientConfig, ClientError, Event, Request, Trust};

use crate::http::HttpTarget;

/// One request to send.
#[derive(Clone, Debug)]
pub struct Job {
    /// Model.
    pub model: String,
    /// Prompt bytes.
    pub prompt: Bytes,
    /// Most tokens.
    pub max_tokens: Option<u64>,
    /// Shard key / session id.
    pub session: Option<String>,
    /// Area hint.
    pub area: Option<String>,
    /// Tenant.
    pub tenant: Option<String>,
    /// Credential (API key or token) authenticating the request.
    pub credential: Option<std::sync::Arc<str>>,
}

/// What happened to one request. Times are from the intended send time.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Time to first token.
    pub ttft: Option<Duration>,
    /// End to end.
    pub e2e: Duration,
    /// Gaps between consecutive tokens.
    pub itls: Vec<Duration>,
    /// Tokens received.
    pub tokens: u64,
    /// Region (native).
    pub region: Option<String>,
    /// Worker (native).
    pub worker: Option<String>,
    /// Error code name if it failed.
    pub error: Option<String>,
}

impl Outcome {
    pub(crate) fn token(&mut self, start: Instant, last: &mut Option<Instant>) {
        let now = Instant::now();
        match last {
            None => self.ttft = Some(now - start),
            Some(prev) => self.itls.push(now - *prev),
        }
        *last = Some(now);
        self.tokens += 1;
    }
}

/// A load target.
#[derive(Clone, Debug)]
pub enum Target {
    /// Meridian protocol over `connections` QUIC connections spread over `addrs`.
    Native {
        /// Label for reports (`edge …` / `direct …`).
        label: String,
        /// Connections.
        clients: Vec<Client>,
    },
    /// OpenAI-compatible HTTP/1.1.
    Http(HttpTarget),
    /// OpenAI-compatible HTTP/3.
    Http3(crate::http3::Http3Target),
}

impl Target {
    /// Connects `connections` QUIC connections round-robin over `addrs`.
    pub async fn native(
        label: String,
        addrs: &[SocketAddr],
        cert: &std::path::Path,
        connections: usize,
    ) -> anyhow::Result<Target> {
        let trust = Trust::pin_file(cert).with_context(|| format!("reading {}", cert.display()))?;
        let mut cfg = ClientConfig::new(trust);
        let mut t = quinn_transport();
        t.max_concurrent_uni_streams(4u32.into());
        cfg.transport = Some(std::sync::Arc::new(t));
        // Handshakes in parallel: thousands of idle connections should not take minutes.
        let mut connecting = tokio::task::JoinSet::new();
        for i in 0..connections.max(1) {
            let (addr, cfg) = (addrs[i % addrs.len()], cfg.clone());
            connecting.spawn(async move {
                Client::connect(addr, cfg)
                    .await
                    .with_context(|| format!("connecting to {addr}"))
            });
        }
        let mut clients = Vec::with_capacity(connections);
        while let Some(c) = connecting.join_next().await {
            clients.push(c??);
        }
        Ok(Target::Native { label, clients })
    }

    /// Report label.
    pub fn label(&self) -> String {
        match self {
            Target::Native { label, .. } => label.clone(),
            Target::Http(h) => format!("http {}", h.url),
            Target::Http3(h) => format!("http3 {}", h.url),
        }
    }

    /// Sends one job, measuring from `intended`. `slot` picks the connection.
    pub async fn send(&self, job: &Job, slot: usize, intended: Instant) -> Outcome {
        match self {
            Target::Native { clients, .. } => {
                native(&clients[slot % clients.len()], job, intended).await
            }
            Target::Http(h) => h.send(job, intended).await,
            Target::Http3(h) => h.send(job, slot, intended).await,
        }
    }

    /// Closes connections (concurrently: each waits out its own draining period).
    pub async fn close(self) {
        if let Target::Native { clients, .. } = self {
            let mut closing = tokio::task::JoinSet::new();
            for c in clients {
                closing.spawn(c.close());
            }
            while closing.join_next().await.is_some() {}
        }
    }
}

/// quinn transport for the load generator: enough streams for thousands of concurrent
/// requests on few connections.
fn quinn_transport() -> meridian_protocol::client::TransportConfig {
    let mut t = meridian_protocol::client::TransportConfig::default();
    t.max_idle_timeout(Some(Duration::from_secs(60).try_into().expect("fits")));
    t
}

async fn native(client: &Client, job: &Job, intended: Instant) -> Outcome {
    let mut req = Request::new(job.model.clone(), job.prompt.clone());
    req.headers.max_tokens = job.max_tokens;
    req.headers.area = job.area.clone();
    req.headers.tenant = job.tenant.clone();
    req.headers.credential =
        (job.credential.as_deref()).map(|c| meridian_protocol::Credential(c.to_owned()));
    req.headers.shard_key = job.session.clone().map(Bytes::from);
    let mut out = Outcome::default();
    let mut last = None;
    let result: Result<(), ClientError> = async {
        let mut g = client.generate(req).await?;
        while let Some(ev) = g.next().await? {
            match ev {
                Event::Routed(r) => {
                    out.region = Some(r.region);
                    out.worker = Some(r.worker);
                }
                Event::Tokens(_) => out.token(intended, &mut last),
                Event::End(_) => {}
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        out.error = Some(
            e.code()
                .map_or_else(|| "CONNECTION".to_owned(), |c| c.to_string()),
        );
    }
    out.e2e = intended.elapsed();
    out
}
