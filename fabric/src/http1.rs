//! Kept-alive HTTP/1.1 client connections to one `host:port`, shared by the worker's
//! `openai` backend and the OTLP trace exporter. A connection goes back to the pool only
//! after a whole exchange; one that is not ready any more is discarded when taken.

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// A request sender on one connection.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// Idle connections to one server, at most `max_idle` of them.
pub(crate) struct Pool {
    authority: String,
    max_idle: usize,
    idle: Mutex<Vec<Sender>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("authority", &self.authority)
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(authority: impl Into<String>, max_idle: usize) -> Self {
        Pool {
            authority: authority.into(),
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A ready connection: an idle one, else a new one (TCP_NODELAY). The error names the
    /// server and what failed.
    pub(crate) async fn get(&self) -> Result<Sender, String> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(mut sr) = idle else { break };
            if sr.ready().await.is_ok() {
                return Ok(sr);
            }
        }
        let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", self.authority);
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| fail(&e))?;
        let _ = tcp.set_nodelay(true);
        let (sr, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| fail(&e))?;
        tokio::spawn(conn);
        Ok(sr)
    }

    /// Returns a connection after a whole exchange.
    pub(crate) fn put(&self, sr: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(sr);
        }
    }
}
