//! A DNS lookup: the addresses a backend's host name has now. `config.rs` looks each
//! name up when it reads the flags (at start and on every reload), and the resolver
//! thread (`discovery.rs`) looks them up again every `--resolve-interval`. The answer
//! comes from the system's resolver (getaddrinfo through std's `ToSocketAddrs`, so
//! /etc/hosts and resolv.conf's search domains count), or with `--resolver` from that
//! one DNS server, asked directly: an A and an AAAA query over UDP, each with a timeout
//! and one retry, and over TCP when the answer came truncated. A leaf: it uses nothing
//! else in the crate.
//!
//! The messages are encoded and parsed by simple-dns, a sync crate that does the wire
//! format and nothing else, with one dependency (bitflags, which we had already): the
//! sockets, timeouts and retries stay ours, and no async runtime comes along.
//! hickory-proto with its default features off would do the same work, but brings
//! idna, url, rand, tracing and five more crates.

use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{CLASS, Name, Packet, PacketFlag, QCLASS, QTYPE, Question, RCODE, TYPE};

/// How long a query to a `--resolver` server waits for its answer; one that times out
/// is sent once more, with as long again. A server on a working network answers in
/// milliseconds.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest UDP answer read. Our queries carry no EDNS, so a server keeps its answer
/// to 512 bytes and sets the truncation bit when more would not fit; the room beyond is
/// for servers that send more anyway.
const UDP_ANSWER: usize = 4096;

/// Where names are looked up (`--resolver`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Resolver {
    /// The system's resolver, through getaddrinfo.
    #[default]
    System,
    /// This DNS server, asked directly.
    Server(SocketAddr),
}

/// What a lookup learned about a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Its addresses, sorted and without repeats; never empty.
    Found(Vec<IpAddr>),
    /// The name does not exist (NXDOMAIN), or it has no A or AAAA record.
    Missing,
}

/// Looks `host` up. An error means no answer was had (no reply, a server failure, a
/// name the system cannot look up now) and says why, in lower case.
pub fn lookup(resolver: &Resolver, host: &str) -> Result<Answer, String> {
    match resolver {
        Resolver::System => system(host),
        Resolver::Server(server) => ask(*server, host, QUERY_TIMEOUT),
    }
}

impl std::fmt::Display for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolver::System => f.write_str("the system's resolver"),
            Resolver::Server(addr) => write!(f, "{addr}"),
        }
    }
}

fn found(mut ips: Vec<IpAddr>) -> Answer {
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        Answer::Missing
    } else {
        Answer::Found(ips)
    }
}

fn system(host: &str) -> Result<Answer, String> {
    match (host, 0).to_socket_addrs() {
        Ok(addrs) => Ok(found(addrs.map(|a| a.ip()).collect())),
        Err(err) if names_nothing(&err.to_string()) => Ok(Answer::Missing),
        Err(err) => Err(err.to_string()),
    }
}

/// Whether a getaddrinfo error as std reports it says that the name does not exist or
/// has no address. std keeps only the text (its own words, then `gai_strerror`'s), so
/// the two codes that say so, EAI_NONAME and EAI_NODATA, are known by their words, asked
/// of the same libc (and so in the same language).
fn names_nothing(message: &str) -> bool {
    [libc::EAI_NONAME, libc::EAI_NODATA]
        .into_iter()
        .any(|code| {
            // SAFETY: gai_strerror takes any code and returns a static, NUL-terminated string.
            let words = unsafe { CStr::from_ptr(libc::gai_strerror(code)) };
            words
                .to_str()
                .is_ok_and(|words| !words.is_empty() && message.ends_with(words))
        })
}

/// What one query learned.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// NOERROR, and the addresses of the type asked (none is an answer too).
    Records(Vec<IpAddr>),
    /// NXDOMAIN.
    NoName,
    /// The answer did not fit in UDP: ask again over TCP.
    Truncated,
}

/// The A query, then the AAAA one (unless the first said the name does not exist).
fn ask(server: SocketAddr, host: &str, timeout: Duration) -> Result<Answer, String> {
    let mut ips = Vec::new();
    for qtype in [TYPE::A, TYPE::AAAA] {
        match query(server, host, qtype, timeout)? {
            Reply::NoName => return Ok(Answer::Missing),
            Reply::Records(got) => ips.extend(got),
            // `query` has asked again over TCP already.
            Reply::Truncated => return Err(format!("{server}: truncated answer")),
        }
    }
    Ok(found(ips))
}

/// One question to `server` over UDP, asked at most twice; over TCP if truncated.
fn query(server: SocketAddr, host: &str, qtype: TYPE, timeout: Duration) -> Result<Reply, String> {
    let id = fastrand::u16(..);
    let message = encode(id, host, qtype)?;
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let failed = |err: io::Error| format!("{server}: {err}");
    let socket = UdpSocket::bind(local).map_err(failed)?;
    // Connected: the kernel drops datagrams from anyone else, and a server that is not
    // there shows as ECONNREFUSED rather than as a timeout.
    socket.connect(server).map_err(failed)?;
    let mut buf = vec![0; UDP_ANSWER];
    let mut why = format!(
        "{server}: no answer within {}",
        humantime::format_duration(timeout)
    );
    for _ in 0..2 {
        socket.send(&message).map_err(failed)?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left)).map_err(failed)?;
            match socket.recv(&mut buf) {
                // Anything that is not the answer to this query (an old answer to a
                // query given up on, a malformed datagram) is ignored.
                Ok(n) => match parse(&buf[..n], id, qtype) {
                    Some(Ok(Reply::Truncated)) => {
                        return over_tcp(server, &message, id, qtype, timeout);
                    }
                    Some(reply) => return reply,
                    None => continue,
                },
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(err) => {
                    why = failed(err);
                    break;
                }
            }
        }
    }
    Err(why)
}

/// The query for `host`'s records of type `qtype`, recursion desired.
fn encode(id: u16, host: &str, qtype: TYPE) -> Result<Vec<u8>, String> {
    let name = Name::new(host).map_err(|_| format!("'{host}' is not a host name"))?;
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet.questions.push(Question::new(
        name,
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet
        .build_bytes_vec()
        .map_err(|err| format!("cannot encode the query for '{host}': {err}"))
}

/// The reply to query `id` in `bytes`; `None` if they are not it.
fn parse(bytes: &[u8], id: u16, qtype: TYPE) -> Option<Result<Reply, String>> {
    let packet = Packet::parse(bytes).ok()?;
    if packet.id() != id || !packet.has_flags(PacketFlag::RESPONSE) {
        return None;
    }
    if packet.has_flags(PacketFlag::TRUNCATION) {
        return Some(Ok(Reply::Truncated));
    }
    match packet.rcode() {
        RCODE::NoError => {}
        RCODE::NameError => return Some(Ok(Reply::NoName)),
        other => return Some(Err(format!("the server answered {other:?}"))),
    }
    // A CNAME chain comes with its records: only the addresses matter.
    let ips = packet
        .answers
        .iter()
        .filter_map(|record| match &record.rdata {
            RData::A(a) if qtype == TYPE::A => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
            RData::AAAA(a) if qtype == TYPE::AAAA => Some(IpAddr::V6(Ipv6Addr::from(a.address))),
            _ => None,
        })
        .collect();
    Some(Ok(Reply::Records(ips)))
}

/// The same query over TCP (RFC 7766): two bytes of length, then the message, each way.
fn over_tcp(
    server: SocketAddr,
    message: &[u8],
    id: u16,
    qtype: TYPE,
    timeout: Duration,
) -> Result<Reply, String> {
    let failed = |err: io::Error| format!("{server} over tcp: {err}");
    let mut stream = TcpStream::connect_timeout(&server, timeout).map_err(failed)?;
    stream.set_read_timeout(Some(timeout)).map_err(failed)?;
    stream.set_write_timeout(Some(timeout)).map_err(failed)?;
    let len = u16::try_from(message.len()).map_err(|_| format!("{server}: query too long"))?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed).map_err(failed)?;
    let mut len = [0; 2];
    stream.read_exact(&mut len).map_err(failed)?;
    let mut answer = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).map_err(failed)?;
    match parse(&answer, id, qtype) {
        Some(Ok(Reply::Truncated)) => Err(format!("{server}: truncated over tcp too")),
        Some(reply) => reply,
        None => Err(format!("{server} over tcp: not an answer to the query")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use simple_dns::ResourceRecord;
    use simple_dns::rdata::{A, AAAA};

    use super::*;

    /// How a test server answers one query.
    #[derive(Clone, Copy)]
    enum Script {
        /// `n` A records 10.0.0.1.. and, unless `n` is 0, one AAAA record ::1.
        Records(u8),
        NxDomain,
        ServFail,
        /// Truncated over UDP; the records over TCP.
        TruncatedThen(u8),
        /// Never answers.
        Silent,
    }

    fn reply(query: &[u8], script: Script, truncate: bool) -> Vec<u8> {
        let query = Packet::parse(query).unwrap();
        let mut reply = Packet::new_reply(query.id());
        let question = query.questions[0].clone();
        let qtype = question.qtype;
        let name = question.qname.clone();
        reply.questions.push(question);
        match script {
            Script::NxDomain => *reply.rcode_mut() = RCODE::NameError,
            Script::ServFail => *reply.rcode_mut() = RCODE::ServerFailure,
            _ if truncate => reply.set_flags(PacketFlag::TRUNCATION),
            Script::Records(n) | Script::TruncatedThen(n) => {
                if qtype == QTYPE::TYPE(TYPE::A) {
                    for i in 1..=n {
                        let a = A {
                            address: u32::from(Ipv4Addr::new(10, 0, 0, i)),
                        };
                        let rr = ResourceRecord::new(name.clone(), CLASS::IN, 0, RData::A(a));
                        reply.answers.push(rr);
                    }
                } else if n > 0 {
                    let aaaa = AAAA {
                        address: u128::from(Ipv6Addr::LOCALHOST),
                    };
                    let rr = ResourceRecord::new(name.clone(), CLASS::IN, 0, RData::AAAA(aaaa));
                    reply.answers.push(rr);
                }
            }
            Script::Silent => unreachable!(),
        }
        reply.build_bytes_vec().unwrap()
    }

    /// A DNS server on loopback that answers every query by `script`; TCP on the same port.
    fn server(script: Script) -> SocketAddr {
        // The TCP port of the same number may be taken (another test's listener):
        // then another UDP port.
        let (udp, addr, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                let addr = udp.local_addr().unwrap();
                TcpListener::bind(addr).ok().map(|tcp| (udp, addr, tcp))
            })
            .expect("a UDP and TCP port pair on loopback");
        thread::spawn(move || {
            let mut buf = [0; 512];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                if matches!(script, Script::Silent) {
                    continue;
                }
                let truncate = matches!(script, Script::TruncatedThen(_));
                let _ = udp.send_to(&reply(&buf[..n], script, truncate), from);
            }
        });
        thread::spawn(move || {
            for mut stream in tcp.incoming().flatten() {
                let mut len = [0; 2];
                stream.read_exact(&mut len).unwrap();
                let mut query = vec![0; usize::from(u16::from_be_bytes(len))];
                stream.read_exact(&mut query).unwrap();
                let answer = reply(&query, script, false);
                let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                framed.extend(answer);
                stream.write_all(&framed).unwrap();
            }
        });
        addr
    }

    const SHORT: Duration = Duration::from_millis(200);

    fn v4(last: &[u8]) -> Vec<IpAddr> {
        last.iter()
            .map(|&i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
            .collect()
    }

    #[test]
    fn a_server_answers_with_a_and_aaaa_records_sorted() {
        let addr = server(Script::Records(3));
        let mut expected = v4(&[1, 2, 3]);
        expected.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(ask(addr, "svc.test", SHORT), Ok(Answer::Found(expected)));
    }

    #[test]
    fn nxdomain_and_an_empty_answer_are_missing_and_servfail_is_an_error() {
        assert_eq!(
            ask(server(Script::NxDomain), "svc.test", SHORT),
            Ok(Answer::Missing)
        );
        assert_eq!(
            ask(server(Script::Records(0)), "svc.test", SHORT),
            Ok(Answer::Missing)
        );
        let err = ask(server(Script::ServFail), "svc.test", SHORT).unwrap_err();
        assert_eq!(err, "the server answered ServerFailure");
    }

    #[test]
    fn a_truncated_answer_is_asked_again_over_tcp() {
        // 40 A records do not fit in 512 bytes; over TCP they all come.
        let addr = server(Script::TruncatedThen(40));
        let Ok(Answer::Found(ips)) = ask(addr, "svc.test", SHORT) else {
            panic!("no answer over tcp");
        };
        assert_eq!(ips.len(), 41);
    }

    #[test]
    fn a_silent_server_is_asked_twice_then_given_up_on() {
        let addr = server(Script::Silent);
        let started = Instant::now();
        let err = ask(addr, "svc.test", SHORT).unwrap_err();
        assert!(started.elapsed() >= 2 * SHORT, "{:?}", started.elapsed());
        assert_eq!(err, format!("{addr}: no answer within 200ms"));
        // Nothing listening: refused at once, twice.
        let gone = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = ask(gone, "svc.test", Duration::from_secs(5)).unwrap_err();
        assert!(err.starts_with(&format!("{gone}: ")), "{err}");
    }

    #[test]
    fn a_bad_name_is_not_sent() {
        let long = "a".repeat(64);
        assert_eq!(
            encode(1, &format!("{long}.test"), TYPE::A).unwrap_err(),
            format!("'{long}.test' is not a host name")
        );
    }

    #[test]
    fn answers_to_other_queries_are_not_taken() {
        let query = encode(7, "svc.test", TYPE::A).unwrap();
        let answer = reply(&query, Script::Records(1), false);
        assert_eq!(
            parse(&answer, 7, TYPE::A),
            Some(Ok(Reply::Records(v4(&[1]))))
        );
        assert_eq!(parse(&answer, 8, TYPE::A), None);
        assert_eq!(parse(&query, 7, TYPE::A), None, "a query is no answer");
        assert_eq!(parse(b"junk", 7, TYPE::A), None);
        assert_eq!(
            parse(&answer, 7, TYPE::AAAA),
            Some(Ok(Reply::Records(vec![])))
        );
    }

    #[test]
    fn the_systems_words_for_no_such_name_are_known() {
        // As std words them (the system's lookup of a made-up name would leave loopback).
        let words = |code| {
            unsafe { CStr::from_ptr(libc::gai_strerror(code)) }
                .to_str()
                .unwrap()
                .to_owned()
        };
        let std = |code| format!("failed to lookup address information: {}", words(code));
        assert!(names_nothing(&std(libc::EAI_NONAME)));
        assert!(names_nothing(&std(libc::EAI_NODATA)));
        assert!(!names_nothing(&std(libc::EAI_AGAIN)));
        assert!(!names_nothing(&std(libc::EAI_FAIL)));
        assert_eq!(
            lookup(&Resolver::System, "localhost").map(|a| a != Answer::Missing),
            Ok(true)
        );
    }
}
