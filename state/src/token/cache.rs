//! A bounded cache of tokens already verified with an asymmetric key (ES256, RS256), so that a
//! token presented again — a reconnect storm after the resume window, a client that logs in
//! again with the token it holds — costs a SHA-256 and a lookup instead of a signature check
//! (about 70 µs for ES256 on the bench machine: doc/bench.md).
//!
//! - Keyed by the SHA-256 of the whole token: only the very same bytes hit.
//! - Only tokens that passed every check are stored, with their `sub` and `exp`; a hit is
//!   refused once `now > exp + leeway`, exactly as a full check would be. The other checks
//!   cannot turn from pass to fail as time goes on (`nbf` and `iat` only get further behind,
//!   the lifetime from now only shrinks), and keys and policy never change under a cache: a
//!   reload makes a new one (`store::Rules`), so a token verified with a key since removed
//!   is checked again, and refused.
//! - Bounded: a fixed table of sets of [`WAYS`] entries, the set chosen by the digest; a new
//!   entry takes a free way of its set, else the one whose token expires first. No entry
//!   outlives its token's `exp`.
//! - HS256 tokens are not cached: their check costs about what the hash would.

use ring::digest;

use super::Claims;

/// Entries per set: with four, a cache filled to a third of its size has lost about 1% of
/// the tokens put in it to collisions; with one, about 15% (a simulation: random sets, 65,536
/// entries, 21,845 tokens).
pub(crate) const WAYS: usize = 4;

/// Verified tokens by digest, at most `capacity` of them. The table is allocated with the
/// first token stored, so a daemon that sees no ES256/RS256 token never pays for it.
#[derive(Debug, Clone, Default)]
pub struct TokenCache {
    capacity: usize,
    slots: Vec<Option<Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    digest: [u8; 32],
    sub: Box<str>,
    exp: u64,
    rooms: Option<std::sync::Arc<super::RoomGrants>>,
}

/// The SHA-256 of a whole token, the cache's key.
pub(crate) fn digest_of(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, token).as_ref());
    out
}

impl TokenCache {
    /// A cache of about `entries` tokens (rounded up to a power of two, at least [`WAYS`]);
    /// 0: no cache.
    pub fn new(entries: usize) -> TokenCache {
        let slots = match entries {
            0 => 0,
            n => n.max(WAYS).checked_next_power_of_two().unwrap_or(n),
        };
        TokenCache {
            capacity: slots,
            slots: Vec::new(),
        }
    }

    /// Whether it keeps anything at all (a cache of 0 entries does not).
    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The range of `slots` that is `digest`'s set.
    fn set(&self, digest: &[u8; 32]) -> std::ops::Range<usize> {
        let mut low = [0u8; 8];
        low.copy_from_slice(&digest[..8]);
        let sets = self.capacity / WAYS;
        let first = (u64::from_le_bytes(low) as usize & (sets - 1)) * WAYS;
        first..first + WAYS
    }

    /// The claims of the token with this digest when it was verified and has not expired at
    /// `now_s` (an expired entry is dropped).
    pub(crate) fn get(&mut self, digest: &[u8; 32], now_s: u64, leeway_s: u64) -> Option<Claims> {
        if self.slots.is_empty() {
            return None;
        }
        let set = self.set(digest);
        let i = set
            .into_iter()
            .find(|i| self.slots[*i].as_ref().is_some_and(|e| e.digest == *digest))?;
        let entry = self.slots[i].as_ref()?;
        if now_s > entry.exp.saturating_add(leeway_s) {
            self.slots[i] = None;
            return None;
        }
        Some(Claims {
            sub: entry.sub.to_string(),
            exp: entry.exp,
            rooms: entry.rooms.clone(),
        })
    }

    /// Stores a token that passed every check.
    pub(crate) fn put(&mut self, digest: [u8; 32], claims: &Claims) {
        if self.is_enabled() {
            if self.slots.is_empty() {
                self.slots = vec![None; self.capacity];
            }
            let range = self.set(&digest);
            let set = &mut self.slots[range];
            let way = set
                .iter()
                .position(Option::is_none)
                .or_else(|| (0..WAYS).min_by_key(|w| set[*w].as_ref().map_or(0, |e| e.exp)))
                .unwrap_or(0);
            set[way] = Some(Entry {
                digest,
                sub: claims.sub.as_str().into(),
                exp: claims.exp,
                rooms: claims.rooms.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            rooms: None,
        }
    }

    #[test]
    fn a_stored_token_hits_until_it_expires_and_others_miss() {
        let mut cache = TokenCache::new(4);
        let (a, b) = (digest_of(b"token a"), digest_of(b"token b"));
        cache.put(a, &claims("dev-a", 100));
        assert_eq!(cache.get(&a, 50, 0), Some(claims("dev-a", 100)));
        assert_eq!(cache.get(&b, 50, 0), None);
        assert_eq!(cache.get(&a, 105, 10), Some(claims("dev-a", 100)));
        assert_eq!(cache.get(&a, 111, 10), None);
        // Dropped once expired.
        assert_eq!(cache.get(&a, 50, 0), None);
    }

    #[test]
    fn a_slot_is_64_bytes_plus_the_device_id() {
        // doc/operations.md states it (jwt_cache_entries).
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 64);
    }

    #[test]
    fn it_is_bounded_and_a_zero_size_cache_holds_nothing() {
        let mut cache = TokenCache::new(3);
        assert_eq!((cache.capacity, cache.slots.len()), (4, 0));
        // Full, a set gives up the token that expires first.
        for exp in [40u32, 10, 30, 20] {
            cache.put(digest_of(&exp.to_be_bytes()), &claims("d", exp.into()));
        }
        cache.put(digest_of(b"new"), &claims("d", 50));
        assert_eq!(cache.get(&digest_of(&10u32.to_be_bytes()), 0, 0), None);
        for exp in [40u32, 30, 20, 50] {
            let d = if exp == 50 {
                digest_of(b"new")
            } else {
                digest_of(&exp.to_be_bytes())
            };
            assert!(cache.get(&d, 0, 0).is_some(), "{exp}");
        }
        for i in 0..1000u32 {
            cache.put(digest_of(&i.to_be_bytes()), &claims("d", 100));
        }
        assert_eq!(cache.slots.len(), 4);
        let held = (0..1000u32)
            .filter(|i| cache.get(&digest_of(&i.to_be_bytes()), 0, 0).is_some())
            .count();
        assert!((1..=4).contains(&held), "{held}");
        let mut none = TokenCache::new(0);
        none.put(digest_of(b"t"), &claims("d", 100));
        assert_eq!(none.get(&digest_of(b"t"), 0, 0), None);
        assert!(!none.is_enabled());
    }
}
