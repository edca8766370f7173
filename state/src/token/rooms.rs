//! The `rooms` claim: which rooms a token lets its session JOIN by itself.
//!
//! An array of strings: a room name, or a prefix ending in `*` (`"chat/*"`), or `"*"` for any
//! room. Without the claim a client may join no room itself (the application still can, through
//! the push API). The grants outlive the token as the session does, so they are journaled with
//! the session (`record.rs`, GRANTS).

use std::sync::Arc;

use serde_json::Value;
use tether_proto::room::valid_name;

/// Most entries in one `rooms` claim.
pub const MAX_GRANTS: usize = 64;

/// The rooms a session may join by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomGrants(Box<[Box<str>]>);

impl RoomGrants {
    /// From the claim's JSON; `None` when it is not an array of at most [`MAX_GRANTS`] room
    /// names or prefixes.
    pub(crate) fn from_claim(value: &Value) -> Option<Arc<RoomGrants>> {
        let list = value.as_array().filter(|l| l.len() <= MAX_GRANTS)?;
        let grants: Option<Vec<Box<str>>> = list
            .iter()
            .map(|v| v.as_str().filter(|s| valid_grant(s)).map(Box::from))
            .collect();
        Some(Arc::new(RoomGrants(grants?.into_boxed_slice())))
    }

    /// Whether a session with these grants may join `room`.
    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|g| match g.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => &**g == room,
        })
    }

    /// The entries, one per line (how the journal keeps them: names have no control characters).
    pub fn to_lines(&self) -> String {
        self.0.join("\n")
    }

    /// Back from [`RoomGrants::to_lines`]; `None` when a line is not a valid entry.
    pub fn from_lines(lines: &str) -> Option<RoomGrants> {
        if lines.is_empty() {
            return Some(RoomGrants(Box::new([])));
        }
        let grants: Option<Vec<Box<str>>> = lines
            .split('\n')
            .map(|s| valid_grant(s).then(|| Box::from(s)))
            .collect();
        Some(RoomGrants(grants?.into_boxed_slice()))
    }
}

fn valid_grant(entry: &str) -> bool {
    entry == "*" || valid_name(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_prefixes_and_everything() {
        let g = RoomGrants::from_claim(&json!(["lobby", "chat/*"])).unwrap();
        assert!(g.allows("lobby") && g.allows("chat/1") && g.allows("chat/"));
        assert!(!g.allows("lobby2") && !g.allows("chat") && !g.allows("other"));
        let any = RoomGrants::from_claim(&json!(["*"])).unwrap();
        assert!(any.allows("anything"));
        let none = RoomGrants::from_claim(&json!([])).unwrap();
        assert!(!none.allows("lobby"));
        for bad in [json!("lobby"), json!([1]), json!([""]), json!(["a\nb"])] {
            assert_eq!(RoomGrants::from_claim(&bad), None, "{bad}");
        }
        let many: Vec<String> = (0..=MAX_GRANTS).map(|i| format!("r{i}")).collect();
        assert_eq!(RoomGrants::from_claim(&json!(many)), None);
    }

    #[test]
    fn lines_round_trip() {
        let g = RoomGrants::from_claim(&json!(["lobby", "chat/*", "*"])).unwrap();
        assert_eq!(RoomGrants::from_lines(&g.to_lines()).as_ref(), Some(&*g));
        assert_eq!(
            RoomGrants::from_lines("").map(|g| g.allows("x")),
            Some(false)
        );
        assert_eq!(RoomGrants::from_lines("a\n\nb"), None);
    }
}
