//! The binary as users run it: flag errors, `--help`, the startup and request log lines,
//! and surviving file-descriptor exhaustion.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// Runs the binary with `args`; asserts exit code 2 and exactly one line on stderr that
/// names `flag` or `value`.
fn assert_usage_error(args: &[&str], flag: &str, value: &str) {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (code, _out, err) = run_cli(&all);
    assert_eq!(
        code, 2,
        "roundhouse {all:?}: exit code {code}, stderr {err:?}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "roundhouse {all:?}: expected one line on stderr, got {err:?}"
    );
    assert!(
        lines[0].contains(flag) || lines[0].contains(value),
        "roundhouse {all:?}: stderr names neither {flag:?} nor {value:?}: {err:?}"
    );
}

#[test]
fn zero_workers_is_a_usage_error() {
    assert_usage_error(&["--workers", "0"], "--workers", "--workers");
}

#[test]
fn bad_duration_is_a_usage_error() {
    assert_usage_error(&["--timeout", "5x"], "--timeout", "5x");
}

#[test]
fn backend_without_port_is_a_usage_error() {
    assert_usage_error(&["--backend", "nohost"], "--backend", "nohost");
}

#[test]
fn unknown_strategy_is_a_usage_error() {
    assert_usage_error(&["--strategy", "nope"], "--strategy", "nope");
}

#[test]
fn unknown_log_format_is_a_usage_error() {
    assert_usage_error(&["--log", "loud"], "--log", "loud");
}

#[test]
fn bad_size_is_a_usage_error() {
    assert_usage_error(&["--max-body", "lots"], "--max-body", "lots");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    assert_usage_error(&["--frobnicate", "1"], "--frobnicate", "--frobnicate");
}

#[test]
fn help_exits_0_and_shows_the_defaults() {
    let (code, out, err) = run_cli(&["--help"]);
    assert_eq!(code, 0, "stderr: {err}");
    let text = format!("{out}{err}");
    for default in ["127.0.0.1:8000", "512", "3s", "60s"] {
        assert!(
            text.contains(default),
            "--help does not show the default {default}:\n{text}"
        );
    }
}

/// Starts the binary on a reserved port in front of `backends`; waits until it accepts.
fn spawn_balancer(backends: &[SocketAddr], extra: &[&str]) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", reserve_port()).parse().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", &addr.to_string(), "--workers", "4"]);
    for b in backends {
        cmd.args(["--backend", &b.to_string()]);
    }
    cmd.args(extra);
    let p = Proc::spawn(&mut cmd);
    wait_accepting(addr);
    (p, addr)
}

#[test]
fn startup_line_names_the_listen_address_and_the_backends() {
    let (a, b) = (dead_addr(), dead_addr());
    let (p, addr) = spawn_balancer(&[a, b], &[]);
    let names = [addr.to_string(), a.to_string(), b.to_string()];
    p.wait_for_stdout_line(
        "one line naming the listen address and both backends",
        |l| names.iter().all(|n| l.contains(n)),
    );
}

#[test]
fn seed_log_line_is_printed_for_each_request() {
    let backend = Backend::hello("ok");
    let (p, addr) = spawn_balancer(&[backend.addr], &[]);
    assert_eq!(get(addr, "/hello"), (200, "ok".to_string()));
    let line = p.wait_for_stdout_line("the request log line", |l| l.contains("GET /hello"));
    let rest = line
        .strip_prefix("Received request from 127.0.0.1:")
        .unwrap_or_else(|| panic!("log line {line:?}"));
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    assert!(digits > 0, "no client port in {line:?}");
    let expected = format!(", forwarding to {}: GET /hello 200 ", backend.addr);
    assert!(
        rest[digits..].starts_with(&expected),
        "log line {line:?}, expected {expected:?} after the port"
    );
}

#[test]
fn json_log_line_is_a_json_object() {
    let backend = Backend::hello("ok");
    let (p, addr) = spawn_balancer(&[backend.addr], &["--log", "json"]);
    assert_eq!(get(addr, "/hello-json"), (200, "ok".to_string()));
    let line = p.wait_for_stdout_line("the JSON request log line", |l| l.contains("/hello-json"));
    let value: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {line:?}"));
    let fields = serde_json::Value::Object(obj.clone()).to_string();
    assert!(fields.contains("200"), "no status in {line:?}");
    assert!(
        fields.contains(&backend.addr.to_string()),
        "no backend in {line:?}"
    );
}

/// One GET that returns None instead of panicking when anything goes wrong.
fn try_get(addr: SocketAddr) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    use std::io::Write;
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let r = ResponseReader::new(s).read_response(false).ok()??;
    Some((r.status, r.body_str()))
}

#[test]
fn accepting_survives_running_out_of_file_descriptors() {
    let backend = Backend::hello("ok");
    let addr: SocketAddr = format!("127.0.0.1:{}", reserve_port()).parse().unwrap();
    let script = format!(
        "ulimit -n 64 && exec '{BIN}' --listen {addr} --backend {} --workers 4 --log seed",
        backend.addr
    );
    let mut p = Proc::spawn(Command::new("sh").arg("-c").arg(script));
    wait_accepting(addr);
    assert_eq!(try_get(addr), Some((200, "ok".to_string())));

    let hogs: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(
        hogs.len() > 64,
        "only {} connections could be opened",
        hogs.len()
    );
    let mentions_accept_error = || {
        let text = format!("{}{}", p.stdout(), p.stderr()).to_ascii_lowercase();
        text.contains("accept")
            && (text.contains("too many open files")
                || text.contains("emfile")
                || text.contains("os error 24"))
    };
    wait_until("the accept error to be reported", mentions_accept_error);
    drop(hogs);

    wait_until(
        "a request to succeed after the descriptors came back",
        || try_get(addr) == Some((200, "ok".to_string())),
    );
    assert!(p.child.try_wait().unwrap().is_none(), "the balancer exited");
}

/// The text `--help` gives `flag`, from its name to the next flag, on one line. A long
/// flag's text starts on the line below its name.
fn help_of(help: &str, flag: &str) -> String {
    let start = [" ", "\n"]
        .iter()
        .find_map(|after| help.find(&format!("\n  {flag}{after}")))
        .unwrap_or_else(|| panic!("{flag} is not in --help:\n{help}"));
    let section = &help[start + 3 + flag.len()..];
    let section = &section[..section.find("\n  --").unwrap_or(section.len())];
    section.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn help_lists_every_listener_flag_with_its_default() {
    let (code, out, err) = run_cli(&["--help"]);
    assert_eq!(code, 0, "stderr: {err}");
    let listen = help_of(&out, "--listen");
    assert!(
        listen
            .ends_with("(default: 127.0.0.1:8000 when neither --listen nor --tls-listen is given)"),
        "{listen}"
    );
    for (flag, default) in [
        ("--tls-listen", "none"),
        ("--tls-cert", "none"),
        ("--tls-key", "none"),
        ("--https-redirect", "off"),
        ("--admin-tls", "off"),
    ] {
        let text = help_of(&out, flag);
        assert!(
            text.ends_with(&format!("(default: {default})")),
            "{flag}: {text}"
        );
    }
}

#[test]
fn help_lists_the_tunnel_flags_with_their_defaults() {
    let (code, out, err) = run_cli(&["--help"]);
    assert_eq!(code, 0, "stderr: {err}");
    let max = help_of(&out, "--max-tunnels");
    assert!(max.contains("--max-connections"), "{max}");
    assert!(max.ends_with("(default: 10000)"), "{max}");
    let idle = help_of(&out, "--tunnel-idle-timeout");
    assert!(idle.ends_with("(default: 10m)"), "{idle}");
}

#[test]
fn a_tunnel_idle_timeout_under_a_second_is_a_usage_error() {
    assert_usage_error(
        &["--tunnel-idle-timeout", "0s"],
        "--tunnel-idle-timeout",
        "--tunnel-idle-timeout",
    );
}

/// `--check`, a TLS listener and a plain one, and the certificate flags of `pairs`.
#[cfg(feature = "tls")]
fn check_tls(pairs: &[(&std::path::Path, &std::path::Path)]) -> (i32, String, String) {
    let mut args: Vec<String> = ["--check", "--listen", "127.0.0.1:18080"]
        .into_iter()
        .chain(["--tls-listen", "127.0.0.1:18443"])
        .map(String::from)
        .collect();
    for (cert, key) in pairs {
        args.extend(["--tls-cert".into(), cert.display().to_string()]);
        args.extend(["--tls-key".into(), key.display().to_string()]);
    }
    run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Asserts exit code 2 and one line on stderr, starting `roundhouse: FLAG: ` and holding
/// `what`.
#[cfg(feature = "tls")]
fn assert_refused((code, _out, err): (i32, String, String), flag: &str, what: &str) {
    assert_eq!(code, 2, "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with(&format!("roundhouse: {flag}: ")),
        "{err}"
    );
    assert!(lines[0].contains(what), "{err}");
}

#[cfg(feature = "tls")]
#[test]
fn check_with_a_good_pair_passes_and_lists_the_https_listener() {
    let ca = TestCa::new();
    let (a, b) = (ca.issue("a", &["a.test"]), ca.issue("b", &["b.test"]));
    let (code, out, err) = check_tls(&[(&a.cert_path, &a.key_path), (&b.cert_path, &b.key_path)]);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(err, "");
    assert!(
        out.contains("listen http://127.0.0.1:18080, https://127.0.0.1:18443, round-robin over"),
        "{out}"
    );
}

#[cfg(feature = "tls")]
#[test]
fn check_with_a_key_of_another_certificate_or_an_expired_one_exits_2_naming_the_flag() {
    let ca = TestCa::new();
    let (a, b) = (ca.issue("a", &["a.test"]), ca.issue("b", &["b.test"]));
    assert_refused(
        check_tls(&[(&a.cert_path, &b.key_path)]),
        "--tls-key",
        "is not the key of the certificate in",
    );
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(24 * 60 * 60);
    let old = ca.issue_dated("old", &["a.test"], now - 20 * day, now - day);
    assert_refused(
        check_tls(&[(&old.cert_path, &old.key_path)]),
        "--tls-cert",
        "old.pem': expired on ",
    );
}

#[cfg(feature = "tls")]
#[test]
fn check_with_a_certificate_expiring_in_10_days_passes_with_a_warning() {
    let ca = TestCa::new();
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(24 * 60 * 60);
    let soon = ca.issue_dated("soon", &["a.test"], now - day, now + 10 * day + day / 2);
    let (code, out, err) = check_tls(&[(&soon.cert_path, &soon.key_path)]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(out.contains("the configuration is valid"), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("roundhouse: warning: --tls-cert: '")
            && lines[0].contains("soon.pem' expires in 10 days"),
        "{err}"
    );
}

#[cfg(feature = "tls")]
#[test]
fn the_config_file_takes_listener_keys_as_arrays_or_single_strings() {
    let ca = TestCa::new();
    let (a, b) = (ca.issue("a", &["a.test"]), ca.issue("b", &["b.test"]));
    let text = format!(
        "listen = [\"127.0.0.1:18080\", \"127.0.0.1:18081\"]\n\
         tls_listen = \"127.0.0.1:18443\"\n\
         tls_cert = ['{}', '{}']\n\
         tls_key = ['{}', '{}']\n\
         https_redirect = true\n\
         admin = \"127.0.0.1:18090\"\n\
         admin_tls = true\n",
        a.cert_path.display(),
        b.cert_path.display(),
        a.key_path.display(),
        b.key_path.display(),
    );
    let file = ca.dir().join("rh.toml");
    std::fs::write(&file, text).unwrap();
    let file = file.display().to_string();
    let (code, out, err) = run_cli(&["--check", "--config", &file]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains(
            "listen http://127.0.0.1:18080, http://127.0.0.1:18081, https://127.0.0.1:18443,"
        ),
        "{out}"
    );
    // A typed flag replaces the file's values; a single string is one value.
    let (code, out, err) = run_cli(&["--check", "--config", &file, "--listen", "127.0.0.1:18082"]);
    assert_eq!(code, 0, "stderr: {err}");
    assert!(
        out.contains("listen http://127.0.0.1:18082, https://127.0.0.1:18443,"),
        "{out}"
    );
    // One key fewer than certificates: one line, with the file's line.
    std::fs::write(
        &file,
        format!(
            "tls_listen = \"127.0.0.1:18443\"\ntls_cert = ['{}', '{}']\ntls_key = '{}'\n",
            a.cert_path.display(),
            b.cert_path.display(),
            a.key_path.display()
        ),
    )
    .unwrap();
    let (code, _out, err) = run_cli(&["--check", "--config", &file]);
    assert_eq!(code, 2, "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "roundhouse: {file}:3: tls_key: 2 --tls-cert but 1 --tls-key"
        )),
        "{err}"
    );
}
