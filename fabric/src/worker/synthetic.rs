//! The synthetic backend: deterministic text derived from the prompt, with configurable
//! time to first token and inter-token delay. What the demo and load tests run against.

use std::time::Duration;

use meridian_protocol::{FinishReason, RequestHeaders};

use super::emit::{Emitter, GenError};
use crate::config::SyntheticBackend;

const WORDS: &[&str] = &[
    "the",
    "fabric",
    "routes",
    "every",
    "prompt",
    "to",
    "a",
    "regional",
    "pool",
    "and",
    "tokens",
    "stream",
    "back",
    "over",
    "quic",
    "with",
    "no",
    "head-of-line",
    "blocking",
    "while",
    "residency",
    "rules",
    "keep",
    "sovereign",
    "data",
    "at",
    "home",
    "so",
    "clouds",
    "become",
    "interchangeable",
    "capacity",
    "for",
    "inference",
    "near",
    "users",
    "in",
    "seoul",
    "tokyo",
    "frankfurt",
    "virginia",
    "warm",
    "caches",
    "serve",
    "repeat",
    "prefixes",
    "quickly",
    "under",
    "bounded",
    "load",
    "as",
    "workers",
    "join",
    "or",
    "leave",
    "moving",
    "few",
    "keys",
    "between",
    "them",
    "today",
    "again",
    "quietly",
    "well",
];

/// A planned generation: which tokens, how fast, and why it stops.
#[derive(Clone, Debug)]
pub struct Plan {
    seed: u64,
    /// Tokens to produce.
    pub count: u64,
    /// Delay before the first token.
    pub ttft: Duration,
    /// Delay between tokens.
    pub itl: Duration,
    /// Whether the request's `max_tokens` cut the output short.
    pub truncated: bool,
}

impl Plan {
    /// Plans the output for `prompt` with the request's `max_tokens`.
    pub fn new(cfg: &SyntheticBackend, prompt: &[u8], max_tokens: Option<u64>) -> Plan {
        // FNV-1a: a stable, dependency-free seed from the prompt.
        let seed = prompt.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        let natural = cfg.max_tokens;
        let count = max_tokens.map_or(natural, |m| m.min(natural));
        Plan {
            seed,
            count,
            ttft: cfg.ttft,
            itl: cfg.itl,
            truncated: count < natural,
        }
    }

    /// The text of token `i` (a word and a space).
    pub fn token(&self, i: u64) -> String {
        let mut x = self.seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        let word = WORDS[(x % WORDS.len() as u64) as usize];
        if i == 0 {
            let mut w = word.to_owned();
            w[..1].make_ascii_uppercase();
            w + " "
        } else {
            format!("{word} ")
        }
    }

    /// Rough prompt token count (≈ 4 bytes per token).
    pub fn prompt_tokens(prompt: &[u8]) -> u64 {
        (prompt.len() as u64).div_ceil(4)
    }
}

/// Generates the planned tokens with the configured timing. A continuation (PROTOCOL.md
/// §4.10) generates the same plan from token `offset` on, so the whole answer equals an
/// unbroken run's; its `max_tokens` is what remains, so the plan's limit adds the offset.
pub(crate) async fn run(
    cfg: &SyntheticBackend,
    headers: &RequestHeaders,
    prompt: &[u8],
    cont: Option<super::request::Continuation>,
    mut emit: Emitter<'_>,
) -> Result<(), GenError> {
    let offset = cont.map_or(0, |c| c.offset);
    let limit = headers.max_tokens.map(|m| m.saturating_add(offset));
    let plan = Plan::new(cfg, prompt, limit);
    tokio::time::sleep(plan.ttft).await;
    for i in offset..plan.count {
        if i > offset {
            tokio::time::sleep(plan.itl).await;
        }
        emit.token(plan.token(i).as_bytes()).await?;
    }
    let reason = if plan.truncated {
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    emit.end(reason, Plan::prompt_tokens(prompt), plan.count)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_prompt_dependent() {
        let cfg = SyntheticBackend::default();
        let a = Plan::new(&cfg, b"hello", None);
        let b = Plan::new(&cfg, b"hello", None);
        let c = Plan::new(&cfg, b"other prompt", None);
        let text = |p: &Plan| (0..p.count).map(|i| p.token(i)).collect::<String>();
        assert_eq!(text(&a), text(&b));
        assert_ne!(text(&a), text(&c));
        assert_eq!(Plan::new(&cfg, b"x", Some(3)).count, 3);
        assert!(Plan::new(&cfg, b"x", Some(3)).truncated);
    }
}
