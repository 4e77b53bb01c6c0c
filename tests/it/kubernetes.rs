//! The Kubernetes manifests in `contrib/kubernetes/`: valid for the API's own schemas,
//! in agreement with each other (names, ports, labels, the shutdown timings), and
//! carrying a config file that roundhouse's `--check` accepts with the Deployment's
//! flags.
//!
//! The schemas are kubernetes-validate's (a PyPI package that `.ci/run` installs), which
//! ships them inside the package: nothing is fetched. The YAML is read by PyYAML, which
//! kubernetes-validate depends on. Without either, these tests skip with a notice,
//! unless `CI` is set.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/kubernetes");

/// Every manifest, each one document.
const FILES: [&str; 5] = [
    "deployment.yaml",
    "configmap.yaml",
    "service.yaml",
    "pdb.yaml",
    "backend-service.yaml",
];

/// The oldest and the newest Kubernetes whose schemas kubernetes-validate 1.37 ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

#[test]
fn every_manifest_passes_the_kubernetes_schemas_strictly() {
    let mut found: Vec<String> = std::fs::read_dir(DIR)
        .expect("contrib/kubernetes")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    found.sort();
    let mut expected = FILES.map(String::from).to_vec();
    expected.sort();
    assert_eq!(found, expected, "a manifest this test does not know of");
    for version in KUBERNETES_VERSIONS {
        let mut cmd = Command::new("kubernetes-validate");
        cmd.current_dir(DIR)
            .args(["--strict", "-k", version])
            .args(FILES);
        let Some((code, out, err)) = run_tool(&mut cmd) else {
            eprintln!("NOTICE: kubernetes-validate is not installed; skipping the schema check");
            return;
        };
        assert_eq!(code, 0, "kubernetes-validate {version}:\n{out}{err}");
        // An unknown kind or apiVersion is only a warning, with exit code 0.
        for file in FILES {
            assert!(
                out.lines()
                    .chain(err.lines())
                    .any(|l| l.contains(&format!("{file} passed"))),
                "kubernetes-validate {version} did not pass {file}:\n{out}{err}"
            );
        }
    }
}

#[test]
fn the_configmap_passes_roundhouse_check_with_the_deployment_flags() {
    let Some(m) = Manifests::load() else { return };
    let container = m.container("roundhouse");
    let toml = m.config_text();
    let backend = m.backend_address();
    // The backend's name is the cluster's; here it resolves nowhere, so --check gets a
    // loopback address with the same port (the name's form is checked below, against
    // backend-service.yaml).
    let (_, port) = backend.rsplit_once(':').unwrap();
    let toml = toml.replace(&format!("\"{backend}\""), &format!("\"127.0.0.1:{port}\""));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roundhouse.toml");
    std::fs::write(&config, toml).unwrap();

    let typed = strings(&container["args"]);
    let mut args = vec!["--check".to_string()];
    let mut rest = typed.iter().peekable();
    while let Some(arg) = rest.next() {
        let value = rest.next_if(|v| !v.starts_with("--"));
        args.push(arg.clone());
        match (arg.as_str(), value) {
            ("--config", Some(_)) => args.push(config.to_string_lossy().into_owned()),
            ("--admin-token", Some(v)) => {
                assert_eq!(v, "$(ADMIN_TOKEN)", "the token comes from the Secret");
                args.push("a-token-for-the-test".into());
            }
            (_, Some(v)) => args.push(v.clone()),
            (_, None) => {}
        }
    }
    assert!(
        args.iter().any(|a| a == "--admin-token"),
        "the admin listens off loopback: {typed:?}"
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run_cli(&args);
    assert_eq!(code, 0, "roundhouse {args:?}:\n{out}{err}");
    assert!(out.contains("the configuration is valid"), "{out}");
}

#[test]
fn the_manifests_agree_on_names_ports_and_labels() {
    let Some(m) = Manifests::load() else { return };
    let deployment = m.doc("deployment.yaml");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    let container = m.container("roundhouse");

    // The config file: the ConfigMap, mounted whole (a subPath mount is never updated,
    // so the reload would never see a change), at the path --config names.
    let volume = find(&pod["spec"]["volumes"], "config");
    let configmap = m.doc("configmap.yaml");
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    for c in [container, m.container("reload")] {
        let mount = find(&c["volumeMounts"], "config");
        assert_eq!(mount["mountPath"], "/etc/roundhouse", "{}", c["name"]);
        assert!(mount.get("subPath").is_none(), "{}", c["name"]);
    }
    assert_eq!(
        arg_value(container, "--config"),
        Some("/etc/roundhouse/roundhouse.toml")
    );
    assert_eq!(
        pod["spec"]["shareProcessNamespace"], true,
        "reload sends SIGHUP"
    );
    // The admin token: the Secret's, by way of the variable the args name.
    let token = &find(&container["env"], "ADMIN_TOKEN")["valueFrom"]["secretKeyRef"];
    assert_eq!(token["name"], "roundhouse-admin");
    assert_eq!(
        arg_value(container, "--admin-token"),
        Some("$(ADMIN_TOKEN)")
    );

    // Ports: the config's listen and admin addresses are the container's named ports,
    // which the probes and the Service use.
    let config: toml::Table = m.config_text().parse().expect("the ConfigMap's toml");
    let port_of = |key: &str| {
        let addr = config[key].as_str().unwrap();
        addr.rsplit_once(':').unwrap().1.parse::<u64>().unwrap()
    };
    let http = find(&container["ports"], "http");
    let admin = find(&container["ports"], "admin");
    assert_eq!(http["containerPort"], port_of("listen"));
    assert_eq!(admin["containerPort"], port_of("admin"));
    for (probe, path) in [("readinessProbe", "/ready"), ("livenessProbe", "/live")] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let service = m.doc("service.yaml");
    let service_ports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(service_ports[0]["targetPort"], "http");
    for p in service_ports {
        let target = &p["targetPort"];
        assert!(
            target != "admin" && target != &admin["containerPort"],
            "the admin port stays off the Service: {p}"
        );
    }

    // Labels: the Deployment, the Service and the budget all select these pods.
    for (what, selector) in [
        ("deployment", &deployment["spec"]["selector"]["matchLabels"]),
        ("service", &service["spec"]["selector"]),
        ("pdb", &m.doc("pdb.yaml")["spec"]["selector"]["matchLabels"]),
    ] {
        let selector = selector.as_object().expect(what);
        assert!(!selector.is_empty(), "{what}");
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "{what} selects on {k}");
        }
    }

    // The backend: the headless Service's cluster name, with the pods' port.
    let backend = m.doc("backend-service.yaml");
    assert_eq!(backend["spec"]["clusterIP"], "None", "headless");
    let port = &backend["spec"]["ports"][0];
    assert_eq!(port["port"], port["targetPort"]);
    assert_eq!(
        m.backend_address(),
        format!(
            "{}.default.svc.cluster.local:{}",
            backend["metadata"]["name"].as_str().unwrap(),
            port["targetPort"]
        )
    );
}

#[test]
fn the_deployment_drains_within_its_grace_period_and_runs_locked_down() {
    let Some(m) = Manifests::load() else { return };
    let deployment = m.doc("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = m.container("roundhouse");

    // Two pods or more, and the budget always leaves one serving.
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert!(replicas >= 2, "{replicas} replicas");
    let budget = &m.doc("pdb.yaml")["spec"];
    assert!(budget["maxUnavailable"].as_u64().unwrap() < replicas);

    // SIGKILL only after the drain delay and the grace (10s unless typed).
    let duration = |flag: &str, default: &str| {
        let typed = arg_value(container, flag).unwrap_or(default);
        humantime::parse_duration(typed).expect(flag)
    };
    assert!(arg_value(container, "--drain-delay").is_some());
    let needed = duration("--drain-delay", "0s") + duration("--grace", "10s");
    let period = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(period > needed, "{period:?} is not longer than {needed:?}");

    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    for c in pod["containers"].as_array().unwrap() {
        let name = &c["name"];
        let security = &c["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["capabilities"]["drop"][0], "ALL", "{name}");
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][resource].is_string(),
                    "{name}: {kind}.{resource}"
                );
            }
        }
    }
    // The root file system is read-only; spilled bodies go to $TMPDIR.
    let tmp = find(&container["volumeMounts"], "tmp");
    assert_eq!(tmp["mountPath"], "/tmp");
    assert!(find(&pod["volumes"], "tmp")["emptyDir"].is_object());
}

/// The manifests as JSON, read by PyYAML: file name to its one document.
struct Manifests(serde_json::Map<String, Value>);

impl Manifests {
    /// None (after a notice) where python3 or PyYAML is missing, outside CI.
    fn load() -> Option<Manifests> {
        let script = "import json, sys\n\
                      try:\n    import yaml\n\
                      except ImportError:\n    sys.exit(3)\n\
                      print(json.dumps({f: list(yaml.safe_load_all(open(f))) \
                      for f in sys.argv[1:]}))";
        let mut cmd = Command::new("python3");
        cmd.current_dir(DIR).args(["-c", script]).args(FILES);
        let (code, out, err) = match run_tool(&mut cmd) {
            Some((3, ..)) | None => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "python3 with PyYAML is missing, and CI is set: .ci/run installs \
                     kubernetes-validate, which brings PyYAML"
                );
                eprintln!("NOTICE: python3 with PyYAML not found; skipping the manifests test");
                return None;
            }
            Some(done) => done,
        };
        assert_eq!(code, 0, "reading the manifests:\n{err}");
        let Value::Object(files) = serde_json::from_str(&out).expect("json") else {
            panic!("not an object: {out}");
        };
        let mut docs = serde_json::Map::new();
        for (file, list) in files {
            let [doc] = <[Value; 1]>::try_from(list.as_array().unwrap().clone())
                .unwrap_or_else(|_| panic!("{file}: one document"));
            docs.insert(file, doc);
        }
        Some(Manifests(docs))
    }

    fn doc(&self, file: &str) -> &Value {
        &self.0[file]
    }

    fn container(&self, name: &str) -> &Value {
        let pod = &self.doc("deployment.yaml")["spec"]["template"]["spec"];
        find(&pod["containers"], name)
    }

    /// `roundhouse.toml` as the ConfigMap holds it.
    fn config_text(&self) -> &str {
        self.doc("configmap.yaml")["data"]["roundhouse.toml"]
            .as_str()
            .expect("the ConfigMap holds roundhouse.toml")
    }

    /// The config file's one backend address, as written.
    fn backend_address(&self) -> String {
        let config: toml::Table = self.config_text().parse().expect("the ConfigMap's toml");
        let backends = config["backend"].as_array().expect("[[backend]] tables");
        assert_eq!(backends.len(), 1, "{backends:?}");
        backends[0]["address"].as_str().unwrap().to_string()
    }
}

/// The element of a list of named things (containers, ports, volumes) named `name`.
fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("nothing named {name} in {list}"))
}

/// A list of values as strings: strings as they are, anything else as JSON.
fn strings(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
        .collect()
}

/// The value typed after `flag` in the container's args.
fn arg_value<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    let args = container["args"].as_array()?;
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.as_str()
}
