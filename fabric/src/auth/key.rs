//! API keys: `mk_<id>_<secret>`. The id names the key (for rotation: several ids per
//! tenant may be active at once); the secret is 32 random bytes in base64url. Configs hold
//! only the SHA-256 digest of the whole key, never the key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of every API key.
pub const KEY_PREFIX: &str = "mk_";

/// Most bytes of a key id.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Whether `id` is a valid key (or signing-key) id: 1–32 of `a-z 0-9 - .`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Splits an API key into its id, or `None` if it is not shaped like one.
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (valid_id(id) && !secret.is_empty()).then_some(id)
}

/// SHA-256 of the whole key, as stored in config.
pub fn digest(key: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two digests in time independent of where they differ.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses 64 hex digits.
pub fn parse_digest(s: &str) -> Option<[u8; 32]> {
    parse_hex(s)?.try_into().ok()
}

/// Hex digits (either case, an even number of them) as bytes; `None` for anything else.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    // `from_str_radix` alone would take a sign (`+f`).
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Random bytes from the system's secure generator.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system random number generator works");
    b
}

/// A new API key with id `id` (the caller checked [`valid_id`]).
pub fn generate(id: &str) -> String {
    format!("{KEY_PREFIX}{id}_{}", B64.encode(random::<32>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash() {
        let k = generate("bund-2026");
        assert_eq!(key_id(&k), Some("bund-2026"));
        assert_ne!(generate("a"), generate("a"));
        let d = digest(&k);
        assert_eq!(parse_digest(&hex(&d)), Some(d));
        assert_eq!(parse_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(parse_hex("+f"), None, "a sign is not a digit");
        assert_eq!(parse_hex("abc"), None);
        for bad in ["", "mk_", "mk_id", "mk__secret", "xx_id_s", "mk_UP_s"] {
            assert_eq!(key_id(bad), None, "{bad}");
        }
    }
}
