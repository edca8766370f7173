//! The sessions' slab and its three hash tables of 4-byte slot numbers (by device, by session
//! id, and by gateway and route for online sessions), kept in step on every insert, removal
//! and move.

use rustc_hash::FxHasher;

use super::Store;
use crate::session::{Pushes, Session};

impl Store {
    pub(super) fn insert(&mut self, session: Session) -> usize {
        let online = session.is_online();
        let slot = self.sessions.insert(session);
        let sessions = &self.sessions;
        let s = &sessions[slot];
        self.by_device
            .insert_unique(device_hash(&s.device), slot as u32, |&i| {
                device_hash(&sessions[i as usize].device)
            });
        self.by_id.insert_unique(id_hash(s.id), slot as u32, |&i| {
            id_hash(sessions[i as usize].id)
        });
        self.pending += s.pending() as u64;
        self.pending_bytes += s.pending_bytes();
        if online {
            self.online += 1;
            self.index_route(slot);
        }
        slot
    }

    /// Removes a session and its timers; returns its pushes, or drops them (counted as
    /// expired) when `drop_pushes`.
    pub(super) fn remove(&mut self, slot: usize, drop_pushes: bool) -> Option<Box<Pushes>> {
        if self.sessions[slot].is_online() {
            self.unindex_route(slot);
            self.online -= 1;
        }
        let s = self.sessions.remove(slot);
        self.rooms_removed(s.room_list());
        if let Ok(entry) = self
            .by_device
            .find_entry(device_hash(&s.device), |&i| i as usize == slot)
        {
            entry.remove();
        }
        if let Ok(entry) = self
            .by_id
            .find_entry(id_hash(s.id), |&i| i as usize == slot)
        {
            entry.remove();
        }
        if let Some(timer) = s.timer {
            self.wheel.cancel(timer);
        }
        let mut pushes = s.pushes;
        if let Some(p) = pushes.as_mut() {
            if let Some(timer) = p.timer.take() {
                self.wheel.cancel(timer);
            }
            self.pending -= p.queue.len() as u64;
            self.pending_bytes -= p
                .queue
                .iter()
                .map(|push| push.payload.len() as u64)
                .sum::<u64>();
            if drop_pushes {
                self.metrics.pushes_expired.add(p.queue.len() as u64);
                return None;
            }
        }
        pushes
    }

    pub(super) fn index_route(&mut self, slot: usize) {
        let sessions = &self.sessions;
        let s = &sessions[slot];
        self.by_route
            .insert_unique(route_hash(s.gateway, s.route), slot as u32, |&i| {
                let s = &sessions[i as usize];
                route_hash(s.gateway, s.route)
            });
        self.rooms_link_up(slot);
    }

    pub(super) fn unindex_route(&mut self, slot: usize) {
        self.rooms_link_down(slot);
        let s = &self.sessions[slot];
        if let Ok(entry) = self
            .by_route
            .find_entry(route_hash(s.gateway, s.route), |&i| i as usize == slot)
        {
            entry.remove();
        }
    }

    pub(super) fn find_device(&self, device: &str) -> Option<usize> {
        self.by_device
            .find(device_hash(device), |&i| {
                &*self.sessions[i as usize].device == device
            })
            .map(|&i| i as usize)
    }

    pub(super) fn find_id(&self, id: u64) -> Option<usize> {
        self.by_id
            .find(id_hash(id), |&i| self.sessions[i as usize].id == id)
            .map(|&i| i as usize)
    }

    pub(super) fn find_route(&self, gw: u16, route: u64) -> Option<usize> {
        self.by_route
            .find(route_hash(gw, route), |&i| {
                let s = &self.sessions[i as usize];
                s.gateway == gw && s.route == route
            })
            .map(|&i| i as usize)
    }
}

fn device_hash(device: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher::default();
    device.hash(&mut h);
    h.finish()
}

fn id_hash(id: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher::default();
    id.hash(&mut h);
    h.finish()
}

fn route_hash(gw: u16, route: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher::default();
    (gw, route).hash(&mut h);
    h.finish()
}
