//! The report credentials file (`report_keys_file`): which keys may sign reports for which
//! gateway ids. Parsed here, sans-IO but for [`Credentials::load`]; checked by [`crate::auth`].
//!
//! One credential a line, `ID KEY`; blank lines and lines starting with `#` are skipped:
//!
//! ```text
//! # gateway   key (openssl rand -hex 32)
//! gw-1        5f0c…e1
//! gw-1        9a7d…42     # a second key for gw-1 while it moves to it
//! edge-*      c3b1…07     # any id starting with "edge-" that has no line of its own
//! ```
//!
//! - An id is a gateway id (what `check` accepts in a gateway's `id`); several lines for one
//!   id give it several keys, any of which signs (so a key rotates without a gap).
//! - An id ending in `*` is a prefix: its keys sign for every id that starts with it and
//!   has no line of its own. The longest matching prefix wins; an id listed exactly is
//!   never signed for by a prefix key. A bare `*` (every id) is refused.
//! - A key is as [`tether_proto::report_auth::check_key`] says: at least 32 printable
//!   characters, no spaces.
//!
//! An empty file is valid: every HTTP report is then refused (gateways report through etcd).
//! Errors name the line and never show a key.

use std::collections::HashMap;
use std::path::Path;

use tether_daemon::config::validate::member_id;
use tether_daemon::secret::Secret;
use tether_proto::report_auth::check_key;

/// Keys by gateway id, and by id prefix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credentials {
    exact: HashMap<String, Vec<Secret>>,
    /// Longest prefix first.
    prefixes: Vec<(String, Vec<Secret>)>,
}

/// A problem on one line (`line` counts from 1; 0 = the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub problem: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.problem)
        } else {
            write!(f, "line {}: {}", self.line, self.problem)
        }
    }
}

impl Credentials {
    /// Reads and parses the file at `path`: every problem in it, or the credentials.
    pub fn load(path: &Path) -> Result<Credentials, Vec<LineError>> {
        let bytes = std::fs::read(path).map_err(|e| {
            vec![LineError {
                line: 0,
                problem: format!("cannot read {}: {e}", path.display()),
            }]
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            vec![LineError {
                line: 0,
                problem: format!("{} is not UTF-8 text", path.display()),
            }]
        })?;
        Credentials::parse(&text)
    }

    /// Parses the file's text: every problem in it, or the credentials.
    pub fn parse(text: &str) -> Result<Credentials, Vec<LineError>> {
        let mut exact: HashMap<String, Vec<Secret>> = HashMap::new();
        let mut prefixes: HashMap<String, Vec<Secret>> = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_ascii_whitespace();
            let (Some(id), Some(key), rest) = (fields.next(), fields.next(), fields.next()) else {
                errors.push(bad(i, "expected `ID KEY`"));
                continue;
            };
            if rest.is_some_and(|r| !r.starts_with('#')) {
                errors.push(bad(
                    i,
                    "expected `ID KEY` (and at most a `# comment` after)",
                ));
                continue;
            }
            if let Err(e) = check_key(key.as_bytes()) {
                errors.push(bad(i, &e.to_string()));
                continue;
            }
            let (table, id) = match id.strip_suffix('*') {
                Some("") => {
                    errors.push(bad(i, "`*` alone would let one key sign for every gateway: give a prefix, e.g. `gw-*`"));
                    continue;
                }
                Some(prefix) => (&mut prefixes, prefix),
                None => (&mut exact, id),
            };
            if let Err(e) = member_id(id) {
                errors.push(bad(i, &format!("gateway id: {e}")));
                continue;
            }
            let keys = table.entry(id.to_string()).or_default();
            let key = Secret::new(key.as_bytes());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut prefixes: Vec<(String, Vec<Secret>)> = prefixes.into_iter().collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Credentials { exact, prefixes })
    }

    /// The keys that may sign for gateway `id`: its own lines' keys, or else those of the
    /// longest prefix it starts with; none when neither exists.
    pub fn keys_for(&self, id: &str) -> &[Secret] {
        if let Some(keys) = self.exact.get(id) {
            return keys;
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| id.starts_with(prefix.as_str()))
            .map_or(&[], |(_, keys)| keys)
    }

    /// (ids, prefixes) with keys, for logs.
    pub fn counts(&self) -> (usize, usize) {
        (self.exact.len(), self.prefixes.len())
    }
}

fn bad(index: usize, problem: &str) -> LineError {
    LineError {
        line: index + 1,
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccc";

    fn keys(c: &Credentials, id: &str) -> Vec<String> {
        c.keys_for(id)
            .iter()
            .map(|k| String::from_utf8_lossy(k.expose()).into_owned())
            .collect()
    }

    #[test]
    fn ids_get_their_own_keys_and_prefixes_cover_the_rest() {
        let text = format!(
            "# comment\n\ngw-1 {A}\ngw-1 {B}   # rotating\n  gw-1 {A}\ngw-* {C}\ngw-eu-* {B}\n"
        );
        let c = Credentials::parse(&text).unwrap();
        assert_eq!(
            keys(&c, "gw-1"),
            [A, B],
            "exact, deduplicated, in file order"
        );
        assert_eq!(keys(&c, "gw-2"), [C], "prefix");
        assert_eq!(keys(&c, "gw-eu-7"), [B], "the longest prefix");
        assert!(keys(&c, "other").is_empty());
        assert!(keys(&c, "gw").is_empty(), "a prefix is not an id");
        assert_eq!(c.counts(), (1, 2));
        assert_eq!(Credentials::parse("").unwrap(), Credentials::default());
    }

    #[test]
    fn every_bad_line_is_reported_without_its_key() {
        let text =
            format!("gw-1\ngw-1 short-secret\n* {A}\ngw 1 {A}\ngw-1 {A} extra\ngw-é {A}\nok {B}\n");
        let errors = Credentials::parse(&text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5, 6], "{errors:?}");
        for e in &errors {
            let text = e.to_string();
            assert!(
                !text.contains("short-secret") && !text.contains(A),
                "{text}"
            );
        }
        assert!(errors[1]
            .to_string()
            .starts_with("line 2: the key is 12 characters"));
        assert!(errors[2].problem.contains("give a prefix"));
        assert!(errors[5].problem.starts_with("gateway id:"));
    }

    #[test]
    fn a_missing_file_is_one_error() {
        let errors = Credentials::load(Path::new("/nonexistent/report-keys")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0]
            .to_string()
            .starts_with("cannot read /nonexistent/report-keys"));
    }
}
