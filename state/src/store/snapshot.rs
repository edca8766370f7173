//! The whole state as journal records, in the order a replay needs them: what a compaction
//! writes as the new snapshot.

use super::{Now, Store};
use crate::record::Record;
use crate::session::Presence;

impl Store {
    /// The whole state as records, each handed to `emit` in the order a replay needs them
    /// (for [`crate::journal::Journal::start_compaction_with`], which encodes them in place).
    pub fn snapshot(&self, now: Now, mut emit: impl FnMut(&Record<'_>)) {
        emit(&Record::Counters {
            next_session: self.next_session,
            next_msg: self.next_msg,
        });
        for (i, g) in self.gateways.iter().enumerate() {
            emit(&Record::Gateway {
                index: i as u16,
                name: &g.name,
            });
        }
        // Detached sessions first: a LOGIN record puts its session online, on its route,
        // until the DETACH record after it, and must not take the route of an online one.
        let detached = self.sessions.iter().filter(|(_, s)| !s.is_online());
        let online = self.sessions.iter().filter(|(_, s)| s.is_online());
        for (_, s) in detached.chain(online) {
            emit(&Record::Login {
                session: s.id,
                replaces: 0,
                gateway: s.gateway,
                route: s.route,
                login_unix_ms: s.login_unix_ms,
                secret: s.secret,
                device: &s.device,
            });
            if let Presence::Detached { since_ms } = s.presence {
                emit(&Record::Detach {
                    session: s.id,
                    at_unix_ms: now.unix_of(since_ms),
                });
            }
            if let Some(grants) = s.grants() {
                emit(&Record::Grants {
                    session: s.id,
                    lines: &grants.to_lines(),
                });
            }
            for room in s
                .room_list()
                .iter()
                .filter_map(|&i| self.rooms.get(i as usize))
            {
                emit(&Record::Join {
                    session: s.id,
                    room: &room.name,
                });
            }
            for p in s.pushes.iter().flat_map(|p| p.queue.iter()) {
                emit(&Record::Push {
                    session: s.id,
                    msg: p.msg,
                    expires_unix_ms: p.expires_unix_ms,
                    payload: &p.payload,
                });
            }
        }
    }
}
