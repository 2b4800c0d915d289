//! SIGTERM and Ctrl-C (SIGINT): what ends a run early, for `volley run` (a CI timeout,
//! `docker stop`, a user at the terminal) and `volley agent` (a runner pod being deleted).
//! [`Signals`] is the one place both listen; what a signal then does is theirs to decide
//! (`volley run` aborts the run and keeps the results so far, see [`crate::local`];
//! `volley agent` stops like on the aggregator's `stop`, see [`shutdown_on_signals`]).

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::exit::EXIT_ERROR;

/// Handlers for SIGINT and SIGTERM, installed when made.
#[derive(Debug)]
pub struct Signals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl Signals {
    /// Installs the handlers now, so a signal that comes before anyone waits for it (while
    /// runners start) is not lost. A signal whose handler cannot be installed never comes.
    /// Must be called inside a Tokio runtime.
    pub fn install() -> Signals {
        Signals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Waits for the next signal and names it (`Ctrl-C`, `SIGTERM`); never returns when no
    /// handler is installed. Cancel-safe: a signal is not lost when another `select!` branch
    /// wins.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = recv(&mut self.interrupt) => "Ctrl-C",
            Some(()) = recv(&mut self.terminate) => "SIGTERM",
            else => std::future::pending().await,
        }
    }
}

/// The next delivery of `signal`; pending forever when it has no handler.
async fn recv(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// Turns SIGTERM and Ctrl-C into a shutdown request for [`crate::agent::Agent::run`] (the
/// first signal's name); a second signal exits the process at once (exit 1), after a line
/// starting with `prefix`. Must be called inside a Tokio runtime.
pub fn shutdown_on_signals(prefix: String) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    let mut signals = Signals::install();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = signals.next().await;
            seen += 1;
            if seen == 1 {
                let _ = tx.send(Some(name.to_string()));
            } else {
                eprintln!("{prefix}: second signal ({name}): exiting at once");
                std::process::exit(i32::from(EXIT_ERROR));
            }
        }
    });
    rx
}
