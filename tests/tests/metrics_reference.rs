//! docs/metrics.md is the reference of the metrics: every metric the agent
//! and the collector expose is in its tables, under the name Prometheus
//! sees (counters with `_total`), and every metric the tables name is
//! registered in the source (a labelled family shows in an exposition only
//! once it has a series, so the source is where all of them can be seen).
//! The alert rules and the dashboard are checked against the tables in
//! alert_rules.rs.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

/// The exposed names of an exposition: counters as `NAME_total`, others
/// as their family name.
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or_default());
            if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            }
        })
        .collect()
}

fn documented(prefix: &str) -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::read_to_string(root.join("docs/metrics.md"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Names given to `registry.register(` in a crate's source.
fn registered_in_source(dir: &str) -> BTreeSet<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut names = BTreeSet::new();
    let mut stack = vec![root.join(dir)];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                // The receiver's name too: other types have `register`
                // methods (the OOM notifier's takes cgroup paths).
                for (at, _) in text.match_indices("registry.register(") {
                    let rest = text[at + "registry.register(".len()..].trim_start();
                    if let Some(quoted) = rest.strip_prefix('"') {
                        names.insert(quoted.split('"').next().unwrap().to_owned());
                    }
                }
            }
        }
    }
    names
}

fn check(what: &str, prefix: &str, exposition: &str, source: &str) {
    let exposed = exposed(exposition);
    let documented = documented(prefix);
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "{what}: exposed but not in docs/metrics.md: {undocumented:?}"
    );
    let in_source = registered_in_source(source);
    let gone: Vec<_> = documented
        .iter()
        .filter(|name| {
            let short = name.strip_prefix(prefix).unwrap();
            !in_source.contains(short) && !in_source.contains(short.strip_suffix("_total").unwrap_or(short))
        })
        .collect();
    assert!(
        gone.is_empty(),
        "{what}: in docs/metrics.md but registered nowhere: {gone:?}"
    );
    // And the other way for the families an empty exposition hides.
    let hidden: Vec<_> = in_source
        .iter()
        .filter(|short| {
            let name = format!("{prefix}{short}");
            !documented.contains(&name) && !documented.contains(&format!("{name}_total"))
        })
        .collect();
    assert!(
        hidden.is_empty(),
        "{what}: registered but not in docs/metrics.md: {hidden:?}"
    );
}

#[test]
fn every_agent_metric_is_documented_and_every_documented_one_exists() {
    let metrics = oomlens_agent::app::AgentMetrics::new();
    assert!(registered_in_source("agent/src").contains("container_oom_kills"));
    check("agent", "oomlens_agent_", &metrics.encode(), "agent/src");
}

#[test]
fn every_collector_metric_is_documented_and_every_documented_one_exists() {
    let metrics = oomlens_collector::metrics::CollectorMetrics::new();
    check(
        "collector",
        "oomlens_collector_",
        &metrics.encode(),
        "collector/src",
    );
}
