//! Running the balancer as an operator does: a config file checked with `--check`, a
//! reload on SIGHUP under load, a graceful stop on SIGTERM. All against the binary as a
//! child process, signalled by its PID.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use crate::support::*;

/// A config file of one test's own, in the temporary directory; removed on drop.
struct ConfigFile(PathBuf);

impl std::ops::Deref for ConfigFile {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `text` to a new config file named after `name`.
fn config_file(name: &str, text: &str) -> ConfigFile {
    let path = std::env::temp_dir().join(format!(
        "roundhouse-test-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write the config file");
    ConfigFile(path)
}

/// A config file's text: listen on `listen`, 2 workers, no access log, these backends.
fn config_text(listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut text = format!("listen = \"{listen}\"\nworkers = 2\nlog = \"off\"\n");
    for b in backends {
        text.push_str(&format!("\n[[backend]]\naddress = \"{b}\"\n"));
    }
    text
}

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", reserve_port()).parse().unwrap()
}

/// Starts the binary with `args` and waits until it accepts on `addr`.
fn spawn(addr: SocketAddr, args: &[&str]) -> Proc {
    let p = Proc::spawn(Command::new(BIN).args(args));
    wait_accepting(addr);
    p
}

fn signal(p: &Proc, signal: Signal) {
    kill_process(Pid::from_child(&p.child), signal).expect("signal the balancer");
}

fn wait_for_stderr(p: &Proc, what: &str) {
    wait_until(&format!("stderr to say {what:?}"), || {
        p.stderr().contains(what)
    });
}

/// One GET on a fresh connection; None when anything goes wrong.
fn try_get(addr: SocketAddr) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(PATIENCE)).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let r = ResponseReader::new(s).read_response(false).ok()??;
    Some((r.status, r.body_str()))
}

#[test]
fn check_accepts_a_valid_file() {
    let path = config_file(
        "valid",
        "listen = \"127.0.0.1:0\"\nstrategy = \"least-conn\"\nconnect_timeout = \"1s\"\n\
         \n[[backend]]\naddress = \"127.0.0.1:9\"\nweight = 2\nbackup = false\n",
    );
    let (code, out, err) = run_cli(&["--check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("valid"), "stdout: {out}");
    assert!(out.contains("least-conn"), "stdout: {out}");
}

#[test]
fn check_lists_every_problem_with_its_line() {
    let path = config_file(
        "problems",
        "listen = \"127.0.0.1:0\"\n\
         strategy = \"nope\"\n\
         workers = 0\n\
         frobnicate = true\n\
         \n\
         [[backend]]\n\
         address = \"nohost\"\n",
    );
    let name = path.display().to_string();
    let (code, out, err) = run_cli(&["--check", "--config", &name]);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    for expected in [
        format!("{name}:2: strategy: unknown strategy 'nope'"),
        format!("{name}:3: workers: must be at least 1"),
        format!("{name}:4: unknown key `frobnicate`"),
        format!("{name}:7: backend: 'nohost' is not host:port"),
    ] {
        assert!(err.contains(&expected), "no {expected:?} in stderr:\n{err}");
    }
    assert_eq!(err.lines().count(), 4, "one line per problem:\n{err}");
}

#[test]
fn check_reports_a_syntax_error_with_its_line() {
    let path = config_file("syntax", "listen = \"127.0.0.1:0\"\ntimeout = \n");
    let name = path.display().to_string();
    let (code, _out, err) = run_cli(&["--check", "--config", &name]);
    assert_eq!(code, 2, "stderr: {err}");
    assert!(err.contains(&format!("{name}:2: ")), "stderr: {err}");
}

#[test]
fn a_bad_grace_or_a_missing_file_is_a_usage_error() {
    for (args, named) in [
        (&["--grace", "soon"][..], "--grace: 'soon'"),
        (
            &["--config", "/nonexistent/roundhouse.toml"],
            "/nonexistent/roundhouse.toml",
        ),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (code, _out, err) = run_cli(&all);
        assert_eq!(code, 2, "{all:?}: stderr {err}");
        assert_eq!(err.lines().count(), 1, "{all:?}: {err}");
        assert!(err.contains(named), "{all:?}: {err}");
    }
}

#[test]
fn file_values_are_used_and_a_typed_flag_wins() {
    let (a, b) = (Backend::hello("a"), Backend::hello("b"));
    let addr = free_addr();
    let file = config_file("precedence", &config_text(addr, &[a.addr]));
    let path = file.to_str().unwrap();
    {
        // The file alone: its listen address, its backend.
        let _p = spawn(addr, &["--config", path]);
        assert_eq!(try_get(addr), Some((200, "a".to_string())));
    }
    let backend = b.addr.to_string();
    let _p = spawn(addr, &["--config", path, "--backend", &backend]);
    assert_eq!(try_get(addr), Some((200, "b".to_string())));
}

#[test]
fn reload_swaps_backends_without_a_failed_request() {
    let (a, b) = (Backend::hello("a"), Backend::hello("b"));
    let addr = free_addr();
    let path = config_file("reload", &config_text(addr, &[a.addr]));
    let p = spawn(addr, &["--config", path.to_str().unwrap()]);

    // Two clients in a loop: one opening a connection per request, one keeping its
    // connection alive across the reload. Every answer is kept: a body, or None.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = [false, true]
        .into_iter()
        .map(|keep_alive| {
            let (stop, answers, sent) = (stop.clone(), answers.clone(), sent.clone());
            thread::spawn(move || {
                let mut conn = keep_alive.then(|| Client::connect(addr));
                for _ in 0..20_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let answer = match &mut conn {
                        None => try_get(addr).filter(|(s, _)| *s == 200).map(|(_, b)| b),
                        Some(c) => {
                            c.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                            c.try_response(false)
                                .ok()
                                .flatten()
                                .filter(|r| r.status == 200)
                                .map(|r| r.body_str())
                        }
                    };
                    let failed = answer.is_none();
                    answers.lock().unwrap().push(answer);
                    sent.fetch_add(1, Ordering::SeqCst);
                    if failed && keep_alive {
                        break; // the connection cannot be trusted any more
                    }
                }
            })
        })
        .collect();
    let seen = |body: &str| {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.as_deref() == Some(body))
            .count()
    };
    wait_until("requests to reach a", || seen("a") >= 200);

    std::fs::write(&*path, config_text(addr, &[b.addr])).unwrap();
    signal(&p, Signal::HUP);
    wait_until("requests to reach b after the reload", || seen("b") >= 200);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }

    let answers = answers.lock().unwrap();
    let failed = answers.iter().filter(|a| a.is_none()).count();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed; stderr:\n{}",
        answers.len(),
        p.stderr()
    );
    // Once b answered, a never did again: the swap is whole.
    let first_b = answers
        .iter()
        .position(|a| a.as_deref() == Some("b"))
        .unwrap();
    let late_a = answers[first_b..]
        .iter()
        .filter(|a| a.as_deref() == Some("a"))
        .count();
    assert!(
        late_a <= 2,
        "{late_a} answers from a after the first from b"
    );
    assert!(p.stderr().contains("reloaded"), "stderr:\n{}", p.stderr());
}

#[test]
fn an_invalid_file_on_reload_keeps_the_running_config() {
    let a = Backend::hello("a");
    let addr = free_addr();
    let path = config_file("invalid-reload", &config_text(addr, &[a.addr]));
    let mut p = spawn(addr, &["--config", path.to_str().unwrap()]);
    assert_eq!(try_get(addr), Some((200, "a".to_string())));

    std::fs::write(&*path, "workers = 2\n[[backend]]\naddress = \"nohost\"\n").unwrap();
    signal(&p, Signal::HUP);
    wait_for_stderr(&p, "rejected");
    assert!(
        p.stderr().contains(":3: backend: 'nohost'"),
        "stderr:\n{}",
        p.stderr()
    );
    assert_eq!(try_get(addr), Some((200, "a".to_string())));
    assert!(p.child.try_wait().unwrap().is_none(), "the balancer exited");
}

#[test]
fn sigterm_finishes_a_request_in_flight_and_exits_0() {
    let held = Backend::held("slow answer");
    let addr = free_addr();
    let backend = held.addr.to_string();
    let listen = addr.to_string();
    let mut p = spawn(
        addr,
        &["--listen", &listen, "--backend", &backend, "--workers", "2"],
    );
    let mut client = Client::connect(addr);
    client.send("GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
    wait_until("the backend to hold the request", || held.heads() == 1);

    signal(&p, Signal::TERM);
    wait_for_stderr(&p, "stopped accepting");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "a new connection was accepted after SIGTERM"
    );
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    held.release();
    let r = client.response();
    assert_eq!((r.status, r.body_str().as_str()), (200, "slow answer"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(p.exit_code(), 0, "stderr:\n{}", p.stderr());
}

#[test]
fn idle_keep_alive_connections_are_closed_at_shutdown() {
    let backend = Backend::hello("ok");
    let addr = free_addr();
    let (listen, backend_addr) = (addr.to_string(), backend.addr.to_string());
    // A grace longer than the test's patience: only closing idle connections ends it.
    let mut p = spawn(
        addr,
        &[
            "--listen",
            &listen,
            "--backend",
            &backend_addr,
            "--grace",
            "5m",
        ],
    );
    let mut client = Client::connect(addr);
    let r = client.get("/");
    assert_eq!((r.status, r.header("connection")), (200, None));

    signal(&p, Signal::TERM);
    let (rest, ending) = client.rest();
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
    assert!(ending.is_closed(), "the idle connection was left open");
    assert_eq!(p.exit_code(), 0, "stderr:\n{}", p.stderr());
}

/// Whoever read our output may be gone first (a terminal's Ctrl-C reaches the pipe's
/// reader too): a failed write to stdout or stderr must not take down the thread that
/// writes it (main, with the startup lines; the signal thread), so the balancer starts
/// and SIGTERM still stops it.
#[test]
fn sigterm_stops_the_balancer_when_nobody_reads_its_output_any_more() {
    /// The child, ended by its PID if the test fails before it exits.
    struct Started(std::process::Child);
    impl Drop for Started {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let listen = format!("127.0.0.1:{}", reserve_port());
    let mut child = Started(
        Command::new(BIN)
            .args(["--listen", &listen, "--backend", "127.0.0.1:9"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the balancer"),
    );
    // Gone before the startup lines, even: they must not stop it either.
    drop(child.0.stdout.take());
    drop(child.0.stderr.take());
    wait_accepting(listen.parse().unwrap());
    kill_process(Pid::from_child(&child.0), Signal::TERM).unwrap();
    let mut exited = None;
    wait_until("the balancer to exit on SIGTERM", || {
        exited = child.0.try_wait().unwrap();
        exited.is_some()
    });
    assert_eq!(exited.and_then(|s| s.code()), Some(0));
}
