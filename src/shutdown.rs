//! Graceful shutdown: on SIGTERM or SIGINT (`signals.rs`) the balancer first drains for
//! `--drain-delay` (none by default): it goes on accepting and serving, but `/ready`
//! answers 503 (`readiness.rs`) and every answer closes its connection. Then it stops
//! accepting, closes the idle keep-alive connections waiting in `waiting_room.rs`,
//! answers the requests in flight with `Connection: close` (`proxy.rs`, `connection.rs`),
//! and returns from `server::Running::wait` once every client connection is closed or
//! `--grace` has passed. `Shutdown` is the switch they all read, from the first signal
//! on.
//!
//! Why the answers close their connections from the start of the drain, not only once
//! the listeners close: the delay is there for whoever routes to us (a Kubernetes
//! Service, an L4 balancer) to stop sending new connections here, but a keep-alive
//! connection that is already open stays ours whatever the router does. Kept open, it
//! would be closed at the end of the delay while idle, just when its client may be
//! sending the next request on it, which then fails. Closed after an answer that says
//! `Connection: close`, it costs its client one connect, which the router sends to
//! another instance, and no request is lost. An idle connection that sends nothing
//! during the delay is closed at its end, as without a delay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

#[derive(Default)]
pub struct Shutdown {
    /// Set once, by `begin`; read once or twice per request.
    stopping: AtomicBool,
    /// The same fact for `wait_begun`, which sleeps until it is true.
    begun: Mutex<bool>,
    wake: Condvar,
}

impl Shutdown {
    /// Starts the shutdown; from any thread, any number of times.
    pub fn begin(&self) {
        // Relaxed: a worker only needs to see it soon (its next answer closes); nothing
        // else is published with it.
        self.stopping.store(true, Ordering::Relaxed);
        *self.begun.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wake.notify_all();
    }

    /// Whether the shutdown has begun (the drain delay included): connections close
    /// after their current request.
    pub fn is_stopping(&self) -> bool {
        // Relaxed: see begin.
        self.stopping.load(Ordering::Relaxed)
    }

    /// Sleeps until `begin` is called.
    pub fn wait_begun(&self) {
        let mut begun = self.begun.lock().unwrap_or_else(PoisonError::into_inner);
        while !*begun {
            begun = self
                .wake
                .wait(begun)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

    #[test]
    fn begin_wakes_the_waiter_and_is_seen() {
        let shutdown = Arc::new(Shutdown::default());
        assert!(!shutdown.is_stopping());
        let waiter = {
            let shutdown = shutdown.clone();
            thread::spawn(move || shutdown.wait_begun())
        };
        shutdown.begin();
        waiter.join().unwrap();
        assert!(shutdown.is_stopping());
        shutdown.wait_begun(); // already begun: returns at once
    }
}
