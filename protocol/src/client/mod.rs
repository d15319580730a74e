//! The async Rust client SDK (feature `client`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use meridian_protocol::client::{Client, ClientConfig, Event, Request, Trust};
//!
//! let trust = Trust::pin_file("meridian-dev/cert.pem")?;
//! let client = Client::connect("127.0.0.1:4433".parse()?, ClientConfig::new(trust)).await?;
//! let mut request = Request::new("llama-3-8b", "Why is the sky blue?");
//! request.headers.area = Some("jp".into());
//! let mut generation = client.generate(request).await?;
//! while let Some(event) = generation.next().await? {
//!     match event {
//!         Event::Routed(r) => println!("routed to {} / {}", r.region, r.worker),
//!         Event::Tokens(text) => print!("{text}"),
//!         Event::End(end) => println!("\n[{} tokens]", end.completion_tokens),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Dropping a [`Generation`] before its END cancels the request end to end: the SDK resets
//! its stream with `CANCELLED`, the edge resets the upstream stream and the worker stops
//! generating.

mod generation;
pub mod tls;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use quinn::crypto::rustls::QuicClientConfig;

pub use generation::{ClientError, Event, Generation};
pub use quinn::TransportConfig;
pub use tls::{TlsError, Trust};

use crate::{Credential, Frame, RequestHeaders, ALPN};

/// How to reach an edge.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How the edge's certificate is trusted.
    pub trust: Trust,
    /// TLS server name to send and (with [`Trust::Roots`]) verify. Default `localhost`.
    pub server_name: String,
    /// Transport tuning; quinn's defaults if `None`.
    pub transport: Option<Arc<quinn::TransportConfig>>,
    /// Credential (API key or signed token) sent with every request that carries none of
    /// its own (PROTOCOL.md §4.9).
    pub credential: Option<Credential>,
    /// Client certificate for servers that require mutual TLS (an edge to its workers).
    pub identity: Option<Arc<tls::ClientIdentity>>,
}

impl ClientConfig {
    /// A configuration with the given trust and the default server name.
    pub fn new(trust: Trust) -> Self {
        ClientConfig {
            trust,
            server_name: "localhost".into(),
            transport: None,
            credential: None,
            identity: None,
        }
    }

    /// The same configuration, authenticating every request with `credential`.
    pub fn with_credential(mut self, credential: impl Into<String>) -> Self {
        self.credential = Some(Credential(credential.into()));
        self
    }

    /// The quinn client configuration this describes.
    pub fn quinn_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let crypto = tls::client_crypto_with(&self.trust, &[ALPN], self.identity.as_deref())?;
        let crypto = QuicClientConfig::try_from(crypto)
            .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        if let Some(t) = &self.transport {
            cfg.transport_config(t.clone());
        }
        Ok(cfg)
    }
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TLS configuration is unusable: fix the certificate files.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The local UDP socket could not be bound.
    #[error("binding a local UDP socket: {0}")]
    Bind(#[from] std::io::Error),
    /// quinn refused the parameters (e.g. an invalid server name).
    #[error(transparent)]
    Quinn(#[from] quinn::ConnectError),
    /// The handshake failed: the edge is unreachable, or its certificate or ALPN was refused.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The edge address.
        addr: SocketAddr,
        /// The cause.
        source: quinn::ConnectionError,
    },
}

/// A prompt to generate from.
#[derive(Clone, Debug)]
pub struct Request {
    /// Routing metadata.
    pub headers: RequestHeaders,
    /// The prompt, opaque to the edge.
    pub prompt: Bytes,
}

impl Request {
    /// A request for `model` with `prompt` and default headers.
    pub fn new(model: impl Into<String>, prompt: impl Into<Bytes>) -> Self {
        Request {
            headers: RequestHeaders::new(model),
            prompt: prompt.into(),
        }
    }

    /// Asks the edge to finish the answer on another worker (same residency rules) if the
    /// serving worker fails after tokens arrived (PROTOCOL.md §4.10). The generation then
    /// yields a second [`Event::Routed`] whose `resumed_at` is
    /// the token offset where the new worker took over, and the text simply continues.
    pub fn resumable(mut self) -> Self {
        self.headers.resumable = true;
        self
    }

    /// The request's frames: HEADERS then the prompt as BODY frames of at most 16 KiB.
    pub fn encode(&self) -> Vec<Bytes> {
        let mut out = vec![Frame::Headers(self.headers.clone()).to_bytes()];
        for chunk in self.prompt.chunks(16 * 1024) {
            out.push(Frame::Body(self.prompt.slice_ref(chunk)).to_bytes());
        }
        out
    }
}

/// A QUIC connection to an edge; requests are multiplexed on it as streams. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    draining: Arc<AtomicBool>,
    credential: Option<Credential>,
}

impl Client {
    /// Connects to the edge at `addr`.
    pub async fn connect(addr: SocketAddr, config: ClientConfig) -> Result<Client, ConnectError> {
        let bind: SocketAddr = if addr.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind)?;
        endpoint.set_default_client_config(config.quinn_config()?);
        let conn = endpoint
            .connect(addr, &config.server_name)?
            .await
            .map_err(|source| ConnectError::Handshake { addr, source })?;
        let draining = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_control(conn.clone(), draining.clone()));
        Ok(Client {
            endpoint,
            conn,
            draining,
            credential: config.credential,
        })
    }

    /// Whether the edge sent GOAWAY: open new requests on a new connection.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Sends `request` on a new stream and returns its event stream.
    /// Headers the protocol cannot carry (an integer above 2^62 − 1, a field over its limit)
    /// fail with [`ClientError::InvalidRequest`] before anything is sent.
    pub async fn generate(&self, mut request: Request) -> Result<Generation, ClientError> {
        if request.headers.credential.is_none() {
            request.headers.credential = self.credential.clone();
        }
        request
            .headers
            .check()
            .map_err(ClientError::InvalidRequest)?;
        let (mut send, recv) = self.conn.open_bi().await.map_err(ClientError::Connection)?;
        let mut frames = request.encode();
        send.write_all_chunks(&mut frames)
            .await
            .map_err(ClientError::from_write)?;
        send.finish()
            .map_err(|_| ClientError::Protocol("stream closed while sending".into()))?;
        Ok(Generation::new(send, recv, request.headers.resumable))
    }

    /// Moves the connection to a new local socket, as when the device's network or NAT
    /// mapping changes: requests in flight continue if the edge allows migration (and any
    /// load balancer in front routes by connection ID, `[quic_lb]`).
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.endpoint.rebind(socket)
    }

    /// The underlying connection (e.g. to open raw streams in tests).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Closes the connection gracefully and waits for the peer to be told.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"client done");
        self.endpoint.wait_idle().await;
    }
}

/// Reads the edge's control stream (PROTOCOL.md §5) and records GOAWAY.
async fn watch_control(conn: quinn::Connection, draining: Arc<AtomicBool>) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let mut first = [0u8; 1];
        if recv.read_exact(&mut first).await.is_err()
            || first[0] != crate::CONTROL_STREAM_TYPE as u8
        {
            let _ = recv.stop(0u32.into());
            continue;
        }
        let mut reader = crate::io::FrameReader::new(recv);
        while let Ok(Some(frame)) = reader.next().await {
            if let Frame::GoAway(_) = frame {
                draining.store(true, Ordering::Release);
            }
        }
        return;
    }
}
