//! The sessions of a reactor's layered clients, indexed by the client's slab slot.
//!
//! A page table: slots are cut into pages of [`PAGE`], and a page of sessions exists only
//! while one of its slots holds a layered client. A session costs its 24 bytes in its page,
//! with no hashing and no rehash copies; a plain TCP client costs nothing but its share of
//! one page pointer (8 bytes per 64 slots). Lookups are two indexings.

use super::Session;

/// Slots per page.
const PAGE: usize = 64;

type Page = [Option<Session>; PAGE];

#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    pages: Vec<Option<Box<Page>>>,
    /// Sessions in each page (a page goes when it has none).
    counts: Vec<u8>,
    len: usize,
}

impl SessionTable {
    pub(crate) fn get(&self, slot: usize) -> Option<&Session> {
        self.pages.get(slot / PAGE)?.as_ref()?[slot % PAGE].as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Session> {
        self.pages.get_mut(slot / PAGE)?.as_mut()?[slot % PAGE].as_mut()
    }

    pub(crate) fn insert(&mut self, slot: usize, session: Session) {
        let page = slot / PAGE;
        if self.pages.len() <= page {
            self.pages.resize_with(page + 1, || None);
            self.counts.resize(page + 1, 0);
        }
        let entries = self.pages[page].get_or_insert_with(|| Box::new([const { None }; PAGE]));
        if entries[slot % PAGE].replace(session).is_none() {
            self.counts[page] += 1;
            self.len += 1;
        }
    }

    pub(crate) fn remove(&mut self, slot: usize) -> Option<Session> {
        let page = slot / PAGE;
        let session = self.pages.get_mut(page)?.as_mut()?[slot % PAGE].take()?;
        self.counts[page] -= 1;
        self.len -= 1;
        if self.counts[page] == 0 {
            self.pages[page] = None;
        }
        Some(session)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Stack, WsLayer};
    use super::*;

    fn session() -> Session {
        Session {
            stack: Stack::Ws(WsLayer::default()),
            io: None,
        }
    }

    #[test]
    fn pages_come_and_go_with_their_sessions() {
        let mut table = SessionTable::default();
        assert!(table.get(5).is_none() && table.remove(5).is_none());
        table.insert(5, session());
        table.insert(200, session());
        assert_eq!(table.len(), 2);
        assert!(table.get(5).is_some() && table.get(6).is_none() && table.get_mut(200).is_some());
        assert_eq!(table.pages.iter().filter(|p| p.is_some()).count(), 2);
        assert!(table.remove(5).is_some());
        assert!(table.remove(5).is_none());
        assert_eq!(table.pages.iter().filter(|p| p.is_some()).count(), 1);
        table.insert(200, session()); // replacing counts once
        assert_eq!(table.len(), 1);
    }
}
