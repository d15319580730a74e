//! Accepting TCP connections for the HTTP listeners (front door, admin) without spinning
//! (an accept error — out of file descriptors, buffers — is logged and retried with
//! backoff), and telling HTTP/1.x from HTTP/2 within a time limit, so a connection that
//! sends nothing, or half a preface, cannot hold a connection slot.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

/// Longest pause after repeated accept errors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The next connection on `listener` (TCP_NODELAY set). `what` names the listener in logs.
pub async fn accept(listener: &TcpListener, what: &str) -> TcpStream {
    let mut backoff = Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                return tcp;
            }
            Err(e) => {
                warn!(listener = what, error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP version a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.x.
    H1,
    /// HTTP/2 with prior knowledge (cleartext).
    H2,
}

/// A byte stream a listener serves HTTP on: a TCP connection, or TLS over one.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Accepts TLS on `tcp` with `tls` (ALPN `h2`, `http/1.1`) within `limit`; `None` if the
/// handshake fails or takes longer.
pub async fn tls(
    tcp: TcpStream,
    tls: std::sync::Arc<rustls::ServerConfig>,
    limit: Duration,
) -> Option<Box<dyn Io>> {
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
    match tokio::time::timeout(limit, accept).await {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// Reads just enough of a new connection to tell HTTP/1.x from HTTP/2 — the first byte that
/// differs from the HTTP/2 preface, or the whole preface — within `limit`. `None` if the
/// client sends too little in time or goes away; the bytes read are replayed by
/// [`Prefixed`].
pub async fn detect(mut tcp: Box<dyn Io>, limit: Duration) -> Option<(Version, Prefixed)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut head = [0u8; 24];
    let mut len = 0;
    let version = loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut head[len..])).await {
            Ok(Ok(n)) if n > 0 => len += n,
            _ => return None,
        }
        if head[..len] != H2_PREFACE[..len] {
            break Version::H1;
        }
        if len == H2_PREFACE.len() {
            break Version::H2;
        }
    };
    let io = Prefixed {
        head,
        pos: 0,
        len,
        inner: tcp,
        pending: Vec::new(),
    };
    Some((version, io))
}

/// A connection whose first bytes were already read: they are read again first. On the way
/// out, hyper's own bodiless answers to unparsable requests (400, 414, 431 with
/// `content-length: 0`) are replaced by the same status with an OpenAI error body, so every
/// error a client sees has the same shape.
pub struct Prefixed {
    head: [u8; 24],
    pos: usize,
    len: usize,
    inner: Box<dyn Io>,
    /// A replacement answer not yet written out.
    pending: Vec<u8>,
}

/// The OpenAI-shaped replacement for one of hyper's automatic error responses, if `out` is
/// one (its own responses always carry a body, so `content-length: 0` singles hyper's out).
fn automatic_error(out: &[u8]) -> Option<Vec<u8>> {
    let (status, message) = if out.starts_with(b"HTTP/1.1 400 ") {
        ("400 Bad Request", "malformed HTTP request")
    } else if out.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "request header fields too large",
        )
    } else if out.starts_with(b"HTTP/1.1 414 ") {
        ("414 URI Too Long", "request URI too long")
    } else {
        return None;
    };
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&out[..head_end])
        .ok()?
        .to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0") || out.len() != head_end + 4 {
        return None;
    }
    let code = if status.starts_with("400") {
        "bad_request"
    } else {
        "too_large"
    };
    let body = serde_json::json!({ "error": {
        "message": message, "type": "invalid_request_error", "param": null, "code": code,
    } })
    .to_string();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl Prefixed {
    /// Writes out a pending replacement; `Ready(Ok)` once nothing is pending.
    fn flush_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.len {
            let n = (this.len - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.flush_pending(cx))?;
        if let Some(replacement) = automatic_error(buf) {
            this.pending = replacement;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.flush_pending(cx))?;
        if let [only] = bufs {
            if let Some(replacement) = automatic_error(only) {
                this.pending = replacement;
                return Poll::Ready(Ok(only.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.flush_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.flush_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
