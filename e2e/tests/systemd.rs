//! The daemons under systemd, and the units in `deploy/systemd/`.
//!
//! Each daemon is started as systemd would start a `Type=notify` unit with `WatchdogSec=`:
//! `NOTIFY_SOCKET` names a datagram socket this test binds, `WATCHDOG_USEC` the interval.
//! READY=1 must come first and only once the daemon accepts (a connection made the moment it
//! arrives must succeed); then WATCHDOG=1 every half interval while the daemon's liveness
//! check passes; on SIGTERM, STOPPING=1 and never a WATCHDOG=1 after it (systemd would re-arm
//! its watchdog during the stop). The echo node's and ipconfig's plain READY=1 tests (no
//! watchdog) are in echo_node.rs and ipconfig.rs.
//!
//! The units: `systemd-analyze verify` on copies whose binaries point at this build, and the
//! checklist every unit must follow (Type=notify, watchdog, LimitNOFILE, `check` before
//! start, reload, hardening).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tether_e2e::state::{temp_dir, StateDaemon};
use tether_e2e::{binary, echo_node, free_addr, spawn_with_env, NotifySocket};

/// 200 ms: pings every 100 ms.
const WATCHDOG_USEC: &str = "200000";

/// Something that must accept at READY=1.
enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    /// Connects once, with no retry: READY=1 promised it accepts.
    fn connect_now(&self) -> Result<(), String> {
        match self {
            Endpoint::Tcp(addr) => TcpStream::connect_timeout(addr, Duration::from_secs(1))
                .map(drop)
                .map_err(|e| format!("{addr}: {e}")),
            Endpoint::Unix(path) => UnixStream::connect(path)
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display())),
        }
    }
}

/// Starts `name` with `args` under a fake systemd with a 200 ms watchdog and checks the whole
/// notification sequence: READY=1 first and only once every endpoint accepts, ≥ 3 WATCHDOG=1
/// in the next second and nothing else, then on SIGTERM STOPPING=1, exit 0, and no
/// WATCHDOG=1 after STOPPING=1.
fn notifies_like_a_notify_unit(name: &str, args: &[String], endpoints: &[Endpoint]) {
    let notify = NotifySocket::bind();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = spawn_with_env(
        name,
        &args,
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ],
    );

    let first = notify.recv_timeout(Duration::from_secs(15));
    assert_eq!(
        first.as_deref(),
        Some("READY=1"),
        "{name}: the first message"
    );
    for endpoint in endpoints {
        if let Err(e) = endpoint.connect_now() {
            panic!("{name} sent READY=1 but does not accept: {e}");
        }
    }

    let window = Duration::from_secs(1);
    let started = Instant::now();
    let got = notify.collect(window);
    let others: Vec<&String> = got
        .iter()
        .map(|(_, m)| m)
        .filter(|m| *m != "WATCHDOG=1")
        .collect();
    assert!(others.is_empty(), "{name}: unexpected messages {others:?}");
    let at: Vec<u128> = got
        .iter()
        .map(|(t, _)| (*t - started).as_millis())
        .collect();
    assert!(
        got.len() >= 3,
        "{name}: {} WATCHDOG=1 within {window:?} of READY=1 with WATCHDOG_USEC={WATCHDOG_USEC} \
         (at ms {at:?}); expected about 10",
        got.len()
    );

    proc.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match notify.recv_timeout(left).as_deref() {
            Some("STOPPING=1") => break,
            Some("WATCHDOG=1") => {}
            other => panic!("{name}: expected STOPPING=1 after SIGTERM, got {other:?}"),
        }
    }
    let status = proc
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{name} did not exit after SIGTERM"));
    assert!(status.success(), "{name}: {status}");
    // The process is gone: anything it sent after STOPPING=1 is already queued.
    let after = notify.collect(Duration::from_millis(50));
    assert!(after.is_empty(), "{name}: sent {after:?} after STOPPING=1");
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn echo_node_is_ready_once_it_accepts_and_pings_while_its_loops_answer() {
    let addr = free_addr();
    notifies_like_a_notify_unit(
        "tether-echo-node",
        &strings(&["--listen", &addr.to_string(), "--reactors", "2"]),
        &[Endpoint::Tcp(addr)],
    );
}

#[test]
fn gateway_is_ready_once_its_listeners_accept_and_pings_while_every_reactor_ticks() {
    let (_node, node_addr) = echo_node(&["--reactors", "1"]);
    let (listen, admin) = (free_addr(), free_addr());
    notifies_like_a_notify_unit(
        "tether-gateway",
        &strings(&[
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
            "--node",
            &node_addr.to_string(),
            "--reactors",
            "2",
            "--pin-cores",
            "false",
        ]),
        &[Endpoint::Tcp(listen), Endpoint::Tcp(admin)],
    );
}

#[test]
fn ipconfig_is_ready_once_it_accepts_and_pings_while_its_runtime_answers() {
    let addr = free_addr();
    notifies_like_a_notify_unit(
        "tether-ipconfig",
        &strings(&["--listen", &addr.to_string()]),
        &[Endpoint::Tcp(addr)],
    );
}

#[test]
fn state_is_ready_once_its_socket_accepts_and_pings_while_its_loop_goes_round() {
    let dir = temp_dir("systemd-state");
    let (socket, http, metrics) = (dir.join("state.sock"), free_addr(), free_addr());
    let args = StateDaemon::args(&socket, http, metrics, &dir.join("journal"), &[]);
    notifies_like_a_notify_unit(
        "tether-state",
        &args,
        &[
            Endpoint::Unix(socket),
            Endpoint::Tcp(http),
            Endpoint::Tcp(metrics),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// No WATCHDOG_USEC, or one meant for another process (WATCHDOG_PID): no pings at all.
#[test]
fn no_watchdog_pings_unless_systemd_asks_this_process() {
    for env in [
        vec![],
        vec![("WATCHDOG_USEC", WATCHDOG_USEC), ("WATCHDOG_PID", "1")],
    ] {
        let notify = NotifySocket::bind();
        let addr = free_addr();
        let listen = addr.to_string();
        let mut all = vec![("NOTIFY_SOCKET", notify.path())];
        all.extend(env.iter().copied());
        let _node = spawn_with_env("tether-echo-node", &["--listen", &listen], &all);
        let first = notify.recv_timeout(Duration::from_secs(15));
        assert_eq!(first.as_deref(), Some("READY=1"), "env {env:?}");
        let got = notify.collect(Duration::from_millis(600));
        assert!(got.is_empty(), "env {env:?}: got {got:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The unit files

/// deploy/systemd/ in this checkout.
fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd")
}

const UNITS: [&str; 5] = [
    "tether-echo-node@.service",
    "tether-gateway.service",
    "tether-gateway@.service",
    "tether-ipconfig.service",
    "tether-state.service",
];

/// A unit's `[Service]` keys (values of repeated keys joined by a newline) and its comments.
struct Unit {
    service: BTreeMap<String, String>,
    comments: String,
}

fn parse_unit(name: &str) -> Unit {
    let text = std::fs::read_to_string(units_dir().join(name))
        .unwrap_or_else(|e| panic!("read {name}: {e}"));
    let mut section = String::new();
    let mut service = BTreeMap::<String, String>::new();
    let mut comments = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(comment) = line.strip_prefix('#') {
            comments.push_str(comment);
            comments.push('\n');
        } else if line.starts_with('[') {
            section = line.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            if section == "[Service]" {
                let entry = service.entry(key.trim().to_string()).or_default();
                if !entry.is_empty() {
                    entry.push('\n');
                }
                entry.push_str(value.trim());
            }
        }
    }
    Unit { service, comments }
}

/// What the issue asks of every unit, and of each one's reload and directories.
#[test]
fn units_follow_the_checklist() {
    for name in UNITS {
        let unit = parse_unit(name);
        let get = |key: &str| unit.service.get(key).map(String::as_str).unwrap_or("");
        let expect = |key: &str, value: &str| {
            assert_eq!(get(key), value, "{name}: {key}");
        };
        expect("Type", "notify");
        expect("LimitNOFILE", "1048576");
        expect("NoNewPrivileges", "yes");
        expect("ProtectSystem", "strict");
        expect("ProtectHome", "yes");
        expect("PrivateTmp", "yes");
        expect("KillSignal", "SIGTERM");
        let families: Vec<&str> = get("RestrictAddressFamilies").split_whitespace().collect();
        for family in ["AF_UNIX", "AF_INET", "AF_INET6"] {
            // AF_UNIX: sd_notify itself needs it.
            assert!(
                families.contains(&family),
                "{name}: {family} in {families:?}"
            );
        }
        let watchdog = get("WatchdogSec");
        let seconds: u64 = watchdog
            .strip_suffix('s')
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{name}: WatchdogSec={watchdog:?}, expected <n>s"));
        // The gateway's check needs a 50 ms tick; state compactions hold its loop.
        assert!(
            (5..=60).contains(&seconds),
            "{name}: WatchdogSec={watchdog}"
        );

        // ExecStartPre checks exactly what ExecStart will run.
        let start = get("ExecStart");
        let (program, args) = start.split_once(' ').unwrap_or((start, ""));
        assert!(
            program.starts_with("/usr/local/bin/tether-"),
            "{name}: {start}"
        );
        let check = format!("{program} check {args}");
        assert_eq!(
            get("ExecStartPre").trim(),
            check.trim(),
            "{name}: ExecStartPre"
        );

        let reloads = matches!(
            name,
            "tether-gateway.service" | "tether-gateway@.service" | "tether-state.service"
        );
        if reloads {
            expect("ExecReload", "/bin/kill -HUP $MAINPID");
        } else {
            expect("ExecReload", "");
            assert!(
                unit.comments.contains("no ExecReload=") && unit.comments.contains("SIGHUP"),
                "{name}: a unit without ExecReload= says why (SIGHUP is only logged)"
            );
        }
        if name == "tether-state.service" {
            expect("RuntimeDirectory", "tether");
            expect("StateDirectory", "tether-state");
            expect("User", "tether-state");
            expect("Group", "tether");
        } else {
            expect("DynamicUser", "yes");
        }
    }
}

/// Copies of the units in a fresh directory with `/usr/local/bin/` pointing at this build's
/// binaries (verify checks that ExecStart's program exists), plus the templates as the
/// instances `tether-echo-node@8890.service` and `tether-gateway@8911.service`. Returns the directory and the unit paths.
fn units_for_this_build() -> (PathBuf, Vec<PathBuf>) {
    let bin_dir = binary("tether-gateway")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    for name in [
        "tether-gateway",
        "tether-ipconfig",
        "tether-state",
        "tether-echo-node",
    ] {
        binary(name); // asserts it exists
    }
    let bin = format!("{}/", bin_dir.display());
    assert!(
        !bin.contains(char::is_whitespace),
        "a unit's program path cannot hold spaces: {bin}"
    );
    let dir = temp_dir("units");
    let mut paths = Vec::new();
    for name in UNITS {
        let text = std::fs::read_to_string(units_dir().join(name)).expect("read unit");
        let text = text.replace("/usr/local/bin/", &bin);
        let mut copies = vec![name.to_string()];
        if name == "tether-echo-node@.service" {
            copies.push("tether-echo-node@8890.service".into());
        }
        if name == "tether-gateway@.service" {
            copies.push("tether-gateway@8911.service".into());
        }
        for copy in copies {
            let path = dir.join(copy);
            std::fs::write(&path, &text).expect("write unit copy");
            paths.push(path);
        }
    }
    (dir, paths)
}

/// `systemd-analyze verify --man=no unit`: the findings about `unit` (any output line
/// naming it) and the lines about other units, which are printed and tolerated.
///
/// Why some lines are tolerated: verify also loads every unit ours reference
/// (network-online.target, multi-user.target, …) from the host, and a host's own units may
/// have findings of their own; those are not ours to fix. Our findings always name our unit
/// (by file path or unit name) and must be none. The exit status must be 0 as well.
fn verify(unit: &Path) -> Result<(), String> {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .map_err(|e| format!("cannot run systemd-analyze: {e}"))?;
    let file = unit.file_name().unwrap().to_string_lossy().into_owned();
    // `tether-echo-node@.service` is loaded as an instance of itself: match the prefix.
    let stem = file.split(['@', '.']).next().unwrap().to_string();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (ours, others): (Vec<&str>, Vec<&str>) = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .partition(|l| l.contains(&stem) || l.contains(&*unit.to_string_lossy()));
    for line in &others {
        eprintln!("systemd-analyze verify {file} (tolerated: not about {stem}): {line}");
    }
    if !out.status.success() || !ours.is_empty() {
        return Err(format!(
            "systemd-analyze verify {file}: {}\n{}",
            out.status,
            ours.join("\n")
        ));
    }
    Ok(())
}

/// Whether `systemd-analyze` runs here. When it does not: on CI, or where apt-get could
/// install it (Debian package `systemd`; `cargo xtask test` does), that is a failure; only
/// where neither holds is the test skipped, saying why.
fn systemd_analyze_available() -> bool {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    let installable = Command::new("apt-get").arg("--version").output().is_ok();
    if std::env::var_os("CI").is_some() || installable {
        panic!(
            "systemd-analyze is missing: install the Debian package `systemd` \
             (`cargo xtask test` installs it)"
        );
    }
    eprintln!(
        "SKIPPED units_pass_systemd_analyze_verify: systemd-analyze is not installed and \
         there is no apt-get to install it (Debian package `systemd`)"
    );
    false
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !systemd_analyze_available() {
        return;
    }
    let (dir, units) = units_for_this_build();
    let failures: Vec<String> = units.iter().filter_map(|u| verify(u).err()).collect();

    // The check itself must catch a bad unit, with this version of systemd-analyze.
    let broken = dir.join("tether-gateway.service");
    let text = std::fs::read_to_string(&broken).unwrap();
    let text = text.replace("[Service]\n", "[Service]\nLimitNOFILE=lots\nNoSuchKey=1\n");
    std::fs::write(&broken, text).unwrap();
    let caught = verify(&broken);
    let _ = std::fs::remove_dir_all(&dir);

    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let report = caught.expect_err("a unit with an unknown key and a bad value passed verify");
    assert!(
        report.contains("NoSuchKey") && report.contains("lots"),
        "both defects named: {report}"
    );
}
