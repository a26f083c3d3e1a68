//! Client ids and the randomness they are made from.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// Where the bytes of new client ids come from. Randomness is passed in so
/// the engine stays deterministic under test; in production use a CSPRNG,
/// because a client id is the only credential of a Bayeux session.
pub trait RandomSource: Send {
    /// 16 fresh random bytes.
    fn random_bytes(&mut self) -> [u8; 16];
}

impl<F: FnMut() -> [u8; 16] + Send> RandomSource for F {
    fn random_bytes(&mut self) -> [u8; 16] {
        self()
    }
}

/// Between an owner node and the random part of a client id: not a base-36
/// digit, and kept as is by JSON, URLs and cookies.
const OWNER_SEPARATOR: char = '_';

/// A session's `clientId`: 128 random bits written in base 36 (digits and
/// lowercase letters, at most 25 characters), the alphabet CometD uses.
///
/// Cheap to clone (a shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// The id written from 16 random bytes.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut n = u128::from_le_bytes(bytes);
        let mut text = Vec::with_capacity(25);
        loop {
            text.push(DIGITS[(n % 36) as usize]);
            n /= 36;
            if n == 0 {
                break;
            }
        }
        text.reverse();
        // Only ASCII digits and letters were pushed.
        ClientId(Arc::from(String::from_utf8(text).expect("ASCII")))
    }

    /// An id as another node wrote it (its members' ids in a presence
    /// message): not checked, only compared.
    pub(crate) fn from_wire(text: &str) -> Self {
        ClientId(Arc::from(text))
    }

    /// An id as [`as_str`](Self::as_str) wrote it (e.g. carried to another
    /// node and back); `None` for text no id is written as.
    pub fn parse(text: &str) -> Option<Self> {
        // An owner's prefix (`from_random_on`), then the random part.
        let random = match text.split_once(OWNER_SEPARATOR) {
            Some((node, random)) => {
                node.parse::<u16>().ok()?;
                random
            }
            None => text,
        };
        // 36^25 > 2^128: the random part has at most 25 digits.
        let valid = !random.is_empty()
            && random.len() <= 25
            && random
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        valid.then(|| ClientId(Arc::from(text)))
    }

    /// The id of a session owned by node `node` of a cluster: the node in
    /// decimal, `_`, then the 128 random bits as in
    /// [`from_random`](Self::from_random) (`"3_k2j…"`). The prefix lets any
    /// node tell which node holds the session (to forward its requests
    /// there); the random part alone is the credential, as long as on one
    /// node.
    pub fn from_random_on(node: u16, bytes: [u8; 16]) -> Self {
        let random = Self::from_random(bytes);
        ClientId(Arc::from(format!("{node}{OWNER_SEPARATOR}{random}")))
    }

    /// The node named by an id made by [`from_random_on`](Self::from_random_on),
    /// or `None` for an id without an owner (made by
    /// [`from_random`](Self::from_random), or not by this crate: base 36
    /// never contains the separator, so the two never mix up).
    pub fn owner_of(id: &str) -> Option<u16> {
        let (node, random) = id.split_once(OWNER_SEPARATOR)?;
        if random.is_empty() || !node.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        node.parse().ok()
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hash of the engine's maps keyed by ids it draws itself: client ids
/// ([`ClientId`]: 128 random bits from the [`RandomSource`]) and hold ids (a
/// counter). A few multiplications per 8 bytes, where the standard library's
/// SipHash costs about ten times as much per lookup, and the engine looks a
/// client up several times per delivery.
///
/// Unkeyed, hence deterministic (the same ids give the same iteration order
/// in every run). That is safe only because nobody outside chooses the
/// stored keys: a request can look up any string, but it cannot insert
/// colliding ids. Maps keyed by what clients choose (channel names) keep
/// `std`'s keyed hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHash;

/// A `HashMap` with [`IdHash`].
pub type IdMap<K, V> = HashMap<K, V, IdHash>;
/// A `HashSet` with [`IdHash`].
pub type IdSet<K> = HashSet<K, IdHash>;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// [`IdHash`]'s hasher: the multiply-add of rustc's `FxHasher` over 8-byte
/// words, rotated at the end so that the well-mixed high bits reach the low
/// bits `HashMap` indexes with.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(Self::K);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_id_is_found_by_its_text() {
        // `Borrow<str>` lookups need the id and its text to hash alike.
        let mut map = IdMap::default();
        let id = ClientId::from_random([7; 16]);
        map.insert(id.clone(), 1);
        assert_eq!(map.get(id.as_str()), Some(&1));
        assert_eq!(IdHash.hash_one(&id), IdHash.hash_one(id.as_str()));
        assert_ne!(IdHash.hash_one("abc"), IdHash.hash_one("abd"));
    }

    #[test]
    fn base36_of_the_bytes() {
        assert_eq!(ClientId::from_random([0; 16]).as_str(), "0");
        let mut one = [0; 16];
        one[0] = 35;
        assert_eq!(ClientId::from_random(one).as_str(), "z");
        let max = ClientId::from_random([0xff; 16]);
        assert_eq!(max.as_str().len(), 25);
        assert!(
            max.as_str()
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
    }

    #[test]
    fn an_owned_id_names_its_node_and_keeps_all_its_random_bits() {
        let id = ClientId::from_random_on(65535, [0xff; 16]);
        let random = ClientId::from_random([0xff; 16]);
        assert_eq!(id.as_str(), format!("65535_{random}"));
        assert_eq!(ClientId::owner_of(id.as_str()), Some(65535));
        assert_eq!(
            ClientId::owner_of(ClientId::from_random_on(0, [1; 16]).as_str()),
            Some(0)
        );
        // Ids without an owner, and what a client may make up.
        assert_eq!(ClientId::owner_of(random.as_str()), None);
        for made_up in ["_x", "3_", "-3_x", "+3_x", "65536_x", "a_x", ""] {
            assert_eq!(ClientId::owner_of(made_up), None, "{made_up}");
        }
    }

    /// What `as_str` wrote parses back, owned by a node or not; made-up
    /// text does not.
    #[test]
    fn ids_parse_back() {
        for id in [
            ClientId::from_random([0xab; 16]),
            ClientId::from_random_on(7, [0xab; 16]),
        ] {
            assert_eq!(ClientId::parse(id.as_str()), Some(id.clone()));
        }
        for made_up in [
            "",
            "_x",
            "3_",
            "x_abc",
            "70000_abc",
            "ABC",
            "a-b",
            &"z".repeat(26),
        ] {
            assert_eq!(ClientId::parse(made_up), None, "{made_up}");
        }
    }
}
