//! `[upstream]` / `[worker]` link tuning: how the QUIC connection between an edge and a
//! worker — a hop that may cross an ocean — detects loss and controls congestion. Each side
//! tunes what it sends: the worker its tokens (`[worker]`), the edge its requests
//! (`[upstream]`). BENCHMARKS.md "WAN" has the measurements behind the defaults.

use serde::Deserialize;
use toml::Spanned;

use super::ctx::Ctx;

/// Congestion controller of a hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Congestion {
    /// CUBIC (RFC 9438), quinn's default: backs off on every loss.
    Cubic,
    /// NewReno (RFC 9002 §7).
    NewReno,
    /// BBR: paces at the measured bottleneck rate; random loss does not shrink its window.
    Bbr,
}

/// Default congestion controller of the edge ↔ worker hop.
pub const DEFAULT_CONGESTION: Congestion = Congestion::Bbr;
/// Default reordering tolerance, packets (QUIC's is 3).
pub const DEFAULT_PACKET_THRESHOLD: u32 = 3;
/// Default time threshold, × RTT (QUIC's is 9/8).
pub const DEFAULT_TIME_THRESHOLD: f64 = 1.125;

/// Loss detection and congestion control of one side of the edge ↔ worker hop.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkTuning {
    /// Congestion controller.
    pub congestion: Congestion,
    /// Initial congestion window, bytes; `None`: the controller's default.
    pub initial_window: Option<u64>,
    /// Packets a later packet must be acknowledged ahead of an unacknowledged one before
    /// that one counts as lost (reordering tolerance).
    pub packet_threshold: u32,
    /// Time, × RTT, after which an unacknowledged packet counts as lost.
    pub time_threshold: f64,
}

impl Default for LinkTuning {
    fn default() -> Self {
        LinkTuning {
            congestion: DEFAULT_CONGESTION,
            initial_window: None,
            packet_threshold: DEFAULT_PACKET_THRESHOLD,
            time_threshold: DEFAULT_TIME_THRESHOLD,
        }
    }
}

/// The keys as they appear in `[upstream]` and `[worker]` (copied out of either table).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawLink {
    pub congestion: Option<Spanned<String>>,
    pub initial_window: Option<Spanned<u64>>,
    pub packet_threshold: Option<Spanned<u64>>,
    pub time_threshold: Option<Spanned<f64>>,
}

impl Ctx<'_> {
    /// Validates link tuning keys; `table` names the table in messages.
    pub(super) fn link(&mut self, raw: &RawLink, table: &str) -> LinkTuning {
        let d = LinkTuning::default();
        let congestion = match raw.congestion.as_ref() {
            None => d.congestion,
            Some(s) => match s.get_ref().as_str() {
                "cubic" => Congestion::Cubic,
                "newreno" => Congestion::NewReno,
                "bbr" => Congestion::Bbr,
                other => {
                    self.err(
                        Some(s.span()),
                        format!("{table} congestion `{other}` is not one of cubic, newreno, bbr"),
                    );
                    d.congestion
                }
            },
        };
        let time_threshold = self.float(
            raw.time_threshold.as_ref(),
            &format!("{table} time_threshold"),
            1.0..=4.0,
            d.time_threshold,
        );
        LinkTuning {
            congestion,
            initial_window: raw
                .initial_window
                .as_ref()
                .map(|w| self.count(Some(w), "initial_window", 2_400..(64 << 20) + 1, 14_720)),
            packet_threshold: self.count(
                raw.packet_threshold.as_ref(),
                "packet_threshold",
                3..1_001,
                d.packet_threshold.into(),
            ) as u32,
            time_threshold,
        }
    }
}
