//! What a reactor gives back once a burst is over, about once a second: pooled buffers and
//! payload copies nobody used for a whole period, the in-flight table's room when mostly
//! empty, link buffers that grew and emptied, and then — when that came to enough to matter —
//! the allocator's free pages, so the process's RSS returns near where it was.
//!
//! A pool's low-water mark (see `buffer_pool.rs`) keeps what steady load uses: only buffers
//! that sat free through a whole period go.

use std::time::Duration;

use tether_daemon::heap;

use super::Reactor;

/// How often a reactor trims.
pub(super) const TRIM_INTERVAL: Duration = Duration::from_secs(1);
/// A link buffer keeps up to this much capacity when empty.
const LINK_KEEP: usize = 64 * 1024;
/// Freed bytes past which the allocator is asked to return its free pages.
const RELEASE_AT: usize = 64 * 1024;

impl Reactor {
    pub(super) fn trim(&mut self) {
        let mut freed = self.io_pool.trim() + self.dispatcher.trim();
        for backend in &mut self.backends {
            freed += backend.trim(LINK_KEEP);
        }
        if let Some(link) = self.state.as_mut() {
            freed += link.trim(LINK_KEEP);
        }
        for list in [&mut self.dirty_clients, &mut self.resume] {
            freed += shrink_list(list);
        }
        freed += shrink_list(&mut self.watch);
        if self.actions.is_empty() && self.actions.capacity() > 1024 {
            freed += self.actions.capacity() * size_of::<crate::dispatch::Action>();
            self.actions = Vec::new();
        }
        if freed >= RELEASE_AT {
            heap::release_free_pages();
        }
    }
}

/// Frees a work list's room when it is empty and large; returns the bytes freed.
fn shrink_list<T>(list: &mut Vec<T>) -> usize {
    if !list.is_empty() || list.capacity() <= 1024 {
        return 0;
    }
    let freed = list.capacity() * size_of::<T>();
    *list = Vec::new();
    freed
}
