//! Trust boundaries (issue 13): each attack as it was tried against a daemon, now refused,
//! and the legitimate path beside it still working.

#[path = "security/state.rs"]
mod state;
