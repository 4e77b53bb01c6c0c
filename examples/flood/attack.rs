//! An attack, from start to finish; this is the tool's main path, start reading here.
//! `run` opens the attack's connections (`slow.rs` for the held ones, `burst.rs` for
//! the rest) with the sampler (`sample.rs`) watching the balancer, waits until they are
//! open, sends the normal requests (`probe.rs`) and tallies them, closes the attack,
//! waits, and checks that the balancer answers normally again. The result is a [`Row`]
//! of the table `main.rs` prints.

use std::io;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use crate::burst::{self, Burst};
use crate::probe::{self, Tally};
use crate::sample::{self, Peaks, Sampler};
use crate::slow::{Held, Kind};

/// The attacks, in the order of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    Silent,
    Slowloris,
    SlowUpload,
    SlowRead,
    Reset,
    ConnectClose,
    Pipeline,
    BigHeads,
}

/// Normal requests in flight at once during an attack; 50 of them take at most ten
/// limits.
const PARALLEL: usize = 5;

/// Time given to the attack between its last connection opening and the first normal
/// request: long enough for each held connection to send its first bytes.
const SETTLE: Duration = Duration::from_secs(2);

/// Held connections opening: how long the count may stand still before we go on with
/// what is open (the balancer stopped accepting, or sheds them), and the longest wait.
const OPEN_STALL: Duration = Duration::from_secs(2);
const OPEN_LONGEST: Duration = Duration::from_secs(15);

/// After the attack is closed: the pause, then the requests that must all be answered
/// for "recovered".
const RECOVERY_WAIT: Duration = Duration::from_secs(5);
const RECOVERY_PROBES: usize = 5;

/// Pipelined GETs per connection, and the size of an oversized head.
const PIPELINED: usize = 500;
const BIG_HEAD: usize = 30_000;

/// How the attacks are run against one target.
pub struct Plan {
    pub target: SocketAddr,
    /// The balancer's processes, sampled during each attack (may be empty).
    pub pids: Vec<u32>,
    /// Multiplies every attack's size.
    pub scale: f64,
    /// Normal requests per attack.
    pub normal: usize,
    /// Time for one normal request's whole exchange.
    pub limit: Duration,
}

/// One line of the table.
pub struct Row {
    /// What was sent, with how much of it got through: "3000 connections ... (3000 open)".
    attack: String,
    tally: Tally,
    peaks: Peaks,
    recovered: Recovery,
    /// For the attacks judged pass/fail: whether this one passed.
    verdict: Option<bool>,
}

/// Whether the balancer answered normally once the attack was gone.
enum Recovery {
    Yes,
    /// Fewer than all recovery probes answered.
    No(usize),
    /// A sampled process is gone.
    Exited,
}

impl Attack {
    pub const ALL: [Attack; 8] = [
        Attack::Silent,
        Attack::Slowloris,
        Attack::SlowUpload,
        Attack::SlowRead,
        Attack::Reset,
        Attack::ConnectClose,
        Attack::Pipeline,
        Attack::BigHeads,
    ];

    pub fn named(name: &str) -> Option<Attack> {
        Attack::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Attack::Silent => "silent",
            Attack::Slowloris => "slowloris",
            Attack::SlowUpload => "slow-upload",
            Attack::SlowRead => "slow-read",
            Attack::Reset => "reset",
            Attack::ConnectClose => "connect-close",
            Attack::Pipeline => "pipeline",
            Attack::BigHeads => "big-heads",
        }
    }

    /// Connections (or exchanges) at scale 1: the table.
    fn size(self) -> usize {
        match self {
            Attack::Silent => 3000,
            Attack::Slowloris => 1500,
            Attack::SlowUpload | Attack::SlowRead => 800,
            Attack::Reset => 5000,
            Attack::ConnectClose => 20_000,
            Attack::Pipeline => 200,
            Attack::BigHeads => 500,
        }
    }

    fn describe(self, n: usize) -> String {
        match self {
            Attack::Silent => format!("{n} connections that never send a byte"),
            Attack::Slowloris => format!("{n} slowloris connections (a head byte per second)"),
            Attack::SlowUpload => {
                format!("{n} uploads with `Content-Length: 1000000`, a body byte per second")
            }
            Attack::SlowRead => format!("{n} readers of a 1 MiB answer at 1 KiB/s"),
            Attack::Reset => format!("{n} requests whose client resets right after sending"),
            Attack::ConnectClose => format!("{n} connect+close"),
            Attack::Pipeline => format!("{n} x {PIPELINED} pipelined GETs, never read"),
            Attack::BigHeads => format!("{n} x {} KB heads", BIG_HEAD / 1000),
        }
    }

    fn held(self) -> Option<Kind> {
        match self {
            Attack::Silent => Some(Kind::Silent),
            Attack::Slowloris => Some(Kind::Slowloris),
            Attack::SlowUpload => Some(Kind::SlowUpload),
            Attack::SlowRead => Some(Kind::SlowRead),
            _ => None,
        }
    }
}

/// What is holding the balancer while the probes go; released after them.
enum Hold {
    Held(Held),
    Burst(Burst),
    Streams(Vec<std::net::TcpStream>),
}

/// Refuses to start unless the target answers a normal request: a flood of something
/// that does not work measures nothing.
pub fn check_target(plan: &Plan) -> Result<(), String> {
    probe::get(plan.target, plan.limit)
        .map(drop)
        .map_err(|why| format!("{} does not answer GET / with 200 ({why})", plan.target))
}

/// Runs one attack against the plan's target: the balancer's main path under this flood.
pub fn run(attack: Attack, plan: &Plan) -> Row {
    let n = ((attack.size() as f64 * plan.scale).round() as usize).max(1);
    let name = attack.name();
    let mut what = attack.describe(n);
    eprintln!("flood: {name}: {what}");

    let sampler = Sampler::start(&plan.pids);
    let (hold, note) = match start(attack, plan.target, n) {
        Ok(started) => started,
        Err(err) => (None, format!("could not start: {err}")),
    };
    eprintln!("flood: {name}: {note}; {} normal requests", plan.normal);
    let tally = probe::batch(plan.target, plan.normal, PARALLEL, plan.limit);
    let note = match hold {
        Some(Hold::Held(held)) => match held.close() {
            0 => note,
            reopened => format!("{note}, {reopened} reopened"),
        },
        Some(Hold::Burst(burst)) => burst.join().to_string(),
        Some(Hold::Streams(streams)) => {
            drop(streams);
            note
        }
        None => note,
    };
    let peaks = sampler.finish();
    what.push_str(&format!(" ({note})"));

    thread::sleep(RECOVERY_WAIT);
    let recovered = if !sample::alive(&plan.pids) {
        Recovery::Exited
    } else {
        let answered = (0..RECOVERY_PROBES)
            .filter(|_| probe::get(plan.target, plan.limit).is_ok())
            .count();
        if answered == RECOVERY_PROBES {
            Recovery::Yes
        } else {
            Recovery::No(answered)
        }
    };
    let verdict = matches!(
        attack,
        Attack::ConnectClose | Attack::Pipeline | Attack::BigHeads
    )
    .then(|| {
        // The bar: at most one normal request in 50 lost, and alive after.
        tally.answered() * 50 >= plan.normal * 49 && matches!(recovered, Recovery::Yes)
    });
    let row = Row {
        attack: what,
        tally,
        peaks,
        recovered,
        verdict,
    };
    eprintln!("flood: {name}: {}", row.markdown(plan.normal));
    row
}

/// Opens the attack; returns what holds it and a note on how far it got.
fn start(attack: Attack, target: SocketAddr, n: usize) -> io::Result<(Option<Hold>, String)> {
    if let Some(kind) = attack.held() {
        let held = Held::start(kind, target, n)?;
        held.wait_open(OPEN_STALL, OPEN_LONGEST);
        thread::sleep(SETTLE);
        // Counted as the probes start: some may have been shed since they opened.
        let note = format!("{} open", held.open());
        return Ok((Some(Hold::Held(held)), note));
    }
    let hold = match attack {
        Attack::Reset | Attack::ConnectClose => {
            let burst = if attack == Attack::Reset {
                Burst::resets(target, n)?
            } else {
                Burst::connect_close(target, n)?
            };
            // The probes go while the burst is in full swing, not before it.
            burst.wait_started(n / 10, OPEN_LONGEST);
            return Ok((Some(Hold::Burst(burst)), String::from("under way")));
        }
        Attack::Pipeline => burst::pipelines(target, n, PIPELINED),
        _ => burst::big_heads(target, n, BIG_HEAD),
    };
    let (streams, sent) = hold;
    thread::sleep(SETTLE);
    Ok((Some(Hold::Streams(streams)), sent.to_string()))
}

impl Row {
    /// The row as a Markdown table line, for `normal` requests per attack.
    pub fn markdown(&self, normal: usize) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
        };
        let mut answered = format!("{}/{normal}", self.tally.answered());
        let failures = self.tally.failures();
        if !failures.is_empty() {
            answered.push_str(&format!(" ({failures})"));
        }
        if let Some(pass) = self.verdict {
            answered.push_str(if pass { ", pass" } else { ", FAIL" });
        }
        let threads = self
            .peaks
            .threads
            .map_or_else(|| "-".into(), |t| t.to_string());
        let rss = self
            .peaks
            .rss_kib
            .map_or_else(|| "-".into(), |k| format!("{:.1}", k as f64 / 1024.0));
        let recovered = match self.recovered {
            Recovery::Yes => String::from("yes"),
            Recovery::No(answered) => format!("no ({answered}/{RECOVERY_PROBES})"),
            Recovery::Exited => String::from("no (exited)"),
        };
        format!(
            "| {} | {answered} | {} | {} | {threads} | {rss} | {recovered} |",
            self.attack,
            ms(self.tally.p50()),
            ms(self.tally.max()),
        )
    }
}
