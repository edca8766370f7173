//! Support for the transport tests: certificates made at run time with the `openssl` CLI,
//! the clients nobody in Tether wrote (Python's `websockets`, Node's `ws`), installed by name
//! when missing, and running them with a deadline.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// What a test certificate's key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256.
    EcdsaP256,
    /// RSA, 2048 bits.
    Rsa2048,
}

/// A test certificate authority: clients trust its certificate (`--tls-ca`, `cafile`).
#[derive(Debug, Clone)]
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

/// A server certificate for `localhost` and 127.0.0.1 issued by a [`TestCa`], and its key.
#[derive(Debug, Clone)]
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

impl TestCa {
    /// A new CA (ECDSA P-256, valid two days) in `dir`.
    pub fn new(dir: &Path) -> TestCa {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=Tether test CA",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            path(&key),
            "-out",
            path(&cert),
        ]);
        TestCa {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A server certificate `{name}.crt` and key `{name}.key` signed by this CA.
    pub fn issue(&self, name: &str, key: KeyType) -> TestCert {
        let cert = self.dir.join(format!("{name}.crt"));
        let key_path = self.dir.join(format!("{name}.key"));
        let csr = self.dir.join(format!("{name}.csr"));
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("extensions file");
        let newkey: &[&str] = match key {
            KeyType::EcdsaP256 => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::Rsa2048 => &["-newkey", "rsa:2048"],
        };
        let mut req = vec!["req", "-nodes", "-subj", "/CN=localhost"];
        req.extend_from_slice(newkey);
        req.extend_from_slice(&["-keyout", path(&key_path), "-out", path(&csr)]);
        openssl(&req);
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            path(&csr),
            "-CA",
            path(&self.cert),
            "-CAkey",
            path(&self.key),
            "-CAcreateserial",
            "-extfile",
            path(&ext),
            "-out",
            path(&cert),
        ]);
        TestCert {
            cert,
            key: key_path,
        }
    }
}

impl TestCert {
    /// The gateway flags that use it.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

/// `python3`, with the `websockets` package (`pip install websockets` once when missing;
/// `cargo xtask test` installs it beforehand).
pub fn python_with_websockets() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let has = || {
            Command::new("python3")
                .args(["-c", "import websockets.sync.client"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has() {
            let _ = Command::new("python3")
                .args(["-m", "pip", "install", "-q", "websockets"])
                .status();
        }
        assert!(has(), "python3 -m pip install websockets failed");
    });
    "python3"
}

/// The `node_modules` directory holding Node's `ws` package, under the target directory
/// (`npm install ws` there once when missing; `cargo xtask test` installs it beforehand).
pub fn node_ws_modules() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let prefix = node_tools_dir();
        let modules = prefix.join("node_modules");
        if !modules.join("ws").join("package.json").exists() {
            let _ = std::fs::create_dir_all(&prefix);
            let status = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
                .arg(&prefix)
                .arg("ws")
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "npm install ws into {} failed",
                prefix.display()
            );
        }
        modules
    })
    .clone()
}

/// `<target>/node-tools`: where `cargo xtask test` and the tests install Node packages.
pub fn node_tools_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/node-tools
    exe.ancestors()
        .nth(3)
        .expect("test executable lives in target/<profile>/deps")
        .join("node-tools")
}

/// The path of a file in the e2e crate (the client scripts).
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// What a client printed and whether it passed.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end within `timeout` (killed past it), collecting its output.
pub fn run(command: &mut Command, timeout: Duration) -> Run {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Run {
        ok: status.is_some_and(|s| s.success()),
        stdout,
        stderr,
    }
}

/// Asserts a client run passed and ended with `ok`; returns its output.
pub fn passed(what: &str, run: Run) -> String {
    assert!(
        run.ok && run.stdout.lines().last() == Some("ok"),
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run.stdout
}
