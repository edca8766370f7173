//! The route key: which client connection a node's reply belongs to.
//!
//! Packed in the u64 that leads every backend body: 8 bits of reactor index, 24 bits of the
//! connection's generation, 32 bits of its slab slot. A slot is reused after its connection
//! closes, with a new generation, so a late reply for the old connection does not match and
//! is dropped, never delivered to the connection that took the slot.

/// Reactors a route key can name.
pub(crate) const MAX_REACTORS: usize = 256;
const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

/// A connection's address inside one gateway process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Route {
    pub reactor: u8,
    /// Only the low 24 bits travel.
    pub generation: u32,
    pub slot: u32,
}

impl Route {
    pub(crate) fn new(reactor: usize, generation: u32, slot: usize) -> Option<Route> {
        Some(Route {
            reactor: u8::try_from(reactor).ok()?,
            generation: generation & GENERATION_MASK,
            slot: u32::try_from(slot).ok()?,
        })
    }

    pub(crate) fn pack(self) -> u64 {
        (u64::from(self.reactor) << 56)
            | (u64::from(self.generation & GENERATION_MASK) << 32)
            | u64::from(self.slot)
    }

    pub(crate) fn unpack(key: u64) -> Route {
        Route {
            reactor: (key >> 56) as u8,
            generation: ((key >> 32) as u32) & GENERATION_MASK,
            slot: key as u32,
        }
    }
}

/// The next generation after `g`, kept within the 24 bits a route carries and never 0.
pub(crate) fn next_generation(g: u32) -> u32 {
    let next = (g + 1) & GENERATION_MASK;
    if next == 0 {
        1
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_unpack_round_trips(reactor in 0usize..256, generation in 0u32..(1 << 24), slot in any::<u32>()) {
            let route = Route::new(reactor, generation, slot as usize).unwrap();
            prop_assert_eq!(Route::unpack(route.pack()), route);
        }
    }

    #[test]
    fn a_reused_slot_with_a_new_generation_does_not_match() {
        let old = Route::new(1, 7, 42).unwrap();
        let new = Route::new(1, next_generation(7), 42).unwrap();
        assert_ne!(old.pack(), new.pack());
        assert_eq!(next_generation(GENERATION_MASK), 1);
        assert!(Route::new(256, 1, 1).is_none());
    }
}
