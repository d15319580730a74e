//! Requests handed to the edge in process — by the HTTP front door, which translates an
//! OpenAI-compatible request into HEADERS plus the unchanged body — routed and relayed
//! exactly like a QUIC client's (same routing, residency, retries, deadlines, metrics).

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use meridian_protocol::{ErrorCode, Frame, RequestHeaders};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::intake::Intake;
use super::relay;
use super::sink::{ChannelSink, Delivery};
use super::EdgeShared;
use crate::sync::Reservation;

/// Deliveries buffered per request before the relay waits for the consumer.
const CHANNEL: usize = 64;

/// A handle that submits requests to a running edge. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Submitter {
    pub(crate) shared: Arc<EdgeShared>,
}

/// One submitted request's deliveries: `Routed`, then frames (TOKENS…, END or ERROR), or
/// `Failed`. Dropping it cancels the request end to end. The edge's drain waits for it to be
/// dropped too, so a consumer (an HTTP response body) gets to deliver the last events.
#[derive(Debug)]
pub struct Submission {
    rx: mpsc::Receiver<Delivery>,
    _held: Admitted,
}

impl Submission {
    /// The next delivery; `None` when the request is over.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// The next frame from the worker, skipping route announcements; an edge-side failure
    /// comes as an ERROR frame. `None` when the request is over.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| self.poll_next_frame(cx)).await
    }

    /// [`Submission::next_frame`] for a hand-written `poll` (an HTTP body).
    pub fn poll_next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        loop {
            match ready!(self.rx.poll_recv(cx)) {
                None => return Poll::Ready(None),
                Some(Delivery::Routed(_)) => continue,
                Some(Delivery::Frame(f)) => return Poll::Ready(Some(f)),
                Some(Delivery::Failed(e)) => return Poll::Ready(Some(Frame::Error(e))),
            }
        }
    }
}

/// Requests submitted in process and not finished yet: the edge's drain waits for them, as
/// it does for QUIC request streams.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    n: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    /// Resolves once no submitted request is in flight.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.n.load(SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts one holder of a submitted request — its relay task, its [`Submission`] — until
/// dropped (also when the task is aborted).
#[derive(Debug)]
struct Admitted(Arc<EdgeShared>);

impl Admitted {
    fn new(shared: Arc<EdgeShared>) -> Self {
        shared.submissions.n.fetch_add(1, SeqCst);
        Admitted(shared)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.0.submissions.n.fetch_sub(1, SeqCst) == 1 {
            self.0.submissions.idle.notify_waiters();
        }
    }
}

/// Why a request could not be submitted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The prompt exceeds the edge's limit: answer TOO_LARGE.
    #[error("prompt of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The prompt's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The edge is shutting down: answer UNAVAILABLE so the client retries elsewhere.
    #[error("the edge is shutting down")]
    Draining,
    /// The edge's request buffer budget is spent: answer OVERLOADED; retry shortly.
    #[error("the edge is buffering its limit of {0} request bytes; retry shortly")]
    Overloaded(u64),
}

impl SubmitError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            SubmitError::TooLarge { .. } => ErrorCode::TOO_LARGE,
            SubmitError::Draining => ErrorCode::UNAVAILABLE,
            SubmitError::Overloaded(_) => ErrorCode::OVERLOADED,
        }
    }
}

impl Submitter {
    /// An empty hold on the edge's request buffer budget: a front door grows it as body
    /// bytes arrive ([`Reservation::grow`]) and hands it to [`Submitter::submit_held`].
    pub fn reservation(&self) -> Reservation {
        crate::sync::ByteBudget::reservation(&self.shared.stats.budget)
    }

    /// Whether a request with `headers` would be authenticated (before its body is read):
    /// `Err` is the UNAUTHORIZED answer.
    pub fn identify(&self, headers: &RequestHeaders) -> Result<(), meridian_protocol::ErrorFrame> {
        let topo = self.shared.router.topology();
        (topo.auth)
            .identify(headers, crate::auth::unix_now())
            .map(|_| ())
    }

    /// The edge's request buffer budget in bytes.
    pub fn budget(&self) -> u64 {
        self.shared.stats.budget.max()
    }

    /// Submits a request whose prompt is `body` (forwarded unchanged to the worker), holding
    /// `body.len()` of the edge's buffer budget until it ends.
    pub fn submit(&self, headers: RequestHeaders, body: Bytes) -> Result<Submission, SubmitError> {
        let mut held = self.reservation();
        if !held.grow(body.len() as u64) {
            self.shared.stats.error(ErrorCode::OVERLOADED);
            return Err(SubmitError::Overloaded(self.budget()));
        }
        self.submit_held(headers, body, held)
    }

    /// [`Submitter::submit`] with the budget already held for `body`.
    pub fn submit_held(
        &self,
        headers: RequestHeaders,
        body: Bytes,
        held: Reservation,
    ) -> Result<Submission, SubmitError> {
        // Counted before the check, so the drain either waits for this request or it is
        // refused here (never cut off mid-way).
        let admitted = Admitted::new(self.shared.clone());
        if self.shared.shutdown.is_triggered() {
            self.shared.stats.error(ErrorCode::UNAVAILABLE);
            return Err(SubmitError::Draining);
        }
        let cfg = self.shared.router.config();
        let max = cfg.edge.max_prompt_bytes;
        if body.len() > max {
            self.shared.stats.error(ErrorCode::TOO_LARGE);
            return Err(SubmitError::TooLarge {
                len: body.len(),
                max,
            });
        }
        let prefix = body[..body.len().min(cfg.routing.prefix_bytes)].to_vec();
        let head = Frame::Headers(headers.clone()).to_bytes();
        let headers_len = head.len();
        let mut chunks = vec![head];
        for part in body.chunks(16 * 1024) {
            chunks.push(Frame::Body(body.slice_ref(part)).to_bytes());
        }
        let intake = Intake {
            headers,
            chunks,
            headers_len,
            prefix,
            _held: Some(held),
        };
        let (tx, rx) = mpsc::channel(CHANNEL);
        let arrived = Instant::now();
        // Both holders are counted before the relay can finish.
        let submission = Submission {
            rx,
            _held: Admitted::new(self.shared.clone()),
        };
        tokio::spawn(async move {
            let mut sink = ChannelSink::new(tx);
            relay::dispatch(&intake, arrived, &mut sink, &admitted.0).await;
        });
        Ok(submission)
    }

    /// Resolves once the edge starts draining (new submissions are refused from then on).
    pub async fn draining(self) {
        self.shared.shutdown.wait().await;
    }

    /// The HTTPS front door's TLS config (`[edge] http_tls`): the edge's certificate, renewed
    /// by reloads.
    pub fn http_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.shared.http_tls.read(|t| t.clone())
    }

    /// The edge's configuration (limits the front door applies too).
    pub fn config(&self) -> Arc<crate::config::Config> {
        self.shared.router.config().clone()
    }

    /// Models the edge can route to.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = Vec::new();
        for m in self
            .shared
            .router
            .config()
            .workers
            .iter()
            .flat_map(|w| &w.models)
        {
            if !models.contains(m) {
                models.push(m.clone());
            }
        }
        models
    }
}
