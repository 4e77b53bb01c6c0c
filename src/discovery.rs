//! Discovery: backends found by DNS. A `--backend` that names a host stands for one
//! backend per address the name has (`config/backend.rs`); the resolver thread, started
//! here, looks every such name up again each `--resolve-interval` (through `dns.rs`) and
//! hands the addresses to `reload::Control::resolved`, which swaps the backend set the
//! way a reload does: addresses that stay keep their backend's live state, new ones are
//! added, vanished ones get no new request while those in flight finish. The thread is
//! its own, never a worker's: a slow DNS server delays the next lookup, never a request.
//!
//! Two rules keep one bad answer from emptying the set. A lookup that fails (no answer,
//! a server failure) keeps the name's last addresses, and is logged once per streak of
//! failures. An answer that the name does not exist (NXDOMAIN) or has no address is
//! believed only when the next lookup says so too.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crate::config::{BackendSource, Config};
use crate::dns::{self, Answer, Resolver};
use crate::reload::Control;
use crate::shutdown::Shutdown;

/// Starts the resolver thread when there are names to look up again; cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    control: Control,
    shutdown: Arc<Shutdown>,
    /// Whether the resolver thread runs. Set by `ensure` when it starts the thread,
    /// cleared by the thread as it ends, both under this lock.
    running: Arc<Mutex<bool>>,
}

impl Discovery {
    pub fn new(control: Control, shutdown: Arc<Shutdown>) -> Discovery {
        Discovery {
            control,
            shutdown,
            running: Arc::new(Mutex::new(false)),
        }
    }

    /// Starts the resolver thread if names are to be looked up again (a backend flag
    /// names a host, and `--resolve-interval` is not 0s) and it does not run yet.
    /// `server.rs` calls it at start, and `signals.rs` after every reload, which may
    /// bring the first name.
    pub fn ensure(&self) -> io::Result<()> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let config = self.control.config();
        let Some(every) = config
            .resolve_interval
            .filter(|_| wanted(&config) && !*running)
        else {
            return Ok(());
        };
        let this = self.clone();
        thread::Builder::new()
            .name("resolver".into())
            .spawn(move || this.run())?;
        *running = true;
        let names: Vec<String> = config
            .backend_sources
            .iter()
            .filter_map(|s| s.name.as_ref().map(ToString::to_string))
            .collect();
        crate::say!(
            "roundhouse: looking {} up every {} at {}",
            names.join(", "),
            humantime::format_duration(every),
            config.resolver
        );
        Ok(())
    }

    /// The resolver thread: sleeps an interval, looks every name up, applies what
    /// changed, and again; ends at shutdown, or when a reload leaves no name to look up
    /// (the next `ensure` starts it again).
    fn run(self) {
        let mut generation = None;
        let mut states = Vec::new();
        let (_, mut config) = self.control.generation_and_config();
        loop {
            if let Some(interval) = config.resolve_interval {
                thread::sleep(interval);
            }
            let now = {
                // Under the lock, so that an `ensure` after a reload that brings names
                // either finds this thread still running or starts a new one.
                let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
                let now = self.control.generation_and_config();
                if self.shutdown.is_stopping() || !wanted(&now.1) {
                    *running = false;
                    return;
                }
                now
            };
            let (now_generation, now_config) = now;
            config = now_config;
            if generation != Some(now_generation) {
                // A reload: new flags, just looked up; no streak carries over.
                generation = Some(now_generation);
                states = vec![NameState::default(); config.backend_sources.len()];
            }
            let (sources, notes) = round(&config, &mut states, dns::lookup);
            for note in notes {
                crate::say!("roundhouse: {note}");
            }
            let changed = changes(&config.backend_sources, &sources);
            if let Some(applied) = self.control.resolved(now_generation, sources) {
                crate::say!(
                    "roundhouse: {}: {} kept, {} added, {} removed",
                    changed.join("; "),
                    applied.kept,
                    applied.added,
                    applied.removed
                );
            }
        }
    }
}

/// Whether the resolver thread has work under `config`.
fn wanted(config: &Config) -> bool {
    config.resolve_interval.is_some() && config.backend_sources.iter().any(|s| s.name.is_some())
}

/// Looks every name of `config` up once with `lookup` and folds each answer into its
/// state (one per backend flag): the flags with their new addresses, and what to log.
fn round(
    config: &Config,
    states: &mut [NameState],
    lookup: impl Fn(&Resolver, &str) -> Result<Answer, String>,
) -> (Vec<BackendSource>, Vec<String>) {
    let mut sources = config.backend_sources.clone();
    let mut notes = Vec::new();
    for (source, state) in sources.iter_mut().zip(states) {
        let Some(name) = &source.name else {
            continue;
        };
        let (step, note) = state.next(lookup(&config.resolver, &name.host));
        if let Some(note) = note {
            notes.push(note.say(&name.to_string(), source.addrs.len(), &config.resolver));
        }
        if let Step::Set(ips) = step {
            source.addrs = source.at(&ips);
        }
    }
    (sources, notes)
}

/// "NAME resolves to A, B" for each flag whose addresses differ in `after`.
fn changes(before: &[BackendSource], after: &[BackendSource]) -> Vec<String> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.addrs != a.addrs)
        .filter_map(|(_, a)| {
            let name = a.name.as_ref()?;
            let addrs: Vec<String> = a.addrs.iter().map(ToString::to_string).collect();
            Some(match addrs.is_empty() {
                true => format!("{name} resolves to no address"),
                false => format!("{name} resolves to {}", addrs.join(", ")),
            })
        })
        .collect()
}

/// One name's lookups so far, for the two rules of the module docs.
#[derive(Clone, Debug, Default)]
struct NameState {
    /// Lookups in a row that said the name does not exist or has no address.
    missing: u32,
    /// Whether the last lookup failed: a streak of failures is logged once.
    failing: bool,
}

/// What one lookup does to a name's addresses.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Take these (sorted; none: the name has gone).
    Set(Vec<IpAddr>),
    /// Keep the last ones.
    Keep,
}

/// What a lookup is worth a log line for.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    /// The first failure of a streak, and why.
    Failed(String),
    /// The first answer after a streak of failures.
    Answers,
    /// No address, for the first time: not believed yet.
    MissingOnce,
    /// No address, the second time in a row: the backends go.
    Gone,
}

impl NameState {
    /// Folds one lookup in: what happens to the addresses, and what to log.
    fn next(&mut self, lookup: Result<Answer, String>) -> (Step, Option<Note>) {
        let failed_before = std::mem::replace(&mut self.failing, lookup.is_err());
        match lookup {
            Ok(Answer::Found(ips)) => {
                self.missing = 0;
                (Step::Set(ips), failed_before.then_some(Note::Answers))
            }
            Ok(Answer::Missing) => {
                self.missing = self.missing.saturating_add(1);
                match self.missing {
                    1 => (Step::Keep, Some(Note::MissingOnce)),
                    2 => (Step::Set(Vec::new()), Some(Note::Gone)),
                    _ => (Step::Set(Vec::new()), None),
                }
            }
            Err(why) => {
                // The repeat must be the very next lookup: a failure between two
                // NXDOMAINs starts the count again.
                self.missing = 0;
                (Step::Keep, (!failed_before).then_some(Note::Failed(why)))
            }
        }
    }
}

impl Note {
    /// The log line for `name`, which has `backends` backends now.
    fn say(&self, name: &str, backends: usize, resolver: &Resolver) -> String {
        match self {
            // `why` names the server, or is the system's own words.
            Note::Failed(why) => format!(
                "cannot look {name} up ({why}); its {backends} backends stay until a lookup \
                 answers"
            ),
            Note::Answers => format!("{name} is answered again at {resolver}"),
            Note::MissingOnce => format!(
                "{name} has no address at {resolver} (NXDOMAIN, or no A or AAAA record); its \
                 {backends} backends stay unless the next lookup says so too"
            ),
            Note::Gone => {
                format!("{name} has no address at {resolver}, twice in a row: its backends go")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn ips(last: &[u8]) -> Vec<IpAddr> {
        last.iter().map(|&i| IpAddr::from([10, 0, 0, i])).collect()
    }

    #[test]
    fn a_failed_lookup_keeps_the_set_and_is_noted_once_per_streak() {
        let mut state = NameState::default();
        assert_eq!(
            state.next(Ok(Answer::Found(ips(&[1])))),
            (Step::Set(ips(&[1])), None)
        );
        let failure = || Err("no answer".to_owned());
        assert_eq!(
            state.next(failure()),
            (Step::Keep, Some(Note::Failed("no answer".into())))
        );
        assert_eq!(state.next(failure()), (Step::Keep, None));
        assert_eq!(
            state.next(Ok(Answer::Found(ips(&[2])))),
            (Step::Set(ips(&[2])), Some(Note::Answers))
        );
        assert_eq!(
            state.next(failure()).1,
            Some(Note::Failed("no answer".into()))
        );
    }

    #[test]
    fn no_address_counts_only_when_the_next_lookup_says_so_too() {
        let mut state = NameState::default();
        assert_eq!(
            state.next(Ok(Answer::Missing)),
            (Step::Keep, Some(Note::MissingOnce))
        );
        // An answer in between: the count starts again.
        assert_eq!(
            state.next(Ok(Answer::Found(ips(&[1])))).0,
            Step::Set(ips(&[1]))
        );
        assert_eq!(state.next(Ok(Answer::Missing)).0, Step::Keep);
        // So does a failure.
        assert_eq!(state.next(Err("timeout".into())).0, Step::Keep);
        assert_eq!(state.next(Ok(Answer::Missing)).0, Step::Keep);
        assert_eq!(
            state.next(Ok(Answer::Missing)),
            (Step::Set(vec![]), Some(Note::Gone))
        );
        assert_eq!(state.next(Ok(Answer::Missing)), (Step::Set(vec![]), None));
        assert_eq!(
            state.next(Ok(Answer::Found(ips(&[3])))),
            (Step::Set(ips(&[3])), None)
        );
    }

    #[test]
    fn a_round_looks_up_only_names_and_keeps_the_flags_in_order() {
        let config = Config::from_args(&[
            "--backend",
            "127.0.0.1:9001",
            "--backend",
            "localhost:9002,weight=2",
        ])
        .unwrap();
        let mut states = vec![NameState::default(); 2];
        let asked = RefCell::new(Vec::new());
        let answers = RefCell::new(vec![
            Ok(Answer::Missing),
            Ok(Answer::Missing),
            Ok(Answer::Found(ips(&[9, 3]))),
        ]);
        let lookup = |_: &Resolver, host: &str| {
            asked.borrow_mut().push(host.to_owned());
            answers.borrow_mut().remove(0)
        };
        let (once, notes) = round(&config, &mut states, lookup);
        assert_eq!(*asked.borrow(), ["localhost"]);
        assert_eq!(once, config.backend_sources);
        assert_eq!(
            notes,
            [
                "localhost:9002 has no address at the system's resolver (NXDOMAIN, or no A or \
              AAAA record); its 1 backends stay unless the next lookup says so too"
            ]
        );
        let (twice, _) = round(&config, &mut states, lookup);
        assert_eq!(twice[1].addrs, []);
        assert_eq!(twice[0], config.backend_sources[0]);
        assert_eq!(
            changes(&config.backend_sources, &twice),
            ["localhost:9002 resolves to no address"]
        );
        let (back, notes) = round(&config, &mut states, lookup);
        assert!(notes.is_empty());
        let addrs: Vec<String> = back[1].addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.0.0.3:9002", "10.0.0.9:9002"]);
        assert_eq!(
            changes(&twice, &back),
            ["localhost:9002 resolves to 10.0.0.3:9002, 10.0.0.9:9002"]
        );
    }

    #[test]
    fn the_thread_is_wanted_for_names_with_an_interval() {
        let config = |args: &[&str]| Config::from_args(args).unwrap();
        assert!(!wanted(&config(&["--backend", "127.0.0.1:9001"])));
        assert!(wanted(&config(&["--backend", "localhost:9001"])));
        assert!(!wanted(&config(&[
            "--backend",
            "localhost:9001",
            "--resolve-interval",
            "0s"
        ])));
    }
}
