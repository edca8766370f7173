//! Registration: one key kept in etcd under a lease for as long as its daemon runs.
//!
//! A [`Registration`] runs a supervisor on its own thread (a current-thread tokio runtime):
//!
//! 1. connect (a fresh client: etcd-client does not reconnect a broken stream by itself),
//!    grant a lease of `ttl`, put the key with the latest value under it;
//! 2. keep the lease alive every `ttl / 3`, checking each answer: a TTL of 0 means etcd no
//!    longer knows the lease (it expired, or etcd restarted without its data); and read the
//!    key back each time, a unary call that etcd authenticates (its keepalive stream, once
//!    open, it does not): a credential deleted or changed in etcd ends the session, so the
//!    lease runs out, and a key deleted by hand is put again;
//! 3. put the key again whenever [`Registration::update`] gives a new value;
//! 4. on any failure — etcd unreachable, a broken stream, a lost lease — back off
//!    ([`RETRY_MIN`] doubling to [`RETRY_MAX`]) and start again at 1, so a restarted etcd
//!    has every member back within a second or two of accepting again;
//! 5. on [`Registration::revoke`], revoke the lease: the key goes at once and every watcher
//!    sees a DELETE, instead of routing to this member until the TTL runs out.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use tokio::sync::{watch, Notify};

use crate::endpoints::Endpoints;
use crate::error::DiscoveryError;
use crate::etcd::{connect, spawn_runtime, timed, CALL_TIMEOUT};
use crate::{RETRY_MAX, RETRY_MIN};

/// What the daemon and its supervisor share.
struct Shared {
    key: String,
    value: Mutex<Vec<u8>>,
    /// A new value to put.
    changed: Notify,
    /// The key is in etcd under a live lease (as far as the last keepalive knows).
    registered: AtomicBool,
    /// The current lease, 0 = none.
    lease: AtomicI64,
    /// Successful (re-)registrations since start.
    registrations: std::sync::atomic::AtomicU64,
}

/// A key kept under a lease; see the module documentation.
pub struct Registration {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    done: Mutex<Option<(mpsc::Receiver<()>, JoinHandle<()>)>>,
}

impl Registration {
    /// Starts registering `key` = `value` in the cluster at `endpoints`, under a lease of
    /// `ttl` (whole seconds, at least 2). Returns at once: the first put happens on the
    /// supervisor's thread, and is retried until etcd answers.
    pub fn start(
        endpoints: Endpoints,
        key: String,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<Registration, DiscoveryError> {
        let shared = Arc::new(Shared {
            key,
            value: Mutex::new(value),
            changed: Notify::new(),
            registered: AtomicBool::new(false),
            lease: AtomicI64::new(0),
            registrations: Default::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel();
        let ttl = ttl.max(Duration::from_secs(2));
        let for_thread = shared.clone();
        let thread = spawn_runtime("etcd-lease", async move {
            supervise(&for_thread, &endpoints, ttl, stop_rx).await;
            let _ = done_tx.send(());
        })?;
        Ok(Registration {
            shared,
            stop,
            done: Mutex::new(Some((done_rx, thread))),
        })
    }

    /// The key registered.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// Replaces the value and puts it now (under the same lease).
    pub fn update(&self, value: Vec<u8>) {
        *self
            .shared
            .value
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = value;
        self.shared.changed.notify_one();
    }

    /// Whether the key is in etcd under a live lease, as far as the last keepalive knows.
    pub(crate) fn is_registered(&self) -> bool {
        self.shared.registered.load(Ordering::Acquire)
    }

    /// How many times the key was put under a new lease (1 after the first registration;
    /// more after etcd restarts or lost leases).
    pub fn registrations(&self) -> u64 {
        self.shared.registrations.load(Ordering::Relaxed)
    }

    /// Revokes the lease (the key is deleted at once) and stops, waiting up to `timeout`.
    /// Later calls do nothing.
    pub fn revoke(&self, timeout: Duration) {
        let _ = self.stop.send(true);
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((done, thread)) = done {
            if done.recv_timeout(timeout).is_ok() {
                let _ = thread.join();
            } else {
                tracing::warn!(key = %self.shared.key, "etcd: lease not revoked within {timeout:?}; it expires by itself");
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.revoke(CALL_TIMEOUT);
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.shared.key)
            .field("registered", &self.is_registered())
            .finish()
    }
}

/// Registers, keeps alive and re-registers until stopped; then revokes.
async fn supervise(
    shared: &Shared,
    endpoints: &Endpoints,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = RETRY_MIN;
    let mut failing = false;
    loop {
        let mut client = None;
        let outcome = tokio::select! {
            outcome = session(shared, endpoints, ttl, &mut client, &mut failing) => outcome,
            () = stopped(&mut stop) => Ok(()),
        };
        shared.registered.store(false, Ordering::Release);
        match outcome {
            Ok(()) => {
                revoke(shared, endpoints, client).await;
                return;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(key = %shared.key, error = %e, "etcd registration lost; registering again (logged once until it works)");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => {
                revoke(shared, endpoints, None).await;
                return;
            }
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// Waits until stop is asked for (or the handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// One lease: grant, put, keep alive until something fails (Err). Never returns Ok: a stop
/// is noticed by the caller, which then revokes with `client`.
async fn session(
    shared: &Shared,
    endpoints: &Endpoints,
    ttl: Duration,
    client_out: &mut Option<Client>,
    failing: &mut bool,
) -> Result<(), DiscoveryError> {
    let mut client = connect(endpoints).await?;
    *client_out = Some(client.clone());
    let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let lease = timed(client.lease_grant(ttl_s, None)).await?.id();
    shared.lease.store(lease, Ordering::Release);
    put(shared, &mut client, lease).await?;
    let (mut keeper, mut answers) = timed(client.lease_keep_alive(lease)).await?;
    shared.registered.store(true, Ordering::Release);
    let n = shared.registrations.fetch_add(1, Ordering::Relaxed) + 1;
    if n == 1 {
        tracing::info!(key = %shared.key, lease = format!("{lease:x}"), ttl_s, "etcd: registered");
    } else {
        tracing::info!(key = %shared.key, lease = format!("{lease:x}"), ttl_s, registrations = n, "etcd: registered again");
    }
    *failing = false;
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: the lease was just granted
                       // When the oldest keepalive still unanswered was sent.
    let mut waiting_since: Option<tokio::time::Instant> = None;
    loop {
        let answer_deadline = waiting_since.map(|t| t + CALL_TIMEOUT);
        tokio::select! {
            _ = tick.tick() => {
                timed(async { keeper.keep_alive().await }).await?;
                waiting_since.get_or_insert_with(tokio::time::Instant::now);
                let options = GetOptions::new().with_keys_only();
                let ours = timed(client.get(shared.key.as_str(), Some(options))).await?;
                if ours.kvs().is_empty() {
                    tracing::warn!(key = %shared.key, "etcd: the key was deleted; putting it again");
                    put(shared, &mut client, lease).await?;
                }
            }
            // Read all the time, so a broken stream (etcd gone) is noticed at once.
            answer = answers.message() => match answer? {
                Some(answer) if answer.ttl() > 0 => waiting_since = None,
                Some(_) => return Err(DiscoveryError::LeaseLost(lease)),
                None => {
                    return Err(DiscoveryError::Etcd(etcd_client::Error::LeaseKeepAliveError(
                        "the keepalive stream ended".into(),
                    )))
                }
            },
            () = sleep_until(answer_deadline) => return Err(DiscoveryError::Timeout(CALL_TIMEOUT)),
            () = shared.changed.notified() => put(shared, &mut client, lease).await?,
        }
    }
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Puts the current value under `lease`.
async fn put(shared: &Shared, client: &mut Client, lease: i64) -> Result<(), DiscoveryError> {
    let value = shared
        .value
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let options = PutOptions::new().with_lease(lease);
    timed(client.put(shared.key.as_str(), value, Some(options))).await?;
    Ok(())
}

/// Revokes the current lease, if any, best effort (bounded by [`CALL_TIMEOUT`]).
async fn revoke(shared: &Shared, endpoints: &Endpoints, client: Option<Client>) {
    let lease = shared.lease.swap(0, Ordering::AcqRel);
    if lease == 0 {
        return;
    }
    let attempt = async {
        let mut client = match client {
            Some(client) => client,
            None => connect(endpoints).await?,
        };
        timed(client.lease_revoke(lease)).await?;
        Ok::<(), DiscoveryError>(())
    };
    match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
        Ok(Ok(())) => tracing::info!(key = %shared.key, "etcd: lease revoked"),
        Ok(Err(e)) => {
            tracing::warn!(key = %shared.key, error = %e, "etcd: cannot revoke the lease; it expires by itself")
        }
        Err(_) => {
            tracing::warn!(key = %shared.key, "etcd: revoking timed out; the lease expires by itself")
        }
    }
}
