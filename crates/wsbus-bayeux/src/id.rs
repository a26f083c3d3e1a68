//! Client ids and the randomness they are made from.

use std::borrow::Borrow;
use std::fmt;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
