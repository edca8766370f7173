//! A client written from design.md alone (Python, standard library only, no Tether code)
//! must get correct echoes and the right error codes from a real echo node.

use std::process::Command;

use tether_e2e::echo_node;

#[test]
fn the_independent_python_client_passes_every_check() {
    let (_node, addr) = echo_node(&[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/independent_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(addr.to_string())
        .output()
        .expect("python3 runs (cargo xtask test installs it when missing)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
