//! The ring's keyed hash.
//!
//! `consistent_hash`'s default `RingHash` is SipHash with a fixed zero key, so anyone who
//! knows the worker names could compute shard keys that all land on one worker. Meridian
//! keys SipHash-1-3 with a secret (`[routing] ring_key`, shared by a deployment's edges) and
//! hashes explicit bytes only: shard keys as their raw bytes, virtual nodes as the worker
//! name's bytes followed by the little-endian 64-bit sequence number, so positions do not
//! depend on `Hash` impls or the platform's word size.

use std::hash::{Hash, Hasher};

use consistent_hash::RingHash;
use siphasher::sip::SipHasher13;

/// SipHash-1-3 under a 128-bit secret key.
#[derive(Clone, Copy)]
pub struct KeyedHash {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash(<secret>)")
    }
}

impl KeyedHash {
    /// A hash under `key`.
    pub fn new(key: [u8; 16]) -> Self {
        let (a, b) = key.split_at(8);
        KeyedHash {
            k0: u64::from_le_bytes(a.try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(b.try_into().expect("8 bytes")),
        }
    }

    /// A hash under a fresh random key (when the config sets none).
    pub fn random() -> Self {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut key = [0u8; 16];
        SystemRandom::new()
            .fill(&mut key)
            .expect("the OS random source is available");
        KeyedHash::new(key)
    }

    fn hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }

    /// The hash of raw bytes.
    pub fn hash_bytes(&self, bytes: &[u8]) -> u64 {
        let mut h = self.hasher();
        h.write(bytes);
        h.finish()
    }
}

impl RingHash for KeyedHash {
    fn hash_item<T: Hash>(&self, item: &T) -> u64 {
        let mut h = self.hasher();
        item.hash(&mut h);
        h.finish()
    }

    fn hash_vnode<K: Hash>(&self, node_key: &K, vnode_seq: usize) -> u64 {
        let mut h = self.hasher();
        node_key.hash(&mut h);
        h.write(&(vnode_seq as u64).to_le_bytes());
        h.finish()
    }
}

/// A shard key: hashes as exactly its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardKey<'a>(pub &'a [u8]);

impl Hash for ShardKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// A worker's ring identity: hashes as exactly its name's bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkerKey(pub String);

impl Hash for WorkerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_placement() {
        let a = KeyedHash::new([1; 16]);
        let b = KeyedHash::new([2; 16]);
        assert_ne!(
            a.hash_item(&ShardKey(b"session")),
            b.hash_item(&ShardKey(b"session"))
        );
        assert_eq!(a.hash_item(&ShardKey(b"session")), a.hash_bytes(b"session"));
    }

    #[test]
    fn vnode_hash_is_explicit_bytes() {
        let k = KeyedHash::new([7; 16]);
        let mut expect = k.hasher();
        expect.write(b"seoul-1");
        expect.write(&3u64.to_le_bytes());
        assert_eq!(
            k.hash_vnode(&WorkerKey("seoul-1".into()), 3),
            expect.finish()
        );
    }
}
