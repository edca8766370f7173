//! Per-reactor free lists of buffers, so the data path does not go to the allocator for
//! every busy connection or every in-flight request.
//!
//! Each pool keeps at most `keep` buffers of at most `max_capacity` bytes, so what a burst
//! leaves behind is bounded: larger buffers, and any beyond `keep`, go back to the
//! allocator.

use crate::client::ClientIo;

/// A free list of byte buffers (request payloads kept for a possible re-send).
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Vec<Vec<u8>>,
    keep: usize,
    max_capacity: usize,
}

impl BufferPool {
    /// A pool that keeps at most `keep` free buffers of at most `max_capacity` bytes.
    pub(crate) fn new(keep: usize, max_capacity: usize) -> BufferPool {
        BufferPool {
            free: Vec::new(),
            keep,
            max_capacity,
        }
    }

    /// The most memory the free list can hold.
    #[cfg(test)]
    pub(crate) fn max_retained(&self) -> usize {
        self.keep * self.max_capacity
    }

    /// An empty buffer, reused when one is free.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    /// Returns a buffer to the pool (or frees it).
    pub(crate) fn give(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < self.keep && buf.capacity() <= self.max_capacity {
            buf.clear();
            self.free.push(buf);
        }
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
}

impl IoPool {
    /// A pool that keeps at most `keep` boxes, each buffer trimmed to `max_capacity`.
    pub(crate) fn new(keep: usize, max_capacity: usize) -> IoPool {
        IoPool {
            free: Vec::new(),
            keep,
            max_capacity,
        }
    }

    pub(crate) fn take(&mut self) -> Box<ClientIo> {
        self.free.pop().unwrap_or_default()
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
