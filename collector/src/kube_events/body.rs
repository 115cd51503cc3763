//! What one kill becomes in the Kubernetes API: an `events.k8s.io/v1`
//! Event regarding the Pod (and its container), related to the Node, with
//! a reason per kind of kill and one line that answers the 3 AM question.
//! Pure: the bodies here are what the API receives, checked in tests
//! against the API's own schema and validation rules.

use oomlens_common::units::{human_bytes, quantity};
use oomlens_proto::json::JsonEnum as _;
use oomlens_proto::time::format_rfc3339;
use oomlens_proto::v1::{ContainerRole, OomEvent, Scope, Verdict};
use serde_json::{Value, json};

/// `reportingController` of every Event oomlens writes.
pub const REPORTING_CONTROLLER: &str = "oomlens";
/// The label carrying the first kill's oomlens event id.
pub const EVENT_ID_LABEL: &str = "oomlens.io/event-id";
/// The annotation carrying the latest kill's id in a series.
pub const LAST_EVENT_ID_ANNOTATION: &str = "oomlens.io/last-event-id";
/// The API's limit on `note`, bytes.
pub const NOTE_MAX_BYTES: usize = 1024;
/// Object names are DNS subdomains of at most 253 characters.
const NAME_MAX: usize = 253;

/// Why, in the Event's `reason`: which limit, or a kill Kubernetes does
/// not show at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    ContainerLimit,
    PodLimit,
    NodeAllocatable,
    NodeOutOfMemory,
    Cpuset,
    MemoryPolicy,
    /// A kill whose limit could not be told.
    Unknown,
    /// A child process killed inside a container that kept running: the
    /// pod's status shows nothing, so this Event is the only trace.
    ChildProcess,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContainerLimit => "OOMKilledContainerLimit",
            Self::PodLimit => "OOMKilledPodLimit",
            Self::NodeAllocatable => "OOMKilledNodeAllocatable",
            Self::NodeOutOfMemory => "OOMKilledNodeOutOfMemory",
            Self::Cpuset => "OOMKilledCpuset",
            Self::MemoryPolicy => "OOMKilledMemoryPolicy",
            Self::Unknown => "OOMKilled",
            Self::ChildProcess => "OOMKilledChildProcess",
        }
    }

    fn of(event: &OomEvent) -> Self {
        if event.silent == Some(true) {
            return Self::ChildProcess;
        }
        match Scope::try_from(event.scope).unwrap_or(Scope::Unspecified) {
            Scope::ContainerLimit => Self::ContainerLimit,
            Scope::PodLimit => Self::PodLimit,
            Scope::NodeAllocatable => Self::NodeAllocatable,
            Scope::NodeOom => Self::NodeOutOfMemory,
            Scope::Cpuset => Self::Cpuset,
            Scope::Mempolicy => Self::MemoryPolicy,
            Scope::OtherCgroup | Scope::Unknown | Scope::Unspecified => Self::Unknown,
        }
    }
}

/// One kill of a pod's process, ready to become an Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub event_id: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    /// `spec.containers{api}`, as the kubelet's own container Events.
    pub field_path: Option<String>,
    pub node: Option<String>,
    pub reason: Reason,
    pub note: String,
    /// The kill's time, as the API's MicroTime.
    pub time: String,
    /// Kills this Event stands for: above 1 only when a series' Event
    /// expired from the API and a new one carries the series on.
    pub series_count: u32,
}

/// Which Events a repeat of this kill joins: the same pod, container and
/// reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: Option<String>,
    pub container: Option<String>,
    pub reason: Reason,
}

impl Occurrence {
    /// The kill as an Event, or None when it was not a pod's process or
    /// the pod's name and namespace are unknown (nothing to attach to).
    pub fn of(event: &OomEvent) -> Option<Self> {
        let pod = event.pod.as_ref()?;
        let namespace = pod.namespace.clone().filter(|n| !n.is_empty())?;
        let name = pod.name.clone().filter(|n| !n.is_empty())?;
        let container = event
            .container
            .as_ref()
            .and_then(|c| c.name.clone())
            .filter(|n| !n.is_empty());
        let field_path = event.container.as_ref().zip(container.as_ref()).map(|(c, name)| {
            let list = match ContainerRole::try_from(c.role).unwrap_or(ContainerRole::Unspecified) {
                ContainerRole::Init | ContainerRole::Sidecar => "initContainers",
                ContainerRole::Ephemeral => "ephemeralContainers",
                ContainerRole::Main | ContainerRole::Unspecified => "containers",
            };
            format!("spec.{list}{{{name}}}")
        });
        let time = event.time.as_ref().map_or_else(
            || "1970-01-01T00:00:00.000000Z".to_owned(),
            |t| micro_time(t.seconds, t.nanos),
        );
        Some(Self {
            event_id: event.id.clone(),
            namespace,
            pod: name,
            pod_uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            container,
            field_path,
            node: event.node.clone().filter(|n| !n.is_empty()),
            reason: Reason::of(event),
            note: note(event),
            time,
            series_count: 1,
        })
    }

    /// This kill as the Event of a series of `count` kills.
    pub fn with_series(mut self, count: u32) -> Self {
        self.series_count = count;
        self
    }

    pub fn key(&self) -> SeriesKey {
        SeriesKey {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            pod_uid: self.pod_uid.clone(),
            container: self.container.clone(),
            reason: self.reason,
        }
    }

    /// The Event's name: the pod's name and the kill's id, so that a kill
    /// handed over twice (a collector restarted before saving its cursor)
    /// meets its own Event (409 AlreadyExists) instead of making another.
    pub fn event_name(&self) -> String {
        let short = self.event_id.get(..16).unwrap_or(&self.event_id);
        let suffix = format!(".oomlens.{short}");
        let room = NAME_MAX - suffix.len();
        let pod = self.pod.get(..room.min(self.pod.len())).unwrap_or(&self.pod);
        format!("{}{suffix}", pod.trim_end_matches(['.', '-']))
    }

    /// The body of the POST that creates the Event.
    pub fn create_body(&self, name: &str, reporting_instance: &str) -> Value {
        let mut regarding = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": self.namespace,
            "name": self.pod,
        });
        if let Some(uid) = &self.pod_uid {
            regarding["uid"] = json!(uid);
        }
        if let Some(path) = &self.field_path {
            regarding["fieldPath"] = json!(path);
        }
        let mut event = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {EVENT_ID_LABEL: self.event_id},
                "annotations": {LAST_EVENT_ID_ANNOTATION: self.event_id},
            },
            "eventTime": self.time,
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": reporting_instance_value(reporting_instance),
            "action": "Killed",
            "reason": self.reason.as_str(),
            "regarding": regarding,
            "note": self.note,
            "type": "Warning",
        });
        if self.series_count >= 2 {
            event["series"] = json!({"count": self.series_count, "lastObservedTime": self.time});
        }
        if let Some(node) = &self.node {
            event["related"] = json!({"apiVersion": "v1", "kind": "Node", "name": node});
        }
        event
    }
}

/// The merge patch that makes an Event a series of `count` kills, the
/// latest at `last_observed` with `note` and id `last_id`.
pub fn series_patch(count: u32, last_observed: &str, last_id: &str) -> Value {
    json!({
        "metadata": {"annotations": {LAST_EVENT_ID_ANNOTATION: last_id}},
        "series": {"count": count, "lastObservedTime": last_observed},
    })
}

/// `reportingInstance` is at most 128 characters.
fn reporting_instance_value(instance: &str) -> String {
    let mut end = instance.len().min(128);
    while !instance.is_char_boundary(end) {
        end -= 1;
    }
    instance[..end].to_owned()
}

/// `2026-11-30T10:00:00.123456Z`: the API's MicroTime (microseconds,
/// always six digits).
pub fn micro_time(seconds: i64, nanos: i32) -> String {
    let micros = u32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0) / 1000;
    let whole = format_rfc3339(seconds, 0);
    format!("{}.{micros:06}Z", whole.trim_end_matches('Z'))
}

/// One line: who was killed at which limit, the verdict with its numbers,
/// the recommended limit, and the command that shows the rest. At most
/// [`NOTE_MAX_BYTES`].
pub fn note(event: &OomEvent) -> String {
    let container = event.container.as_ref().and_then(|c| c.name.as_deref());
    let victim = event.victim.as_ref();
    let comm = victim.and_then(|v| v.comm.as_deref()).unwrap_or("?");
    let pid = victim
        .and_then(|v| v.pid)
        .map_or_else(String::new, |pid| format!(" {pid}"));
    let limit = event
        .memcg_usage
        .as_ref()
        .and_then(|u| u.limit_kb)
        .map(|kb| kb.saturating_mul(1024))
        .or_else(|| event.history.as_ref().and_then(|h| h.limit_bytes))
        .or_else(|| event.container.as_ref().and_then(|c| c.memory_limit_bytes));
    let sized = |what: &str| match limit {
        Some(limit) => format!("its {} {what}", quantity(limit)),
        None => format!("its {what}"),
    };
    let scope = Scope::try_from(event.scope).unwrap_or(Scope::Unspecified);
    let whom = container.map_or_else(|| "the pod".to_owned(), |c| format!("container {c}"));
    let at = match scope {
        Scope::ContainerLimit => sized("container limit"),
        Scope::PodLimit => sized("pod limit"),
        Scope::NodeAllocatable => "the node's allocatable memory (all pods together)".to_owned(),
        Scope::NodeOom => {
            "the node running out of memory (Kubernetes shows Error, exit 137, not OOMKilled)".to_owned()
        }
        Scope::Cpuset => "its cpuset's memory nodes running out".to_owned(),
        Scope::Mempolicy => "its memory policy's nodes running out".to_owned(),
        _ => "a memory limit".to_owned(),
    };
    let mut text = if event.silent == Some(true) {
        format!(
            "process {comm}{pid} killed inside {whom} at {at}; the container kept running, so Kubernetes shows no restart"
        )
    } else {
        format!("{whom} ({comm}{pid}) killed at {at}")
    };
    // The kernel's own figure at the kill first: samples taken every
    // 100 ms can miss a climb that took less.
    let usage = event
        .memcg_usage
        .as_ref()
        .and_then(|u| u.usage_kb)
        .map(|kb| kb.saturating_mul(1024));
    if let Some(usage) = usage.filter(|_| !matches!(scope, Scope::NodeOom)) {
        text.push_str(&format!(": usage {} at the kill", human_bytes(usage)));
    } else if let Some(peak) = event.history.as_ref().and_then(|h| h.peak_working_set_bytes) {
        text.push_str(&format!(": peak working set {}", human_bytes(peak)));
    }
    let analysis = event.analysis.as_ref();
    if let Some((analysis, verdict)) =
        analysis.and_then(|a| Some((a, Verdict::try_from(a.verdict).ok().and_then(Verdict::word)?)))
    {
        text.push_str(&format!("; {}", verdict.replace('_', " ")));
        if !analysis.reasoning.is_empty() {
            text.push_str(&format!(": {}", analysis.reasoning));
        }
    }
    let tail = {
        let mut tail = String::new();
        if let Some(recommended) = analysis.and_then(|a| a.recommended_limit_bytes) {
            tail.push_str(&format!("; recommended limit {}", quantity(recommended)));
        }
        let short = event.id.get(..8).unwrap_or(&event.id);
        tail.push_str(&format!("; oomlens show {short}"));
        tail
    };
    // The reasoning gives way first: the recommendation and the command
    // are what a reader acts on.
    let room = NOTE_MAX_BYTES - tail.len();
    if text.len() > room {
        let mut end = room.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text.push_str(&tail);
    text
}

#[cfg(test)]
mod tests;
