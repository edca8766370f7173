//! When the journal asks the kernel to put appended records on stable storage — the same three
//! choices, spelled the same way, as Redis's `appendfsync`.
//!
//! | policy     | `append` writes to the file | fdatasync                                   |
//! |------------|-----------------------------|---------------------------------------------|
//! | `always`   | before returning            | before returning                            |
//! | `everysec` | at `tick`/`flush`, or once 64 KiB is buffered | started by `tick` at most once a second on a background thread; in `flush` and on drop |
//! | `no`       | at `tick`/`flush`, or once 64 KiB is buffered | never: the kernel writes back when it likes (Linux: ~30 s) |
//!
//! What can be lost, precisely (see the [journal](super) documentation for the full table):
//! a SIGKILL of the process loses only what is still in the journal's userspace buffer — bytes
//! already handed to the file survive it in the page cache. Only a machine crash or power loss
//! reaches further back, to the last fdatasync.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How often the journal fsyncs. Serialized as `always`, `everysec` or `no`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncPolicy {
    /// Write and fdatasync every record before `append` returns.
    Always,
    /// Buffer; write at each `tick`; fdatasync at most once a second (Redis's default).
    #[default]
    #[serde(rename = "everysec")]
    EverySec,
    /// Buffer; write at each `tick`; never fdatasync.
    No,
}

impl FsyncPolicy {
    /// The configuration spelling: `always`, `everysec` or `no`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A string that is not `always`, `everysec` or `no`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fsync policy {value:?}: expected \"always\", \"everysec\" or \"no\"")]
pub struct ParseFsyncPolicyError {
    pub value: String,
}

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            other => Err(ParseFsyncPolicyError {
                value: other.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [FsyncPolicy; 3] = [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No];

    #[test]
    fn spellings_agree_everywhere() {
        for policy in ALL {
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{policy}\""));
            assert_eq!(serde_json::from_str::<FsyncPolicy>(&json).unwrap(), policy);
            assert_eq!(policy.as_str().parse::<FsyncPolicy>().unwrap(), policy);
        }
        assert_eq!(FsyncPolicy::EverySec.as_str(), "everysec");
        assert_eq!(
            format!("{:>4}|{:<9}|", FsyncPolicy::No, FsyncPolicy::Always),
            "  no|always   |"
        );
    }

    #[test]
    fn unknown_spellings_are_rejected() {
        for bad in ["every-sec", "Always", "", "yes"] {
            assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
            assert!(serde_json::from_str::<FsyncPolicy>(&format!("\"{bad}\"")).is_err());
        }
        let err = "sometimes".parse::<FsyncPolicy>().unwrap_err();
        assert!(err.to_string().contains("sometimes"));
    }

    #[test]
    fn default_is_everysec() {
        assert_eq!(FsyncPolicy::default(), FsyncPolicy::EverySec);
    }
}
