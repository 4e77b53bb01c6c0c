//! Balancing strategies through real sockets: every `--strategy` against real backends,
//! the load-aware ones steering around a busy backend, and consistent hashing keeping
//! each key on one backend, across instances too. The exact sequences, distributions and
//! key-movement figures are unit tests in `src/balancer/`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::thread;

use crate::support::*;

const NAMES: [&str; 7] = [
    "round-robin",
    "random",
    "least-conn",
    "p2c",
    "least-time",
    "ip-hash",
    "hash",
];

/// One GET for `/` with `name: value`, on a fresh connection: the body.
fn get_keyed(addr: SocketAddr, path: &str, name: &str, value: &str) -> String {
    let mut c = Client::connect(addr);
    c.send(format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{name}: {value}\r\nConnection: close\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 200, "{r:?}");
    r.body_str()
}

/// `addr,weight=N` flags for `start_balancer_on(&[], ...)`.
fn weighted(backends: &[(&Backend, u32)]) -> Vec<String> {
    backends
        .iter()
        .flat_map(|(b, w)| ["--backend".to_string(), format!("{},weight={w}", b.addr)])
        .collect()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Bodies of `n` GETs on one keep-alive connection. Each request is read only after the
/// one before it is finished, so it never sees the previous one still in flight.
fn bodies_in_turn(addr: SocketAddr, n: usize) -> Vec<String> {
    let mut c = Client::connect(addr);
    (0..n).map(|_| c.get("/").body_str()).collect()
}

/// Sends a GET in a thread that a held backend will hold; waits until `backend` has it.
fn hold_one(lb: SocketAddr, backend: &Backend) -> thread::JoinHandle<(u16, String)> {
    let before = backend.heads();
    let t = thread::spawn(move || get(lb, "/held"));
    wait_until("the held backend to receive the request", || {
        backend.heads() > before
    });
    t
}

#[test]
fn every_strategy_serves_real_backends() {
    let (a, b) = (Backend::hello("a"), Backend::hello("b"));
    for name in NAMES {
        let lb = start_balancer(&[&a, &b], &["--strategy", name]);
        let bodies: BTreeSet<String> = (0..20)
            .map(|_| {
                let (status, body) = get(lb.addr, "/");
                assert_eq!(status, 200, "--strategy {name}");
                body
            })
            .collect();
        assert!(
            bodies.is_subset(&["a".into(), "b".into()].into()),
            "{name}: {bodies:?}"
        );
        // One client, no key: the hashing strategies keep it on one backend.
        let expected = if name.ends_with("hash") { 1 } else { 2 };
        assert_eq!(bodies.len(), expected, "--strategy {name}: {bodies:?}");
    }
}

#[test]
fn round_robin_weights_give_the_smooth_sequence() {
    let (a, b, c) = (
        Backend::hello("a"),
        Backend::hello("b"),
        Backend::hello("c"),
    );
    let flags = weighted(&[(&a, 5), (&b, 1), (&c, 1)]);
    let lb = start_balancer_on(&[], &args(&flags));
    let seq: String = (0..14).map(|_| get(lb.addr, "/").1).collect();
    assert_eq!(seq, "aabacaaaabacaa");
}

#[test]
fn least_conn_sends_to_the_idle_backend_while_another_is_busy() {
    let (busy, idle) = (Backend::held("busy"), Backend::hello("idle"));
    let lb = start_balancer(&[&busy, &idle], &["--strategy", "least-conn"]);
    // Idle and equal: round-robin order, so the first request goes to `busy`.
    let held = hold_one(lb.addr, &busy);
    assert_eq!(bodies_in_turn(lb.addr, 10), ["idle"; 10]);
    busy.release();
    assert_eq!(held.join().unwrap(), (200, "busy".to_string()));
    // Both idle again: `busy` gets requests again.
    let mut c = Client::connect(lb.addr);
    wait_until("the released backend to get a request", || {
        c.get("/").body_str() == "busy"
    });
}

#[test]
fn least_time_sends_to_the_fast_backend_while_another_is_slow() {
    let (slow, fast) = (Backend::held("slow"), Backend::hello("fast"));
    let lb = start_balancer(&[&slow, &fast], &["--strategy", "least-time"]);
    // Never heard from, both cost 0: round-robin order, so the first goes to `slow`.
    let held = hold_one(lb.addr, &slow);
    // `slow` now has a request in flight and no estimate: every other request avoids it.
    assert_eq!(bodies_in_turn(lb.addr, 10), ["fast"; 10]);
    slow.release();
    assert_eq!(held.join().unwrap(), (200, "slow".to_string()));
}

#[test]
fn p2c_steers_around_a_busy_backend() {
    let busy = Backend::held("busy");
    let (b, c) = (Backend::hello("b"), Backend::hello("c"));
    let lb = start_balancer(&[&busy, &b, &c], &["--strategy", "p2c"]);
    // Requests land at random until one is held at `busy`.
    let held = loop {
        let before = busy.heads();
        let t = thread::spawn({
            let addr = lb.addr;
            move || get(addr, "/")
        });
        wait_until("a backend to receive the request", || {
            busy.heads() > before || t.is_finished()
        });
        if busy.heads() > before {
            break t;
        }
        t.join().unwrap();
    };
    // Every pick compares `busy` (1 in flight) with an idle one, and loses.
    let bodies = bodies_in_turn(lb.addr, 30);
    assert!(bodies.iter().all(|b| b != "busy"), "{bodies:?}");
    busy.release();
    assert_eq!(held.join().unwrap(), (200, "busy".to_string()));
}

#[test]
fn ip_hash_keeps_a_client_on_one_backend() {
    let backends = [
        Backend::hello("a"),
        Backend::hello("b"),
        Backend::hello("c"),
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    let lb = start_balancer(&refs, &["--strategy", "ip-hash"]);
    let bodies: BTreeSet<String> = (0..10).map(|_| get(lb.addr, "/").1).collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
}

/// Sends the request for key number `k` to the balancer; returns the body.
type KeyedGet = fn(SocketAddr, usize) -> String;

#[test]
fn hash_keeps_each_key_on_one_backend_and_spreads_the_keys() {
    let backends = [
        Backend::hello("a"),
        Backend::hello("b"),
        Backend::hello("c"),
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    let cases: [(&[&str], KeyedGet); 3] = [
        (&["--hash-key", "header:X-User"], |lb, k| {
            get_keyed(lb, "/", "X-User", &format!("user{k}"))
        }),
        (&["--hash-key", "cookie:sid"], |lb, k| {
            get_keyed(lb, "/", "Cookie", &format!("theme=dark; sid=s{k}"))
        }),
        (&["--hash-key", "path"], |lb, k| {
            get_keyed(lb, &format!("/item/{k}?v={}", k % 3), "X-Any", "1")
        }),
    ];
    for (flags, request) in cases {
        let mut all = vec!["--strategy", "hash"];
        all.extend_from_slice(flags);
        let lb = start_balancer(&refs, &all);
        let mut seen: BTreeMap<usize, String> = BTreeMap::new();
        for round in 0..2 {
            for k in 0..30 {
                let body = request(lb.addr, k);
                if round == 0 {
                    seen.insert(k, body);
                } else {
                    assert_eq!(seen[&k], body, "{flags:?}: key {k} moved");
                }
            }
        }
        let used: BTreeSet<&String> = seen.values().collect();
        assert_eq!(used.len(), 3, "{flags:?}: 30 keys over {used:?}");
    }
}

#[test]
fn two_instances_send_each_key_to_the_same_backend() {
    let backends = [
        Backend::hello("a"),
        Backend::hello("b"),
        Backend::hello("c"),
        Backend::hello("d"),
    ];
    let refs: Vec<&Backend> = backends.iter().collect();
    let mut reversed = refs.clone();
    reversed.reverse();
    let hash = ["--strategy", "hash", "--hash-key", "header:X-User"];
    // Nothing shared, and the second lists the backends the other way round.
    let (one, two) = (
        start_balancer(&refs, &hash),
        start_balancer(&reversed, &hash),
    );
    for k in 0..40 {
        let user = format!("user{k}");
        assert_eq!(
            get_keyed(one.addr, "/", "X-User", &user),
            get_keyed(two.addr, "/", "X-User", &user),
            "{user}"
        );
    }
}

#[test]
fn a_hot_key_spills_over_under_a_balance_factor() {
    let backends = [Backend::held("a"), Backend::held("b"), Backend::held("c")];
    let refs: Vec<&Backend> = backends.iter().collect();
    let flags = [
        "--strategy",
        "hash",
        "--hash-key",
        "path",
        "--hash-balance-factor",
        "1.25",
        "--workers",
        "8",
    ];
    let lb = start_balancer(&refs, &flags);
    let heads = || backends.iter().map(Backend::heads).collect::<Vec<_>>();
    let mut held = Vec::new();
    for m in 1..=6 {
        let addr = lb.addr;
        held.push(thread::spawn(move || get(addr, "/hot")));
        wait_until("the request to reach a backend", || {
            heads().iter().sum::<usize>() == m
        });
    }
    // 6 in flight over 3 backends: at most ceil(1.25 × 6 / 3) = 3 each.
    let loads = heads();
    assert!(loads.iter().all(|&l| l <= 3), "{loads:?}");
    assert!(loads.iter().filter(|&&l| l > 0).count() >= 2, "{loads:?}");
    for b in &backends {
        b.release();
    }
    for t in held {
        assert_eq!(t.join().unwrap().0, 200);
    }
}

#[test]
fn help_names_every_strategy() {
    let (code, out, err) = run_cli(&["--help"]);
    assert_eq!(code, 0, "{err}");
    for name in NAMES.iter().chain(&["--hash-key", "--hash-balance-factor"]) {
        assert!(out.contains(name), "--help does not mention {name}:\n{out}");
    }
}

#[test]
fn hash_flags_without_the_hash_strategy_are_usage_errors() {
    for (args, flag) in [
        (&["--hash-key", "path"][..], "--hash-key"),
        (
            &["--strategy", "least-conn", "--hash-balance-factor", "1.5"],
            "--hash-balance-factor",
        ),
        (
            &["--strategy", "hash", "--hash-balance-factor", "0.5"],
            "--hash-balance-factor",
        ),
        (&["--strategy", "hash", "--hash-key", "url"], "--hash-key"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (code, _out, err) = run_cli(&all);
        assert_eq!(code, 2, "{all:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{all:?}: {err}");
        assert!(err.contains(flag), "{all:?}: {err}");
    }
}
