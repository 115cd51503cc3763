//! The parser on real kernel-log excerpts as people published them
//! (agent/tests/corpus/, each with its source and hand-written expected
//! events; conventions in its README). Prints a table per class and per
//! field, and fails below: every kill identified, at least 97% of kills
//! exact on every field, no event that is not a kill.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use oomlens_agent::postmortem::events_from_text;
use oomlens_proto::json::JsonEnum as _;
use oomlens_proto::v1::{Constraint, OomEvent, QosClass};
use serde_json::Value;

const FIELDS: &[&str] = &[
    "kind",
    "pid",
    "comm",
    "oom_memcg",
    "task_memcg",
    "pod_uid",
    "qos",
    "container_id",
    "uid",
    "oom_score_adj",
    "total_vm_kb",
    "anon_rss_kb",
    "file_rss_kb",
    "shmem_rss_kb",
    "host",
];

/// Syslog lines show no year; the corpus's excerpts are all from before
/// this one, and no expected field depends on it.
const YEAR: i64 = 2024;

struct Excerpt {
    name: String,
    classes: Vec<String>,
    expected: Vec<BTreeMap<String, Value>>,
    text: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load() -> Vec<Excerpt> {
    let mut excerpts = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    for json_path in names {
        let meta: Value =
            serde_json::from_slice(&std::fs::read(&json_path).expect("json")).unwrap_or_else(|e| {
                panic!("{}: {e}", json_path.display());
            });
        let log_path = json_path.with_extension("log");
        let raw = std::fs::read(&log_path).unwrap_or_else(|e| panic!("{}: {e}", log_path.display()));
        assert!(
            meta["source"].as_str().is_some_and(|s| !s.is_empty()),
            "{}: no source",
            json_path.display()
        );
        let expected = meta["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| {
                let object = e.as_object().expect("event object");
                for field in FIELDS {
                    assert!(
                        object.contains_key(*field),
                        "{}: {field} missing",
                        json_path.display()
                    );
                }
                object.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            })
            .collect();
        excerpts.push(Excerpt {
            name: json_path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned(),
            classes: meta["classes"]
                .as_array()
                .expect("classes")
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
            expected,
            text: String::from_utf8_lossy(&raw).into_owned(),
        });
    }
    excerpts
}

fn text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |v| Value::String(v.to_owned()))
}

fn number<T: Into<serde_json::Number>>(value: Option<T>) -> Value {
    value.map_or(Value::Null, |v| Value::Number(v.into()))
}

/// An event's fields in the corpus's terms.
fn fields_of(event: &OomEvent) -> BTreeMap<String, Value> {
    let victim = event.victim.clone().unwrap_or_default();
    let kind = match Constraint::try_from(event.constraint).unwrap_or(Constraint::Unspecified) {
        Constraint::Memcg => Some("memcg"),
        Constraint::Global => Some("global"),
        Constraint::Cpuset => Some("cpuset"),
        Constraint::Mempolicy => Some("mempolicy"),
        Constraint::Unspecified => None,
    };
    let qos = event
        .pod
        .as_ref()
        .and_then(|p| QosClass::try_from(p.qos).ok())
        .filter(|q| *q != QosClass::Unspecified)
        .and_then(|q| q.word());
    let values = [
        ("kind", text(kind)),
        ("pid", number(victim.pid)),
        ("comm", text(victim.comm.as_deref())),
        ("oom_memcg", text(event.oom_memcg.as_deref())),
        ("task_memcg", text(event.task_memcg.as_deref())),
        ("pod_uid", text(event.pod.as_ref().map(|p| p.uid.as_str()))),
        ("qos", text(qos.as_deref())),
        (
            "container_id",
            text(event.container.as_ref().map(|c| c.id.as_str())),
        ),
        ("uid", number(victim.uid)),
        ("oom_score_adj", number(victim.oom_score_adj)),
        ("total_vm_kb", number(victim.total_vm_kb)),
        ("anon_rss_kb", number(victim.anon_rss_kb)),
        ("file_rss_kb", number(victim.file_rss_kb)),
        ("shmem_rss_kb", number(victim.shmem_rss_kb)),
        ("host", text(event.node.as_deref())),
    ];
    values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Pairs expected with actual events: same pid first, then in order among
/// those with no pid on either side.
fn pair(
    expected: &[BTreeMap<String, Value>],
    actual: &[BTreeMap<String, Value>],
) -> Vec<(usize, Option<usize>)> {
    let mut used = BTreeSet::new();
    let mut pairs = Vec::new();
    for (i, e) in expected.iter().enumerate() {
        let found = actual
            .iter()
            .enumerate()
            .find(|(j, a)| !used.contains(j) && !e["pid"].is_null() && a["pid"] == e["pid"])
            .map(|(j, _)| j);
        if let Some(j) = found {
            used.insert(j);
        }
        pairs.push((i, found));
    }
    for pair in pairs.iter_mut().filter(|(_, found)| found.is_none()) {
        let e = &expected[pair.0];
        if let Some((j, _)) = actual.iter().enumerate().find(|(j, a)| {
            !used.contains(j)
                && (a["pid"].is_null() || e["pid"].is_null())
                && (a["task_memcg"] == e["task_memcg"] || a["oom_memcg"] == e["oom_memcg"])
        }) {
            used.insert(j);
            pair.1 = Some(j);
        }
    }
    pairs
}

#[derive(Default)]
struct Tally {
    kills: usize,
    identified: usize,
    exact: usize,
    false_events: usize,
    excerpts: usize,
}

#[test]
fn real_excerpts_are_read_exactly() {
    let excerpts = load();
    assert!(excerpts.len() >= 60, "the corpus has {} excerpts", excerpts.len());
    let mut by_class: BTreeMap<String, Tally> = BTreeMap::new();
    let mut total = Tally::default();
    let mut field_right: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for excerpt in &excerpts {
        let actual: Vec<BTreeMap<String, Value>> = events_from_text(&excerpt.text, YEAR)
            .iter()
            .map(fields_of)
            .collect();
        let pairs = pair(&excerpt.expected, &actual);
        let mut tally = Tally {
            kills: excerpt.expected.len(),
            excerpts: 1,
            ..Tally::default()
        };
        for (i, found) in &pairs {
            let expected = &excerpt.expected[*i];
            let Some(j) = found else {
                failures.push(format!("{}: kill {} not found", excerpt.name, expected["pid"]));
                continue;
            };
            tally.identified += 1;
            let mut wrong = Vec::new();
            for field in FIELDS {
                let entry = field_right.entry(field).or_default();
                entry.1 += 1;
                if expected[*field] == actual[*j][*field] {
                    entry.0 += 1;
                } else {
                    wrong.push(format!(
                        "{field}: expected {} got {}",
                        expected[*field], actual[*j][*field]
                    ));
                }
            }
            if wrong.is_empty() {
                tally.exact += 1;
            } else {
                failures.push(format!(
                    "{} pid {}: {}",
                    excerpt.name,
                    expected["pid"],
                    wrong.join("; ")
                ));
            }
        }
        let paired: BTreeSet<usize> = pairs.iter().filter_map(|(_, j)| *j).collect();
        for (_, event) in actual.iter().enumerate().filter(|(j, _)| !paired.contains(j)) {
            tally.false_events += 1;
            failures.push(format!(
                "{}: not a kill, reported: pid {}",
                excerpt.name, event["pid"]
            ));
        }
        for class in excerpt.classes.iter().chain(std::iter::once(&"(all)".to_owned())) {
            let entry = by_class.entry(class.clone()).or_default();
            entry.kills += tally.kills;
            entry.identified += tally.identified;
            entry.exact += tally.exact;
            entry.false_events += tally.false_events;
            entry.excerpts += 1;
        }
        total.kills += tally.kills;
        total.identified += tally.identified;
        total.exact += tally.exact;
        total.false_events += tally.false_events;
        total.excerpts += 1;
    }
    println!(
        "\n{:<24} {:>8} {:>6} {:>11} {:>6} {:>6}",
        "class", "excerpts", "kills", "identified", "exact", "false"
    );
    for (class, t) in &by_class {
        println!(
            "{class:<24} {:>8} {:>6} {:>11} {:>6} {:>6}",
            t.excerpts, t.kills, t.identified, t.exact, t.false_events
        );
    }
    println!("\n{:<14} {:>8}", "field", "right");
    for (field, (right, all)) in &field_right {
        println!("{field:<14} {right:>4}/{all}");
    }
    for failure in &failures {
        println!("  {failure}");
    }
    let exact_share = total.exact as f64 / total.kills.max(1) as f64;
    println!(
        "\n{} excerpts, {} kills: {} identified, {} exact ({:.1}%), {} false events",
        total.excerpts,
        total.kills,
        total.identified,
        total.exact,
        exact_share * 100.0,
        total.false_events
    );
    assert_eq!(total.identified, total.kills, "every kill identified");
    assert!(exact_share >= 0.97, "{:.1}% exact", exact_share * 100.0);
    assert_eq!(total.false_events, 0, "no event that is not a kill");
}
