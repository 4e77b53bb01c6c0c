//! The integration tests: one binary, real sockets on 127.0.0.1 port 0.
//!
//! Each module is one group of claims from the README; each test is named after its
//! claim and fails if that claim breaks. The modules live in `tests/it/` so that cargo
//! builds this file as the only test target.

mod support;

#[path = "it/proxying.rs"]
mod proxying;

#[path = "it/streaming.rs"]
mod streaming;

#[path = "it/failures.rs"]
mod failures;

#[path = "it/front_door.rs"]
mod front_door;

#[path = "it/cli.rs"]
mod cli;

#[path = "it/strategies.rs"]
mod strategies;

#[path = "it/admin.rs"]
mod admin;

#[path = "it/operations.rs"]
mod operations;

#[path = "it/instances.rs"]
mod instances;

#[path = "it/refusals.rs"]
mod refusals;

#[path = "it/health.rs"]
mod health;

#[path = "it/slow_clients.rs"]
mod slow_clients;

#[path = "it/discovery.rs"]
mod discovery;

#[path = "it/backend_tls.rs"]
mod backend_tls;

#[path = "it/tunnels.rs"]
mod tunnels;

#[path = "it/tunnel_lifecycle.rs"]
mod tunnel_lifecycle;

#[path = "it/limits.rs"]
mod limits;

#[cfg(feature = "tls")]
#[path = "it/tls_listener.rs"]
mod tls_listener;

#[path = "it/proxy_protocol.rs"]
mod proxy_protocol;

#[path = "it/kubernetes.rs"]
mod kubernetes;
