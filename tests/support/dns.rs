//! A DNS server for the tests: UDP on 127.0.0.1 port 0, answering the A queries for
//! the names of a table that the test changes, as `--resolver` asks them. Written from
//! RFC 1035 alone, without the crate roundhouse parses answers with, so that the two do
//! not share a mistake. AAAA queries get an empty answer; a name not in the table gets
//! NXDOMAIN.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How the server treats one name.
#[derive(Clone, Debug)]
enum Entry {
    /// Answers these A records.
    Addrs(Vec<Ipv4Addr>),
    /// Answers NXDOMAIN.
    NxDomain,
    /// Never answers (a server that has stopped answering).
    Silent,
}

#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
    /// A queries received, by name.
    queries: HashMap<String, usize>,
    /// NXDOMAIN answers sent, by name.
    nxdomains: HashMap<String, usize>,
    /// How long each answer waits before it is sent.
    delay: Duration,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    table: Arc<Mutex<Table>>,
    stop: Arc<AtomicBool>,
}

const TYPE_A: u16 = 1;
const NXDOMAIN: u8 = 3;

impl DnsServer {
    pub fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the dns server");
        // Wakes the loop now and then to see `stop`.
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let table = Arc::new(Mutex::new(Table::default()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (table, stop) = (table.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("dns-{}", addr.port()))
                .spawn(move || {
                    let mut buf = [0; 512];
                    while !stop.load(Ordering::SeqCst) {
                        let Ok((n, from)) = socket.recv_from(&mut buf) else {
                            continue;
                        };
                        let Some((reply, name)) = answer(&buf[..n], &table) else {
                            continue;
                        };
                        let delay = table.lock().unwrap().delay;
                        thread::sleep(delay);
                        let _ = socket.send_to(&reply, from);
                        if reply[3] & 0x0f == NXDOMAIN {
                            let mut table = table.lock().unwrap();
                            *table.nxdomains.entry(name).or_default() += 1;
                        }
                    }
                })
                .unwrap();
        }
        DnsServer { addr, table, stop }
    }

    /// `--resolver` for this server.
    pub fn resolver(&self) -> String {
        self.addr.to_string()
    }

    /// From now on `name` has these A records.
    pub fn set(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        self.put(name, Entry::Addrs(ips));
    }

    /// From now on `name` does not exist.
    pub fn nxdomain(&self, name: &str) {
        self.put(name, Entry::NxDomain);
    }

    /// From now on queries for `name` get no answer at all.
    pub fn silence(&self, name: &str) {
        self.put(name, Entry::Silent);
    }

    /// From now on every answer waits this long before it is sent.
    pub fn delay(&self, delay: Duration) {
        self.table.lock().unwrap().delay = delay;
    }

    fn put(&self, name: &str, entry: Entry) {
        let mut table = self.table.lock().unwrap();
        table.entries.insert(name.to_ascii_lowercase(), entry);
    }

    /// A queries received for `name` so far.
    pub fn queries(&self, name: &str) -> usize {
        let table = self.table.lock().unwrap();
        table.queries.get(name).copied().unwrap_or(0)
    }

    /// NXDOMAIN answers sent for `name` so far (counted once sent).
    pub fn nxdomains(&self, name: &str) -> usize {
        let table = self.table.lock().unwrap();
        table.nxdomains.get(name).copied().unwrap_or(0)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The reply to `query` and the name it asks about; None to stay silent (and for
/// anything that is no query).
fn answer(query: &[u8], table: &Mutex<Table>) -> Option<(Vec<u8>, String)> {
    // The header (12 bytes): id, flags, then the four counts; one question follows.
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let question = query.get(12..question_end)?;
    let name = labels.join(".");

    let mut table = table.lock().unwrap();
    if qtype == TYPE_A {
        *table.queries.entry(name.clone()).or_default() += 1;
    }
    let (rcode, ips) = match table.entries.get(&name).cloned() {
        Some(Entry::Silent) => return None,
        Some(Entry::Addrs(ips)) if qtype == TYPE_A => (0, ips),
        Some(Entry::Addrs(_)) => (0, Vec::new()),
        Some(Entry::NxDomain) | None => (NXDOMAIN, Vec::new()),
    };

    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[0..2]);
    // QR, the query's RD, RA; the rcode.
    reply.push(0x80 | (query[2] & 0x01));
    reply.push(0x80 | rcode);
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for ip in ips {
        // The name as a pointer to the question's (offset 12), type A, class IN, TTL 0.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some((reply, name))
}
