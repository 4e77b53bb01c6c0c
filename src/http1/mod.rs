//! The front door protocol: HTTP/1.0 and HTTP/1.1 as spoken with clients, strictly.
//!
//! A client connection (`ClientConn`) yields one request head at a time
//! (`RequestHead`, parsed and validated in `request.rs`), then a reader for that
//! request's body (`BodyReader`, sized or chunked, in `body.rs`; the chunked framing
//! itself is decoded in `chunked.rs`); the answer goes back as a `ResponseHead`
//! through `write_head` and a `BodyWriter`, or `write_error` (`response.rs`).
//! `connection.rs` drives this loop for each connection and `proxy.rs` relays the
//! body and the answer; every refusal is a `crate::error::ProxyError`.
//!
//! This is the only place that knows `httparse`. The rules it enforces (RFC 9112) are
//! there so that two parsers never disagree about where a request ends: anything
//! ambiguous is refused with 400 and the connection closed, never guessed.
//!
//! Request targets are not interpreted: origin-form, absolute-form
//! (`http://host/path`), authority-form and `*` are all handed on byte for byte, and
//! what to do with them is the caller's decision (CONNECT alone is refused here).

mod body;
mod chunked;
mod conn;
mod gather;
mod request;
mod response;

pub use body::BodyReader;
pub use chunked::ChunkedReader;
pub use conn::{ClientConn, HeadProgress};
pub use gather::{Gather, Gathered};
pub use request::{Framing, RequestHead, Version, parse_head};
pub use response::{BodyWriter, ResponseBody, ResponseHead, write_error, write_head};
