//! The process's signals: SIGHUP reloads the config file (`reload.rs`), starts the
//! resolver thread if the file brings its first backend name (`discovery.rs`), and then
//! reloads the TLS listeners' certificates (`server::Certificates`); SIGTERM and SIGINT
//! stop the balancer gracefully (`shutdown.rs`), after `--drain-delay`; a second SIGTERM
//! or SIGINT stops it at once, during the delay too. signal-hook turns signals into an
//! iterator read on a thread of our own,
//! so none of our code runs inside a signal handler. `main.rs` starts it.

use std::io;
use std::sync::Arc;
use std::thread;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config_file::Source;
use crate::discovery::Discovery;
use crate::reload::Control;
use crate::server::Certificates;
use crate::shutdown::Shutdown;

/// SIGHUP, SIGTERM and SIGINT, caught: from `catch` on they no longer kill the process,
/// and they wait (queued) until `handle` starts reading them.
pub struct Caught(Signals);

/// Catches the signals; call it before the port is bound, so that whoever sees the port
/// open can signal the process safely.
pub fn catch() -> io::Result<Caught> {
    Signals::new([SIGHUP, SIGTERM, SIGINT]).map(Caught)
}

impl Caught {
    /// Starts the signal thread, which acts on the signals caught.
    pub fn handle(
        self,
        source: Source,
        control: Control,
        certificates: Certificates,
        discovery: Discovery,
        shutdown: Arc<Shutdown>,
    ) -> io::Result<()> {
        watch(self.0, source, control, certificates, discovery, shutdown)
    }
}

fn watch(
    mut signals: Signals,
    source: Source,
    control: Control,
    certificates: Certificates,
    discovery: Discovery,
    shutdown: Arc<Shutdown>,
) -> io::Result<()> {
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = match signal {
                    SIGHUP => "SIGHUP",
                    SIGTERM => "SIGTERM",
                    _ => "SIGINT",
                };
                if signal == SIGHUP {
                    reload(&source, &control);
                    if let Err(err) = discovery.ensure() {
                        crate::say!("roundhouse: cannot start the resolver thread: {err}");
                    }
                    // After the file: a reload may name other certificate files.
                    if certificates.any() {
                        certificates.reload(&control.config().listener_tls.pairs);
                    }
                } else if shutdown.is_stopping() {
                    crate::say!("roundhouse: {name} again: exiting now");
                    std::process::exit(128 + signal);
                } else {
                    let config = control.config();
                    let grace = humantime::format_duration(config.grace);
                    let drain = match config.drain_delay {
                        d if d.is_zero() => String::new(),
                        d => format!(
                            "not ready from now, still serving for {}, then ",
                            humantime::format_duration(d)
                        ),
                    };
                    crate::say!(
                        "roundhouse: {name}: shutting down; {drain}requests in flight have \
                         {grace} to finish ({name} again to exit now)"
                    );
                    shutdown.begin();
                }
            }
        })
        .map(drop)
}

/// Reads the config file again and applies it; an invalid file changes nothing.
fn reload(source: &Source, control: &Control) {
    let Some(file) = source.file() else {
        crate::say!("roundhouse: SIGHUP: there is no --config file to reload");
        return;
    };
    let file = file.display();
    let config = match source.load() {
        Ok(config) => config,
        Err(problems) => {
            crate::say!("roundhouse: reload of {file} rejected, the running configuration stays:");
            for problem in problems {
                crate::say!("roundhouse:   {problem}");
            }
            return;
        }
    };
    let applied = control.apply(&config);
    for field in &applied.need_restart {
        crate::say!("roundhouse: reload: {field} changed in {file}; that takes a restart");
    }
    let backends: Vec<String> = config.backends.iter().map(|b| b.addr.to_string()).collect();
    crate::say!(
        "roundhouse: reloaded {file}: {} over {} ({} kept, {} added, {} removed)",
        config.strategy.name(),
        backends.join(", "),
        applied.kept,
        applied.added,
        applied.removed,
    );
}
