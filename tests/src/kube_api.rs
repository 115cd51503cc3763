//! A stand-in for the Kubernetes API's `events.k8s.io/v1` Events, on
//! 127.0.0.1 over plain HTTP, for tests on machines without a cluster.
//! It enforces what the real API server enforces on these calls, from
//! kubernetes `pkg/apis/core/validation/events.go` (ValidateEventCreate
//! and ValidateEventUpdate for `events.k8s.io/v1`) and the registry's
//! create/patch semantics (409 on an existing name, 404 on a missing one,
//! JSON merge patch applied and then validated as an update), and answers
//! refusals with the API's `Status` objects. Every request is recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use serde_json::{Value, json};

/// One request as received.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub body: Value,
    /// The status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Inner {
    /// (namespace, name) -> the stored Event.
    events: BTreeMap<(String, String), Value>,
    requests: Vec<ApiRequest>,
    /// Answer the next requests with these statuses instead (503, 403...).
    failures: Vec<u16>,
    version: u64,
}

/// The fake API server; stops when dropped.
#[derive(Debug)]
pub struct FakeEventsApi {
    port: u16,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEventsApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeEventsApi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let inner: Shared = Arc::default();
        let router = Router::new()
            .route("/apis/events.k8s.io/v1/namespaces/{ns}/events", post(create))
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                patch(update),
            )
            .fallback(not_served)
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { port, inner, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for this server (plain HTTP, no credentials), written
    /// into `dir`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    /// Answers the next requests with `statuses`, in order.
    pub fn fail_next(&self, statuses: &[u16]) {
        lock(&self.inner).failures.extend_from_slice(statuses);
    }

    pub fn requests(&self) -> Vec<ApiRequest> {
        lock(&self.inner).requests.clone()
    }

    /// The Events as stored, by (namespace, name).
    pub fn events(&self) -> BTreeMap<(String, String), Value> {
        lock(&self.inner).events.clone()
    }

    /// Waits until `done(events)`; panics after `wait` with what is there.
    pub async fn wait_for_events(
        &self,
        wait: Duration,
        done: impl Fn(&BTreeMap<(String, String), Value>) -> bool,
    ) -> BTreeMap<(String, String), Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fake API did not get the expected Events within {wait:?}: {events:#?}\nrequests: {:#?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, [("content-type", "application/json")], body.to_string()).into_response()
}

fn record(inner: &Shared, method: &Method, path: String, headers: &HeaderMap, body: &Bytes, status: u16) {
    lock(inner).requests.push(ApiRequest {
        method: method.to_string(),
        path,
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
        status,
    });
}

fn injected(inner: &Shared) -> Option<Response> {
    let mut inner = lock(inner);
    if inner.failures.is_empty() {
        return None;
    }
    let code = StatusCode::from_u16(inner.failures.remove(0)).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let reason = match code {
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        _ => "ServiceUnavailable",
    };
    Some(status(code, reason, "injected by the test".to_owned()))
}

async fn not_served(method: Method, uri: axum::http::Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the fake serves no {method} {uri}"),
    )
}

async fn create(
    State(inner): State<Shared>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events");
    let answer = create_answer(&inner, &ns, &headers, &body);
    record(
        &inner,
        &Method::POST,
        path,
        &headers,
        &body,
        answer.status().as_u16(),
    );
    answer
}

fn create_answer(inner: &Shared, ns: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    if let Some(failure) = injected(inner) {
        return failure;
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "want JSON".into(),
        );
    }
    let Ok(mut event) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
    };
    if let Err(errors) = validate_create(ns, &event) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", errors.join("; "));
    }
    let name = event["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let mut inner = lock(inner);
    let key = (ns.to_owned(), name.clone());
    if inner.events.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("events.events.k8s.io \"{name}\" already exists"),
        );
    }
    inner.version += 1;
    event["metadata"]["resourceVersion"] = json!(inner.version.to_string());
    event["metadata"]["uid"] = json!(format!("uid-{}", inner.version));
    inner.events.insert(key, event.clone());
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        event.to_string(),
    )
        .into_response()
}

async fn update(
    State(inner): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}");
    let answer = update_answer(&inner, &ns, &name, &headers, &body);
    record(
        &inner,
        &Method::PATCH,
        path,
        &headers,
        &body,
        answer.status().as_u16(),
    );
    answer
}

fn update_answer(inner: &Shared, ns: &str, name: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    if let Some(failure) = injected(inner) {
        return failure;
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/merge-patch+json") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "this fake takes merge patches only".into(),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
    };
    let mut inner = lock(inner);
    let key = (ns.to_owned(), name.to_owned());
    let Some(old) = inner.events.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("events.events.k8s.io \"{name}\" not found"),
        );
    };
    let mut new = old.clone();
    merge_patch(&mut new, &patch);
    if let Err(errors) = validate_update(ns, &old, &new) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", errors.join("; "));
    }
    inner.version += 1;
    new["metadata"]["resourceVersion"] = json!(inner.version.to_string());
    inner.events.insert(key, new.clone());
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        new.to_string(),
    )
        .into_response()
}

/// RFC 7386.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in patch {
        if value.is_null() {
            target.as_object_mut().map(|t| t.remove(key));
        } else {
            merge_patch(&mut target[key.as_str()], value);
        }
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    prefix.is_none_or(is_dns1123_subdomain)
        && !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn text<'a>(event: &'a Value, field: &str) -> &'a str {
    event[field].as_str().unwrap_or_default()
}

/// The rules for an `events.k8s.io/v1` Event, create and update alike.
fn validate_event(ns: &str, event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut bad = |ok: bool, what: &str| {
        if !ok {
            errors.push(what.to_owned());
        }
    };
    bad(
        event["apiVersion"] == "events.k8s.io/v1",
        "apiVersion: want events.k8s.io/v1",
    );
    bad(event["kind"] == "Event", "kind: want Event");
    let meta = &event["metadata"];
    bad(
        is_dns1123_subdomain(ns),
        "metadata.namespace: not a DNS-1123 subdomain",
    );
    bad(
        meta["namespace"].as_str().is_none_or(|n| n == ns),
        "metadata.namespace: does not match the namespace of the request",
    );
    bad(
        meta["name"].as_str().is_some_and(is_dns1123_subdomain),
        "metadata.name: Required value, or not a DNS-1123 subdomain",
    );
    bad(!text(event, "eventTime").is_empty(), "eventTime: Required value");
    bad(
        matches!(text(event, "type"), "Normal" | "Warning"),
        "type: Invalid value: must be Normal or Warning",
    );
    for deprecated in [
        "deprecatedSource",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
    ] {
        bad(
            event.get(deprecated).is_none(),
            &format!("{deprecated}: needs to be unset"),
        );
    }
    bad(
        event["deprecatedCount"].as_i64().unwrap_or(0) == 0,
        "deprecatedCount: needs to be unset",
    );
    let regarding_ns = event["regarding"]["namespace"].as_str().unwrap_or_default();
    bad(
        !regarding_ns.is_empty() || matches!(ns, "default" | "kube-system"),
        "regarding.namespace: empty outside default and kube-system",
    );
    bad(
        is_qualified_name(text(event, "reportingController")),
        "reportingController: Required value, or not a qualified name",
    );
    for (field, max) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
        let value = text(event, field);
        bad(!value.is_empty(), &format!("{field}: Required value"));
        bad(
            value.len() <= max,
            &format!("{field}: can have at most {max} characters"),
        );
    }
    bad(
        text(event, "note").len() <= 1024,
        "note: can have at most 1024 characters",
    );
    errors
}

fn validate_series(event: &Value) -> Vec<String> {
    let series = &event["series"];
    if series.is_null() {
        return Vec::new();
    }
    let mut errors = Vec::new();
    if series["count"].as_i64().unwrap_or(0) < 2 {
        errors.push("series.count: should be at least 2".to_owned());
    }
    if series["lastObservedTime"].as_str().is_none_or(str::is_empty) {
        errors.push("series.lastObservedTime: Required value".to_owned());
    }
    errors
}

fn validate_create(ns: &str, event: &Value) -> Result<(), Vec<String>> {
    let mut errors = validate_event(ns, event);
    errors.extend(validate_series(event));
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

fn validate_update(ns: &str, old: &Value, new: &Value) -> Result<(), Vec<String>> {
    let mut errors = validate_event(ns, new);
    if old["series"] != new["series"] {
        errors.extend(validate_series(new));
    }
    for field in [
        "regarding",
        "reason",
        "note",
        "type",
        "eventTime",
        "action",
        "related",
        "reportingController",
        "reportingInstance",
        "deprecatedSource",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
    ] {
        if old.get(field) != new.get(field) {
            errors.push(format!("{field}: field is immutable"));
        }
    }
    for field in ["name", "namespace", "uid"] {
        if old["metadata"][field] != new["metadata"][field] {
            errors.push(format!("metadata.{field}: field is immutable"));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "api-1.oomlens.0123456789abcdef", "namespace": "shop"},
            "eventTime": "2026-11-30T10:00:00.000000Z", "type": "Warning",
            "reportingController": "oomlens", "reportingInstance": "oomlens-collector-0",
            "action": "Killed", "reason": "OOMKilledContainerLimit",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "api-1"},
            "note": "x",
        })
    }

    #[test]
    fn the_fake_refuses_what_the_api_refuses() {
        assert_eq!(validate_create("shop", &valid()), Ok(()));
        let broken: [(&str, Value); 8] = [
            ("eventTime", json!(null)),
            ("type", json!("Bogus")),
            ("reportingController", json!("not a name!")),
            ("action", json!("")),
            ("note", json!("n".repeat(1025))),
            ("deprecatedCount", json!(3)),
            (
                "series",
                json!({"count": 1, "lastObservedTime": "2026-11-30T10:00:00.000000Z"}),
            ),
            ("reason", json!("r".repeat(129))),
        ];
        for (field, value) in broken {
            let mut event = valid();
            event[field] = value;
            assert!(validate_create("shop", &event).is_err(), "{field} accepted");
        }
        let mut wrong_ns = valid();
        wrong_ns["metadata"]["namespace"] = json!("other");
        assert!(validate_create("shop", &wrong_ns).is_err());
    }

    #[test]
    fn only_the_series_and_annotations_may_change() {
        let old = valid();
        let mut new = old.clone();
        merge_patch(
            &mut new,
            &json!({"series": {"count": 2, "lastObservedTime": "2026-11-30T10:01:00.000000Z"},
                    "metadata": {"annotations": {"a": "b"}}}),
        );
        assert_eq!(validate_update("shop", &old, &new), Ok(()));
        let mut note = old.clone();
        merge_patch(&mut note, &json!({"note": "changed"}));
        assert!(validate_update("shop", &old, &note).is_err());
    }
}
