//! QUIC-LB connection IDs (draft-ietf-quic-load-balancers, plaintext algorithm): every
//! connection ID the edge issues carries its configured server id, so an L4 load balancer
//! that routes by connection ID (AWS NLB's QUIC listeners, Envoy's `quic_lb`, Katran) keeps
//! sending a connection's packets to this edge after the client's address changes (NAT
//! rebinding, a network switch), where a 4-tuple hash would send them elsewhere.
//!
//! Layout (`[quic_lb]`): `first octet | server id | nonce`. The first octet's top three bits
//! are the config rotation id (0–6; 7 is reserved for unroutable CIDs) and its low five bits
//! the length of the rest (the draft's length self-description); the nonce is random for
//! each connection ID (ring's system RNG), so IDs of one connection cannot be linked.

use std::time::Duration;

use quinn::{ConnectionId, ConnectionIdGenerator};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::QuicLbSettings;

/// Longest connection ID QUIC allows (RFC 9000 §17.2).
pub const MAX_CID_LEN: usize = 20;

/// Issues QUIC-LB plaintext connection IDs embedding one server id.
#[derive(Debug)]
pub struct QuicLbCids {
    first: u8,
    server_id: Vec<u8>,
    len: usize,
    rng: SystemRandom,
}

impl QuicLbCids {
    /// A generator for `s` (validated: server id 1–15 bytes, nonce 4–18, together ≤ 19,
    /// config id 0–6).
    pub fn new(s: &QuicLbSettings) -> QuicLbCids {
        let len = 1 + s.server_id.len() + s.nonce_len;
        debug_assert!(len <= MAX_CID_LEN && s.config_id < 7);
        QuicLbCids {
            first: (s.config_id << 5) | ((len - 1) as u8 & 0x1f),
            server_id: s.server_id.clone(),
            len,
            rng: SystemRandom::new(),
        }
    }
}

impl ConnectionIdGenerator for QuicLbCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut b = [0u8; MAX_CID_LEN];
        b[0] = self.first;
        let sid = self.server_id.len();
        b[1..1 + sid].copy_from_slice(&self.server_id);
        if self.rng.fill(&mut b[1 + sid..self.len]).is_err() {
            // The system RNG does not fail on supported platforms; a zero nonce would still
            // route correctly (quinn retries on a collision).
            tracing::error!("system RNG failed: connection ID nonce left zero");
        }
        ConnectionId::new(&b[..self.len])
    }

    fn cid_len(&self) -> usize {
        self.len
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// What a load balancer reads from a QUIC-LB plaintext connection ID with `sid_len`-byte
/// server ids: the config rotation id and the server id, or `None` if it is too short or
/// marked unroutable (config id 7).
pub fn parse_cid(cid: &[u8], sid_len: usize) -> Option<(u8, &[u8])> {
    let first = *cid.first()?;
    let config = first >> 5;
    (config != 7 && cid.len() > sid_len).then(|| (config, &cid[1..1 + sid_len]))
}

/// A hex server id (`0x0123456789abcdef` or without `0x`) as bytes.
pub fn parse_server_id(s: &str) -> Option<Vec<u8>> {
    crate::auth::key::parse_hex(s.strip_prefix("0x").unwrap_or(s)).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sid: &str, config_id: u8, nonce_len: usize) -> QuicLbSettings {
        QuicLbSettings {
            server_id: parse_server_id(sid).expect("hex"),
            config_id,
            nonce_len,
        }
    }

    #[test]
    fn the_draft_layout_with_the_server_id_after_the_first_octet() {
        // draft-ietf-quic-load-balancers test vector shape: sid c4605e, 4-byte nonce.
        let mut g = QuicLbCids::new(&settings("c4605e", 0, 4));
        let cid = g.generate_cid();
        assert_eq!(cid.len(), 8);
        assert_eq!(cid[0], 0x07, "config 0, 7 octets follow");
        assert_eq!(&cid[1..4], &[0xc4, 0x60, 0x5e]);
        assert_eq!(parse_cid(&cid, 3), Some((0, &[0xc4, 0x60, 0x5e][..])));
        assert_eq!(g.cid_len(), 8);
    }

    #[test]
    fn an_aws_style_eight_byte_server_id_and_fresh_nonces() {
        let mut g = QuicLbCids::new(&settings("0x0123456789abcdef", 2, 8));
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_eq!(a.len(), 17);
        assert_eq!(a[0] >> 5, 2);
        assert_eq!(a[0] & 0x1f, 16);
        assert_eq!(&a[1..9], &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        assert_eq!(&a[1..9], &b[1..9]);
        assert_ne!(&a[9..], &b[9..], "nonces differ");
    }

    #[test]
    fn parsing_refuses_short_and_unroutable_ids() {
        assert_eq!(parse_cid(&[0x07, 1, 2], 3), None);
        assert_eq!(
            parse_cid(&[0xe7, 1, 2, 3, 4], 3),
            None,
            "config 7 is unroutable"
        );
        assert_eq!(parse_cid(&[], 3), None);
        assert_eq!(parse_server_id("0x0a0B"), Some(vec![0x0a, 0x0b]));
        assert_eq!(parse_server_id("0x123"), None);
        assert_eq!(parse_server_id("zz"), None);
    }
}
