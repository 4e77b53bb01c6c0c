//! The demo backend from the blog post roundhouse grew out of: an HTTP server on
//! 127.0.0.1 that answers every request with `hello world!`.
//!
//! `make run` starts two of these (ports 8081 and 8082) behind roundhouse. Each one logs
//! a line per request with the method, the URL and every header it received, so the
//! log shows which backend answered and what the balancer forwarded:
//!
//! ```text
//! backend :8081 GET /hello host=127.0.0.1:8000 user-agent=curl/8.5.0 x-forwarded-for=127.0.0.1
//! ```
//!
//! Run one by hand with `cargo run --example backend -- --port 8081`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use tiny_http::{Request, Response, Server};

/// The body of every answer, byte for byte what the blog's Go backend writes.
const BODY: &str = "hello world!";

/// Threads taking requests from the one listener. A few are enough for a demo, and more
/// than one keeps a slow client from holding up the others.
const THREADS: usize = 4;

/// The blog's demo backend: answers every request with `hello world!` (text/plain) and
/// logs one line per request to stdout.
#[derive(argh::FromArgs)]
struct Args {
    /// the port to listen on, on 127.0.0.1 (default 8081; 0 picks a free one)
    #[argh(option, default = "8081")]
    port: u16,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let server = match Server::http(addr) {
        Ok(server) => Arc::new(server),
        Err(err) => {
            eprintln!("backend: cannot listen on {addr}: {err}");
            return ExitCode::FAILURE;
        }
    };
    // With --port 0 the kernel chose the port; log the one we really got.
    let port = server
        .server_addr()
        .to_ip()
        .map_or(args.port, |bound| bound.port());
    println!("backend :{port} listening on http://127.0.0.1:{port}/");

    let workers: Vec<_> = (0..THREADS)
        .map(|id| {
            let server = Arc::clone(&server);
            thread::Builder::new()
                .name(format!("backend-{id}"))
                .spawn(move || {
                    for request in server.incoming_requests() {
                        answer(port, request);
                    }
                })
                .expect("spawning a backend thread")
        })
        .collect();
    // The threads only return if the listener fails; the usual end is a signal.
    for worker in workers {
        let _ = worker.join();
    }
    ExitCode::SUCCESS
}

/// Logs one request, reads its body to the end, and answers `hello world!`.
fn answer(port: u16, mut request: Request) {
    // Read the whole body before answering: a client still sending it must not find the
    // answer (or a closed connection) in its way, and the next request on a keep-alive
    // connection starts right after it.
    let body_bytes = io::copy(request.as_reader(), &mut io::sink());

    let mut line = format!("backend :{port} {} {}", request.method(), request.url());
    for header in request.headers() {
        let name = header.field.as_str().as_str().to_ascii_lowercase();
        line.push_str(&format!(" {name}={}", header.value));
    }
    match body_bytes {
        Ok(0) => {}
        Ok(n) => line.push_str(&format!(" (body: {n} bytes)")),
        Err(err) => line.push_str(&format!(" (body unreadable: {err})")),
    }
    // One println! per request: stdout's lock keeps the threads' lines whole.
    println!("{line}");

    if let Err(err) = request.respond(Response::from_string(BODY)) {
        eprintln!("backend :{port}: cannot answer: {err}");
    }
}
