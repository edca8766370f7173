//! One copy of a metric set per group of threads, for counters every worker of a pool bumps
//! (ipconfig's HTTP handlers): each thread keeps to one shard, so workers rarely write the
//! same cache line, and a scrape sums the shards.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

thread_local! {
    /// The calling thread's shard number, picked the first time it counts.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The calling thread's shard number: threads take numbers in turn, the first time they ask.
fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD.with(|s| match s.get() {
        Some(i) => i,
        None => {
            let i = NEXT.fetch_add(1, Relaxed);
            s.set(Some(i));
            i
        }
    })
}

/// `n` copies of `T`. Threads may share a shard (there are more threads than shards, or
/// several `Sharded` sets), so writers use the `_shared` (read-modify-write) methods; a
/// shard type should be cache-line aligned (`#[repr(align(128))]`).
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[T]>,
}

impl<T: Default> Sharded<T> {
    /// `n` (at least one) default shards.
    pub fn new(n: usize) -> Sharded<T> {
        Sharded {
            shards: (0..n.max(1)).map(|_| T::default()).collect(),
        }
    }
}

impl<T> Sharded<T> {
    /// The calling thread's shard.
    #[inline]
    pub fn local(&self) -> &T {
        &self.shards[thread_shard() % self.shards.len()]
    }

    /// Every shard, to sum when scraped.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Counter;

    #[test]
    fn each_thread_keeps_to_its_shard_and_nothing_is_lost() {
        let s: Sharded<Counter> = Sharded::new(4);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let mine = s.local() as *const Counter;
                    for _ in 0..100 {
                        assert_eq!(s.local() as *const Counter, mine);
                        s.local().inc_shared();
                    }
                });
            }
        });
        assert_eq!(s.iter().map(Counter::get).sum::<u64>(), 800);
    }
}
