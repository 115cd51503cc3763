//! Judging what the subscriber received: each kill once with its facts
//! and its climb, the storm's spread, and both daemons' counters.

use std::collections::HashMap;

use oomlens_proto::json::event_to_json_line;
use oomlens_proto::v1::{OomEvent, Scope};
use oomlens_tests::metric;

use crate::scenarios::{Expected, PLAIN, STORM};

/// Sum over every series of a metric.
fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn brief(event: &OomEvent) -> String {
    format!(
        "{} {} partial={} pod={:?} container={:?} task_memcg={:?} victim={:?}",
        &event.id[..8],
        Scope::try_from(event.scope).map_or("?", |s| s.as_str_name()),
        event.partial,
        event.pod.as_ref().and_then(|p| p.name.as_deref()),
        event
            .container
            .as_ref()
            .map(|c| (c.id.get(..12), c.name.as_deref())),
        event.task_memcg,
        event.victim.as_ref().and_then(|v| v.pid),
    )
}

/// The hog (`tail`) is the process each scenario means to kill.
pub(crate) fn hog_victim(event: &OomEvent) -> bool {
    event
        .victim
        .as_ref()
        .is_some_and(|v| v.comm.as_deref() == Some("tail"))
}

/// The history shows the climb: sampled at least 5 times in the last
/// second before the kill, starting well below the limit and ending near it.
fn assert_climb(event: &OomEvent, limit: u64) {
    let json = event_to_json_line(event);
    let history = event
        .history
        .as_ref()
        .unwrap_or_else(|| panic!("no history: {json}"));
    let kill_ms = event
        .time
        .as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap();
    let points: Vec<(i64, u64)> = history
        .samples
        .iter()
        .filter_map(|s| {
            let t = s.time.as_ref()?;
            Some((
                t.seconds * 1000 + i64::from(t.nanos) / 1_000_000,
                s.working_set_bytes?,
            ))
        })
        .collect();
    let last_second = points
        .iter()
        .filter(|(t, _)| (kill_ms - 1000..=kill_ms + 100).contains(t))
        .count();
    let low = points
        .iter()
        .filter(|(t, _)| *t >= kill_ms - 5000)
        .map(|(_, ws)| *ws)
        .min()
        .unwrap_or(u64::MAX);
    let high = points.iter().map(|(_, ws)| *ws).max().unwrap_or(0);
    assert!(
        last_second >= 5,
        "{last_second} samples in the last second before the kill: {json}"
    );
    assert!(
        low < limit * 2 / 5,
        "the climb starts below 40% of the limit ({low} B): {json}"
    );
    assert!(
        high > limit * 3 / 5,
        "the climb reaches 60% of the limit ({high} B): {json}"
    );
}

/// Every expected kill arrived, each once, with its identity, scope,
/// silent flag and climb; no event id came twice. Returns the second
/// kills: other processes the kernel killed in a hog's cgroup.
pub(crate) fn each_kill_arrived_once(
    expected: &HashMap<String, Expected>,
    ours: &HashMap<String, Vec<OomEvent>>,
    received: &[OomEvent],
    plain_path: &str,
    agent_log: impl Fn() -> String,
) -> usize {
    // One line per event for failure messages; the assertions about one
    // event print its full JSON.
    let dump = received.iter().map(brief).collect::<Vec<_>>().join("\n");
    let hog_killed = |events: &Vec<OomEvent>| events.iter().any(hog_victim);
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !ours.get(*k).is_some_and(hog_killed))
        .collect();
    assert!(
        missing.is_empty(),
        "{} kills never reached the subscriber: {missing:?}\nreceived:\n{dump}\nagent log:\n{}",
        missing.len(),
        agent_log()
    );
    // Each kill once: the kernel sometimes kills a second process of the
    // same cgroup (the feeder) before the hog's memory is freed; that is
    // another kill, with another victim, and it must arrive once too.
    let mut second_kills = 0;
    for (k, events) in ours {
        let mut victims: Vec<Option<i32>> = events
            .iter()
            .map(|e| e.victim.as_ref().and_then(|v| v.pid))
            .collect();
        victims.sort_unstable();
        victims.dedup();
        assert_eq!(victims.len(), events.len(), "{k}: a kill received twice:\n{dump}");
        second_kills += events.len() - 1;
        let hogs: Vec<&OomEvent> = events.iter().filter(|e| hog_victim(e)).collect();
        assert_eq!(hogs.len(), 1, "{k}: the hog killed once:\n{dump}");
        for event in events {
            let json = event_to_json_line(event);
            let want = &expected[k];
            assert_eq!(event.scope, want.scope as i32, "scope of {k}: {json}");
            assert_eq!(event.node.as_deref(), Some("e2e-node"), "{json}");
        }
        let event = hogs[0];
        let json = event_to_json_line(event);
        let want = &expected[k];
        assert_eq!(event.silent, want.silent, "silent flag of {k}: {json}");
        match &want.pod {
            Some((name, namespace)) => {
                let pod = event.pod.as_ref().unwrap_or_else(|| panic!("no pod: {json}"));
                assert_eq!(pod.name.as_ref(), Some(name), "{json}");
                assert_eq!(pod.namespace.as_deref(), Some(namespace.as_str()), "{json}");
                assert_eq!(Some(pod.qos), want.qos.map(|q| q as i32), "{json}");
                let container = event.container.as_ref().unwrap();
                assert_eq!(container.name, want.container, "{json}");
            }
            None => {
                assert!(event.pod.is_none() && event.container.is_none(), "{json}");
                assert_eq!(event.task_memcg.as_deref(), Some(plain_path), "{json}");
                assert_eq!(event.systemd_unit.as_deref(), Some(PLAIN), "{json}");
            }
        }
        assert_climb(event, want.limit);
    }
    let ids: std::collections::HashSet<&str> = received.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "an event id twice:\n{dump}");

    second_kills
}

/// The storm's kills came within 2 s.
pub(crate) fn storm_was_one(
    ours: &HashMap<String, Vec<OomEvent>>,
    storm_ids: &[String],
    second_kills: usize,
) {
    // The storm was one: 20 kills within 2 s, more than the kernel reports.
    let storm_times: Vec<i64> = storm_ids
        .iter()
        .map(|id| {
            let hog = ours[id].iter().find(|e| hog_victim(e)).unwrap();
            let t = hog.time.as_ref().unwrap();
            t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
        })
        .collect();
    let spread = storm_times.iter().max().unwrap() - storm_times.iter().min().unwrap();
    let first = *storm_times.iter().min().unwrap();
    let mut offsets: Vec<i64> = storm_times.iter().map(|t| t - first).collect();
    offsets.sort_unstable();
    eprintln!("storm kill times after the first, ms: {offsets:?}");
    let partial = storm_ids
        .iter()
        .flat_map(|id| &ours[id])
        .filter(|e| e.partial)
        .count();
    eprintln!(
        "storm: {STORM} hogs killed within {spread} ms, {partial} reports rate-limited by the kernel; \
         {second_kills} second kills in a hog's cgroup"
    );
    assert!(spread < 2000, "the storm took {spread} ms");
}

/// The agent's and the collector's counters agree with what arrived.
pub(crate) fn counters_agree(
    received: &[OomEvent],
    agent_page: &str,
    collector_page: &str,
    ns: impl Fn(&str) -> String,
) {
    // The counters agree with what arrived.
    for (namespace, scope) in [
        (ns("shop"), Scope::ContainerLimit),
        (ns("jobs"), Scope::ContainerLimit),
        (ns("db"), Scope::PodLimit),
        (ns("storm"), Scope::ContainerLimit),
    ] {
        let count = received
            .iter()
            .filter(|e| e.scope == scope as i32)
            .filter(|e| e.pod.as_ref().and_then(|p| p.namespace.as_deref()) == Some(namespace.as_str()))
            .count();
        assert!(count >= 1);
        let word = scope.as_str_name().trim_start_matches("SCOPE_").to_lowercase();
        let series = format!("oomlens_agent_oom_kills_total{{scope=\"{word}\",namespace=\"{namespace}\"}}");
        assert_eq!(
            metric(agent_page, &series),
            count as f64,
            "{series}\n{agent_page}"
        );
    }
    let agent_kills = metric_sum(agent_page, "oomlens_agent_oom_kills_total");
    let shipped = metric(
        agent_page,
        "oomlens_agent_shipped_events_total{result=\"stored\"}",
    );
    let stored = metric(
        collector_page,
        "oomlens_collector_events_total{result=\"stored\"}",
    );
    assert_eq!(
        agent_kills,
        received.len() as f64,
        "agent kills vs subscriber:\n{agent_page}"
    );
    // Each kill was stored once, and each of its later revisions (what the
    // runtime reported after it) once more: revision r means r of them.
    let items: u32 = received.iter().map(|e| 1 + e.revision).sum();
    assert_eq!(
        shipped,
        f64::from(items),
        "agent shipped vs subscriber:\n{agent_page}"
    );
    assert_eq!(
        stored,
        f64::from(items),
        "collector stored vs subscriber:\n{collector_page}"
    );
    assert_eq!(
        metric(agent_page, "oomlens_agent_spool_events"),
        0.0,
        "{agent_page}"
    );
    // The storm's containers were followed; by now their cgroups are gone
    // and their histories kept for the grace period.
    let followed = metric(agent_page, "oomlens_agent_cgroups_tracked")
        + metric(agent_page, "oomlens_agent_cgroups_in_grace");
    assert!(followed >= STORM as f64, "{agent_page}");
    assert!(
        metric(agent_page, "oomlens_agent_kmsg_records_total") > 0.0,
        "{agent_page}"
    );
    assert_eq!(
        metric(agent_page, "oomlens_agent_kmsg_forged_lines_total"),
        0.0,
        "{agent_page}"
    );
}
