//! Which of a reactor's connections are in which room, as the state daemon's MEMBERSHIP
//! frames say: a room's members are one vector of (slot, generation) that a window is written
//! to in one pass, and each member knows its place in it, so a leave or a close costs O(1)
//! whatever the room's size. Only connections in a room pay anything here. Sans-IO.

use rustc_hash::FxHashMap;
use slab::Slab;

/// A member: the connection's slab slot and generation (a slot reused by another connection
/// has another generation, and the reactor skips it).
pub(crate) type Member = (u32, u32);

struct Room {
    name: Box<str>,
    members: Vec<Member>,
}

/// The rooms of one reactor.
#[derive(Default)]
pub(crate) struct RoomMembers {
    by_name: FxHashMap<Box<str>, u32>,
    rooms: Slab<Room>,
    /// Per connection slot: its rooms and its place in each room's `members`.
    of_client: FxHashMap<u32, Vec<(u32, u32)>>,
}

impl RoomMembers {
    /// The connection at `slot` is in exactly `names` from now on.
    pub(crate) fn set<'a>(
        &mut self,
        slot: u32,
        generation: u32,
        names: impl IntoIterator<Item = &'a str>,
    ) {
        self.remove_client(slot);
        let mut places = Vec::new();
        for name in names {
            let room = match self.by_name.get(name) {
                Some(&room) => room,
                None => {
                    let room = self.rooms.insert(Room {
                        name: name.into(),
                        members: Vec::new(),
                    }) as u32;
                    self.by_name.insert(name.into(), room);
                    room
                }
            };
            if places.iter().any(|&(r, _)| r == room) {
                continue;
            }
            let members = &mut self.rooms[room as usize].members;
            places.push((room, members.len() as u32));
            members.push((slot, generation));
        }
        if !places.is_empty() {
            self.of_client.insert(slot, places);
        }
    }

    /// The connection at `slot` is in no room any more (it closed, or logs in again).
    pub(crate) fn remove_client(&mut self, slot: u32) {
        let Some(places) = self.of_client.remove(&slot) else {
            return;
        };
        for (room, at) in places {
            let Some(r) = self.rooms.get_mut(room as usize) else {
                continue;
            };
            let at = at as usize;
            if at >= r.members.len() {
                continue;
            }
            r.members.swap_remove(at);
            if let Some(&(moved, _)) = r.members.get(at) {
                // The last member took the freed place: tell it where it is now.
                if let Some(place) = self
                    .of_client
                    .get_mut(&moved)
                    .and_then(|p| p.iter_mut().find(|(r2, _)| *r2 == room))
                {
                    place.1 = at as u32;
                }
            }
            if r.members.is_empty() {
                let gone = self.rooms.remove(room as usize);
                self.by_name.remove(&gone.name);
            }
        }
    }

    /// The members of `name` on this reactor.
    pub(crate) fn members(&self, name: &str) -> &[Member] {
        self.by_name
            .get(name)
            .and_then(|&room| self.rooms.get(room as usize))
            .map_or(&[], |r| &r.members)
    }

    /// Forgets everything (the link to the daemon came back: it sends MEMBERSHIP again for
    /// every announced connection that is in a room).
    pub(crate) fn clear(&mut self) {
        self.by_name.clear();
        self.rooms.clear();
        self.of_client.clear();
    }

    /// Rooms with a member here.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(m: &[Member]) -> Vec<Member> {
        let mut v = m.to_vec();
        v.sort();
        v
    }

    #[test]
    fn membership_is_replaced_whole_and_leaves_keep_places_right() {
        let mut rooms = RoomMembers::default();
        for slot in 0..5 {
            rooms.set(slot, 1, ["lobby"]);
        }
        rooms.set(2, 1, ["lobby", "chat", "lobby"]);
        assert_eq!(rooms.members("lobby").len(), 5);
        assert_eq!(rooms.members("chat"), &[(2, 1)]);
        // Remove from the middle, then the one that moved into its place.
        rooms.remove_client(1);
        rooms.remove_client(4);
        rooms.remove_client(0);
        assert_eq!(sorted(rooms.members("lobby")), [(2, 1), (3, 1)]);
        rooms.set(2, 1, ["chat"]);
        assert_eq!(rooms.members("lobby"), &[(3, 1)]);
        rooms.set(3, 1, []);
        assert!(rooms.members("lobby").is_empty());
        assert_eq!(rooms.len(), 1);
        rooms.clear();
        assert!(rooms.members("chat").is_empty());
    }

    #[test]
    fn many_removals_in_any_order_leave_exactly_the_rest() {
        let mut rooms = RoomMembers::default();
        for slot in 0..100u32 {
            rooms.set(slot, 7, ["a", "b"]);
        }
        for slot in (0..100u32).filter(|s| s % 3 == 0) {
            rooms.remove_client(slot);
        }
        let left: Vec<Member> = (0..100u32).filter(|s| s % 3 != 0).map(|s| (s, 7)).collect();
        assert_eq!(sorted(rooms.members("a")), left);
        assert_eq!(sorted(rooms.members("b")), left);
    }
}
