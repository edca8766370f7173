//! The rules sessions live by, taken from the configuration (and replaced by a reload):
//! the token verifier (keys and claim policy), timings, limits and the push retry schedule.

use crate::config::{Config, DuplicateLogin};
use crate::room::RoomPolicy;
use crate::token::{KeySet, TokenCache, Verifier};
use crate::wheel::backoff_ms;

/// The rules sessions live by, from the configuration (and changed by a reload).
#[derive(Debug, Clone)]
pub struct Rules {
    pub verifier: Verifier,
    /// ES256/RS256 tokens `verifier` already accepted; a new verifier comes with a new one.
    pub token_cache: TokenCache,
    pub heartbeat_s: u64,
    pub resume_window_s: u64,
    pub duplicate_login: DuplicateLogin,
    pub max_sessions: usize,
    pub max_pending: usize,
    pub max_pending_bytes: u64,
    pub max_payload: usize,
    pub push_ttl_s: u64,
    pub retry_base_ms: u64,
    pub retry_cap_ms: u64,
    pub retry_max: u32,
    pub(crate) rooms: RoomPolicy,
    pub room_conflate: Vec<String>,
    pub max_rooms_per_session: usize,
    pub max_rooms: usize,
}

impl Rules {
    /// The configuration's rules, login tokens checked with `keys` (see [`Config::keys`]).
    pub fn new(config: &Config, keys: KeySet) -> Rules {
        Rules {
            verifier: Verifier::new(keys, config.token_policy()),
            token_cache: TokenCache::new(config.jwt_cache_entries),
            heartbeat_s: config.heartbeat_s,
            resume_window_s: config.resume_window_s,
            duplicate_login: config.duplicate_login,
            max_sessions: config.max_sessions,
            max_pending: config.max_pending,
            max_pending_bytes: config.max_pending_bytes,
            max_payload: config.max_payload,
            push_ttl_s: config.push_ttl_s,
            retry_base_ms: config.push_retry_base_ms,
            retry_cap_ms: config.push_retry_cap_ms,
            retry_max: config.push_retry_max,
            rooms: RoomPolicy {
                merge_ms: config.room_merge_ms,
                merge_max: config.room_merge_max,
                history: config.room_history,
                history_ms: config.room_history_s.saturating_mul(1000),
            },
            room_conflate: config.room_conflate.clone(),
            max_rooms_per_session: config.max_rooms_per_session,
            max_rooms: config.max_rooms,
        }
    }

    pub(super) fn heartbeat_deadline_ms(&self) -> u64 {
        3 * self.heartbeat_s * 1000
    }

    /// Whether `room` keeps only the latest message of each window.
    pub(super) fn conflates(&self, room: &str) -> bool {
        self.room_conflate
            .iter()
            .any(|p| room.starts_with(p.as_str()))
    }

    pub(super) fn resume_window_ms(&self) -> u64 {
        self.resume_window_s * 1000
    }

    /// Delay after send number `sends` (1-based) before the next, or `None` when it was the last.
    pub(super) fn retry_after(&self, sends: u32) -> Option<u64> {
        backoff_ms(
            sends.saturating_sub(1),
            self.retry_base_ms,
            self.retry_cap_ms,
            self.retry_max.saturating_sub(1),
        )
    }
}
