//! etcd with authentication on (a real `etcd`, users and roles made with etcdctl and
//! `deploy/etcd/tether-etcd-user.sh` as doc/operations.md says). Before: a daemon could not
//! authenticate to etcd at all, so an etcd that anyone could reach let anyone register as
//! any gateway. Now:
//!
//! | probe | answer |
//! |---|---|
//! | gw-1 with its credential | registers, and ipconfig (read-only credential) lists it |
//! | gw-2's credential putting `/tether/gateways/gw-1` (etcdctl) | `etcdserver: permission denied` |
//! | no credential putting `/tether/gateways/gw-1` (etcdctl) | `etcdserver: user name is empty` |
//! | ipconfig's credential putting a gateway key (etcdctl) | `etcdserver: permission denied` |
//! | a tether-gateway with no credential, or with gw-1's credential as gw-4 | never registers |
//! | gw-2's etcd user deleted | gw-2 is delisted, and its key leaves etcd within a TTL and a tick |
//!
//! and gw-1's record in etcd is still its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tether_e2e::{eventually, gateway, ipconfig, listed, Cluster, Proc};

use super::Scratch;

const GATEWAYS: &str = "/tether/gateways/";
const ROOT: &str = "root:root-password-for-the-test";

/// A password file for `user` in `dir`: the password is `<user>-password`.
fn password_file(dir: &Scratch, user: &str) -> PathBuf {
    dir.write(user, &format!("{user}-password\n"))
}

/// A gateway registering in etcd as `id`, authenticating with `credential` (etcd user and
/// password file) when given.
fn etcd_gateway(
    etcd: &Cluster,
    id: &str,
    credential: Option<(&str, &PathBuf)>,
) -> (Proc, SocketAddr) {
    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let endpoints = etcd.endpoints();
    let mut args = vec![
        "--etcd",
        endpoints.as_str(),
        "--id",
        id,
        "--report-interval-ms",
        "200",
    ];
    let password;
    if let Some((user, file)) = credential {
        password = file.to_str().expect("UTF-8 path").to_string();
        args.extend(["--etcd-user", user, "--etcd-password-file", &password]);
    }
    let (proc, listen, _admin) = gateway(&[nobody], &args);
    (proc, listen)
}

#[test]
fn each_etcd_credential_speaks_for_its_own_member_only() {
    let etcd = Cluster::single();
    let passwords = Scratch::new("etcd");
    let root_password = passwords.write("root", "root-password-for-the-test\n");
    etcd.enable_auth(&root_password);
    for (kind, user) in [
        ("gateway", "gw-1"),
        ("gateway", "gw-2"),
        ("ipconfig", "ipc-a"),
    ] {
        etcd.add_user(ROOT, kind, user, &password_file(&passwords, user));
    }

    // Nothing without a credential, once authentication is on.
    let (ok, out) = etcd.etcdctl(None, &["get", "--prefix", GATEWAYS], None);
    assert!(
        !ok && out.contains("etcdserver: user name is empty"),
        "{out}"
    );

    let ipc_password = password_file(&passwords, "ipc-a");
    let endpoints = etcd.endpoints();
    let (_ipc, ipc) = ipconfig(&[
        "--etcd",
        &endpoints,
        "--etcd-user",
        "ipc-a",
        "--etcd-password-file",
        ipc_password.to_str().unwrap(),
    ]);
    // The legitimate path: gw-1 with its own credential registers and is listed.
    let gw1_password = password_file(&passwords, "gw-1");
    let (_gw1, gw1_addr) = etcd_gateway(&etcd, "gw-1", Some(("gw-1", &gw1_password)));
    eventually(Duration::from_secs(15), "gw-1 listed from etcd", || {
        listed(ipc) == ["gw-1"]
    });
    // Impostors that started before the last legitimate gateway: one with no credential,
    // one with gw-1's credential claiming another id.
    let (_anonymous, _) = etcd_gateway(&etcd, "gw-3", None);
    let (_impostor, _) = etcd_gateway(&etcd, "gw-4", Some(("gw-1", &gw1_password)));
    let gw2_password = password_file(&passwords, "gw-2");
    let (_gw2, _) = etcd_gateway(&etcd, "gw-2", Some(("gw-2", &gw2_password)));
    eventually(Duration::from_secs(15), "gw-2 listed from etcd", || {
        listed(ipc) == ["gw-1", "gw-2"]
    });

    // gw-2's credential cannot write gw-1's key; nor can no credential, nor ipconfig's.
    let record = serde_json::json!({
        "id": "gw-1", "addr": "127.66.66.66:8900", "connections": 0, "max_connections": 1,
        "bytes_in_per_s": 0, "bytes_out_per_s": 0, "bandwidth_bytes_per_s": 1e12,
        "cpu": 0, "draining": false
    })
    .to_string();
    let key = format!("{GATEWAYS}gw-1");
    for (who, user) in [
        ("gw-2's credential", Some("gw-2:gw-2-password")),
        ("ipconfig's credential", Some("ipc-a:ipc-a-password")),
        ("no credential", None),
    ] {
        let (ok, out) = etcd.etcdctl(user, &["put", &key, &record], None);
        eprintln!(
            "etcdctl put {key} with {who}: {}",
            out.lines().last().unwrap_or("")
        );
        assert!(!ok, "{who}: {out}");
        let want = if user.is_some() {
            "etcdserver: permission denied"
        } else {
            "etcdserver: user name is empty"
        };
        assert!(out.contains(want), "{who}: {out}");
    }
    // gw-1 can write its own key only: not gw-10, whose name starts with it.
    let (ok, out) = etcd.etcdctl(
        Some("gw-1:gw-1-password"),
        &["put", &format!("{key}0"), &record],
        None,
    );
    assert!(!ok && out.contains("permission denied"), "{out}");

    // What etcd holds: the two real gateways, gw-1's record its own.
    assert_eq!(etcd.ids_as(ROOT, GATEWAYS), ["gw-1", "gw-2"]);
    let (ok, out) = etcd.etcdctl(Some(ROOT), &["get", "--print-value-only", &key], None);
    assert!(ok, "{out}");
    let value: serde_json::Value = serde_json::from_str(out.trim()).expect("gw-1's record is JSON");
    assert_eq!(value["addr"], gw1_addr.to_string());
    assert_eq!(listed(ipc), ["gw-1", "gw-2"]);

    // A credential revoked in etcd: gw-2 can no longer refresh its record (delisted by
    // ipconfig once it goes stale) nor keep its lease, so its key is gone within a lease TTL
    // (10 s) and one keepalive tick (3.3 s) — though etcd never checks the keepalive stream
    // it already has open again.
    let (ok, out) = etcd.etcdctl(Some(ROOT), &["user", "delete", "gw-2"], None);
    assert!(ok, "{out}");
    eventually(
        Duration::from_secs(25),
        "gw-2 out of etcd and delisted",
        || etcd.ids_as(ROOT, GATEWAYS) == ["gw-1"] && listed(ipc) == ["gw-1"],
    );
}
