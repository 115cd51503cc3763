//! What a webhook receives: the body (the whole event, or a summary for
//! chat and paging tools) and its signature. Pure.

use hmac::{Hmac, Mac as _};
use oomlens_common::units::{human_bytes, quantity};
use oomlens_proto::json::{JsonEnum as _, event_to_json_line};
use oomlens_proto::time::format_rfc3339;
use oomlens_proto::v1::{OomEvent, Scope, Verdict};
use sha2::Sha256;

/// What each POST carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `{"type", "cursor", "event"}` with the event's full JSON form.
    #[default]
    Full,
    /// `{"type", "cursor", "id", ...}`: who, where, which limit, the
    /// verdict and the recommendation, and one line of text; no history.
    Summary,
}

/// `oom_kill`, or `oom_kill_update` for a later revision of a kill
/// delivered before (same id, what the runtime reported after it).
fn kind(event: &OomEvent) -> &'static str {
    if event.revision > 0 {
        "oom_kill_update"
    } else {
        "oom_kill"
    }
}

/// The body of one delivery.
pub fn body(format: Format, cursor: i64, event: &OomEvent) -> String {
    match format {
        Format::Full => format!(
            "{{\"type\":\"{}\",\"cursor\":\"{cursor}\",\"event\":{}}}",
            kind(event),
            event_to_json_line(event)
        ),
        Format::Summary => summary(cursor, event).to_string(),
    }
}

fn summary(cursor: i64, event: &OomEvent) -> serde_json::Value {
    let pod = event.pod.as_ref();
    let namespace = pod.and_then(|p| p.namespace.clone());
    let pod_name = pod.and_then(|p| p.name.clone());
    let container = event.container.as_ref().and_then(|c| c.name.clone());
    let scope = Scope::try_from(event.scope).ok().and_then(Scope::word);
    let analysis = event.analysis.as_ref();
    let verdict = analysis
        .and_then(|a| Verdict::try_from(a.verdict).ok())
        .and_then(Verdict::word);
    let limit = event
        .container
        .as_ref()
        .and_then(|c| c.memory_limit_bytes)
        .or_else(|| event.history.as_ref().and_then(|h| h.limit_bytes));
    let peak = event.history.as_ref().and_then(|h| h.peak_working_set_bytes);
    let recommended = analysis.and_then(|a| a.recommended_limit_bytes);
    let time = event
        .time
        .as_ref()
        .map(|t| format_rfc3339(t.seconds, u32::try_from(t.nanos).unwrap_or(0)));
    serde_json::json!({
        "type": kind(event),
        "revision": event.revision,
        "cursor": cursor.to_string(),
        "id": event.id,
        "time": time,
        "node": event.node,
        "namespace": namespace,
        "pod": pod_name,
        "container": container,
        "scope": scope,
        "victim": event.victim.as_ref().and_then(|v| v.comm.clone()),
        "silent": event.silent,
        "limit_bytes": limit,
        "peak_working_set_bytes": peak,
        "verdict": verdict,
        "recommended_limit_bytes": recommended,
        "text": one_line(event, limit, recommended),
    })
}

/// `shop/api-7 (container api) killed at its container limit 512Mi;
/// verdict spike; recommended limit 768Mi; oomlens show 5e34102c`.
fn one_line(event: &OomEvent, limit: Option<u64>, recommended: Option<u64>) -> String {
    let pod = event.pod.as_ref();
    let who = match (
        pod.and_then(|p| p.namespace.as_deref()),
        pod.and_then(|p| p.name.as_deref()),
    ) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        _ => event
            .victim
            .as_ref()
            .and_then(|v| v.comm.clone())
            .map_or_else(|| "a process".to_owned(), |comm| format!("process {comm}")),
    };
    let container = event
        .container
        .as_ref()
        .and_then(|c| c.name.as_deref())
        .map(|name| format!(" (container {name})"))
        .unwrap_or_default();
    let scope = Scope::try_from(event.scope)
        .ok()
        .and_then(Scope::word)
        .unwrap_or_else(|| "unknown".to_owned())
        .replace('_', " ");
    let mut text = format!("{who}{container} killed at its {scope}");
    if let Some(limit) = limit {
        text.push_str(&format!(" {}", human_bytes(limit)));
    }
    if let Some(verdict) = event
        .analysis
        .as_ref()
        .and_then(|a| Verdict::try_from(a.verdict).ok())
        .and_then(Verdict::word)
    {
        text.push_str(&format!("; verdict {}", verdict.replace('_', " ")));
    }
    if let Some(recommended) = recommended {
        text.push_str(&format!("; recommended limit {}", quantity(recommended)));
    }
    let short = event.id.get(..8).unwrap_or(&event.id);
    text.push_str(&format!("; oomlens show {short}"));
    text
}

/// `X-Oomlens-Signature`: `t=UNIX_SECONDS,v1=HEX`, HEX the HMAC-SHA256 of
/// `UNIX_SECONDS.BODY` under the shared secret. The time is signed too,
/// so a receiver can refuse an old delivery replayed to it.
pub fn signature(secret: &[u8], unix_seconds: u64, body: &str) -> String {
    format!(
        "t={unix_seconds},v1={}",
        hmac_hex(secret, &format!("{unix_seconds}.{body}"))
    )
}

fn hmac_hex(secret: &[u8], message: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC key"));
    mac.update(message.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oomlens_proto::v1::{Analysis, Container, MemoryHistory, Pod};

    #[test]
    fn the_mac_is_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, "{}"),
            format!("t=1700000000,v1={}", hmac_hex(b"Jefe", "1700000000.{}"))
        );
    }

    fn kill() -> OomEvent {
        OomEvent {
            id: "5e34102c0123456789abcdef01234567".into(),
            node: Some("node-a".into()),
            scope: Scope::ContainerLimit as i32,
            pod: Some(Pod {
                name: Some("api-7".into()),
                namespace: Some("shop".into()),
                ..Pod::default()
            }),
            container: Some(Container {
                name: Some("api".into()),
                memory_limit_bytes: Some(512 << 20),
                ..Container::default()
            }),
            history: Some(MemoryHistory {
                peak_working_set_bytes: Some(511 << 20),
                ..MemoryHistory::default()
            }),
            analysis: Some(Analysis {
                verdict: Verdict::Spike as i32,
                recommended_limit_bytes: Some(768 << 20),
                ..Analysis::default()
            }),
            ..OomEvent::default()
        }
    }

    #[test]
    fn a_summary_says_who_which_limit_and_what_to_do() {
        let body: serde_json::Value = serde_json::from_str(&body(Format::Summary, 42, &kill())).unwrap();
        assert_eq!(body["cursor"], "42");
        assert_eq!(body["namespace"], "shop");
        assert_eq!(body["scope"], "container_limit");
        assert_eq!(body["verdict"], "spike");
        assert_eq!(body["recommended_limit_bytes"], 768 << 20);
        assert_eq!(
            body["text"],
            "shop/api-7 (container api) killed at its container limit 512Mi; verdict spike; \
             recommended limit 768Mi; oomlens show 5e34102c"
        );
    }

    #[test]
    fn a_full_body_carries_the_event_json() {
        let body: serde_json::Value = serde_json::from_str(&body(Format::Full, 7, &kill())).unwrap();
        assert_eq!(body["type"], "oom_kill");
        assert_eq!(body["event"]["pod"]["name"], "api-7");
    }
}
