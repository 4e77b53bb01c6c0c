//! `make flood`: the flood tool. It attacks a running balancer on loopback with clients
//! that cost the attacker almost nothing (connections that stay silent, heads and bodies
//! sent a byte a second, answers read a KiB a second, resets, connect storms, unread
//! pipelines, oversized heads) and, while each attack holds, sends normal requests and
//! counts how many get through. It prints one Markdown table per target: answered
//! requests, their p50 and max latency, the balancer's peak threads and memory, and
//! whether it answers normally again once the attack is gone.
//!
//! The files: `attack.rs` runs one attack from start to finish (start reading there);
//! `slow.rs` drives the held connections, `burst.rs` the short exchanges, `probe.rs`
//! sends the normal requests, `sample.rs` reads the balancer's `/proc` figures, and
//! `backend.rs` is the backend mode (`--serve-backend`) that gives every balancer the
//! same `/` and `/1m` behind it.
//!
//! Loopback only: the target and the backend addresses must be loopback addresses.
//! Every loop is bounded in count and in time; at scale 1 a run of all attacks against
//! one target takes about two to three minutes. `scripts/flood.sh` runs it against
//! roundhouse, nginx and HAProxy; by hand:
//!
//! ```text
//! target/release/examples/flood --serve-backend 127.0.0.1:18081 --serve-backend 127.0.0.1:18082 &
//! target/release/roundhouse --listen 127.0.0.1:18000 --backend 127.0.0.1:18081 --backend 127.0.0.1:18082 --log off &
//! target/release/examples/flood --target 127.0.0.1:18000 --pid $! --scale 0.2
//! ```

mod attack;
mod backend;
mod burst;
mod probe;
mod sample;
mod slow;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use attack::{Attack, Plan, Row};

/// Floods a balancer on loopback with silent, slow and abrupt clients while sending it
/// normal requests, and prints what got through.
#[derive(argh::FromArgs)]
struct Args {
    /// the balancer under attack, a loopback host:port (default: 127.0.0.1:8000)
    #[argh(option, default = "String::from(\"127.0.0.1:8000\")")]
    target: String,

    /// a process of the balancer whose threads and resident memory are sampled during
    /// each attack; repeat it for several processes, whose figures are summed (default:
    /// none, and the two columns stay empty)
    #[argh(option)]
    pid: Vec<u32>,

    /// the attacks to run, comma-separated, from: silent, slowloris, slow-upload,
    /// slow-read, reset, connect-close, pipeline, big-heads (default: all, in that order)
    #[argh(option)]
    attacks: Option<String>,

    /// multiplies every attack's size, e.g. 0.2 for a quick run (default: 1, at most 2)
    #[argh(option, default = "1.0")]
    scale: f64,

    /// normal requests sent during each attack (default: 50, at most 1000)
    #[argh(option, default = "50")]
    normal: usize,

    /// time allowed for one normal request's whole exchange (default: 2s)
    #[argh(option, default = "String::from(\"2s\")")]
    limit: String,

    /// the name in the table's heading (default: the target address)
    #[argh(option)]
    label: Option<String>,

    /// do not flood: serve `/` (hello world!) and `/1m` (1 MiB) on this loopback address,
    /// as a backend for the balancer; repeat it for several addresses
    #[argh(option)]
    serve_backend: Vec<String>,
}

/// The largest `--scale`: twice the attack sizes of the issue's table is already more
/// than the open-files limit of a default machine allows.
const MAX_SCALE: f64 = 2.0;

/// The most `--normal` requests per attack, so that a run stays bounded in time.
const MAX_NORMAL: usize = 1000;

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if !args.serve_backend.is_empty() {
        return match backend_addrs(&args.serve_backend).and_then(|addrs| backend::serve(&addrs)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("flood: {err}");
                ExitCode::from(2)
            }
        };
    }
    let (plan, attacks, label) = match validate(&args) {
        Ok(valid) => valid,
        Err(err) => {
            eprintln!("flood: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = attack::check_target(&plan) {
        eprintln!("flood: {err}");
        return ExitCode::FAILURE;
    }
    let rows: Vec<Row> = attacks.iter().map(|&a| attack::run(a, &plan)).collect();
    print!("{}", table(&label, &plan, &rows));
    ExitCode::SUCCESS
}

/// Turns the flags as typed into a plan that cannot be out of bounds, the attacks to
/// run, and the heading; the error names the flag and the value.
fn validate(args: &Args) -> Result<(Plan, Vec<Attack>, String), String> {
    let target = loopback(&args.target).map_err(|why| format!("--target: {why}"))?;
    if !(args.scale > 0.0 && args.scale <= MAX_SCALE) {
        return Err(format!(
            "--scale: '{}' is not in (0, {MAX_SCALE}]",
            args.scale
        ));
    }
    if !(1..=MAX_NORMAL).contains(&args.normal) {
        return Err(format!(
            "--normal: '{}' is not between 1 and {MAX_NORMAL}",
            args.normal
        ));
    }
    let limit = humantime::parse_duration(&args.limit)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(30))
        .ok_or_else(|| {
            format!(
                "--limit: '{}' is not a duration between 1ms and 30s (examples: 500ms, 2s)",
                args.limit
            )
        })?;
    let attacks = match &args.attacks {
        None => Attack::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| {
                Attack::named(name.trim())
                    .ok_or_else(|| format!("--attacks: '{}' is not an attack", name.trim()))
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let plan = Plan {
        target,
        pids: args.pid.clone(),
        scale: args.scale,
        normal: args.normal,
        limit,
    };
    let label = args.label.clone().unwrap_or_else(|| target.to_string());
    Ok((plan, attacks, label))
}

fn backend_addrs(typed: &[String]) -> Result<Vec<SocketAddr>, String> {
    typed
        .iter()
        .map(|addr| loopback(addr).map_err(|why| format!("--serve-backend: {why}")))
        .collect()
}

/// Parses a host:port that must be on loopback: this tool never floods anything else.
fn loopback(typed: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = typed
        .parse()
        .map_err(|_| format!("'{typed}' is not ip:port (example: 127.0.0.1:8000)"))?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!("'{typed}' is not a loopback address"))
    }
}

/// The Markdown table of one target's rows.
fn table(label: &str, plan: &Plan, rows: &[Row]) -> String {
    let n = plan.normal;
    let mut out = format!(
        "\n### {label}\n\n| attack | answered/{n} | p50 ms | max ms | peak threads | peak RSS MiB | recovered |\n|---|---|--:|--:|--:|--:|---|\n"
    );
    for row in rows {
        out.push_str(&row.markdown(n));
        out.push('\n');
    }
    out
}
