//! The daemon's counters and gauges, declared once in page order, and their Prometheus page.
//!
//! The event loop is the only writer of every counter but `api_denied_total`, so they are
//! [`Counter`]s bumped with a relaxed load and store; the push API's thread bumps its refusals
//! with `inc_shared`, and the metrics listener's thread reads. Every value is a count that is
//! exact once the loop is quiet.
//!
//! Families whose samples the store bumps one by one (`logins_total{result}` and the like)
//! are declared as one field per sample, the first naming the family. The page's
//! `detached_total{cause="timeout"}` is the timeout kicks counter again: a session kicked for
//! its heartbeat is detached with it.

use tether_daemon::metrics::{Counter, Derived, Gauge};
use tether_daemon::prometheus::Text;

tether_daemon::metric_set! {
    /// Every counter and gauge of the daemon.
    pub struct Metrics;

    /// The values of [`Metrics`] at one moment.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Snapshot, derived by Metrics::fill_derived;

    families {
        pub sessions_online: Gauge
            => "sessions", "Sessions held, by presence." [state = "online"];
        pub sessions_detached: Gauge => [state = "detached"];
        pub pushes_pending: Gauge
            => "pushes_pending", "Pushes waiting for an ACK, all sessions.";
        pub pushes_pending_bytes: Gauge
            => "pushes_pending_bytes", "Payload bytes of the pushes waiting for an ACK.";
        pub links_open: Gauge => "links_open", "Gateway links open.";
        pub gateways: Gauge
            => "gateways_known", "Gateway ids seen since the journal began.";

        pub logins_ok: Counter
            => "logins_total", "STATE_LOGIN answers, by result." [result = "ok"];
        pub logins_auth_failed: Counter => [result = "auth_failed"];
        pub logins_overloaded: Counter => [result = "overloaded"];
        pub resumes_ok: Counter
            => "resumes_total", "STATE_RESUME answers, by result." [result = "ok"];
        pub resumes_failed: Counter => [result = "failed"];
        pub kicks_timeout: Counter
            => "kicks_total", "KICKs sent, by reason." [reason = "timeout"];
        pub kicks_replaced: Counter => [reason = "replaced"];
        pub kicks_operator: Counter => [reason = "operator"];
        pub closed: Counter
            => "detached_total", "Sessions detached, by cause." [cause = "closed"];
        pub vanished: Counter => [cause = "vanished"];
        /// `kicks_timeout`, copied by [`Metrics::snapshot`].
        detached_timeout: Derived<Counter> => [cause = "timeout"];
        pub sessions_expired: Counter
            => "sessions_expired_total", "Sessions removed when their resume window passed.";
        pub heartbeats: Counter
            => "heartbeats_total", "Routes heartbeated (HEARTBEAT entries and announced routes).";
        pub unknown_route: Counter
            => "unknown_route_total", "Commands for a route with no session, ignored.";
        pub zombie_kicks: Counter
            => "unknown_route_kicks_total",
               "HEARTBEAT or ANNOUNCE for a route with no online session, answered with KICK TIMEOUT.";

        pub pushes_delivered: Counter
            => "pushes_total", "POST /v1/push answers, by status." [status = "delivered"];
        pub pushes_queued: Counter => [status = "queued"];
        pub pushes_offline: Counter => [status = "offline"];
        pub pushes_full: Counter => [status = "full"];
        pub pushes_daemon_full: Counter => [status = "daemon_full"];
        pub pushes_undelivered: Counter
            => "pushes_undelivered_total",
               "STATE_PUSH frames a gateway returned: the connection was not logged in; the push stays queued.";
        pub push_sends: Counter
            => "push_sends_total", "STATE_PUSH frames sent, retransmits included.";
        pub push_retransmits: Counter
            => "push_retransmits_total", "STATE_PUSH frames sent again for want of an ACK.";
        pub acks: Counter => "acks_total", "Pushes acknowledged.";
        pub pushes_expired: Counter
            => "pushes_expired_total",
               "Pushes dropped unacknowledged: TTL passed or session removed.";

        pub rooms: Gauge
            => "rooms", "Rooms held (with a member, an open window or history).";
        pub room_joins: Counter
            => "room_joins_total", "Sessions that joined a room, by who asked." [by = "client"];
        pub room_joins_api: Counter => [by = "api"];
        pub room_leaves: Counter
            => "room_leaves_total", "Sessions that left a room (sessions removed included).";
        pub room_refused: Counter
            => "room_joins_refused_total",
               "JOINs refused: the token does not name the room, or a room limit was reached.";
        pub room_publishes: Counter
            => "room_messages_total", "Messages published to rooms, by how." [to = "room"];
        pub room_broadcasts: Counter => [to = "broadcast"];
        pub room_windows: Counter
            => "room_windows_total", "ROOM_MESSAGE frames sent to gateway links (one per window per link).";
        pub room_replayed: Counter
            => "room_replayed_total", "Messages sent again from a room's history (JOIN after).";
        pub link_errors: Counter
            => "link_errors_total", "Gateway links closed for bad input.";
        pub peers_refused: Counter
            => "peers_refused_total",
               "Connections to the state socket refused: the peer's uid and groups are not in allow_uids or allow_gids.";
        pub hellos_refused: Counter
            => "hellos_refused_total",
               "HELLOs refused because a live link holds that gateway id.";
        pub api_tokens: Gauge
            => "api_tokens", "Push API tokens loaded from api_tokens_file (0 without one).";
        pub api_denied_missing: Counter
            => "api_denied_total", "Push API requests refused, by reason." [reason = "missing_token"];
        pub api_denied_unknown: Counter => [reason = "unknown_token"];
        pub api_denied_scope: Counter => [reason = "missing_scope"];
        pub frames_in: Counter
            => "frames_received_total", "Frames received from gateways.";
        pub journal_bytes: Gauge => "journal_bytes", "Bytes in the current journal file.";
        pub journal_generation: Gauge
            => "journal_generation", "The journal's generation (bumped by each compaction).";
        pub compactions: Counter => "journal_compactions_total", "Snapshots written.";
        pub compaction_failures: Counter
            => "journal_compaction_failures_total",
               "Compactions whose snapshot could not be written; nothing was lost, the next one retries.";
        pub fleet_engine_errors: Counter
            => "fleet_engine_errors_total",
               "Fleet engine operations that could not run (engine unreachable or confused).";
        pub fleet_takeovers: Counter
            => "fleet_takeovers_total", "Sessions taken over from another host by a RESUME here.";
        pub fleet_drops: Counter
            => "fleet_drops_total", "Sessions dropped here because another host holds their device.";
        pub fleet_bus_messages: Counter
            => "fleet_bus_messages_total", "Messages received on this host's fleet bus channel.";
        pub fleet_bus_up: Gauge
            => "fleet_bus_up", "1 while this host is subscribed to its fleet bus channel.";
    }
}

impl Metrics {
    /// The Prometheus text page.
    pub fn render(&self, version: &str) -> String {
        let mut p = Text::new("tether_state_", 6 * 1024);
        p.build_info(version);
        self.snapshot().write_prometheus(&mut p);
        p.finish()
    }

    fn fill_derived(&self, snapshot: &mut Snapshot) {
        snapshot.detached_timeout = snapshot.kicks_timeout;
    }
}
