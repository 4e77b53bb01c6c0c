//! Streaming: big bodies pass intact in both directions, whatever their framing. Both
//! ends hash what they saw; nobody holds 64 MiB in memory.

use std::io::Write;

use crate::support::*;

const SIZE: u64 = 64 << 20;

/// Uploads `SIZE` pattern bytes through the balancer to a backend that answers with the
/// length and hash it received; checks that answer.
fn upload(chunked: bool) {
    let backend = Backend::body_summary();
    let lb = start_balancer(&[&backend], &[]);
    let seed = if chunked { 7 } else { 3 };
    let mut c = Client::connect(lb.addr);
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {SIZE}")
    };
    c.send(format!(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n\r\n"
    ));
    let mut sent = Fnv::new();
    let mut p = Pattern::new(seed, SIZE);
    let mut buf = vec![0; 100_003]; // odd, so chunks do not line up with anything
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, c.stream().try_clone().unwrap());
    loop {
        let n = p.fill(&mut buf);
        if n == 0 {
            break;
        }
        sent.update(&buf[..n]);
        if chunked {
            write!(out, "{n:x}\r\n").unwrap();
            out.write_all(&buf[..n]).unwrap();
            out.write_all(b"\r\n").unwrap();
        } else {
            out.write_all(&buf[..n]).unwrap();
        }
    }
    if chunked {
        out.write_all(b"0\r\n\r\n").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), format!("{SIZE} {:016x}", sent.finish()));
    let req = backend.only_request();
    assert_eq!(req.body_len, SIZE);
}

/// Downloads `SIZE` pattern bytes from a backend through the balancer, hashing as it reads.
fn download(chunked: bool) {
    let seed = if chunked { 11 } else { 5 };
    let backend = Backend::download(seed, SIZE, chunked);
    let lb = start_balancer(&[&backend], &[]);
    let mut c = Client::connect(lb.addr);
    c.send("GET /download HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let head = c.reader.read_head().unwrap().expect("a response");
    assert_eq!(head.status, 200);
    if !chunked {
        assert_eq!(
            head.header("content-length"),
            Some(SIZE.to_string().as_str())
        );
    }
    let (complete, len, hash) = c.hash_body(&head);
    assert!(complete, "the body ended early, after {len} bytes");
    assert_eq!(len, SIZE);
    assert_eq!(
        hash,
        Pattern::hash_of(seed, SIZE),
        "the body arrived altered"
    );
}

#[test]
fn upload_of_64_mib_with_content_length_passes_intact() {
    upload(false);
}

#[test]
fn upload_of_64_mib_chunked_passes_intact() {
    upload(true);
}

#[test]
fn download_of_64_mib_with_content_length_passes_intact() {
    download(false);
}

#[test]
fn download_of_64_mib_chunked_passes_intact() {
    download(true);
}
