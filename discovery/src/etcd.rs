//! Membership from etcd: [`EtcdDiscovery`] watches one prefix.
//!
//! On its own thread (a current-thread tokio runtime) it loops:
//!
//! 1. connect (a fresh client each time: etcd-client does not reconnect a broken stream);
//! 2. get everything under the prefix, and deliver it as [`Event::Reset`];
//! 3. watch the prefix from that get's revision + 1, asking for the previous value
//!    (prev-kv), so a DELETE still says whose record went away, and no change between the
//!    get and the watch is lost;
//! 4. on any error, a cancelled or compacted watch, or a closed stream: back off
//!    ([`RETRY_MIN`] doubling to [`RETRY_MAX`]) and
//!    start again at 1 — the Reset that follows replaces whatever was missed.
//!
//! So every watcher of one cluster converges on the same set: what etcd holds.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use tokio::sync::oneshot;

use crate::endpoints::Endpoints;
use crate::error::DiscoveryError;
use crate::member::{id_of, Member, Role};
use crate::{Discovery, Event, Sink, Watch, RETRY_MAX, RETRY_MIN};

/// How long one unary call (get, put, grant, revoke) may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Watches the members of one [`Role`] in one etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdDiscovery {
    endpoints: Endpoints,
    prefix: String,
}

impl EtcdDiscovery {
    pub fn new(endpoints: Endpoints, role: Role) -> EtcdDiscovery {
        EtcdDiscovery::with_prefix(endpoints, role.prefix())
    }

    /// Watches an arbitrary prefix (ending in `/`).
    pub(crate) fn with_prefix(endpoints: Endpoints, prefix: &str) -> EtcdDiscovery {
        EtcdDiscovery {
            endpoints,
            prefix: prefix.to_string(),
        }
    }
}

impl Discovery for EtcdDiscovery {
    fn watch(&self, sink: Sink) -> Result<Watch, DiscoveryError> {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let endpoints = self.endpoints.clone();
        let prefix = self.prefix.clone();
        let thread = spawn_runtime("etcd-watch", async move {
            tokio::select! {
                () = watch_forever(&endpoints, &prefix, sink) => {}
                _ = stop_rx => {}
            }
        })?;
        Ok(Watch::new(move || {
            let _ = stop_tx.send(());
            let _ = thread.join();
        }))
    }
}

/// Connects, syncs and watches until stopped, starting again after every failure.
async fn watch_forever(endpoints: &Endpoints, prefix: &str, mut sink: Sink) {
    let mut backoff = RETRY_MIN;
    let mut failing = false;
    loop {
        match watch_once(endpoints, prefix, &mut sink, &mut failing).await {
            Ok(()) => backoff = RETRY_MIN,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, prefix, "etcd watch failed; retrying (logged once until it works again)");
                }
                failing = true;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One session: get, Reset, watch until the stream ends. Returns Ok when the watch ended in a
/// way that only needs a re-sync (cancelled, compacted), Err when etcd failed.
async fn watch_once(
    endpoints: &Endpoints,
    prefix: &str,
    sink: &mut Sink,
    failing: &mut bool,
) -> Result<(), DiscoveryError> {
    let mut client = connect(endpoints).await?;
    let got = timed(client.get(prefix, Some(GetOptions::new().with_prefix()))).await?;
    let revision = got.header().map_or(0, |h| h.revision());
    let members = got
        .kvs()
        .iter()
        .filter_map(|kv| parse(prefix, kv.key(), kv.value()))
        .collect::<Vec<_>>();
    tracing::info!(
        prefix,
        revision,
        members = members.len(),
        "etcd: synced, watching"
    );
    sink(Event::Reset(members));
    *failing = false;
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(revision + 1);
    let mut stream = timed(client.watch(prefix, Some(options))).await?;
    while let Some(response) = stream.message().await? {
        if response.canceled() || response.compact_revision() > 0 {
            tracing::warn!(
                prefix,
                reason = response.cancel_reason(),
                compact_revision = response.compact_revision(),
                "etcd watch cancelled; re-syncing"
            );
            return Ok(());
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => match Member::from_kv(prefix, kv.key(), kv.value()) {
                    Ok(member) => sink(Event::Put(member)),
                    Err(e) => {
                        // An unreadable record is no member: drop any earlier one.
                        tracing::warn!(error = %e, "etcd: ignoring a record");
                        if let Ok(id) = id_of(prefix, kv.key()) {
                            sink(Event::Delete { id, previous: None });
                        }
                    }
                },
                EventType::Delete => {
                    let Ok(id) = id_of(prefix, kv.key()) else {
                        continue;
                    };
                    let previous = event
                        .prev_kv()
                        .and_then(|p| parse(prefix, p.key(), p.value()));
                    sink(Event::Delete { id, previous });
                }
            }
        }
    }
    Err(DiscoveryError::Etcd(etcd_client::Error::WatchError(
        "the watch stream ended".into(),
    )))
}

fn parse(prefix: &str, key: &[u8], value: &[u8]) -> Option<Member> {
    Member::from_kv(prefix, key, value)
        .map_err(|e| tracing::warn!(error = %e, "etcd: ignoring a record"))
        .ok()
}

/// A new client, authenticated as `endpoints`' user if it has one, for one member of
/// `endpoints`: the first, from a rotating start, that
/// accepts a connection now (the first of all if none does). One member per client keeps a
/// session's calls on one server (a lease granted through one member and used through
/// another can be "not found" until the other has applied it), and leaves dead members out
/// (the client would balance calls onto them). A failed session connects again, to the next
/// member that answers. HTTP/2 keepalives notice a dead member within [`KEEPALIVE`] plus
/// [`KEEPALIVE_TIMEOUT`] even on a quiet watch.
pub(crate) async fn connect(endpoints: &Endpoints) -> Result<Client, DiscoveryError> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let urls = endpoints.urls();
    let start = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut chosen = urls[start % urls.len()].clone();
    for k in 0..urls.len() {
        let url = &urls[(start + k) % urls.len()];
        let host_port = url.strip_prefix("http://").unwrap_or(url);
        let probe = tokio::net::TcpStream::connect(host_port);
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            chosen = url.clone();
            break;
        }
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(KEEPALIVE, KEEPALIVE_TIMEOUT)
        .with_keep_alive_while_idle(true);
    if let Some((user, password)) = endpoints.user() {
        // Authenticates now (a wrong password fails the connect) and again whenever the
        // token expires.
        let password = String::from_utf8_lossy(password.expose()).into_owned();
        options = options
            .with_user(user, password)
            .with_auto_token_refresh(true);
    }
    timed(Client::connect([chosen], Some(options))).await
}

/// How often an idle connection pings its member. etcd refuses pings more frequent than its
/// `--grpc-keepalive-min-time` (5 s by default) with a GOAWAY "too_many_pings" and closes the
/// connection, every watch on it included: 2 s here made every watch fail about every 10 s.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the member is taken for dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long [`connect`] waits for each member to accept a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// `call`, failing after [`CALL_TIMEOUT`].
pub(crate) async fn timed<T>(
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, DiscoveryError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DiscoveryError::Timeout(CALL_TIMEOUT)),
    }
}

/// Runs `task` to completion on a new thread named `name`, with a current-thread runtime.
pub(crate) fn spawn_runtime(
    name: &str,
    task: impl Future<Output = ()> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, DiscoveryError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DiscoveryError::Thread)?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(task))
        .map_err(DiscoveryError::Thread)
}
