//! The binary as a child process, its output collected line by line; and other programs
//! (curl, openssl) run the same way where installed.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_roundhouse");

/// A port that was free a moment ago (bound to port 0, then released).
pub fn reserve_port() -> u16 {
    dead_addr().port()
}

/// Polls until something accepts connections on `addr`.
pub fn wait_accepting(addr: SocketAddr) {
    wait_until(&format!("something accepting on {addr}"), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    });
}

/// Runs the binary to completion (killed after [`PATIENCE`]): exit code, stdout, stderr.
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    run_to_end(Proc::spawn(Command::new(BIN).args(args)))
}

/// Runs another program (curl, openssl) to completion, killed after [`PATIENCE`]: exit
/// code, stdout, stderr; None if it is not installed (under CI, which installs them,
/// that fails the test instead of skipping its part).
pub fn run_tool(cmd: &mut Command) -> Option<(i32, String, String)> {
    match Proc::try_spawn(cmd) {
        Ok(p) => Some(run_to_end(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{cmd:?} is not installed, and CI must run every test whole"
            );
            None
        }
        Err(e) => panic!("spawn {cmd:?}: {e}"),
    }
}

fn run_to_end(mut p: Proc) -> (i32, String, String) {
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} did not exit; stdout:\n{}\nstderr:\n{}",
            p.program,
            p.stdout(),
            p.stderr()
        );
        thread::sleep(Duration::from_millis(5));
    };
    // The output threads finish once the pipes close.
    wait_until("the child's output to end", || p.output_done());
    (status.code().unwrap_or(-1), p.stdout(), p.stderr())
}

/// A child process whose stdout and stderr are collected by two threads. Killed on drop.
pub struct Proc {
    pub child: Child,
    /// The command line, for messages.
    program: String,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    done: Arc<AtomicUsize>,
}

impl Proc {
    /// Waits for the child to exit, [`PATIENCE`] at most; its exit code.
    pub fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the balancer did not exit; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc::try_spawn(cmd).expect("spawn roundhouse")
    }

    pub fn try_spawn(cmd: &mut Command) -> std::io::Result<Proc> {
        let program = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let done = Arc::new(AtomicUsize::new(0));
        fn collect(
            src: impl Read + Send + 'static,
            into: Arc<Mutex<String>>,
            done: Arc<AtomicUsize>,
        ) {
            thread::spawn(move || {
                let mut r = BufReader::new(src);
                let mut line = Vec::new();
                while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    into.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&line));
                    line.clear();
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        collect(child.stdout.take().unwrap(), out.clone(), done.clone());
        collect(child.stderr.take().unwrap(), err.clone(), done.clone());
        Ok(Proc {
            child,
            program,
            out,
            err,
            done,
        })
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }
    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }
    fn output_done(&self) -> bool {
        self.done.load(Ordering::SeqCst) == 2
    }

    /// Polls until stdout has a line for which `pred` holds; returns that line.
    pub fn wait_for_stdout_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut found = None;
        let deadline = Instant::now() + PATIENCE;
        while found.is_none() {
            found = self.stdout().lines().find(|l| pred(l)).map(str::to_string);
            if found.is_none() {
                assert!(
                    Instant::now() < deadline,
                    "no stdout line: {what}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
        found.unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
