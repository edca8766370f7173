//! Trust boundaries, end to end: what each daemon accepts from whom (issue 13). One module
//! per boundary, each spawning the real binaries.

#[path = "security/tokens.rs"]
mod tokens;
