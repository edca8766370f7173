//! `EverySec`'s once-a-second fdatasync, on a thread of its own (as Redis does on its bio
//! thread), so that the daemon's event loop never waits for the disk.
//!
//! The loop hands over a duplicate of the journal's file descriptor; the thread syncs it.
//! When the previous sync is still running, the next is skipped rather than queued: a slow
//! disk then means syncs further apart, never a loop that blocks. A failed fdatasync is
//! reported back and poisons the journal at its next call (after a failed fsync Linux may
//! have dropped the dirty pages, so nothing written since can be vouched for).

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// The syncing thread and what it reports.
pub(super) struct Syncer {
    requests: Option<SyncSender<File>>,
    busy: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<std::io::Error>>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub(super) fn start() -> std::io::Result<Syncer> {
        let (requests, incoming) = mpsc::sync_channel::<File>(1);
        let busy = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let thread = {
            let (busy, failure) = (busy.clone(), failure.clone());
            std::thread::Builder::new()
                .name("journal-fsync".into())
                .spawn(move || {
                    for file in incoming {
                        if let Err(e) = file.sync_data() {
                            let mut slot = failure.lock().unwrap_or_else(PoisonError::into_inner);
                            slot.get_or_insert(e);
                        }
                        busy.store(false, Ordering::Release);
                    }
                })?
        };
        Ok(Syncer {
            requests: Some(requests),
            busy,
            failure,
            thread: Some(thread),
        })
    }

    /// Asks for `file` to be synced; `false` when the previous sync is still running (the
    /// caller tries again later).
    pub(super) fn request(&self, file: File) -> bool {
        if self.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        match self.requests.as_ref().map(|r| r.try_send(file)) {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => {
                self.busy.store(false, Ordering::Release);
                false
            }
        }
    }

    /// A sync failed since the last call.
    pub(super) fn take_failure(&self) -> Option<std::io::Error> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Waits for the sync in progress, if any.
    pub(super) fn wait(&mut self) {
        // Closing the channel ends the thread once the sync in progress is done.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_one_file_at_a_time_and_reports_nothing_when_all_is_well() {
        let path = std::env::temp_dir().join(format!("tether-syncer-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        let mut syncer = Syncer::start().unwrap();
        let mut accepted = 0;
        for _ in 0..100 {
            if syncer.request(file.try_clone().unwrap()) {
                accepted += 1;
            }
        }
        assert!(accepted >= 1);
        syncer.wait();
        assert!(syncer.take_failure().is_none());
        assert!(!syncer.request(file.try_clone().unwrap()), "stopped");
        let _ = std::fs::remove_file(&path);
    }
}
