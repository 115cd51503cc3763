//! `Top` and warnings across PostgreSQL replicas. Each replica shares the
//! latest status report of every node whose agent it serves (one row per
//! node, written at most once a second) and reads the others' when asked
//! for `Top`; warnings go to every replica over NOTIFY. Without this, with
//! three replicas `oomlens top` showed about a third of the fleet and a
//! subscriber heard a third of the warnings.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use oomlens_proto::v1::{ContainerMemoryStatus, ContainerStatusReport, MemoryWarning};
use prost::Message as _;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::statuses::{STATUS_TTL, Standing, closest_first, first_by, sample_time};
use crate::store::{MAX_NOTIFY_PAYLOAD, Store};

/// How often a replica writes the reports it received.
const SHARE_EVERY: Duration = Duration::from_secs(1);
/// How long a replica reuses what it read of the others' reports.
const READ_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Reports of nodes silent this long are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Warnings waiting to be relayed; more are dropped (and logged).
const WARNINGS_QUEUE: usize = 1024;
/// Nodes whose shared reports `Top` reads at most (the newest): four
/// times the 5,000 nodes a collector tier is sized for, so that an ingest
/// token inventing node names cannot make every replica decode without
/// end.
const MAX_SHARED_NODES: usize = 20_000;

/// Containers of the shared reports `Top` ranks at most: a 5,000-node
/// cluster with 110 pods per node, with room (about 200 bytes each:
/// the encoded reports and their ranking).
const MAX_SHARED_CONTAINERS: usize = 600_000;

#[derive(Debug)]
pub(crate) struct Fleet {
    store: Store,
    /// This replica's name on the warnings channel, to skip its own.
    replica: String,
    pending: Mutex<HashMap<String, ContainerStatusReport>>,
    /// Containers `Top` ranks from the shared reports at most.
    max_shared: usize,
    shared: tokio::sync::Mutex<SharedReports>,
    warnings: mpsc::Sender<String>,
}

impl Fleet {
    /// Starts sharing through `store`'s database until the returned
    /// handle is dropped.
    pub(super) fn start(store: Store) -> Arc<Self> {
        let (warnings, queue) = mpsc::channel(WARNINGS_QUEUE);
        let fleet = Arc::new(Self {
            store,
            replica: replica_name(),
            pending: Mutex::default(),
            max_shared: MAX_SHARED_CONTAINERS,
            shared: tokio::sync::Mutex::default(),
            warnings,
        });
        tokio::spawn(share(Arc::downgrade(&fleet)));
        tokio::spawn(relay_warnings(fleet.store.clone(), queue));
        fleet
    }

    pub(crate) fn replica(&self) -> &str {
        &self.replica
    }

    /// Keeps `report` as `node`'s latest, to be shared.
    pub(super) fn offer(&self, node: &str, report: &ContainerStatusReport) {
        let node = match node {
            "" => report
                .containers
                .first()
                .map(|c| c.node.clone())
                .unwrap_or_default(),
            node => node.to_owned(),
        };
        if node.is_empty() {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, report.clone());
    }

    /// Sends `warning` to the other replicas' subscribers.
    pub(super) fn warn(&self, warning: &MemoryWarning) {
        let payload = format!("{}:{}", self.replica, hex(&warning.encode_to_vec()));
        if payload.len() > MAX_NOTIFY_PAYLOAD {
            warn!(
                bytes = payload.len(),
                "a warning too large to relay to other replicas; only this replica's subscribers see it"
            );
            return;
        }
        if self.warnings.try_send(payload).is_err() {
            warn!("warnings are arriving faster than they can be relayed to other replicas; one was not");
        }
    }

    /// The first `limit` containers in `Top`'s order among the shared
    /// reports (every replica's, as last shared) of the nodes that pass
    /// `node_wanted`, in the namespaces that pass `namespace_wanted`
    /// (None: a container outside any pod). The reports
    /// are re-read at most once a second, and then only those that
    /// changed; ranking reads no report, and only the reports of the
    /// containers shown are decoded again. Empty, with a log line, when
    /// the database cannot answer.
    ///
    /// A node this replica has statuses of (`local_newest`: its newest
    /// sample) counts only where the shared report is newer (an agent
    /// that moved here is fresher here; one that moved away, there);
    /// returned with the first `limit` are those nodes, whose statuses
    /// on this replica's board are stale.
    pub(super) async fn top(
        &self,
        local_newest: &HashMap<String, Option<(i64, i32)>>,
        node_wanted: impl Fn(&str) -> bool,
        namespace_wanted: impl Fn(Option<&str>) -> bool,
        limit: usize,
    ) -> (Vec<ContainerMemoryStatus>, HashSet<String>) {
        let mut shared = self.shared.lock().await;
        if shared.read.is_none_or(|at| at.elapsed() >= READ_AGAIN_AFTER) {
            if let Err(error) = shared.refresh(&self.store, self.max_shared).await {
                warn!(%error, "cannot read the other replicas' status reports: Top shows this replica's agents only");
                *shared = SharedReports::default();
                return (Vec::new(), HashSet::new());
            }
            shared.read = Some(Instant::now());
        }
        let stale_here: HashSet<String> = local_newest
            .iter()
            .filter(|(node, local)| {
                shared
                    .nodes
                    .get(node.as_str())
                    .is_some_and(|n| n.newest > **local)
            })
            .map(|(node, _)| node.clone())
            .collect();
        let chosen = shared.top(
            |node, newest| node_wanted(node) && local_newest.get(node).is_none_or(|local| newest > *local),
            namespace_wanted,
            limit,
        );
        (chosen, stale_here)
    }
}

/// The shared status reports as last read, ranked.
#[derive(Debug, Default)]
pub(super) struct SharedReports {
    read: Option<Instant>,
    nodes: HashMap<String, SharedNode>,
}

/// One node's shared report and where each of its containers stands.
#[derive(Debug)]
struct SharedNode {
    /// When it was shared (database clock, microseconds): changed means
    /// read again.
    shared_us: i64,
    report: Vec<u8>,
    /// The newest sample time in the report.
    newest: Option<(i64, i32)>,
    namespaces: Vec<String>,
    containers: Vec<Ranked>,
}

/// A container of a shared report, as much as ranking needs.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    /// Its place in the report.
    index: usize,
    /// Into `SharedNode::namespaces`.
    namespace: Option<usize>,
    standing: Standing,
}

impl SharedNode {
    fn read(shared_us: i64, report: Vec<u8>) -> Result<Self, prost::DecodeError> {
        let decoded = ContainerStatusReport::decode(report.as_slice())?;
        let mut namespaces: Vec<String> = Vec::new();
        let mut containers = Vec::new();
        let mut newest = None;
        for (index, status) in decoded.containers.iter().enumerate() {
            newest = newest.max(sample_time(status));
            // Top shows only containers with a limit.
            if status.limit_bytes.is_none_or(|l| l == 0) {
                continue;
            }
            let namespace = status
                .pod
                .as_ref()
                .and_then(|p| p.namespace.as_deref())
                .map(|ns| {
                    namespaces
                        .iter()
                        .position(|known| known == ns)
                        .unwrap_or_else(|| {
                            namespaces.push(ns.to_owned());
                            namespaces.len() - 1
                        })
                });
            containers.push(Ranked {
                index,
                namespace,
                standing: Standing::of(status),
            });
        }
        Ok(Self {
            shared_us,
            report,
            newest,
            namespaces,
            containers,
        })
    }
}

impl SharedReports {
    /// Reads the reports shared since the last read, and forgets those
    /// no longer live (at most `max_containers` ranked in all).
    async fn refresh(
        &mut self,
        store: &Store,
        max_containers: usize,
    ) -> Result<(), crate::store::StoreError> {
        let times = store.shared_report_times(STATUS_TTL, MAX_SHARED_NODES).await?;
        let live: HashMap<&str, i64> = times.iter().map(|(node, at)| (node.as_str(), *at)).collect();
        self.nodes
            .retain(|node, shared| live.get(node.as_str()) == Some(&shared.shared_us));
        let changed: Vec<String> = times
            .iter()
            .filter(|(node, _)| !self.nodes.contains_key(node))
            .map(|(node, _)| node.clone())
            .collect();
        let mut ranked: usize = self.nodes.values().map(|n| n.containers.len()).sum();
        for chunk in changed.chunks(500) {
            for (node, shared_us, report) in store.shared_reports(chunk).await? {
                match SharedNode::read(shared_us, report) {
                    Ok(shared) if ranked + shared.containers.len() <= max_containers => {
                        ranked += shared.containers.len();
                        self.nodes.insert(node, shared);
                    }
                    Ok(_) => {
                        warn!(%node, max_containers, "more shared containers than Top ranks (600,000): it leaves out this node's");
                    }
                    Err(error) => warn!(%node, %error, "a shared status report cannot be decoded; skipped"),
                }
            }
        }
        Ok(())
    }

    fn top(
        &self,
        node_wanted: impl Fn(&str, Option<(i64, i32)>) -> bool,
        namespace_wanted: impl Fn(Option<&str>) -> bool,
        limit: usize,
    ) -> Vec<ContainerMemoryStatus> {
        let mut candidates: Vec<(&str, Ranked)> = Vec::new();
        for (node, shared) in &self.nodes {
            if !node_wanted(node, shared.newest) {
                continue;
            }
            let namespaces: Vec<bool> = shared
                .namespaces
                .iter()
                .map(|ns| namespace_wanted(Some(ns)))
                .collect();
            let without_namespace = namespace_wanted(None);
            candidates.extend(
                shared
                    .containers
                    .iter()
                    .filter(|c| c.namespace.map_or(without_namespace, |i| namespaces[i]))
                    .map(|c| (node.as_str(), *c)),
            );
        }
        let chosen = first_by(candidates, limit, |a, b| a.1.standing.order(&b.1.standing));
        // Decode only the reports that hold what is shown.
        let mut by_node: HashMap<&str, Vec<usize>> = HashMap::new();
        for (node, ranked) in &chosen {
            by_node.entry(node).or_default().push(ranked.index);
        }
        let mut statuses = Vec::with_capacity(chosen.len());
        for (node, indices) in by_node {
            let Ok(mut report) = ContainerStatusReport::decode(self.nodes[node].report.as_slice()) else {
                continue;
            };
            for index in indices {
                if let Some(status) = report.containers.get_mut(index) {
                    statuses.push(std::mem::take(status));
                }
            }
        }
        statuses.sort_by(closest_first);
        statuses
    }
}

/// Writes the pending reports every [`SHARE_EVERY`] and forgets silent
/// nodes now and then, while the fleet handle lives.
async fn share(fleet: Weak<Fleet>) {
    let mut ticker = tokio::time::interval(SHARE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut last_forget = Instant::now();
    loop {
        ticker.tick().await;
        let Some(fleet) = fleet.upgrade() else {
            return;
        };
        let pending = std::mem::take(&mut *fleet.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let reports = pending
            .into_iter()
            .map(|(node, report)| (node, report.encode_to_vec()))
            .collect();
        match fleet.store.share_statuses(reports).await {
            Ok(()) if failing => {
                info!("sharing status reports with the other replicas again");
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                warn!(%error, "cannot share status reports with the other replicas; Top elsewhere misses this replica's agents until it can");
                failing = true;
            }
            Err(_) => {}
        }
        if last_forget.elapsed() >= FORGET_AFTER / 10 {
            last_forget = Instant::now();
            if let Err(error) = fleet.store.forget_shared_statuses(FORGET_AFTER).await {
                warn!(%error, "cannot delete old status reports");
            }
        }
    }
}

async fn relay_warnings(store: Store, mut queue: mpsc::Receiver<String>) {
    while let Some(payload) = queue.recv().await {
        if let Err(error) = store.notify_warning(&payload).await {
            warn!(%error, "cannot relay a warning to the other replicas");
        }
    }
}

/// The warning in a payload from the warnings channel, unless this
/// replica sent it (its subscribers had it already) or it is garbled.
pub(crate) fn warning_from(payload: &str, own_replica: &str) -> Option<MemoryWarning> {
    let (sender, body) = payload.split_once(':')?;
    if sender == own_replica {
        return None;
    }
    MemoryWarning::decode(unhex(body)?.as_slice()).ok()
}

/// A name no other replica has: host, process and start time.
fn replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{}-{nanos:x}", host.trim(), std::process::id()).replace(':', "-")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn status(node: &str, cgroup: &str, seconds: i64, working_set: u64) -> ContainerMemoryStatus {
        ContainerMemoryStatus {
            node: node.into(),
            cgroup: cgroup.into(),
            time: Some(Timestamp { seconds, nanos: 0 }),
            working_set_bytes: working_set,
            ..ContainerMemoryStatus::default()
        }
    }

    fn report(node: &str, seconds: i64, containers: &[(&str, Option<&str>, u64)]) -> Vec<u8> {
        ContainerStatusReport {
            containers: containers
                .iter()
                .map(|(cgroup, namespace, working_set)| ContainerMemoryStatus {
                    pod: namespace.map(|ns| oomlens_proto::v1::Pod {
                        namespace: Some(ns.into()),
                        ..oomlens_proto::v1::Pod::default()
                    }),
                    limit_bytes: Some(100),
                    ..status(node, cgroup, seconds, *working_set)
                })
                .collect(),
        }
        .encode_to_vec()
    }

    fn shared(reports: &[(&str, Vec<u8>)]) -> SharedReports {
        SharedReports {
            read: Some(Instant::now()),
            nodes: reports
                .iter()
                .map(|(node, report)| ((*node).to_owned(), SharedNode::read(1, report.clone()).unwrap()))
                .collect(),
        }
    }

    fn shown(statuses: &[ContainerMemoryStatus]) -> Vec<(&str, &str)> {
        statuses
            .iter()
            .map(|s| (s.node.as_str(), s.cgroup.as_str()))
            .collect()
    }

    #[test]
    fn top_of_shared_reports_ranks_across_nodes_and_filters_without_decoding_all() {
        let reports = shared(&[
            (
                "a",
                report(
                    "a",
                    10,
                    &[
                        ("/a1", Some("shop"), 90),
                        ("/a2", Some("db"), 50),
                        ("/a3", None, 99),
                    ],
                ),
            ),
            (
                "b",
                report("b", 10, &[("/b1", Some("shop"), 95), ("/b2", Some("db"), 70)]),
            ),
            // A container without a limit is never in Top.
            ("c", {
                let mut r =
                    ContainerStatusReport::decode(report("c", 10, &[("/c1", Some("db"), 99)]).as_slice())
                        .unwrap();
                r.containers[0].limit_bytes = None;
                r.encode_to_vec()
            }),
        ]);
        let all = reports.top(|_, _| true, |_| true, 3);
        assert_eq!(shown(&all), [("a", "/a3"), ("b", "/b1"), ("a", "/a1")]);
        assert_eq!(all[1].working_set_bytes, 95, "the status itself, decoded again");
        let db = reports.top(|_, _| true, |ns| ns == Some("db"), 10);
        assert_eq!(shown(&db), [("b", "/b2"), ("a", "/a2")]);
        let only_a = reports.top(|node, _| node == "a", |_| true, 10);
        assert_eq!(shown(&only_a), [("a", "/a3"), ("a", "/a1"), ("a", "/a2")]);
    }

    #[test]
    fn a_shared_node_knows_its_newest_sample() {
        let node = SharedNode::read(1, report("a", 7, &[("/a1", None, 1)])).unwrap();
        assert_eq!(node.newest, Some((7, 0)));
        assert!(SharedNode::read(1, vec![0xff, 0xff]).is_err());
    }

    #[test]
    fn warnings_round_trip_and_a_replica_skips_its_own() {
        let warning = MemoryWarning {
            node: "node-a".into(),
            cgroup: "/kubepods/pod1/c1".into(),
            ..MemoryWarning::default()
        };
        let payload = format!("r1:{}", hex(&warning.encode_to_vec()));
        assert_eq!(warning_from(&payload, "r2"), Some(warning));
        assert_eq!(warning_from(&payload, "r1"), None);
        for garbled in ["", "r1", "r3:zz", "r3:abc"] {
            assert_eq!(warning_from(garbled, "r2"), None, "{garbled:?}");
        }
    }
}
