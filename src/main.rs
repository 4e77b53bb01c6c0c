//! The `roundhouse` command: flags and config file → validated config → running
//! balancer, until SIGTERM or SIGINT. A startup mistake prints one line per problem
//! (naming the flag, or the file and line) and exits 2; `--check` stops after the
//! validation, with exit 0 when there was no problem.

use std::net::SocketAddr;
use std::process::ExitCode;

use roundhouse::config_file::Source;
use roundhouse::{cli, signals};

/// A line on stdout that never panics: the startup lines go out while whoever reads
/// them may already be gone, and that must not stop the balancer.
macro_rules! out {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout().lock(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let typed: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = typed.iter().map(String::as_str).collect();
    let args = match cli::parse(&args) {
        Ok(args) => args,
        Err(exit) if exit.code == 0 => {
            print!("{}", exit.text);
            return ExitCode::SUCCESS;
        }
        Err(exit) => {
            roundhouse::say!("roundhouse: {}", exit.text);
            return ExitCode::from(2);
        }
    };
    let check = args.check;
    let source = Source::new(typed, &args);
    let config = match source.load() {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                roundhouse::say!("roundhouse: {problem}");
            }
            return ExitCode::from(2);
        }
    };
    let backends: Vec<String> = config
        .backends
        .iter()
        .map(|b| {
            let addr = match &b.https {
                Some(authority) => format!("https://{authority} ({})", b.addr),
                None => b.addr.to_string(),
            };
            match (b.weight.get(), b.backup) {
                (1, false) => addr,
                (1, true) => format!("{addr} (backup)"),
                (w, false) => format!("{addr} (weight {w})"),
                (w, true) => format!("{addr} (weight {w}, backup)"),
            }
        })
        .collect();
    for warning in config.listener_tls.warnings() {
        roundhouse::say!("roundhouse: warning: {warning}");
    }
    if config.backend_tls.insecure {
        roundhouse::say!(
            "roundhouse: warning: --backend-insecure: the certificates of https backends are \
             not checked, so anyone on the path to them can pose as them"
        );
    }
    if check {
        let what = match source.file() {
            Some(file) => format!("{} and the flags", file.display()),
            None => "the flags".into(),
        };
        out!(
            "roundhouse: {what}: the configuration is valid: listen {}, {} over {}",
            listeners(&config.listen, &config.tls_listen),
            config.strategy.name(),
            backends.join(", ")
        );
        return ExitCode::SUCCESS;
    }
    // Before the port opens: a signal sent as soon as it is open must not kill us.
    let caught = signals::catch();
    let running = match roundhouse::start(config.clone()) {
        Ok(running) => running,
        Err(err) => {
            roundhouse::say!(
                "roundhouse: cannot listen on {}: {err}",
                listeners(&config.listen, &config.tls_listen)
            );
            return ExitCode::from(2);
        }
    };
    // Each listener with the port it got (port 0 picks one).
    out!(
        "roundhouse listening on {}, {} over {}{}",
        listeners(&running.plain_addrs(), &running.tls_addrs()),
        config.strategy.name(),
        backends.join(", "),
        if config.default_backends {
            " (the default backends; use --backend to choose)"
        } else {
            ""
        },
    );
    if let Some(admin) = running.admin_addr() {
        let tls = config.admin.as_ref().is_some_and(|a| a.tls);
        let scheme = if tls { "https" } else { "http" };
        out!("admin interface on {scheme}://{admin}/ (metrics at /metrics)");
    }
    if let Err(err) = caught.and_then(|c| {
        c.handle(
            source,
            running.control(),
            running.certificates(),
            running.discovery(),
            running.shutdown(),
        )
    }) {
        // Caught signals nobody handles would leave only SIGKILL to stop us.
        roundhouse::say!("roundhouse: cannot watch signals: {err}");
        return ExitCode::from(2);
    }
    running.wait();
    ExitCode::SUCCESS
}

/// Every listener as a URL base, comma separated: `http://ADDR` plain, `https://ADDR` TLS.
fn listeners(plain: &[SocketAddr], tls: &[SocketAddr]) -> String {
    let plain = plain.iter().map(|addr| format!("http://{addr}"));
    let tls = tls.iter().map(|addr| format!("https://{addr}"));
    plain.chain(tls).collect::<Vec<_>>().join(", ")
}
