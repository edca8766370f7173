//! What the daemon decides from the engine's answers, sans-IO: how a login or resume is
//! answered, what `POST /v1/push` says, what a bind's answer means for the local session.
//! The event loop (`mod.rs`) only carries these decisions out.

use tether_proto::ErrorCode;

use super::engine::{EngineError, Outcome, StoredPush};
use crate::store::{PushRefused, PushStatus, ENDED_BY_OPERATOR};

/// How a login (or resume) the engine answered goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let it through; carry these durable pushes over (the device came from another host);
    /// remove the `stale` ones from the engine.
    Proceed {
        pushes: Vec<(u64, u64, Vec<u8>)>,
        stale: Vec<u64>,
        /// The rooms and grants the device had on another host (a `keys::rooms_value`).
        rooms: String,
    },
    /// Adopt `device`'s session taken over from another host, with its pushes and rooms.
    Adopt {
        device: String,
        pushes: Vec<(u64, u64, Vec<u8>)>,
        rooms: String,
    },
    /// Answer LOGIN_FAIL with this code and reason.
    Fail(ErrorCode, String),
}

/// What reaching the engine failed means for the client: try again shortly (UNAVAILABLE
/// keeps the connection), nothing was promised.
const RETRY: &str = "the fleet's router is unreachable from this host; retry shortly";

fn carried(pushes: Vec<StoredPush>) -> Vec<(u64, u64, Vec<u8>)> {
    pushes
        .into_iter()
        .map(|p| (p.msg, p.expires_unix_ms, p.payload))
        .collect()
}

/// A login's claim answered.
pub(crate) fn login(answer: Result<Outcome, EngineError>) -> Verdict {
    match answer {
        Ok(Outcome::Claimed {
            pushes,
            stale,
            rooms,
            ..
        }) => Verdict::Proceed {
            pushes: carried(pushes),
            stale,
            rooms,
        },
        Ok(Outcome::Refused { owner }) => Verdict::Fail(
            ErrorCode::AuthFailed,
            format!("device already logged in (on host {owner})"),
        ),
        Ok(other) => Verdict::Fail(
            ErrorCode::Internal,
            format!("the fleet engine answered a login with {other:?}"),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "fleet: login not claimed");
            Verdict::Fail(ErrorCode::Unavailable, RETRY.into())
        }
    }
}

/// A takeover (resume of a token another host held) answered.
pub(crate) fn takeover(answer: Result<Outcome, EngineError>) -> Verdict {
    match answer {
        Ok(Outcome::TakenOver {
            device,
            pushes,
            rooms,
            ..
        }) => Verdict::Adopt {
            device,
            pushes: carried(pushes),
            rooms,
        },
        Ok(Outcome::UnknownToken) => Verdict::Fail(
            ErrorCode::AuthFailed,
            "unknown or expired resume token".into(),
        ),
        Ok(other) => Verdict::Fail(
            ErrorCode::Internal,
            format!("the fleet engine answered a resume with {other:?}"),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "fleet: resume not taken over");
            Verdict::Fail(ErrorCode::Unavailable, RETRY.into())
        }
    }
}

/// What a push the engine answered becomes, before local delivery: `Deliver(msg)` when this
/// host holds the session (the store then says delivered or queued), else the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushDecision {
    DeliverHere(u64),
    Answer(Result<(Option<u64>, PushStatus), PushRefused>),
}

pub(crate) fn push(answer: Result<Outcome, EngineError>, this_host: &str) -> PushDecision {
    match answer {
        Ok(Outcome::Offline) => PushDecision::Answer(Ok((None, PushStatus::Offline))),
        Ok(Outcome::Full { pending }) => {
            PushDecision::Answer(Err(PushRefused::QueueFull { pending }))
        }
        Ok(Outcome::Stored { msg, owner }) if owner.host == this_host => {
            PushDecision::DeliverHere(msg)
        }
        Ok(Outcome::Stored { msg, owner }) => PushDecision::Answer(Ok((
            Some(msg),
            if owner.online {
                PushStatus::Delivered
            } else {
                PushStatus::Queued
            },
        ))),
        Ok(_) | Err(_) => PushDecision::Answer(Err(PushRefused::FleetUnavailable)),
    }
}

/// What a bind's answer asks of the local session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindDecision {
    Keep,
    /// The route was lost (Redis restarted empty) and written anew: write the session's
    /// pushes to the engine again.
    Rewrite,
    /// Another host or session holds the device, or an operator ended the session through
    /// another host: drop it here, KICKED for this reason.
    Drop(&'static str),
    /// Unreachable: the next refresh tries again.
    Retry,
}

pub(crate) fn bind(answer: &Result<Outcome, EngineError>) -> BindDecision {
    match answer {
        Ok(Outcome::Bound {
            recreated: false, ..
        }) => BindDecision::Keep,
        Ok(Outcome::Bound {
            recreated: true, ..
        }) => BindDecision::Rewrite,
        Ok(Outcome::Moved) => BindDecision::Drop("the device is held by another host"),
        Ok(Outcome::Ended) => BindDecision::Drop(ENDED_BY_OPERATOR),
        _ => BindDecision::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::Owner;
    use super::*;

    fn stored(msg: u64, host: &str, online: bool) -> Result<Outcome, EngineError> {
        Ok(Outcome::Stored {
            msg,
            owner: Owner {
                host: host.into(),
                session: "00000000000000ab".into(),
                online,
            },
        })
    }

    #[test]
    fn pushes_answer_like_one_host_wherever_the_session_is() {
        assert_eq!(
            push(stored(7, "a", true), "a"),
            PushDecision::DeliverHere(7)
        );
        assert_eq!(
            push(stored(7, "b", true), "a"),
            PushDecision::Answer(Ok((Some(7), PushStatus::Delivered)))
        );
        assert_eq!(
            push(stored(8, "b", false), "a"),
            PushDecision::Answer(Ok((Some(8), PushStatus::Queued)))
        );
        assert_eq!(
            push(Ok(Outcome::Offline), "a"),
            PushDecision::Answer(Ok((None, PushStatus::Offline)))
        );
        assert_eq!(
            push(Ok(Outcome::Full { pending: 3 }), "a"),
            PushDecision::Answer(Err(PushRefused::QueueFull { pending: 3 }))
        );
        assert_eq!(
            push(Err(EngineError::Unavailable("down".into())), "a"),
            PushDecision::Answer(Err(PushRefused::FleetUnavailable))
        );
    }

    #[test]
    fn logins_and_resumes_fail_retryably_when_the_engine_is_unreachable() {
        let down = || Err(EngineError::Unavailable("down".into()));
        assert!(matches!(
            login(down()),
            Verdict::Fail(ErrorCode::Unavailable, _)
        ));
        assert!(matches!(
            takeover(down()),
            Verdict::Fail(ErrorCode::Unavailable, _)
        ));
        assert_eq!(
            login(Ok(Outcome::Refused { owner: "b".into() })),
            Verdict::Fail(
                ErrorCode::AuthFailed,
                "device already logged in (on host b)".into()
            )
        );
        let pushes = vec![StoredPush {
            msg: 5,
            expires_unix_ms: 9,
            payload: b"p".to_vec(),
        }];
        assert_eq!(
            login(Ok(Outcome::Claimed {
                previous: Some("b".into()),
                previous_session: "00000000000000ab".into(),
                pushes: pushes.clone(),
                stale: vec![2, 3],
                rooms: "a\n\n*".into(),
            })),
            Verdict::Proceed {
                pushes: vec![(5, 9, b"p".to_vec())],
                stale: vec![2, 3],
                rooms: "a\n\n*".into(),
            }
        );
        assert_eq!(
            takeover(Ok(Outcome::TakenOver {
                device: "d".into(),
                previous: "b".into(),
                previous_session: "00000000000000ab".into(),
                pushes,
                rooms: "r".into(),
            })),
            Verdict::Adopt {
                device: "d".into(),
                pushes: vec![(5, 9, b"p".to_vec())],
                rooms: "r".into(),
            }
        );
        assert_eq!(
            takeover(Ok(Outcome::UnknownToken)),
            Verdict::Fail(
                ErrorCode::AuthFailed,
                "unknown or expired resume token".into()
            )
        );
    }

    #[test]
    fn a_bind_that_finds_the_device_elsewhere_drops_the_local_session() {
        assert_eq!(
            bind(&Ok(Outcome::Moved)),
            BindDecision::Drop("the device is held by another host")
        );
        assert_eq!(
            bind(&Ok(Outcome::Ended)),
            BindDecision::Drop(ENDED_BY_OPERATOR)
        );
        assert_eq!(
            bind(&Ok(Outcome::Bound {
                recreated: true,
                pushes: Vec::new()
            })),
            BindDecision::Rewrite
        );
        assert_eq!(
            bind(&Ok(Outcome::Bound {
                recreated: false,
                pushes: Vec::new()
            })),
            BindDecision::Keep
        );
        assert_eq!(
            bind(&Err(EngineError::Unavailable("x".into()))),
            BindDecision::Retry
        );
    }
}
