//! `Top` and warnings across PostgreSQL replicas. Each replica shares the
//! latest status report of every node whose agent it serves (one row per
//! node, written at most once a second) and reads the others' when asked
//! for `Top`; warnings go to every replica over NOTIFY. Without this, with
//! three replicas `oomlens top` showed about a third of the fleet and a
//! subscriber heard a third of the warnings.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use oomlens_proto::v1::{ContainerMemoryStatus, ContainerStatusReport, MemoryWarning};
use prost::Message as _;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::statuses::STATUS_TTL;
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

#[derive(Debug)]
pub(crate) struct Fleet {
    store: Store,
    /// This replica's name on the warnings channel, to skip its own.
    replica: String,
    pending: Mutex<HashMap<String, ContainerStatusReport>>,
    /// Containers `Top` takes from the shared reports at most (the
    /// status board's own bound).
    max_statuses: usize,
    others: tokio::sync::Mutex<Option<(Instant, Vec<ContainerMemoryStatus>)>>,
    warnings: mpsc::Sender<String>,
}

impl Fleet {
    /// Starts sharing through `store`'s database until the returned
    /// handle is dropped.
    pub(super) fn start(store: Store, max_statuses: usize) -> Arc<Self> {
        let (warnings, queue) = mpsc::channel(WARNINGS_QUEUE);
        let fleet = Arc::new(Self {
            store,
            replica: replica_name(),
            pending: Mutex::default(),
            max_statuses,
            others: tokio::sync::Mutex::default(),
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

    /// The other replicas' containers (and this one's, as last shared),
    /// from reports at most [`STATUS_TTL`] old; read at most once a
    /// second. Empty, with a log line, when the database cannot answer.
    pub(super) async fn shared_statuses(&self) -> Vec<ContainerMemoryStatus> {
        let mut others = self.others.lock().await;
        if let Some((read, statuses)) = others.as_ref()
            && read.elapsed() < READ_AGAIN_AFTER
        {
            return statuses.clone();
        }
        let statuses = match self.store.shared_statuses(STATUS_TTL, MAX_SHARED_NODES).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(
                    |(node, body)| match ContainerStatusReport::decode(body.as_slice()) {
                        Ok(report) => Some(report.containers),
                        Err(error) => {
                            warn!(%node, %error, "a shared status report cannot be decoded; skipped");
                            None
                        }
                    },
                )
                .flatten()
                .take(self.max_statuses)
                .collect(),
            Err(error) => {
                warn!(%error, "cannot read the other replicas' status reports: Top shows this replica's agents only");
                Vec::new()
            }
        };
        *others = Some((Instant::now(), statuses.clone()));
        statuses
    }
}

/// `local` and `shared` statuses, one per container (node and cgroup):
/// the one with the later sample time.
pub(super) fn merge(
    local: Vec<ContainerMemoryStatus>,
    shared: Vec<ContainerMemoryStatus>,
) -> Vec<ContainerMemoryStatus> {
    let time = |s: &ContainerMemoryStatus| s.time.as_ref().map(|t| (t.seconds, t.nanos));
    let mut by_container: HashMap<(String, String), ContainerMemoryStatus> = HashMap::new();
    for status in shared.into_iter().chain(local) {
        let key = (status.node.clone(), status.cgroup.clone());
        match by_container.get(&key) {
            Some(held) if time(held) > time(&status) => {}
            _ => {
                by_container.insert(key, status);
            }
        }
    }
    by_container.into_values().collect()
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

    #[test]
    fn merging_keeps_the_latest_of_each_container() {
        let local = vec![status("a", "/c1", 10, 1), status("a", "/c2", 5, 2)];
        let shared = vec![
            status("a", "/c1", 9, 100),
            status("a", "/c2", 6, 200),
            status("b", "/c1", 1, 300),
        ];
        let mut merged = merge(local, shared);
        merged.sort_by(|x, y| (&x.node, &x.cgroup).cmp(&(&y.node, &y.cgroup)));
        let seen: Vec<(&str, &str, u64)> = merged
            .iter()
            .map(|s| (s.node.as_str(), s.cgroup.as_str(), s.working_set_bytes))
            .collect();
        assert_eq!(seen, [("a", "/c1", 1), ("a", "/c2", 200), ("b", "/c1", 300)]);
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
