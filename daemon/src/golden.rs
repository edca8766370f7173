//! Golden files for tests: a rendered page compared byte for byte with a committed copy, so
//! that a refactor which changes an output by one byte fails.
//!
//! After a deliberate change, run the test with `UPDATE_GOLDEN=1` to rewrite the copies, and
//! review their diff like code.

use std::path::Path;

/// Asserts that `actual` is the content of `tests/golden/<name>` under the crate directory
/// `manifest_dir` (pass `env!("CARGO_MANIFEST_DIR")`). With `UPDATE_GOLDEN` set in the
/// environment, writes `actual` there first.
///
/// # Panics
///
/// When the contents differ, or the file cannot be read (or written).
pub fn assert_golden(manifest_dir: &str, name: &str, actual: &str) {
    let path = Path::new(manifest_dir).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if let Err(e) = std::fs::write(&path, actual) {
            panic!("cannot write {}: {e}", path.display());
        }
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        actual == expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_with_the_committed_copy() {
        let dir = std::env::temp_dir().join(format!("tether-golden-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tests/golden")).unwrap();
        std::fs::write(dir.join("tests/golden/page.txt"), "a 1\n").unwrap();
        let dir = dir.to_str().unwrap();
        assert_golden(dir, "page.txt", "a 1\n");
        let differs = std::panic::catch_unwind(|| assert_golden(dir, "page.txt", "a 2\n"));
        assert!(differs.is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
