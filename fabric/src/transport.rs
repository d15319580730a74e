//! quinn transport settings per hop, sized for real concurrency: quinn 0.11 allocates state
//! for every permitted stream, so stream limits follow configured concurrency, and receive
//! windows are bounded so a slow reader cannot make a peer buffer without limit.

use std::sync::Arc;
use std::time::Duration;

use quinn::{congestion, TransportConfig, VarInt};

use crate::config::{Congestion, LinkTuning};

/// Keep-alive on long-lived connections (edge ↔ worker, client ↔ edge).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Idle timeout: a peer silent this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// RTT assumed before the first sample (quinn's default; a POP's clients are usually closer).
pub const INITIAL_RTT: Duration = Duration::from_millis(333);
/// Per-stream receive window. A token stream needs little; prompts up to 1 MiB arrive in a
/// few round trips.
pub const STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;

/// Stream credit for `max` concurrent streams: quinn returns credit (MAX_STREAMS) only
/// once 1/8 of the limit has been freed, so a peer using exactly `max` streams would wait for
/// an eighth of them to finish before it may open the next one — about one whole response.
/// An eighth more credit than advertised lets a client at the advertised limit open its next
/// stream as soon as one ends.
pub fn stream_credit(max: u32) -> u32 {
    match max {
        0 => 0,
        m => m.saturating_add(m / 8 + 1),
    }
}

/// Longest gap between RTT samples on an idle upstream connection: keep-alive PINGs are
/// acknowledged, and every acknowledgement is a sample, so a region that gets no traffic
/// (because it was demoted) is still measured and comes back soon after it recovers.
pub const RTT_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// Transport for an endpoint whose peers may open `max_bidi` request streams at once.
pub fn transport(max_bidi: u32) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(stream_credit(max_bidi)))
        .max_concurrent_uni_streams(VarInt::from_u32(4))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(
            STREAM_RECEIVE_WINDOW.saturating_mul(64).min(64 << 20),
        ))
        .send_window(64 << 20)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            IDLE_TIMEOUT.try_into().expect("30 s fits an idle timeout"),
        ));
    t
}

/// Transport for an edge's upstream (client-side) connection to one worker: every request
/// the edge sends that worker is a stream on it; the worker opens only its control stream.
/// `idle_timeout` is the failure detector for a worker that vanishes without closing (the
/// smaller of both sides' values applies); keep-alives go out at a quarter of it (at most
/// [`RTT_SAMPLE_INTERVAL`]), so a lossy link loses all four in a row only when it is
/// effectively down. `initial_rtt` is
/// what the connection assumes before its first sample (the last RTT measured to this
/// worker on a reconnect).
pub fn upstream_transport(
    idle_timeout: Duration,
    initial_rtt: Duration,
    tuning: &LinkTuning,
) -> TransportConfig {
    let mut t = transport(0);
    t.max_concurrent_uni_streams(VarInt::from_u32(2))
        .keep_alive_interval(Some((idle_timeout / 4).min(RTT_SAMPLE_INTERVAL)))
        .max_idle_timeout(Some(
            idle_timeout
                .try_into()
                .expect("validated idle timeouts fit"),
        ))
        .initial_rtt(initial_rtt);
    link(&mut t, tuning);
    t
}

/// Applies a hop's loss detection and congestion control (`[upstream]` / `[worker]`).
pub fn link(t: &mut TransportConfig, l: &LinkTuning) {
    let factory: Arc<dyn congestion::ControllerFactory + Send + Sync> = match l.congestion {
        Congestion::Cubic => {
            let mut c = congestion::CubicConfig::default();
            if let Some(w) = l.initial_window {
                c.initial_window(w);
            }
            Arc::new(c)
        }
        Congestion::NewReno => {
            let mut c = congestion::NewRenoConfig::default();
            if let Some(w) = l.initial_window {
                c.initial_window(w);
            }
            Arc::new(c)
        }
        Congestion::Bbr => {
            let mut c = congestion::BbrConfig::default();
            if let Some(w) = l.initial_window {
                c.initial_window(w);
            }
            Arc::new(c)
        }
    };
    t.congestion_controller_factory(factory)
        .packet_threshold(l.packet_threshold)
        .time_threshold(l.time_threshold as f32);
}

/// Requests the peer to acknowledge only every `threshold` ack-eliciting packets (QUIC ACK
/// frequency extension; quinn peers honour it). Fewer ACKs mean fewer packets to process per
/// relayed token.
pub fn ack_frequency(t: &mut TransportConfig, threshold: Option<u32>) {
    if let Some(n) = threshold {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(VarInt::from_u32(n));
        t.ack_frequency_config(Some(ack));
    }
}

/// Applies an edge's client-facing tuning (`[edge]` keys) on top of [`transport`].
pub fn client_facing(t: &mut TransportConfig, e: &crate::config::EdgeSettings) {
    t.send_fairness(e.send_fairness)
        .enable_segmentation_offload(e.gso)
        .stream_receive_window(VarInt::from_u32(e.stream_receive_window))
        .keep_alive_interval((!e.keep_alive.is_zero()).then_some(e.keep_alive))
        .initial_rtt(e.initial_rtt);
    ack_frequency(t, e.ack_eliciting_threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_credit_leaves_an_eighth_of_headroom() {
        assert_eq!(stream_credit(0), 0, "no streams stays no streams");
        assert_eq!(stream_credit(1), 2);
        assert_eq!(stream_credit(200), 226);
        assert_eq!(stream_credit(u32::MAX), u32::MAX);
    }
}
