//! The config file: `--config FILE`, in TOML, read into the very flags the command line
//! takes. Each top-level key is a flag in snake_case (`connect_timeout = "3s"` means
//! `--connect-timeout 3s`), each `[[backend]]` table one `--backend`; a flag that may be
//! repeated takes an array or a single value (`tls_listen = ["0.0.0.0:443", "[::]:443"]`,
//! `listen = "127.0.0.1:8000"`). A flag typed on the command line wins over the file's
//! key (a repeated one: the typed values replace the file's). The file's flags then go through `cli.rs` and
//! `config.rs` like typed ones, so a value means the same in both places and is checked
//! by the same code. What this file adds is where a problem is: every problem found is
//! reported with its line, as `FILE:LINE: what`.
//!
//! `main.rs` loads a `Source` at startup and for `--check`; `signals.rs` loads it again on
//! SIGHUP for `reload.rs` to apply.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use argh::FromArgs;
use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;
use toml::de::{DeTable, Deserializer};

use crate::cli::{self, Args};
use crate::config::{Config, ConfigError, Weight, check_backend_flag};

/// Declares the file's top-level keys, one line per flag: `key: Value` for a flag that
/// takes a value, `key: List` for one that may be repeated, `key: Switch` for one that
/// is on or off. Adding a flag to `cli.rs` means adding its line here; a unit test fails
/// until that is done.
macro_rules! keys {
    ($($key:ident: $kind:ident),* $(,)?) => {
        /// The file as read: every key optional, each value with its place in the file.
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct File {
            $($key: Option<Spanned<Written>>,)*
            backend: Option<Vec<BackendTable>>,
        }

        impl File {
            /// The keys the file gives (`backend` aside): name, kind, value.
            fn flags(&self) -> Vec<(&'static str, Kind, &Spanned<Written>)> {
                let mut flags = Vec::new();
                $(if let Some(value) = &self.$key {
                    flags.push((stringify!($key), Kind::$kind, value));
                })*
                flags
            }
        }

        /// Every top-level key but `backend`.
        #[cfg(test)]
        const KEYS: &[&str] = &[$(stringify!($key)),*];
    };
}

keys! {
    listen: List,
    tls_listen: List,
    tls_cert: List,
    tls_key: List,
    https_redirect: Switch,
    proxy_protocol: Switch,
    trusted_proxy: List,
    backend_ca: Value,
    backend_cert: Value,
    backend_key: Value,
    backend_insecure: Switch,
    strategy: Value,
    hash_key: Value,
    hash_balance_factor: Value,
    workers: Value,
    queue: Value,
    max_connections: Value,
    connect_timeout: Value,
    timeout: Value,
    client_timeout: Value,
    idle_timeout: Value,
    max_tunnels: Value,
    tunnel_idle_timeout: Value,
    reuse_port: Switch,
    drain_delay: Value,
    resolve_interval: Value,
    resolver: Value,
    max_connections_per_client: Value,
    rate_limit: Value,
    rate_burst: Value,
    max_body: Value,
    request_buffering: Value,
    buffer_memory: Value,
    log: Value,
    admin: Value,
    admin_token: Value,
    admin_tls: Switch,
    trace_header: Switch,
    health_path: Value,
    health_interval: Value,
    health_timeout: Value,
    health_status: Value,
    rise: Value,
    fall: Value,
    max_fails: Value,
    fail_window: Value,
    eject_time: Value,
    eject_on_5xx: Switch,
    slow_start: Value,
    all_down: Value,
    retries: Value,
    retry_buffer: Value,
    grace: Value,
}

/// Flags that are about how roundhouse is started, not about what it runs: no file key.
#[cfg(test)]
const NOT_KEYS: &[&str] = &["help", "config", "check", "backend"];

#[derive(Clone, Copy)]
enum Kind {
    /// `key = "text"` or `key = 12`: `--key text`.
    Value,
    /// `key = ["a", "b"]`: `--key a --key b`; one value alone, `key = "a"`, is `--key a`.
    List,
    /// `key = true`: `--key`; `false`: left out.
    Switch,
}

/// One `[[backend]]` table: the same three things `--backend ADDR,weight=N,backup` says.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendTable {
    address: Spanned<String>,
    weight: Option<Spanned<u32>>,
    backup: Option<bool>,
    send_proxy: Option<bool>,
}

impl BackendTable {
    /// The table as the `--backend` flag's value.
    fn as_flag(&self) -> String {
        let mut flag = self.address.get_ref().clone();
        if let Some(weight) = &self.weight {
            flag.push_str(&format!(",weight={}", weight.get_ref()));
        }
        if self.backup == Some(true) {
            flag.push_str(",backup");
        }
        if self.send_proxy == Some(true) {
            flag.push_str(",send-proxy");
        }
        flag
    }
}

/// A flag's value as written in the file: text, a number or a boolean. Passed to the
/// flag as text, so `workers = 4` and `workers = "4"` are the same.
#[derive(Debug)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Text(s) => f.write_str(s),
            Scalar::Integer(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A key's value as written: one value, or an array of them for a flag that may be
/// repeated.
#[derive(Debug)]
enum Written {
    One(Scalar),
    Many(Vec<Spanned<Scalar>>),
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number or true/false")
    }
    fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(s.to_owned()))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Scalar, E> {
        Ok(Scalar::Integer(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
        i64::try_from(n)
            .map(Scalar::Integer)
            .map_err(|_| E::custom(format!("{n} is too large")))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(x))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(b))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// What a value may be, or an array of such values, each with its place.
struct WrittenVisitor;

impl<'de> Visitor<'de> for WrittenVisitor {
    type Value = Written;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, a number, true/false or an array of strings")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Written, E> {
        ScalarVisitor.visit_str(s).map(Written::One)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Written, E> {
        ScalarVisitor.visit_i64(n).map(Written::One)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Written, E> {
        ScalarVisitor.visit_u64(n).map(Written::One)
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Written, E> {
        ScalarVisitor.visit_f64(x).map(Written::One)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Written, E> {
        ScalarVisitor.visit_bool(b).map(Written::One)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Written, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Written::Many(items))
    }
}

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Written, D::Error> {
        d.deserialize_any(WrittenVisitor)
    }
}

/// Where the configuration comes from: the command line as typed and the file it names.
/// Kept for reloads, which read the file again; the typed flags still win then.
#[derive(Clone, Debug)]
pub struct Source {
    /// The arguments after the program name, `--config` included.
    cli: Vec<String>,
    file: Option<PathBuf>,
}

impl Source {
    /// `cli`: the arguments after the program name; `args`: what `cli::parse` made of them.
    pub fn new(cli: Vec<String>, args: &Args) -> Source {
        Source {
            cli,
            file: args.config.as_ref().map(PathBuf::from),
        }
    }

    /// The `--config` file, if there is one.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Reads the flags, and the file if there is one, into a validated `Config`; or
    /// every problem found, one line each (the file's with `FILE:LINE:` in front).
    pub fn load(&self) -> Result<Config, Vec<String>> {
        let Some(path) = &self.file else {
            let cli: Vec<&str> = self.cli.iter().map(String::as_str).collect();
            let args = cli::parse(&cli).map_err(|exit| vec![exit.text])?;
            return Config::from_cli(args).map_err(|e| vec![e.to_string()]);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|err| vec![format!("--config: cannot read '{}': {err}", path.display())])?;
        load(&path.display().to_string(), &text, &self.cli)
    }
}

/// One flag taken from the file, and the line it came from.
struct FileFlag {
    /// `--connect-timeout`.
    flag: String,
    /// The file's key, `connect_timeout` (or `backend`).
    key: &'static str,
    /// The flag and its value, as they would be typed.
    args: Vec<String>,
    line: usize,
}

/// The problems found so far, and how to say where they are.
struct Problems<'a> {
    name: &'a str,
    text: &'a str,
    /// Each with its line (0: none), to be listed in line order.
    list: Vec<(usize, String)>,
}

impl Problems<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn at(&mut self, line: usize, what: impl fmt::Display) {
        self.list
            .push((line, format!("{}:{line}: {what}", self.name)));
    }

    fn in_order(mut self) -> Vec<String> {
        // Stable: problems on one line keep the order they were found in.
        self.list.sort_by_key(|(line, _)| *line);
        self.list.into_iter().map(|(_, text)| text).collect()
    }

    fn toml(&mut self, err: &toml::de::Error) {
        let message = err.message().trim_end();
        // serde lists every known field; naming the unknown one is enough.
        let message = match message.split_once(", expected one of") {
            Some((head, _)) if head.starts_with("unknown field") => {
                head.replacen("unknown field", "unknown key", 1)
            }
            _ => message.replace('\n', "; "),
        };
        match err.span() {
            Some(span) => self.at(self.line(span), message),
            None => self.list.push((0, format!("{}: {message}", self.name))),
        }
    }
}

/// Reads a config file's `text` (`name` is its path, for messages) with the typed flags
/// `cli` on top.
fn load(name: &str, text: &str, cli: &[String]) -> Result<Config, Vec<String>> {
    let mut problems = Problems {
        name,
        text,
        list: Vec::new(),
    };
    let Some(file) = read(text, &mut problems) else {
        return Err(problems.in_order());
    };
    let cli: Vec<&str> = cli.iter().map(String::as_str).collect();
    let typed = typed_flags(&cli);

    let mut from_file = Vec::new();
    for (key, kind, value) in file.flags() {
        let flag = format!("--{}", key.replace('_', "-"));
        if typed.contains(&flag) {
            continue;
        }
        let line = problems.line(value.span());
        let args = match (kind, value.get_ref()) {
            (Kind::Switch, Written::One(Scalar::Bool(true))) => vec![flag.clone()],
            (Kind::Switch, Written::One(Scalar::Bool(false))) => continue,
            (Kind::Switch, Written::One(other)) => {
                problems.at(line, format!("{key}: '{other}' is not true or false"));
                continue;
            }
            (Kind::Switch, Written::Many(_)) => {
                problems.at(line, format!("{key}: takes true or false, not an array"));
                continue;
            }
            (Kind::Value, Written::Many(_)) => {
                problems.at(line, format!("{key}: takes one value, not an array"));
                continue;
            }
            (Kind::Value | Kind::List, Written::One(Scalar::Bool(b))) => {
                problems.at(line, format!("{key}: takes a value, not {b}"));
                continue;
            }
            (Kind::Value | Kind::List, Written::One(other)) => {
                vec![flag.clone(), other.to_string()]
            }
            (Kind::List, Written::Many(items)) => {
                let mut args = Vec::new();
                for item in items {
                    match item.get_ref() {
                        Scalar::Bool(b) => {
                            let line = problems.line(item.span());
                            problems.at(line, format!("{key}: takes values, not {b}"));
                        }
                        other => args.extend([flag.clone(), other.to_string()]),
                    }
                }
                args
            }
        };
        from_file.push(FileFlag {
            flag,
            key,
            args,
            line,
        });
    }
    if !typed.contains("--backend") {
        for table in file.backend.iter().flatten() {
            if table.address.get_ref().contains(',') {
                let line = problems.line(table.address.span());
                let address = table.address.get_ref();
                problems.at(
                    line,
                    format!("backend: '{address}' is not host:port (weight and backup are keys)"),
                );
                continue;
            }
            let value = table.as_flag();
            // The weight's line when the weight breaks the weight rule.
            let line = match &table.weight {
                Some(w) if Weight::new(*w.get_ref()).is_none() => problems.line(w.span()),
                _ => problems.line(table.address.span()),
            };
            // Its name, if any, is looked up below, with the other flags (`--resolver`).
            match check_backend_flag(&value) {
                Ok(()) => from_file.push(FileFlag {
                    flag: "--backend".into(),
                    key: "backend",
                    line,
                    args: vec!["--backend".into(), value],
                }),
                Err(err) => problems.at(line, as_key(&err, "backend")),
            }
        }
    }

    // Validate everything together, as typed flags are; when the problem is a value
    // from the file, note it with its line, leave it out and look again, so that every
    // problem is listed. A problem with a typed flag ends the search.
    let mut left_out: Vec<String> = Vec::new();
    loop {
        let mut args: Vec<&str> = from_file
            .iter()
            .flat_map(|f| f.args.iter().map(String::as_str))
            .collect();
        args.extend_from_slice(&cli);
        let err = match cli::parse(&args) {
            Ok(parsed) => match Config::from_cli(parsed) {
                Ok(config) if problems.list.is_empty() => return Ok(config),
                Ok(_) => return Err(problems.in_order()),
                Err(err) => err,
            },
            Err(exit) => ConfigError::from(exit),
        };
        let culprit = err.flag().and_then(|flag| {
            // Of a repeated flag, the value the message names (a backend whose name has
            // no address names its host and port), else the first.
            let named = |f: &FileFlag| {
                let value = f.args.get(1).map_or("", String::as_str);
                let addr = value.split(',').next().unwrap_or_default();
                let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
                let addr = addr.strip_suffix('/').unwrap_or(addr);
                err.message().contains(&format!("'{addr}'"))
            };
            let ours = || from_file.iter().enumerate().filter(|(_, f)| f.flag == flag);
            ours()
                .find(|(_, f)| named(f))
                .or_else(|| ours().next())
                .map(|(i, _)| i)
        });
        match culprit {
            Some(i) => {
                let f = from_file.remove(i);
                problems.at(f.line, as_key(&err, f.key));
                left_out.push(f.flag);
            }
            // The key at fault is already listed; this is only what leaving it out
            // brought about (one --tls-key fewer than --tls-cert, say).
            None if err
                .flag()
                .is_some_and(|flag| left_out.iter().any(|f| f == flag)) =>
            {
                return Err(problems.in_order());
            }
            None => {
                problems.list.push((0, err.to_string()));
                return Err(problems.in_order());
            }
        }
    }
}

/// Parses the TOML. Every syntax error is listed (and nothing is read); after that, every
/// entry that does not fit (an unknown key, a table where a value belongs) is listed and
/// left out. None if nothing could be read.
fn read(text: &str, problems: &mut Problems<'_>) -> Option<File> {
    let (mut root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for err in &errors {
            problems.toml(err);
        }
        return None;
    }
    loop {
        let err = match File::deserialize(Deserializer::from(root.clone())) {
            // What fits; any problem noted keeps the configuration from being used.
            Ok(file) => return Some(file),
            Err(err) => err,
        };
        problems.toml(&err);
        // The top-level entry the problem is in: the last one that starts before it
        // (top-level keys come before any table, and each table starts with its header).
        let at = err.span()?.start;
        let key = root
            .get_ref()
            .iter()
            .map(|(key, _)| key)
            .filter(|key| key.span().start <= at)
            .max_by_key(|key| key.span().start)?
            .clone();
        root.get_mut().remove(&key)?;
    }
}

/// The flags typed on the command line, as `--name`.
fn typed_flags(cli: &[&str]) -> HashSet<String> {
    Args::redact_arg_values(&["roundhouse"], cli)
        .map(|redacted| {
            redacted
                .into_iter()
                .filter(|arg| arg.starts_with("--"))
                .collect()
        })
        .unwrap_or_default()
}

/// A flag's problem as the file says it: `connect_timeout: 'x' is not a duration`.
fn as_key(err: &ConfigError, key: &str) -> String {
    format!("{key}: {}", err.message())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn load_str(text: &str, cli: &[&str]) -> Result<Config, Vec<String>> {
        let cli: Vec<String> = cli.iter().map(|s| s.to_string()).collect();
        load("rh.toml", text, &cli)
    }

    #[test]
    fn every_flag_has_a_key() {
        let help = Args::from_args(&["roundhouse"], &["--help"])
            .expect_err("--help exits early")
            .output;
        let flags: Vec<String> = help
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("--"))
            .map(|l| {
                let name: String = l
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                name.replace('-', "_")
            })
            .collect();
        assert!(flags.len() > 5, "{help}");
        for flag in flags {
            assert!(
                KEYS.contains(&flag.as_str()) || NOT_KEYS.contains(&flag.as_str()),
                "--{flag} has no key in config_file.rs"
            );
        }
    }

    #[test]
    fn keys_are_flags_and_tables_are_backends() {
        let text = r#"
listen = "127.0.0.1:9000"
strategy = "least-conn"
workers = 7
connect_timeout = "250ms"

[[backend]]
address = "127.0.0.1:9001"
weight = 3

[[backend]]
address = "http://127.0.0.1:9002"
"#;
        let c = load_str(text, &[]).unwrap();
        assert_eq!(c.listen, ["127.0.0.1:9000".parse().unwrap()]);
        assert_eq!(c.strategy.name(), "least-conn");
        assert_eq!(c.workers.get(), 7);
        assert_eq!(c.connect_timeout, Duration::from_millis(250));
        let backends: Vec<(String, u32)> = c
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.weight.get()))
            .collect();
        assert_eq!(
            backends,
            [("127.0.0.1:9001".into(), 3), ("127.0.0.1:9002".into(), 1)]
        );
        assert!(!c.default_backends);
    }

    #[test]
    fn a_backend_name_without_an_answer_is_blamed_on_its_own_table() {
        // Nothing listens there: each query is refused at once.
        let gone = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let text = format!(
            "resolver = \"{gone}\"\n\n[[backend]]\naddress = \"127.0.0.1:9001\"\n\n\
             [[backend]]\naddress = \"svc.test:9002\"\nweight = 2\n"
        );
        let problems = load_str(&text, &[]).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!(
                "rh.toml:7: backend: 'svc.test:9002' cannot be looked up: {gone}: "
            )),
            "{problems:?}"
        );
    }

    #[test]
    fn a_typed_flag_wins_over_the_file() {
        let text =
            "workers = 7\nstrategy = \"random\"\n[[backend]]\naddress = \"127.0.0.1:9001\"\n";
        let c = load_str(text, &["--workers", "3", "--backend", "127.0.0.1:9005"]).unwrap();
        assert_eq!(c.workers.get(), 3);
        assert_eq!(c.strategy.name(), "random");
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.backends[0].addr, "127.0.0.1:9005".parse().unwrap());
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let text = r#"strategy = "nope"
workers = 0
timeout = "5x"
frobnicate = 1
log = true

[[backend]]
address = "nohost"

[[backend]]
address = "127.0.0.1:9001"
weight = 0

[[backend]]
address = "127.0.0.1:9002,weight=2"
"#;
        let problems = load_str(text, &[]).unwrap_err();
        let expect = [
            "rh.toml:1: strategy: unknown strategy 'nope'",
            "rh.toml:2: workers: must be at least 1",
            "rh.toml:3: timeout: '5x' is not a duration",
            "rh.toml:4: unknown key `frobnicate`",
            "rh.toml:5: log: takes a value, not true",
            "rh.toml:8: backend: 'nohost' is not host:port",
            "rh.toml:12: backend: '127.0.0.1:9001,weight=0': weight must be",
            "rh.toml:15: backend: '127.0.0.1:9002,weight=2' is not host:port",
        ];
        for e in expect {
            assert!(
                problems.iter().any(|p| p.starts_with(e)),
                "no problem starting {e:?} in {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    }

    #[test]
    fn a_backend_problem_is_on_the_line_of_the_key_at_fault() {
        let text = "[[backend]]\naddress = \"ftp://127.0.0.1:9000\"\nweight = 2\n\n\
                    [[backend]]\naddress = \"127.0.0.1:9001\"\nweight = 1001\n";
        let problems = load_str(text, &[]).unwrap_err();
        assert_eq!(
            problems,
            [
                "rh.toml:2: backend: 'ftp://127.0.0.1:9000,weight=2' is not host:port, \
                 http://host:port or https://host:port",
                "rh.toml:7: backend: '127.0.0.1:9001,weight=1001': weight must be a whole \
                 number from 1 to 1000",
            ]
        );
    }

    #[test]
    fn syntax_errors_have_their_lines() {
        let problems = load_str("listen = \"127.0.0.1:1\"\nworkers = = 4\n", &[]).unwrap_err();
        assert!(problems[0].starts_with("rh.toml:2: "), "{problems:?}");
        let problems = load_str("[[backend]]\nadress = \"x\"\n", &[]).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("rh.toml:2: unknown key `adress`")),
            "{problems:?}"
        );
    }

    fn addrs(list: &[std::net::SocketAddr]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn a_repeatable_key_takes_an_array_or_one_value_and_typed_flags_replace_it() {
        let two = "listen = [\"127.0.0.1:9000\", \"127.0.0.1:9001\"]\n";
        let c = load_str(two, &[]).unwrap();
        assert_eq!(addrs(&c.listen), ["127.0.0.1:9000", "127.0.0.1:9001"]);
        let c = load_str(two, &["--listen", "127.0.0.1:9005"]).unwrap();
        assert_eq!(addrs(&c.listen), ["127.0.0.1:9005"]);
        let c = load_str("listen = \"127.0.0.1:9000\"\nhttps_redirect = true\n", &[]).unwrap();
        assert_eq!(addrs(&c.listen), ["127.0.0.1:9000"]);
        assert!(c.https_redirect);
        let c = load_str("listen = []\n", &[]).unwrap();
        assert_eq!(addrs(&c.listen), ["127.0.0.1:8000"]);
    }

    #[test]
    fn a_problem_in_an_array_is_on_its_line() {
        let text = "workers = [1, 2]\nlisten = [\n  \"127.0.0.1:9000\",\n  true,\n]\n\
                    admin_tls = [true]\n";
        let problems = load_str(text, &[]).unwrap_err();
        assert_eq!(
            problems,
            [
                "rh.toml:1: workers: takes one value, not an array",
                "rh.toml:4: listen: takes values, not true",
                "rh.toml:6: admin_tls: takes true or false, not an array",
            ]
        );
        // A value the flag refuses is on the line of its key: the flag's message names it.
        let text = "workers = 2\nlisten = [\n  \"127.0.0.1:9000\",\n  \"nohost\",\n]\n";
        let problems = load_str(text, &[]).unwrap_err();
        assert_eq!(problems, ["rh.toml:2: listen: 'nohost' is not host:port"]);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn the_tls_keys_are_the_tls_flags() {
        use crate::config::test_pairs;
        let dir = tempfile::tempdir().unwrap();
        let a = test_pairs::write(dir.path(), "a", None);
        let b = test_pairs::write(dir.path(), "b", None);
        let text = format!(
            "listen = \"127.0.0.1:9080\"\ntls_listen = [\"127.0.0.1:9443\", \"127.0.0.1:9444\"]\n\
             tls_cert = ['{}', '{}']\ntls_key = ['{}', '{}']\nhttps_redirect = true\n\
             admin = \"127.0.0.1:9090\"\nadmin_tls = true\n",
            a.cert.display(),
            b.cert.display(),
            a.key.display(),
            b.key.display(),
        );
        let c = load_str(&text, &[]).unwrap();
        assert_eq!(addrs(&c.listen), ["127.0.0.1:9080"]);
        assert_eq!(addrs(&c.tls_listen), ["127.0.0.1:9443", "127.0.0.1:9444"]);
        assert_eq!(c.listener_tls.pairs, [a.clone(), b]);
        assert!(c.https_redirect && c.admin.unwrap().tls);

        // One key short: said once, on the line of the keys.
        let text = format!(
            "tls_listen = \"127.0.0.1:9443\"\ntls_cert = ['{}', '{}']\ntls_key = '{}'\n",
            a.cert.display(),
            a.cert.display(),
            a.key.display(),
        );
        let problems = load_str(&text, &[]).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("rh.toml:3: tls_key: 2 --tls-cert but 1 --tls-key given"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_tunnel_keys_are_the_tunnel_flags() {
        let c = load_str("max_tunnels = 0\ntunnel_idle_timeout = \"90s\"\n", &[]).unwrap();
        assert_eq!(c.max_tunnels, 0);
        assert_eq!(c.tunnel_idle_timeout, Duration::from_secs(90));
        let problems = load_str("workers = 2\ntunnel_idle_timeout = \"500ms\"\n", &[]).unwrap_err();
        assert_eq!(
            problems,
            ["rh.toml:2: tunnel_idle_timeout: '500ms' must be at least 1s"]
        );
    }

    #[test]
    fn a_typed_flags_problem_is_said_plainly() {
        let problems = load_str("workers = 2\n", &["--queue", "0"]).unwrap_err();
        assert_eq!(problems, ["--queue: must be at least 1"]);
    }
}
