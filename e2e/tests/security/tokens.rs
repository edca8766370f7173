//! Login tokens as identity providers issue them, through a real gateway and state daemon:
//! ES256 and RS256 keys made with `openssl genpkey` and turned into a JWK set by
//! `deploy/jwks-from-pem.sh` (what doc/operations.md tells an operator to do), HS256 keys
//! with a kid, the legacy `jwt_secret`; every forged or unfit token refused with
//! AUTH_FAILED; a key rotation with SIGHUP; tether-loadgen signing ES256.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tether_e2e::state::{now_s, temp_dir, StateDaemon, SECRET};
use tether_e2e::{echo_node, eventually, gateway_with_state, loadgen, Client, Proc};
use tether_proto::{ErrorBody, Kind};
use tether_state::token::Signer;

const AUDIENCE: &str = "tether-e2e";
const ISSUER: &str = "https://id.e2e.example";

/// A private key made by `openssl genpkey` (`EC` P-256 or `RSA` 2048) in `dir`, and its
/// public key next to it (`NAME.pub.pem`).
fn openssl_key(dir: &Path, name: &str, kind: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let opt = match kind {
        "EC" => "ec_paramgen_curve:P-256",
        _ => "rsa_keygen_bits:2048",
    };
    let key = Command::new("openssl")
        .args(["genpkey", "-algorithm", kind, "-pkeyopt", opt, "-out"])
        .arg(&private)
        .output()
        .expect("run openssl genpkey");
    assert!(
        key.status.success(),
        "{}",
        String::from_utf8_lossy(&key.stderr)
    );
    let pubout = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .output()
        .expect("run openssl pkey");
    assert!(
        pubout.status.success(),
        "{}",
        String::from_utf8_lossy(&pubout.stderr)
    );
    (private, public)
}

/// `deploy/jwks-from-pem.sh KID=PUBLIC.pem …`, written to `path`.
fn jwks_from_pem(path: &Path, keys: &[(&str, &Path)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/jwks-from-pem.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(
            keys.iter()
                .map(|(kid, pem)| format!("{kid}={}", pem.display())),
        )
        .output()
        .expect("run deploy/jwks-from-pem.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(path, &out.stdout).expect("write the JWK set");
}

/// A JWK set file of these keys (as JSON values), written to `path`.
fn write_jwks(path: &Path, keys: &[Value]) {
    std::fs::write(path, json!({ "keys": keys }).to_string()).expect("write the JWK set");
}

/// A signer from an openssl private key file.
fn signer_from(alg: tether_state::token::Alg, pem: &Path) -> Signer {
    Signer::from_pem(alg, &std::fs::read(pem).expect("read the key")).expect("a PKCS#8 key")
}

/// A state daemon taking `jwt_keys_file` (and the legacy secret), audiences and issuers
/// configured, and a gateway in front of it; returns them with the gateway's client address.
struct Stack {
    state: StateDaemon,
    _node: Proc,
    _gw: Proc,
    listen: SocketAddr,
}

fn stack(keys: &Path, name: &str) -> Stack {
    let keys = keys.to_str().expect("UTF-8 path");
    let state = StateDaemon::start(&[
        "--jwt-keys-file",
        keys,
        "--jwt-audiences",
        &format!("other-service,{AUDIENCE}"),
        "--jwt-issuers",
        ISSUER,
    ]);
    let (node, node_addr) = echo_node(&["--reactors", "1"]);
    let (gw, listen, _admin) = gateway_with_state(&[node_addr], &state.socket, name, &[]);
    Stack {
        state,
        _node: node,
        _gw: gw,
        listen,
    }
}

/// LOGIN with `token`: the LOGIN_OK's session id, or the AUTH_FAILED reason.
fn login(listen: SocketAddr, token: &str) -> (Client, Result<String, String>) {
    let mut c = Client::connect(listen);
    c.send_frame(Kind::Login, 1, token.as_bytes());
    let r = c.expect();
    assert_eq!(r.id, 1, "{r:?}");
    match r.kind {
        Kind::LoginOk => {
            let body: Value = serde_json::from_slice(&r.body).expect("LOGIN_OK is JSON");
            let session = body["session"].as_str().expect("a session id").to_string();
            (c, Ok(session))
        }
        Kind::Error => {
            let error = ErrorBody::parse(&r.body).expect("an ERROR body");
            assert_eq!(error.code, 5, "AUTH_FAILED expected: {error:?}");
            let reason = error.reason.to_string();
            c.expect_closed();
            (c, Err(reason))
        }
        other => panic!("LOGIN answered with {other:?}: {r:?}"),
    }
}

fn accepted(listen: SocketAddr, token: &str) -> Client {
    let (mut c, result) = login(listen, token);
    assert!(result.is_ok(), "refused: {result:?}");
    c.send_frame(Kind::Data, 2, b"after login");
    let r = c.expect();
    assert_eq!(
        (r.kind, r.body.as_slice()),
        (Kind::Data, &b"after login"[..]),
        "{r:?}"
    );
    c
}

fn refused(listen: SocketAddr, token: &str, reason: &str) {
    match login(listen, token).1 {
        Err(got) => assert!(got.contains(reason), "reason {got:?} lacks {reason:?}"),
        Ok(session) => panic!("accepted as session {session}, expected {reason:?}"),
    }
}

/// Claims a good token carries: our audience (among others) and issuer, an hour to live.
fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now_s() + 3600, "iat": now_s(), "aud": ["billing", AUDIENCE], "iss": ISSUER})
}

#[test]
fn es256_rs256_and_hs256_with_kid_are_accepted_and_every_unfit_token_refused() {
    use tether_state::token::Alg;
    let dir = temp_dir("tokens");
    let (es_key, es_pub) = openssl_key(&dir, "es", "EC");
    let (rs_key, rs_pub) = openssl_key(&dir, "rs", "RSA");
    let keys = dir.join("keys.json");
    jwks_from_pem(&keys, &[("es-1", &es_pub), ("rs-1", &rs_pub)]);
    // The operator's set, plus an HS256 key with a kid.
    let mut set: Value = serde_json::from_slice(&std::fs::read(&keys).unwrap()).unwrap();
    let hs = Signer::hs256(b"an-hs256-key-of-at-least-32-bytes!!").with_kid("hs-1");
    set["keys"].as_array_mut().unwrap().push(hs.public_jwk());
    std::fs::write(&keys, set.to_string()).unwrap();
    let s = stack(&keys, "gw-tokens");

    let es = signer_from(Alg::Es256, &es_key).with_kid("es-1");
    let rs = signer_from(Alg::Rs256, &rs_key).with_kid("rs-1");
    let mut clients = Vec::new();
    for (signer, device) in [(&es, "dev-es"), (&rs, "dev-rs"), (&hs, "dev-hs")] {
        let token = signer.sign_claims(&good_claims(device)).unwrap();
        clients.push(accepted(s.listen, &token));
        assert_eq!(s.state.session_of(device)["state"], "online");
    }
    // The legacy secret still works beside the key set: an HS256 token without kid (its
    // claims judged like any other's: an audience is required once jwt_audiences is set).
    let legacy = Signer::hs256(SECRET.as_bytes());
    clients.push(accepted(
        s.listen,
        &legacy.sign_claims(&good_claims("dev-legacy")).unwrap(),
    ));
    let mut no_aud = good_claims("dev-bad");
    no_aud.as_object_mut().unwrap().remove("aud");
    refused(s.listen, &legacy.sign_claims(&no_aud).unwrap(), "aud");

    let with = |field: &str, value: Value| {
        let mut claims = good_claims("dev-bad");
        claims[field] = value;
        es.sign_claims(&claims).unwrap()
    };
    refused(s.listen, &with("aud", json!("billing")), "aud");
    refused(s.listen, &with("aud", json!(["billing"])), "aud");
    refused(s.listen, &with("iss", json!("https://evil.example")), "iss");
    refused(
        s.listen,
        &with("exp", json!(1_000_000_000_000u64)),
        "jwt_max_lifetime_s",
    );
    let crit = json!({"alg": "ES256", "kid": "es-1", "crit": ["exp"], "exp": 1});
    refused(
        s.listen,
        &es.sign_parts(&crit, &good_claims("dev-bad")).unwrap(),
        "crit",
    );
    // A kid the set does not hold, and the right kid on another key's signature.
    let stranger = Signer::generate_es256().unwrap();
    let unknown = stranger
        .with_kid("es-9")
        .sign_claims(&good_claims("dev-bad"))
        .unwrap();
    refused(s.listen, &unknown, "kid");
    let other = Signer::generate_es256().unwrap().with_kid("es-1");
    refused(
        s.listen,
        &other.sign_claims(&good_claims("dev-bad")).unwrap(),
        "signature",
    );
    // Algorithm confusion: HS256 "signed" with the RSA public key as the secret, naming the
    // RSA key's kid (and, a second try, the public key's PEM text itself as the secret).
    let public_jwk = rs.public_jwk();
    for secret in [
        public_jwk.to_string().into_bytes(),
        std::fs::read(&rs_pub).unwrap(),
    ] {
        let forger = Signer::hs256(&secret);
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "rs-1"});
        let token = forger.sign_parts(&header, &good_claims("dev-bad")).unwrap();
        refused(s.listen, &token, "alg does not match");
    }
    // None of the refused logins made a session.
    assert!(s.state.session("dev-bad").is_none());
    assert_eq!(
        s.state
            .metric("tether_state_logins_total{result=\"auth_failed\"}"),
        Some(10.0)
    );
}

#[test]
fn a_rotation_keeps_both_kids_until_sighup_drops_the_old_one() {
    let dir = temp_dir("rotation");
    let keys = dir.join("keys.json");
    let old = Signer::generate_es256().unwrap().with_kid("2026-01");
    let new = Signer::generate_es256().unwrap().with_kid("2026-02");
    write_jwks(&keys, &[old.public_jwk(), new.public_jwk()]);
    let mut s = stack(&keys, "gw-rotation");
    let token = |signer: &Signer, device: &str| signer.sign_claims(&good_claims(device)).unwrap();

    // During the rotation both are good. The same ES256 token presented twice is accepted
    // twice (the second time from the verified-token cache; it takes the session over).
    let old_token = token(&old, "dev-old-first");
    accepted(s.listen, &old_token);
    accepted(s.listen, &old_token);
    let mut logged_in_with_old = accepted(s.listen, &token(&old, "dev-old"));
    accepted(s.listen, &token(&new, "dev-new"));

    // The old key leaves the set: after SIGHUP its tokens are refused — the very token
    // accepted (and cached) above included — the new key's are not, and the session that
    // logged in with the old key stays.
    write_jwks(&keys, &[new.public_jwk()]);
    s.state.proc().signal(libc::SIGHUP);
    eventually(Duration::from_secs(10), "the old kid refused", || {
        login(s.listen, &old_token).1.is_err()
    });
    refused(s.listen, &old_token, "kid");
    refused(s.listen, &token(&old, "dev-old-again"), "kid");
    accepted(s.listen, &token(&new, "dev-new-2"));
    assert_eq!(s.state.session_of("dev-old")["state"], "online");
    logged_in_with_old.send_frame(Kind::Data, 9, b"still here");
    let r = logged_in_with_old.expect();
    assert_eq!(
        (r.kind, r.id, r.body.as_slice()),
        (Kind::Data, 9, &b"still here"[..])
    );
    logged_in_with_old.send_frame(Kind::Ping, 10, b"");
    assert_eq!(logged_in_with_old.expect().kind, Kind::Pong);
}

#[test]
fn check_names_what_is_wrong_in_a_key_file() {
    let dir = temp_dir("jwks-check");
    let keys = dir.join("keys.json");
    let mut leaky = Signer::generate_es256()
        .unwrap()
        .with_kid("leaky")
        .public_jwk();
    leaky["d"] = json!("AAAA");
    let short = json!({"kty": "oct", "kid": "short", "k": "c2hvcnQ"});
    // `check` exits 1 and names the key, its kid and what is wrong with it.
    let check_says = |keys_in_file: &[Value], says: &str| {
        write_jwks(&keys, keys_in_file);
        let out = Command::new(tether_e2e::binary("tether-state"))
            .args(["check", "--jwt-keys-file"])
            .arg(&keys)
            .arg("--journal")
            .arg(dir.join("journal"))
            .output()
            .expect("run tether-state check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    };
    check_says(
        &[short, leaky.clone()],
        "jwt_keys_file: key 1 (kid \"short\"): k is shorter than 32 bytes",
    );
    check_says(
        &[leaky],
        "jwt_keys_file: key 1 (kid \"leaky\"): holds a private key (d)",
    );
    check_says(
        &[json!({"kty": "EC"}), json!(1)],
        "jwt_keys_file: key 1 (no kid): crv is missing (P-256)",
    );
}

#[test]
fn loadgen_logs_in_with_es256_tokens_naming_kid_aud_and_iss() {
    let dir = temp_dir("loadgen-es256");
    let (private, public) = openssl_key(&dir, "lg", "EC");
    let keys = dir.join("keys.json");
    jwks_from_pem(&keys, &[("lg-1", &public)]);
    let s = stack(&keys, "gw-lg-es256");
    let conns = 20;
    let (ok, summary) = loadgen(&[
        "--target",
        &s.listen.to_string(),
        "--jwt-alg",
        "ES256",
        "--jwt-key-file",
        private.to_str().unwrap(),
        "--jwt-kid",
        "lg-1",
        "--jwt-aud",
        AUDIENCE,
        "--jwt-iss",
        ISSUER,
        "--device-prefix",
        "lg-es",
        "--conns",
        &conns.to_string(),
        "--duration",
        "1",
        "--threads",
        "1",
    ]);
    assert!(ok, "loadgen reported failure: {summary:#}");
    assert_eq!(summary["conns"]["logged_in"], conns, "{summary:#}");
    assert_eq!(summary["errors"], json!({}), "{summary:#}");
    // Every connection logged in as its own device (the sessions stay, detached, after the run).
    assert_eq!(
        s.state.metric("tether_state_logins_total{result=\"ok\"}"),
        Some(conns as f64)
    );
    assert!(s.state.session(&format!("lg-es-{}", conns - 1)).is_some());
}
