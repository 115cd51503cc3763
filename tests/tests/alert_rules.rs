//! The alert rules and the Grafana dashboard (deploy/helm/oomlens/files):
//! the rules pass `promtool check rules` and their unit tests (`promtool
//! test rules`, one case per alert); every oomlens metric they and the
//! dashboard use is one the binaries export (docs/metrics.md lists them,
//! and metrics_reference.rs keeps that list true); the kustomize
//! component carries exactly these rules; and the chart renders them.
//!
//! promtool comes from Debian's `prometheus` package (`OOMLENS_PROMTOOL` or
//! PATH); without it the promtool test says why it skips, and with
//! `OOMLENS_REQUIRE_PROMTOOL=1` (CI) it fails instead. There is no
//! Grafana dashboard JSON schema to validate against offline: the
//! dashboard's structure is checked here instead.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use oomlens_tests::deploy::{objects, of_kind, repo, run};
use serde_json::Value;

fn files() -> PathBuf {
    repo().join("deploy/helm/oomlens/files")
}

fn rules_text() -> String {
    std::fs::read_to_string(files().join("oomlens-rules.yaml")).unwrap()
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(files().join("oomlens-dashboard.json")).unwrap()).unwrap()
}

#[test]
fn the_rules_pass_promtool_and_their_unit_tests() {
    let promtool = std::env::var("OOMLENS_PROMTOOL")
        .ok()
        .map(PathBuf::from)
        .or_else(|| oomlens_tests::find_program("promtool"));
    let Some(promtool) = promtool else {
        let reason = "needs promtool (Debian package prometheus)";
        assert!(
            std::env::var("OOMLENS_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "{reason} (OOMLENS_REQUIRE_PROMTOOL=1)"
        );
        eprintln!("SKIPPED the_rules_pass_promtool_and_their_unit_tests: {reason}; .ci/run installs it");
        return;
    };
    let checked = run(Command::new(&promtool)
        .args(["check", "rules", "oomlens-rules.yaml"])
        .current_dir(files()));
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    let tested = run(Command::new(&promtool)
        .args(["test", "rules", "oomlens-rules.test.yaml"])
        .current_dir(files()));
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(files().join("oomlens-rules.test.yaml")).unwrap();
    for alert in alerts(&rules_text()) {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no unit test for {alert}"
        );
    }
}

fn alerts(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect()
}

/// `oomlens_*` names in a text, as Prometheus would read them.
fn oomlens_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("oomlens_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let documented = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let exported: BTreeSet<String> = documented
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    let dashboard_exprs: String = panels(&dashboard())
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_owned() + "\n")
        .collect();
    let mut used = oomlens_metrics(&rules_text());
    // The rules name the CLI (`oomlens events`) in prose: not metrics.
    used.retain(|name| name.starts_with("oomlens_agent_") || name.starts_with("oomlens_collector_"));
    let from_dashboard = oomlens_metrics(&dashboard_exprs);
    assert!(from_dashboard.len() >= 10, "{from_dashboard:?}");
    used.extend(from_dashboard);
    for name in &used {
        assert!(
            exported.contains(name),
            "{name} is used but not exported (docs/metrics.md)"
        );
    }
}

fn panels(dashboard: &Value) -> Vec<Value> {
    dashboard["panels"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "oomlens-oom-kills");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
    let panels = panels(&dashboard);
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: duplicate id");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24 && grid["h"].as_u64().unwrap() > 0, "{title}: {grid}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            !panel["description"].as_str().unwrap_or_default().is_empty(),
            "{title}"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            // Balanced brackets: a typo here is a panel that shows nothing.
            for (open, close) in [('(', ')'), ('{', '}'), ('[', ']')] {
                assert_eq!(
                    expr.matches(open).count(),
                    expr.matches(close).count(),
                    "{title}: {expr}"
                );
            }
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "OOM kills by scope",
        "OOM kills by namespace",
        "Top containers by fraction of their limit",
        "Kernel log records lost",
        "Spool",
        "Send errors",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted}: {titles:?}");
    }
}

/// The kustomize component's PrometheusRule, made from the rules file
/// (kustomize cannot read files outside its directory).
fn component_text() -> String {
    let body: String = rules_text()
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {l}\n")
            }
        })
        .collect();
    format!(
        "# Generated from deploy/helm/oomlens/files/oomlens-rules.yaml by\n\
         # `OOMLENS_BLESS=1 cargo test -p oomlens-tests --test alert_rules`: edit that file.\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: oomlens\n\
         spec:\n{body}"
    )
}

#[test]
fn the_kustomize_component_carries_the_rules() {
    let path = repo().join("deploy/kustomize/components/prometheus-rule/prometheusrule.yaml");
    let wanted = component_text();
    if std::env::var("OOMLENS_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &wanted).unwrap();
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == wanted,
        "{} is stale: OOMLENS_BLESS=1 remakes it",
        path.display()
    );
}

#[test]
fn the_chart_and_the_secure_overlay_render_the_rules_and_the_dashboard() {
    let tools = oomlens_tests::require_deploy_tools!();
    let rules = objects(&rules_text()).remove(0);
    let rendered = run(Command::new(&tools.helm)
        .args(["template", "oomlens"])
        .arg(repo().join("deploy/helm/oomlens"))
        .args([
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "grafanaDashboard.enabled=true",
        ]));
    let objects_ = objects(&rendered);
    let rule = of_kind(&objects_, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    assert_eq!(rule[0]["spec"], rules);
    let dashboards: Vec<&Value> = of_kind(&objects_, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert_eq!(dashboards.len(), 1);
    let json: Value =
        serde_json::from_str(dashboards[0]["data"]["oomlens-dashboard.json"].as_str().unwrap()).unwrap();
    assert_eq!(json, dashboard());
    // Off by default.
    let plain = objects(&run(Command::new(&tools.helm)
        .args(["template", "oomlens"])
        .arg(repo().join("deploy/helm/oomlens"))));
    assert!(of_kind(&plain, "PrometheusRule").is_empty());

    let secure = objects(&run(Command::new(&tools.kubectl)
        .arg("kustomize")
        .arg(repo().join("deploy/kustomize/overlays/secure"))));
    let rule = of_kind(&secure, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    assert_eq!(rule[0]["spec"], rules);
    for monitor in of_kind(&secure, "PodMonitor")
        .into_iter()
        .chain(of_kind(&objects_, "PodMonitor"))
    {
        assert_eq!(
            monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"], true,
            "{monitor}"
        );
    }
}
