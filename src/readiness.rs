//! Readiness: whether this instance should be sent new connections now. It is what the
//! admin interface's `/ready` answers to whoever routes traffic here (a Kubernetes
//! readiness probe, an L4 balancer's health check); `/live` only says that the process
//! still serves. Ready means three things at once: every listener is bound and its
//! acceptor runs (`server.rs` says so), at least one backend is up (`balancer/`, as
//! `health.rs` marks them), and no shutdown has begun (`shutdown.rs`). From SIGTERM on,
//! through `--drain-delay` and the grace after it, the answer is no, so that the router
//! stops sending before the listeners close.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::balancer::Backend;
use crate::shutdown::Shutdown;

/// The facts `/ready` combines, each read when a probe asks.
pub struct Readiness {
    /// Set by `server::start` once every acceptor runs; cleared by
    /// `server::Running::wait` when the listeners close. Its only writers.
    listening: AtomicBool,
    shutdown: Arc<Shutdown>,
}

/// Why the instance is not ready, in the order `Readiness::check` asks.
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    /// A shutdown has begun (SIGTERM or SIGINT): the drain delay, or after it.
    ShuttingDown,
    /// The listeners are not (or no longer) accepting.
    NotListening,
    /// Every backend is down, drained, disabled or ejected.
    NoBackendUp,
}

impl NotReady {
    /// The probe's answer body.
    pub fn text(&self) -> &'static str {
        match self {
            NotReady::ShuttingDown => "not ready: shutting down",
            NotReady::NotListening => "not ready: not listening",
            NotReady::NoBackendUp => "not ready: no backend up",
        }
    }
}

impl Readiness {
    /// Not listening yet; `shutdown` is the switch the signals thread throws.
    pub fn new(shutdown: Arc<Shutdown>) -> Readiness {
        Readiness {
            listening: AtomicBool::new(false),
            shutdown,
        }
    }

    /// Says whether the listeners accept (see `listening`).
    pub fn set_listening(&self, listening: bool) {
        // Relaxed: a probe only needs to see it soon; nothing is published with it.
        self.listening.store(listening, Ordering::Relaxed);
    }

    /// Ready, or the first reason not to be, over the backend set in use now. A
    /// backup counts: it takes requests while no primary is up.
    pub fn check(&self, backends: &[Backend]) -> Result<(), NotReady> {
        if self.shutdown.is_stopping() {
            return Err(NotReady::ShuttingDown);
        }
        // Relaxed: see set_listening.
        if !self.listening.load(Ordering::Relaxed) {
            return Err(NotReady::NotListening);
        }
        if !backends.iter().any(Backend::is_up) {
            return Err(NotReady::NoBackendUp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balancer::testing::backends;

    #[test]
    fn ready_takes_listeners_a_backend_up_and_no_shutdown() {
        let shutdown = Arc::new(Shutdown::default());
        let readiness = Readiness::new(shutdown.clone());
        let two = backends(&[1, 1]);
        assert_eq!(readiness.check(&two), Err(NotReady::NotListening));
        readiness.set_listening(true);
        assert_eq!(readiness.check(&two), Ok(()));

        two[0].marks().disable();
        assert_eq!(readiness.check(&two), Ok(()), "one backend up is enough");
        two[1].marks().mark_down();
        assert_eq!(readiness.check(&two), Err(NotReady::NoBackendUp));
        assert_eq!(readiness.check(&[]), Err(NotReady::NoBackendUp));

        let one = backends(&[1]);
        shutdown.begin();
        assert_eq!(readiness.check(&one), Err(NotReady::ShuttingDown));
        readiness.set_listening(false);
        assert_eq!(
            readiness.check(&one),
            Err(NotReady::ShuttingDown),
            "a shutdown is said first"
        );
    }
}
