//! Per-reactor free lists of buffers, so the data path does not go to the allocator for
//! every busy connection or every in-flight request.
//!
//! Each pool keeps at most `keep` buffers of at most `max_capacity` bytes, so what a burst
//! leaves behind is bounded: larger buffers, and any beyond `keep`, go back to the
//! allocator. And what a burst left is given back once quiet: each pool remembers the
//! fewest buffers it held free since its last [`trim`](BufferPool::trim) (its low-water
//! mark) — buffers nobody needed for a whole period — and a trim frees that many.

use crate::client::ClientIo;

/// A free list of byte buffers (request payloads kept for a possible re-send).
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
    keep: usize,
    max_capacity: usize,
    /// The fewest buffers free since the last trim.
    low: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` free buffers of at most `max_capacity` bytes.
    pub(crate) fn new(keep: usize, max_capacity: usize) -> BufferPool {
        BufferPool {
            free: Vec::new(),
            keep,
            max_capacity,
            low: 0,
        }
    }

    /// The most memory the free list can hold.
    #[cfg(test)]
    pub(crate) fn max_retained(&self) -> usize {
        self.keep * self.max_capacity
    }

    /// An empty buffer, reused when one is free.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        let buf = self.free.pop().unwrap_or_default();
        self.low = self.low.min(self.free.len());
        buf
    }

    /// Returns a buffer to the pool (or frees it).
    pub(crate) fn give(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < self.keep && buf.capacity() <= self.max_capacity {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Frees the buffers unused since the last trim; returns their bytes.
    pub(crate) fn trim(&mut self) -> usize {
        let freed = unused(&mut self.free, self.low, |buf| buf.capacity());
        self.low = self.free.len();
        freed
    }
}

/// A free list of [`ClientIo`] boxes for busy connections.
#[derive(Debug)]
pub(crate) struct IoPool {
    // Boxed on purpose: a box moves into a connection and back as one pointer.
    #[allow(clippy::vec_box)]
    free: Vec<Box<ClientIo>>,
    keep: usize,
    max_capacity: usize,
    /// The fewest boxes free since the last trim.
    low: usize,
}

impl IoPool {
    /// A pool that keeps at most `keep` boxes, each buffer trimmed to `max_capacity`.
    pub(crate) fn new(keep: usize, max_capacity: usize) -> IoPool {
        IoPool {
            free: Vec::new(),
            keep,
            max_capacity,
            low: 0,
        }
    }

    pub(crate) fn take(&mut self) -> Box<ClientIo> {
        let io = self.free.pop().unwrap_or_default();
        self.low = self.low.min(self.free.len());
        io
    }

    pub(crate) fn give(&mut self, mut io: Box<ClientIo>) {
        if self.free.len() >= self.keep {
            return;
        }
        if io.partial.capacity() > self.max_capacity {
            io.partial = Vec::new();
        }
        if io.out.capacity() > self.max_capacity {
            io.out = Vec::new();
        }
        io.partial.clear();
        io.out.clear();
        io.written = 0;
        self.free.push(io);
    }

    /// Frees the boxes unused since the last trim; returns their bytes.
    pub(crate) fn trim(&mut self) -> usize {
        let freed = unused(&mut self.free, self.low, |io| {
            size_of::<ClientIo>() + io.partial.capacity() + io.out.capacity()
        });
        self.low = self.free.len();
        freed
    }
}

/// Drops the `count` oldest entries of a free list (the bottom of the stack: the ones
/// `take` reaches last) and returns their bytes, as `size` counts them.
fn unused<T>(free: &mut Vec<T>, count: usize, size: impl Fn(&T) -> usize) -> usize {
    let count = count.min(free.len());
    let freed = free[..count].iter().map(size).sum();
    free.drain(..count);
    if free.capacity() > 2 * free.len().max(16) {
        free.shrink_to_fit();
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_big_ones_freed() {
        let mut pool = BufferPool::new(2, 1024);
        assert_eq!(pool.max_retained(), 2048);
        let mut a = pool.take();
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr);
        pool.give(vec![0; 1025]);
        assert!(pool.take().capacity() == 0);
    }

    #[test]
    fn a_trim_frees_what_went_unused_since_the_last_one() {
        let mut pool = BufferPool::new(8, 1024);
        let bufs: Vec<Vec<u8>> = (0..4).map(|_| Vec::with_capacity(100)).collect();
        for buf in bufs {
            pool.give(buf);
        }
        // The first trim only sets the mark: 4 free, none taken since.
        pool.low = pool.free.len();
        // One period: at most 3 taken at once, so 1 sat unused throughout.
        let taken: Vec<Vec<u8>> = (0..3).map(|_| pool.take()).collect();
        for buf in taken {
            pool.give(buf);
        }
        assert_eq!(pool.trim(), 100);
        assert_eq!(pool.free.len(), 3);
        // A quiet period: every buffer went unused.
        assert_eq!(pool.trim(), 300);
        assert!(pool.free.is_empty());
        assert_eq!(pool.trim(), 0);
    }

    #[test]
    fn io_boxes_unused_for_a_period_are_freed() {
        let mut pool = IoPool::new(4, 1024);
        let mut io = pool.take();
        io.out.reserve(512);
        pool.give(io);
        // Given back during this period: the low-water mark is still 0.
        assert_eq!(pool.trim(), 0);
        assert!(pool.trim() >= 512);
        assert!(pool.free.is_empty());
    }

    #[test]
    fn io_boxes_come_back_clean() {
        let mut pool = IoPool::new(4, 1024);
        let mut io = pool.take();
        io.partial.extend_from_slice(b"x");
        io.out.extend_from_slice(b"y");
        io.written = 1;
        pool.give(io);
        let io = pool.take();
        assert!(io.is_idle() && io.out.is_empty());
    }
}
