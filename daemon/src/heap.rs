//! Giving memory back after a burst: buffers that grew for it and are empty again, and the
//! allocator's free pages.
//!
//! A daemon that holds many long-lived connections lives mostly idle between bursts. What a
//! burst allocated and freed stays in the C allocator's arenas (one per thread that
//! allocates), counted in the process's RSS, unless the allocator is asked to return it:
//! [`release_free_pages`] does, and callers do it only when they know they freed enough to
//! matter, since it walks every arena.

/// Largest allocation served from an arena; larger ones get pages of their own, returned to
/// the kernel when freed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;
/// Free memory at the top of an arena past which a `free` returns it to the kernel.
pub const TRIM_THRESHOLD: usize = 128 * 1024;

/// Makes the allocator give memory back as it goes (glibc; nothing elsewhere): fixes its
/// mmap and trim thresholds at [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`]. By default glibc
/// raises both each time a large block is freed (up to 32 MiB and 64 MiB), so after a burst
/// of large buffers each thread's arena keeps megabytes of free memory resident that neither
/// `free` nor `malloc_trim` return. Call once at start, before the threads that allocate.
pub fn return_memory_promptly() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; it has no preconditions. Both values
        // fit in a c_int.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
        }
    }
}

/// Replaces `buf` with an unallocated vector when it is empty and holds more than `keep`
/// bytes of capacity; returns the bytes freed.
pub fn shrink_idle(buf: &mut Vec<u8>, keep: usize) -> usize {
    if !buf.is_empty() || buf.capacity() <= keep {
        return 0;
    }
    let freed = buf.capacity();
    *buf = Vec::new();
    freed
}

/// Asks the allocator to return the free pages of every arena to the kernel
/// (`malloc_trim(0)` under glibc; nothing elsewhere). Returns whether any memory was
/// released.
pub fn release_free_pages() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own structures, under its locks;
        // it has no preconditions.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_buffers_past_the_bound_are_freed() {
        let mut busy = Vec::with_capacity(4096);
        busy.push(1u8);
        assert_eq!(shrink_idle(&mut busy, 1024), 0);
        assert!(busy.capacity() >= 4096);

        let mut small = Vec::<u8>::with_capacity(512);
        assert_eq!(shrink_idle(&mut small, 1024), 0);
        assert!(small.capacity() >= 512);

        let mut big = Vec::<u8>::with_capacity(4096);
        assert!(shrink_idle(&mut big, 1024) >= 4096);
        assert_eq!(big.capacity(), 0);
    }

    #[test]
    fn releasing_free_pages_is_safe_to_call_any_time() {
        let garbage: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 64 * 1024]).collect();
        drop(garbage);
        release_free_pages();
        release_free_pages();
    }
}
