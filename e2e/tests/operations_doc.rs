//! doc/operations.md's configuration reference is exactly the daemons' configuration.
//!
//! For each daemon, the table under `### Keys: <binary>` is compared with what the real
//! binary says about itself:
//!
//! - `<binary> check …` prints the effective configuration as TOML: every top-level key it
//!   prints must be a row of the table, and every row must be printed (both directions).
//!   TOML has no null, so a key whose default is "none" is not printed with the defaults; each
//!   daemon is therefore also checked with the flags that give those keys a value, and such a
//!   key's row must say its default is "none".
//! - Every other key's default in the table (its first code span) must be exactly the TOML
//!   value `check` prints with no flags, so the column can be pasted into a file.
//! - `<binary> --help`: every flag must be the flag column of a row, every row's flag must
//!   exist, and its environment variable must be `TETHER_<DAEMON>_<KEY>`, the rule the
//!   document states.
//!
//! The children run with every `TETHER_*` variable and systemd's `RUNTIME_DIRECTORY` /
//! `STATE_DIRECTORY` removed, so the defaults are the built-in ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use tether_e2e::binary;

/// A secret given to `tether-state check`: it must never be printed.
const SECRET: &str = "ops-doc-secret-never-printed-7f3a";

/// One daemon and how to make `check` print all of its keys.
struct Daemon {
    binary: &'static str,
    env_prefix: &'static str,
    /// The first run gives the defaults (plus the keys its flags set, listed beside it); later
    /// runs set keys whose default is "none" and so are not printed by the first.
    runs: Vec<Run>,
}

struct Run {
    args: Vec<String>,
    /// Keys these args set: their printed value is not a default.
    sets: &'static [&'static str],
}

/// A row of a `### Keys: …` table.
#[derive(Debug)]
struct Row {
    default: String,
    flag: String,
}

/// `--tls-cert` and `--tls-key` naming a certificate made for the run.
fn tls_args(scratch: &std::path::Path) -> Vec<String> {
    let cert = tether_e2e::transports::TestCa::new(scratch)
        .issue("gateway", tether_e2e::transports::KeyType::EcdsaP256);
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_string();
    vec![
        "--tls-cert".into(),
        path(&cert.cert),
        "--tls-key".into(),
        path(&cert.key),
    ]
}

fn daemons(scratch: &std::path::Path) -> Vec<Daemon> {
    let fleet_credentials = scratch.join("redis-credentials");
    std::fs::write(&fleet_credentials, "tether a-redis-password\n")
        .expect("write the fleet credentials");
    let fleet_credentials = fleet_credentials.display().to_string();
    let secret_file = scratch.join("jwt");
    std::fs::write(&secret_file, "from-a-file\n").expect("write the secret file");
    let secret_file = secret_file.to_str().expect("utf-8 path").to_string();
    let key = "k".repeat(64);
    let path_of = |name: &str, contents: &str| {
        let path = scratch.join(name);
        std::fs::write(&path, contents).expect("write a credential file");
        path.to_str().expect("utf-8 path").to_string()
    };
    let report_key = path_of("report-key", &format!("{key}\n"));
    let report_keys = path_of("report-keys", &format!("gw-1 {key}\n"));
    let etcd_password = path_of("etcd-password", "an-etcd-password\n");
    // `etcd_password_file` is an Option, None by default; it needs `etcd_user` beside it.
    let etcd_auth = || Run {
        args: vec![
            "--etcd-user".into(),
            "ops-doc".into(),
            "--etcd-password-file".into(),
            etcd_password.clone(),
        ],
        sets: &["etcd_user", "etcd_password_file"],
    };
    let api_tokens = scratch.join("api-tokens");
    std::fs::write(&api_tokens, "").expect("write the API token file");
    let api_tokens = api_tokens.to_str().expect("utf-8 path").to_string();
    let keys_file = path_of(
        "keys.json",
        r#"{"keys":[{"kty":"oct","kid":"k1","k":"b3BzLWRvYy1rZXktb2YtYXQtbGVhc3QtMzItYnl0ZXM"}]}"#,
    );
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        Daemon {
            binary: "tether-gateway",
            env_prefix: "TETHER_GATEWAY_",
            runs: vec![
                Run {
                    args: vec![],
                    sets: &[],
                },
                // `state` is an Option, None by default.
                Run {
                    args: args(&["--state", "/tmp/tether-ops-doc/state.sock"]),
                    sets: &["state"],
                },
                // So are `tls_cert` and `tls_key`, which `check` loads.
                Run {
                    args: tls_args(scratch),
                    sets: &["tls_cert", "tls_key"],
                },
                // `ipconfig_key_file` is an Option, None by default.
                Run {
                    args: vec!["--ipconfig-key-file".into(), report_key],
                    sets: &["ipconfig_key_file"],
                },
                etcd_auth(),
            ],
        },
        Daemon {
            binary: "tether-state",
            env_prefix: "TETHER_STATE_",
            runs: vec![
                // The daemon has no default key; `check` refuses to pass without one.
                Run {
                    args: args(&["--jwt-secret", SECRET]),
                    sets: &["jwt_secret"],
                },
                // `jwt_secret_file` is an Option, None by default (and excludes `jwt_secret`).
                Run {
                    args: vec!["--jwt-secret-file".into(), secret_file],
                    sets: &["jwt_secret", "jwt_secret_file"],
                },
                // The push API's tokens and the socket's allow-lists are Options too.
                Run {
                    args: vec![
                        "--jwt-secret".into(),
                        SECRET.into(),
                        "--api-tokens-file".into(),
                        api_tokens,
                        "--allow-uids".into(),
                        "1".into(),
                        "--allow-gids".into(),
                        "2".into(),
                    ],
                    sets: &["jwt_secret", "api_tokens_file", "allow_uids", "allow_gids"],
                },
                // `jwt_keys_file` is an Option, None by default (a key set is enough alone).
                Run {
                    args: vec!["--jwt-keys-file".into(), keys_file],
                    sets: &["jwt_keys_file"],
                },
                // `fleet_credentials_file` is an Option, required with `fleet` only.
                Run {
                    args: vec![
                        "--jwt-secret".into(),
                        SECRET.into(),
                        "--fleet".into(),
                        "--fleet-redis".into(),
                        "10.0.3.1:6379".into(),
                        "--fleet-host".into(),
                        "h1".into(),
                        "--fleet-credentials-file".into(),
                        fleet_credentials,
                    ],
                    sets: &[
                        "jwt_secret",
                        "fleet",
                        "fleet_redis",
                        "fleet_host",
                        "fleet_credentials_file",
                    ],
                },
            ],
        },
        Daemon {
            binary: "tether-ipconfig",
            env_prefix: "TETHER_IPCONFIG_",
            runs: vec![
                Run {
                    args: vec![],
                    sets: &[],
                },
                // `report_keys_file` is an Option, None by default.
                Run {
                    args: vec!["--report-keys-file".into(), report_keys],
                    sets: &["report_keys_file"],
                },
                etcd_auth(),
            ],
        },
        Daemon {
            binary: "tether-echo-node",
            env_prefix: "TETHER_NODE_",
            runs: vec![
                Run {
                    args: vec![],
                    sets: &[],
                },
                etcd_auth(),
            ],
        },
    ]
}

#[test]
fn the_configuration_reference_is_the_configuration() {
    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../doc/operations.md");
    let doc = std::fs::read_to_string(&doc_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", doc_path.display()));
    let scratch = std::env::temp_dir().join(format!("tether-ops-doc-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");

    let mut problems = Vec::new();
    for daemon in daemons(&scratch) {
        check_daemon(&daemon, &doc, &mut problems);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        problems.is_empty(),
        "doc/operations.md does not match the daemons ({} problem(s)):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

fn check_daemon(daemon: &Daemon, doc: &str, problems: &mut Vec<String>) {
    let name = daemon.binary;
    let heading = format!("### Keys: {name}");
    let rows = match table_under(doc, &heading) {
        Ok(rows) => rows,
        Err(e) => return problems.push(e),
    };

    // What `check` prints, run by run.
    let mut printed: BTreeSet<String> = BTreeSet::new();
    let mut defaults: BTreeMap<String, String> = BTreeMap::new();
    let mut set_by_flags: BTreeSet<&str> = BTreeSet::new();
    for (i, run) in daemon.runs.iter().enumerate() {
        let mut full = vec!["check".to_string()];
        full.extend(run.args.iter().cloned());
        let (ok, stdout, stderr) = run_binary(name, &full);
        if !ok {
            problems.push(format!("{name} {full:?} failed:\n{stderr}"));
            continue;
        }
        if stdout.contains(SECRET) || stderr.contains(SECRET) {
            problems.push(format!("{name} check printed the secret"));
        }
        let keys = match top_level(&stdout) {
            Ok(keys) => keys,
            Err(e) => {
                problems.push(format!("{name} check: {e}"));
                continue;
            }
        };
        for (key, value) in keys {
            if i == 0 && !run.sets.contains(&key.as_str()) {
                defaults.insert(key.clone(), value);
            }
            printed.insert(key);
        }
        set_by_flags.extend(run.sets.iter().copied());
    }

    // Keys: both directions.
    for key in &printed {
        if !rows.contains_key(key) {
            problems.push(format!(
                "{name}: key `{key}` is printed by `{name} check` but has no row under \"{heading}\""
            ));
        }
    }
    for key in rows.keys() {
        if !printed.contains(key) {
            problems.push(format!(
                "{name}: key `{key}` is in the doc under \"{heading}\" but `{name} check` does not \
                 print it (not a key of its configuration)"
            ));
        }
    }

    // Defaults: exactly what `check` prints, or "none" for keys it prints only when set.
    for (key, row) in &rows {
        match defaults.get(key) {
            Some(value) => {
                let documented = first_code_span(&row.default);
                if documented.as_deref() != Some(value.as_str()) {
                    problems.push(format!(
                        "{name}: default of `{key}` is documented as {:?} but `{name} check` prints \
                         `{value}`",
                        row.default
                    ));
                }
            }
            None if printed.contains(key) && !row.default.trim_start().starts_with("none") => {
                problems.push(format!(
                    "{name}: `{key}` has no value by default (only printed when {:?} set it), \
                     so its default should read \"none\", not {:?}",
                    set_by_flags, row.default
                ));
            }
            // Documented "none", or not a key at all (reported above).
            None => {}
        }
    }

    // Flags and environment variables, from --help.
    let (ok, help, stderr) = run_binary(name, &["--help".to_string()]);
    if !ok {
        return problems.push(format!("{name} --help failed:\n{stderr}"));
    }
    let flags = help_flags(&help);
    let mut documented_flags = BTreeSet::new();
    for (key, row) in &rows {
        let Some(flag) = first_code_span(&row.flag) else {
            problems.push(format!(
                "{name}: `{key}` has no `--flag` in its flag column"
            ));
            continue;
        };
        documented_flags.insert(flag.clone());
        match flags.get(&flag) {
            None => problems.push(format!(
                "{name}: `{key}`'s flag `{flag}` is not in `{name} --help`"
            )),
            Some(env) => {
                let expected = format!("{}{}", daemon.env_prefix, key.to_uppercase());
                if env.as_deref() != Some(expected.as_str()) {
                    problems.push(format!(
                        "{name}: `{key}` (`{flag}`) reads the environment variable {env:?}, not \
                         {expected} as the doc's naming rule says"
                    ));
                }
            }
        }
    }
    for flag in flags.keys() {
        if !["--config", "--help", "--version"].contains(&flag.as_str())
            && !documented_flags.contains(flag)
        {
            problems.push(format!(
                "{name}: flag `{flag}` of `{name} --help` is in no row under \"{heading}\""
            ));
        }
    }
}

/// Runs a workspace binary with a clean environment; (success, stdout, stderr).
fn run_binary(name: &str, args: &[String]) -> (bool, String, String) {
    let mut command = Command::new(binary(name));
    command.args(args);
    for (var, _) in std::env::vars_os() {
        let var_str = var.to_string_lossy();
        if var_str.starts_with("TETHER_")
            || var_str == "RUNTIME_DIRECTORY"
            || var_str == "STATE_DIRECTORY"
        {
            command.env_remove(&var);
        }
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The top-level `key = value` lines of a TOML document as printed by `check`. Continuation
/// lines of a multi-line value start with something other than a bare key; a `[table]`
/// header means nested keys, which this reference does not describe, so it is an error.
fn top_level(toml: &str) -> Result<Vec<(String, String)>, String> {
    let mut keys = Vec::new();
    for line in toml.lines() {
        if line.starts_with('[') {
            return Err(format!("a TOML table appeared ({line}); document its keys"));
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        if !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            keys.push((key.to_string(), value.trim().to_string()));
        }
    }
    if keys.is_empty() {
        return Err(format!("printed no keys:\n{toml}"));
    }
    Ok(keys)
}

/// The rows of the first table after `heading`, by key (first column, in backticks).
fn table_under(doc: &str, heading: &str) -> Result<BTreeMap<String, Row>, String> {
    let mut lines = doc.lines().skip_while(|l| l.trim_end() != heading);
    if lines.next().is_none() {
        return Err(format!("doc/operations.md has no heading \"{heading}\""));
    }
    let mut rows = BTreeMap::new();
    let mut header: Option<Vec<String>> = None;
    for line in lines {
        if line.starts_with('#') {
            break;
        }
        let line = line.trim();
        if !line.starts_with('|') {
            if header.is_some() && !rows.is_empty() {
                break; // the table ended
            }
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        let Some(columns) = &header else {
            header = Some(cells.iter().map(|c| c.to_lowercase()).collect());
            continue;
        };
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue; // the separator row
        }
        let column = |name: &str| {
            columns
                .iter()
                .position(|c| c == name)
                .and_then(|i| cells.get(i))
                .cloned()
                .ok_or_else(|| format!("the table under \"{heading}\" has no `{name}` column"))
        };
        let key_cell = column("key")?;
        let Some(key) = key_cell
            .strip_prefix('`')
            .and_then(|k| k.strip_suffix('`'))
            .filter(|k| !k.contains('`'))
        else {
            return Err(format!(
                "under \"{heading}\", the key cell {key_cell:?} is not one `key` in backticks"
            ));
        };
        let row = Row {
            default: column("default")?,
            flag: column("flag")?,
        };
        if rows.insert(key.to_string(), row).is_some() {
            return Err(format!("under \"{heading}\", `{key}` has two rows"));
        }
    }
    if rows.is_empty() {
        return Err(format!("no table rows under \"{heading}\""));
    }
    Ok(rows)
}

/// The text of the first `code span` in a cell.
fn first_code_span(cell: &str) -> Option<String> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(cell[start..start + len].to_string())
}

/// Every long flag of a clap `--help` page with the environment variable it reads.
fn help_flags(help: &str) -> BTreeMap<String, Option<String>> {
    let mut flags: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        // A flag line: "--name <VALUE>" or "-h, --help".
        let flag_part = trimmed
            .strip_prefix("-h, ")
            .or_else(|| trimmed.strip_prefix("-V, "))
            .unwrap_or(trimmed);
        if flag_part.starts_with("--") && line.starts_with(' ') {
            let flag = flag_part
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            flags.insert(flag.clone(), None);
            current = Some(flag);
        }
        if let (Some(flag), Some(at)) = (&current, line.find("[env: ")) {
            let rest = &line[at + "[env: ".len()..];
            let end = rest.find(['=', ']']).unwrap_or(rest.len());
            flags.insert(flag.clone(), Some(rest[..end].to_string()));
        }
    }
    flags
}
