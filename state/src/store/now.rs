//! The clocks the loop reads once per iteration: a monotonic one for timers, the wall clock
//! for what is journaled, and the conversion between them.

/// The clocks, read once per loop iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (timers).
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch (what is journaled and shown).
    pub unix_ms: u64,
}

impl Now {
    /// Converts a journaled wall-clock time to the monotonic clock.
    pub(super) fn mono_of(self, unix_ms: u64) -> u64 {
        if unix_ms >= self.unix_ms {
            self.mono_ms.saturating_add(unix_ms - self.unix_ms)
        } else {
            self.mono_ms.saturating_sub(self.unix_ms - unix_ms)
        }
    }

    /// Converts a monotonic time to the wall clock.
    pub(super) fn unix_of(self, mono_ms: u64) -> u64 {
        if mono_ms >= self.mono_ms {
            self.unix_ms.saturating_add(mono_ms - self.mono_ms)
        } else {
            self.unix_ms.saturating_sub(self.mono_ms - mono_ms)
        }
    }
}
