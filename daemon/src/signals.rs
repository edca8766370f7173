//! Turns process signals into calls a daemon can act on from its own threads.
//!
//! SIGTERM and SIGINT mean "stop" (drain first where the daemon has something to drain);
//! SIGHUP means "reload what can change without dropping clients".

use std::io;
use std::thread;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
}

/// Starts a thread that calls `on_signal` for every SIGTERM, SIGINT and SIGHUP.
pub fn spawn<F>(on_signal: F) -> io::Result<()>
where
    F: Fn(SignalEvent) + Send + 'static,
{
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let event = if signal == SIGHUP {
                    SignalEvent::Reload
                } else {
                    SignalEvent::Stop
                };
                on_signal(event);
            }
        })?;
    Ok(())
}

/// Blocks until SIGTERM or SIGINT arrives (SIGHUP is logged and otherwise ignored), for a
/// daemon that has nothing to reload.
pub fn wait_for_stop() -> io::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    spawn(move |event| match event {
        SignalEvent::Stop => {
            let _ = tx.send(());
        }
        SignalEvent::Reload => tracing::info!("SIGHUP: nothing to reload"),
    })?;
    let _ = rx.recv();
    Ok(())
}
