//! The admin interface, the request trace and the access log fields (README
//! "Operations"): metrics that a strict Prometheus parser accepts and that count what
//! happened, a JSON status, runtime drain/enable/disable/weight changes that steer
//! traffic, the token rule, the status page in headless Chromium, `--trace-header` and
//! the request id.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

// Admin requests.

/// One request to the admin interface on a fresh connection, with optional bearer token
/// and body.
fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Response {
    let mut c = Client::connect(admin);
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    c.send(format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    c.response()
}

fn admin_get(admin: SocketAddr, path: &str) -> Response {
    let r = admin_request(admin, "GET", path, None, "");
    assert_eq!(r.status, 200, "GET {path}: {}", r.body_str());
    r
}

fn post(admin: SocketAddr, backend: SocketAddr, action: &str) {
    let r = admin_request(
        admin,
        "POST",
        &format!("/backends/{backend}/{action}"),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{action} {backend}: {}", r.body_str());
}

fn status(admin: SocketAddr) -> serde_json::Value {
    let r = admin_get(admin, "/status.json");
    serde_json::from_slice(&r.body).expect("status.json is JSON")
}

/// The row of `backend` in /status.json.
fn backend_row(admin: SocketAddr, backend: SocketAddr) -> serde_json::Value {
    let s = status(admin);
    s["backends"]
        .as_array()
        .expect("a backends array")
        .iter()
        .find(|b| b["address"] == backend.to_string())
        .unwrap_or_else(|| panic!("{backend} not in {s}"))
        .clone()
}

/// The bodies of `n` GETs through the balancer, each on a fresh connection.
fn bodies(lb: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let (status, body) = get(lb, "/");
            assert_eq!(status, 200);
            body
        })
        .collect()
}

fn count(bodies: &[String], name: &str) -> usize {
    bodies.iter().filter(|b| *b == name).count()
}

// A strict parser of the Prometheus text format (0.0.4), enough to hold our output to
// the rules a scraper relies on.

type Labels = BTreeMap<String, String>;

#[derive(Debug, Default)]
pub(crate) struct Exposition {
    /// Family name -> TYPE.
    types: HashMap<String, String>,
    helps: HashMap<String, String>,
    /// (sample name, labels) -> value.
    samples: BTreeMap<(String, Labels), f64>,
}

impl Exposition {
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), labels)).copied()
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` (the braces included) into labels; the rest of the line after it.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must open with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels must be separated by commas".into());
        }
    }
}

/// The family a sample belongs to: its name, or the histogram it is a part of.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    name
}

pub(crate) fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    // Families whose samples are over: a family's samples must be contiguous.
    let mut closed: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    if !text.ends_with('\n') {
        return Err("the text must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            if keyword != "HELP" && keyword != "TYPE" {
                continue;
            }
            let name = parts.next().ok_or_else(|| at("no metric name".into()))?;
            let rest = parts.next().unwrap_or_default();
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if closed.iter().any(|c| c == name) || e.samples.keys().any(|(s, _)| s == name) {
                return Err(at(format!("{keyword} for {name} after its samples")));
            }
            let map = if keyword == "HELP" {
                &mut e.helps
            } else {
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                    return Err(at(format!("unknown type {rest:?}")));
                }
                &mut e.types
            };
            if map.insert(name.to_string(), rest.to_string()).is_some() {
                return Err(at(format!("second {keyword} for {name}")));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Labels::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(at(format!("bad timestamp {ts:?}")));
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &e.types).to_string();
        if !e.types.contains_key(&family) {
            return Err(at(format!("sample of {family} without a TYPE")));
        }
        if current.as_deref() != Some(family.as_str()) {
            if closed.contains(&family) {
                return Err(at(format!("samples of {family} are not together")));
            }
            closed.extend(current.replace(family.clone()));
        }
        if e.samples
            .insert((name.to_string(), labels), value)
            .is_some()
        {
            return Err(at("the same series twice".into()));
        }
    }
    check_families(&e)?;
    Ok(e)
}

/// Conventions by type: counters end in `_total`; a histogram has, per label set,
/// buckets in increasing `le` order whose counts never decrease, a `+Inf` bucket equal
/// to `_count`, and a `_sum`.
fn check_families(e: &Exposition) -> Result<(), String> {
    for (family, kind) in &e.types {
        if !e.helps.contains_key(family) {
            return Err(format!("{family} has no HELP"));
        }
        match kind.as_str() {
            "counter" if !family.ends_with("_total") => {
                return Err(format!("counter {family} does not end in _total"));
            }
            "histogram" => check_histogram(e, family)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_histogram(e: &Exposition, family: &str) -> Result<(), String> {
    let bucket = format!("{family}_bucket");
    let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
    for ((name, labels), value) in &e.samples {
        if *name == bucket {
            let mut rest = labels.clone();
            let le = rest.remove("le").ok_or(format!("{bucket} without le"))?;
            let le = parse_value(&le)?;
            series.entry(rest).or_default().push((le, *value));
        }
    }
    if series.is_empty() {
        return Err(format!("histogram {family} has no buckets"));
    }
    for (labels, mut buckets) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!(
                "{family}{labels:?}: buckets not cumulative: {buckets:?}"
            ));
        }
        let (le, inf) = *buckets.last().unwrap();
        if le != f64::INFINITY {
            return Err(format!("{family}{labels:?}: no +Inf bucket"));
        }
        let count = e.samples.get(&(format!("{family}_count"), labels.clone()));
        if count != Some(&inf) {
            return Err(format!(
                "{family}{labels:?}: _count {count:?} != +Inf {inf}"
            ));
        }
        if !e
            .samples
            .contains_key(&(format!("{family}_sum"), labels.clone()))
        {
            return Err(format!("{family}{labels:?}: no _sum"));
        }
    }
    Ok(())
}

#[test]
fn the_parser_used_here_is_strict() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(parse_exposition(good).is_ok());
    for bad in [
        "a_total 1\n",                                                       // no TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=1} 2\n",       // unquoted
        "# HELP a A.\n# TYPE a counter\na 2\n",                              // no _total
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 1\n", // repeated
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 0\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

fn metrics(admin: SocketAddr) -> Exposition {
    let r = admin_get(admin, "/metrics");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "content-type {:?}",
        r.header("content-type")
    );
    let text = r.body_str();
    parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn metrics_parse_and_count_a_request_to_a_backend() {
    let backend = Backend::hello("a");
    let lb = start_balancer(&[&backend], &["--admin", "127.0.0.1:0"]);
    assert_eq!(bodies(lb.addr, 3), ["a", "a", "a"]);
    let addr = backend.addr.to_string();
    let b = [("backend", addr.as_str())];
    // A request is counted, and leaves the in-flight gauge, after its answer is out:
    // poll for both.
    let mut m = metrics(lb.admin());
    wait_until("3 requests counted and none in flight", || {
        m = metrics(lb.admin());
        let ok = [("backend", addr.as_str()), ("code", "2xx")];
        m.value("roundhouse_requests_total", &ok) == Some(3.0)
            && m.value("roundhouse_request_duration_seconds_count", &b) == Some(3.0)
            && m.value("roundhouse_backend_in_flight", &b) == Some(0.0)
    });
    for family in [
        "roundhouse_requests_total",
        "roundhouse_request_duration_seconds",
        "roundhouse_backend_up",
        "roundhouse_backend_in_flight",
        "roundhouse_queue_depth",
        "roundhouse_retries_total",
        "roundhouse_ejections_total",
        "roundhouse_workers_busy",
        "roundhouse_connections_open",
    ] {
        assert!(m.types.contains_key(family), "no {family} in {m:?}");
    }
    assert_eq!(m.value("roundhouse_backend_up", &b), Some(1.0));
    assert_eq!(m.value("roundhouse_retries_total", &b), Some(0.0));
    assert_eq!(
        m.value(
            "roundhouse_requests_total",
            &[("backend", &addr), ("code", "5xx")]
        ),
        Some(0.0)
    );
}

#[test]
fn status_json_lists_backends_with_their_states() {
    let (a, b, c) = (
        Backend::hello("a"),
        Backend::hello("b"),
        Backend::hello("c"),
    );
    let lb = start_balancer(&[&a, &b, &c], &["--admin", "127.0.0.1:0"]);
    assert_eq!(bodies(lb.addr, 3).len(), 3);
    post(lb.admin(), b.addr, "drain");
    post(lb.admin(), c.addr, "disable");
    let s = status(lb.admin());
    assert_eq!(s["strategy"], "round-robin");
    assert_eq!(s["config_source"], "command line");
    assert!(s["uptime_seconds"].as_f64().is_some(), "{s}");
    assert!(s["queue_depth"].as_u64().is_some(), "{s}");
    let rows = s["backends"].as_array().unwrap();
    let states: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["address"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    let (a_addr, b_addr, c_addr) = (a.addr.to_string(), b.addr.to_string(), c.addr.to_string());
    assert_eq!(
        states,
        [
            (a_addr.as_str(), "up"),
            (b_addr.as_str(), "draining"),
            (c_addr.as_str(), "disabled")
        ]
    );
    for row in rows {
        for field in ["weight", "in_flight", "requests", "errors"] {
            assert!(row[field].as_u64().is_some(), "no {field} in {row}");
        }
        assert!(row["latency_ms"].as_f64().is_some(), "no latency in {row}");
    }
    // Counted once each answer is out: poll.
    wait_until("the 3 requests in the status", || {
        let s = status(lb.admin());
        let rows = s["backends"].as_array().unwrap().iter();
        rows.map(|r| r["requests"].as_u64().unwrap()).sum::<u64>() == 3
    });
}

#[test]
fn drain_stops_new_traffic_to_a_backend_and_enable_brings_it_back() {
    let (a, b) = (Backend::hello("a"), Backend::hello("b"));
    let lb = start_balancer(&[&a, &b], &["--admin", "127.0.0.1:0"]);
    let before = bodies(lb.addr, 4);
    assert_eq!((count(&before, "a"), count(&before, "b")), (2, 2));

    post(lb.admin(), a.addr, "drain");
    assert_eq!(bodies(lb.addr, 6), ["b"; 6]);
    assert_eq!(backend_row(lb.admin(), a.addr)["state"], "draining");
    let m = metrics(lb.admin());
    let a_label = a.addr.to_string();
    assert_eq!(
        m.value("roundhouse_backend_up", &[("backend", &a_label)]),
        Some(0.0)
    );

    post(lb.admin(), a.addr, "enable");
    let after = bodies(lb.addr, 4);
    assert_eq!((count(&after, "a"), count(&after, "b")), (2, 2));
    assert_eq!(backend_row(lb.admin(), a.addr)["state"], "up");
}

#[test]
fn disable_takes_a_backend_out_until_enabled() {
    let (a, b) = (Backend::hello("a"), Backend::hello("b"));
    let lb = start_balancer(
        &[&a, &b],
        &["--admin", "127.0.0.1:0", "--strategy", "random"],
    );
    post(lb.admin(), b.addr, "disable");
    assert_eq!(bodies(lb.addr, 8), ["a"; 8]);
    assert_eq!(backend_row(lb.admin(), b.addr)["state"], "disabled");
    post(lb.admin(), b.addr, "enable");
    wait_until("b to get a request again", || get(lb.addr, "/").1 == "b");
}

#[test]
fn weight_change_shows_in_status_and_changes_the_split() {
    let (a, b) = (Backend::hello("a"), Backend::hello("b"));
    let lb = start_balancer(&[&a, &b], &["--admin", "127.0.0.1:0"]);
    assert_eq!(bodies(lb.addr, 2), ["a", "b"]);
    let r = admin_request(
        lb.admin(),
        "PUT",
        &format!("/backends/{}/weight", a.addr),
        None,
        "3",
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(backend_row(lb.admin(), a.addr)["weight"], 3);
    let split = bodies(lb.addr, 8);
    // Smooth weighted round robin: exactly 3 to 1 over whole rounds.
    assert_eq!(
        (count(&split, "a"), count(&split, "b")),
        (6, 2),
        "{split:?}"
    );
    let a_label = a.addr.to_string();
    assert_eq!(
        metrics(lb.admin()).value("roundhouse_backend_weight", &[("backend", &a_label)]),
        Some(3.0)
    );
    // The other backend kept its counters through the change.
    wait_until("b's 3 requests counted", || {
        backend_row(lb.admin(), b.addr)["requests"] == 3
    });

    let bad = admin_request(
        lb.admin(),
        "PUT",
        &format!("/backends/{}/weight", a.addr),
        None,
        "0",
    );
    assert_eq!(bad.status, 400);
    let unknown = admin_request(lb.admin(), "PUT", "/backends/127.0.0.1:1/weight", None, "2");
    assert_eq!(unknown.status, 404);
}

#[test]
fn admin_refuses_a_non_loopback_address_without_a_token() {
    let (code, _, err) = run_cli(&["--admin", "0.0.0.0:0", "--backend", "127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--admin: '0.0.0.0:0' is not a loopback address"),
        "{err}"
    );
    for (args, says) in [
        (
            &["--admin-token", "x"][..],
            "--admin-token: only with --admin",
        ),
        (
            &["--admin", "nowhere"],
            "--admin: 'nowhere' is not host:port",
        ),
        (
            &["--admin", "127.0.0.1:0", "--admin-token", "a b"],
            "--admin-token: must be",
        ),
    ] {
        let (code, _, err) = run_cli(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn admin_requires_the_bearer_token_when_one_is_set() {
    let a = Backend::hello("a");
    let lb = start_balancer(&[&a], &["--admin", "0.0.0.0:0", "--admin-token", "s3cret"]);
    let admin: SocketAddr = format!("127.0.0.1:{}", lb.admin().port()).parse().unwrap();
    let none = admin_request(admin, "GET", "/metrics", None, "");
    assert_eq!(none.status, 401);
    assert!(
        none.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );
    assert_eq!(
        admin_request(admin, "GET", "/status.json", Some("wrong"), "").status,
        401
    );
    let drain = format!("/backends/{}/drain", a.addr);
    assert_eq!(admin_request(admin, "POST", &drain, None, "").status, 401);
    assert_eq!(
        get(lb.addr, "/"),
        (200, "a".to_string()),
        "drained without the token"
    );

    assert_eq!(
        admin_request(admin, "GET", "/metrics", Some("s3cret"), "").status,
        200
    );
    assert_eq!(
        admin_request(admin, "POST", &drain, Some("s3cret"), "").status,
        200
    );
    // The page is public (it holds no data); it asks for the token itself.
    assert_eq!(admin_request(admin, "GET", "/", None, "").status, 200);
}

#[test]
fn admin_refuses_other_web_origins_and_foreign_host_names() {
    let a = Backend::hello("a");
    let lb = start_balancer(&[&a], &["--admin", "127.0.0.1:0"]);
    let admin = lb.admin();
    let exchange = |request: String| {
        let mut c = Client::connect(admin);
        c.send(request);
        c.response()
    };
    // A hostile page's form post to the loopback admin port.
    let forged = exchange(format!(
        "POST /backends/{}/drain HTTP/1.1\r\nHost: {admin}\r\nOrigin: https://evil.example\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        a.addr
    ));
    assert_eq!(forged.status, 403);
    assert_eq!(backend_row(admin, a.addr)["state"], "up");
    // DNS rebinding: the hostile domain now points at 127.0.0.1.
    let rebound = exchange(
        "GET /status.json HTTP/1.1\r\nHost: evil.example:9000\r\nConnection: close\r\n\r\n".into(),
    );
    assert_eq!(rebound.status, 403);
    // The page's own request, from its own origin, goes through.
    let own = exchange(format!(
        "POST /backends/{}/drain HTTP/1.1\r\nHost: {admin}\r\nOrigin: http://{admin}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        a.addr
    ));
    assert_eq!(own.status, 200, "{}", own.body_str());
}

#[test]
fn the_proxy_port_does_not_serve_the_admin_interface() {
    let a = Backend::echo_target();
    let lb = start_balancer(&[&a], &["--admin", "127.0.0.1:0"]);
    // /metrics on the proxy port is the backend's business.
    assert_eq!(get(lb.addr, "/metrics"), (200, "/metrics".to_string()));
}

// The status page in a real browser.

/// Debian's Chromium, if installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Runs headless Chromium on `url` with `extra` flags; returns its stdout.
fn headless(browser: &str, url: &str, extra: &[&str]) -> String {
    let profile = std::env::temp_dir().join(format!(
        "roundhouse-chromium-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1200,800",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unique_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[test]
fn status_page_renders_in_headless_chromium_with_a_row_per_backend() {
    let Some(browser) = chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is not installed, and CI is set: .ci/run installs it");
        }
        eprintln!("NOTICE: chromium not installed; skipping the status page test");
        return;
    };
    let (a, b, c) = (
        Backend::hello("a"),
        Backend::hello("b"),
        Backend::hello("c"),
    );
    let lb = start_balancer(&[&a, &b, &c], &["--admin", "127.0.0.1:0"]);
    bodies(lb.addr, 6);
    post(lb.admin(), b.addr, "drain");
    post(lb.admin(), c.addr, "disable");
    let url = format!("http://{}/", lb.admin());

    let dom = headless(browser, &url, &["--dump-dom"]);
    // The rows exist only once the script has fetched /status.json and drawn them.
    for (backend, state) in [(&a, "up"), (&b, "draining"), (&c, "disabled")] {
        let row = format!(
            "<tr data-backend=\"{}\" data-state=\"{state}\">",
            backend.addr
        );
        assert!(dom.contains(&row), "no row {row} in:\n{dom}");
        assert!(
            dom.contains(&format!("<td class=\"addr\">{}</td>", backend.addr)),
            "{dom}"
        );
    }
    assert!(dom.contains("round-robin"), "{dom}");

    let shot: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        browser,
        &url,
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "a suspiciously small screenshot");
}

// The request trace and the request id.

#[test]
fn trace_headers_come_only_with_the_flag() {
    let a = Backend::hello("a");
    let plain = start_balancer(&[&a], &[]);
    let r = Client::connect(plain.addr).get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-roundhouse-trace"), None);
    assert_eq!(r.header("server-timing"), None);
    assert_eq!(r.header("x-request-id"), None);

    let dead = dead_addr();
    let traced = start_balancer_on(&[dead, a.addr], &["--trace-header"]);
    let mut c = Client::connect(traced.addr);
    let traces: Vec<String> = (0..2)
        .map(|_| {
            let r = c.get("/");
            assert_eq!(r.status, 200);
            let timing = r.header("server-timing").expect("Server-Timing");
            assert!(timing.starts_with("queue;dur="), "{timing}");
            assert!(timing.contains("upstream;dur="), "{timing}");
            assert!(r.header("x-request-id").is_some());
            r.header("x-roundhouse-trace").expect("a trace").to_string()
        })
        .collect();
    for t in &traces {
        assert!(t.starts_with("round-robin; candidates: "), "{t}");
        assert!(t.contains(&a.addr.to_string()), "{t}");
        assert!(t.ends_with(&format!("; answered by {}", a.addr)), "{t}");
    }
    // Round robin offers the dead backend first to one of two requests: that one says
    // why it moved on.
    let retry = format!("; retry after connect to {dead} failed");
    assert!(traces.iter().any(|t| t.contains(&retry)), "{traces:?}");
}

/// Starts the binary with `--log json` in front of `backends`.
fn spawn_logging(backends: &[SocketAddr], format: &str) -> (Proc, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", reserve_port()).parse().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        &addr.to_string(),
        "--workers",
        "2",
        "--log",
        format,
    ]);
    for b in backends {
        cmd.args(["--backend", &b.to_string()]);
    }
    let p = Proc::spawn(&mut cmd);
    wait_accepting(addr);
    (p, addr)
}

#[test]
fn request_id_is_passed_through_or_made_and_logged_with_the_timings() {
    let backend = Backend::hello("ok");
    let (p, lb) = spawn_logging(&[backend.addr], "json");

    let given = Client::connect(lb).get_with_header("X-Request-Id", "abc-123");
    assert_eq!(given.header("x-request-id"), Some("abc-123"));
    let made = Client::connect(lb).get("/made");
    let made_id = made.header("x-request-id").expect("a made id").to_string();
    assert_ne!(made_id, "abc-123");

    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.headers_named("x-request-id").join(","))
        .collect();
    assert_eq!(seen, ["abc-123".to_string(), made_id.clone()]);

    for (id, target) in [("abc-123", "/"), (made_id.as_str(), "/made")] {
        let line = p.wait_for_stdout_line("the request's log line", |l| {
            l.contains(&format!("\"request_id\":\"{id}\""))
        });
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(v["target"], target, "{line}");
        assert_eq!(v["termination"], "--", "{line}");
        assert_eq!(v["retries"], 0, "{line}");
        assert!(v["queue_ms"].as_f64().is_some(), "{line}");
        assert!(v["upstream_ms"].as_f64().is_some(), "{line}");
    }
}

#[test]
fn combined_log_carries_the_id_and_a_termination_code() {
    let dead = dead_addr();
    let (p, lb) = spawn_logging(&[dead], "combined");
    let r = Client::connect(lb).get_with_header("X-Request-Id", "rid-7");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-request-id"), Some("rid-7"));
    let line = p.wait_for_stdout_line("the combined line", |l| l.contains("rid=rid-7"));
    assert!(line.contains(" 502 "), "{line}");
    assert!(line.contains("urt=- retries=0 term=SC"), "{line}");
}
