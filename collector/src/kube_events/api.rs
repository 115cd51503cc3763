//! The two calls made to the Kubernetes API, and what their answers mean
//! for the kill being written.

use std::time::Duration;

use http::{Method, Request, header};
use serde_json::Value;

/// One call's limit: past it the write is retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API said to one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Done,
    /// 409 on a create: the Event is there already (this kill was written
    /// before a restart).
    AlreadyExists,
    /// 404 on a patch: the series' Event expired (the API keeps Events for
    /// an hour by default).
    NotFound,
    /// The API is unreachable, overloaded or failing (5xx, 429, a
    /// timeout): try again later.
    Retry(String),
    /// The API refuses this write (no permission, invalid, the namespace
    /// is gone): retrying the same request will not help.
    Refused(String),
}

/// The `events.k8s.io/v1` calls through a kube client (its config gives
/// the address, credentials and TLS).
#[derive(Clone)]
pub struct EventsApi {
    client: kube::Client,
}

impl std::fmt::Debug for EventsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventsApi")
    }
}

fn collection(namespace: &str) -> String {
    format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events")
}

impl EventsApi {
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }

    /// POST a new Event.
    pub async fn create(&self, namespace: &str, body: &Value) -> Answer {
        let request = Request::builder()
            .method(Method::POST)
            .uri(collection(namespace))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(body.to_string().into_bytes());
        self.call(request).await
    }

    /// Merge-PATCH an Event (its series: the only part besides labels and
    /// annotations the API lets change).
    pub async fn patch(&self, namespace: &str, name: &str, body: &Value) -> Answer {
        let request = Request::builder()
            .method(Method::PATCH)
            .uri(format!("{}/{name}", collection(namespace)))
            .header(header::CONTENT_TYPE, "application/merge-patch+json")
            .header(header::ACCEPT, "application/json")
            .body(body.to_string().into_bytes());
        self.call(request).await
    }

    async fn call(&self, request: Result<Request<Vec<u8>>, http::Error>) -> Answer {
        let request = match request {
            Ok(request) => request,
            // Names and namespaces come from the API's own objects; a bad
            // one is this event's problem, not the API's.
            Err(error) => return Answer::Refused(format!("cannot form the request: {error}")),
        };
        match tokio::time::timeout(CALL_TIMEOUT, self.client.request::<Value>(request)).await {
            Ok(result) => classify(result),
            Err(_) => Answer::Retry(format!("no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

fn classify(result: Result<Value, kube::Error>) -> Answer {
    match result {
        Ok(_) => Answer::Done,
        Err(kube::Error::Api(status)) => {
            let why = format!("{} {}: {}", status.code, status.reason, status.message);
            match status.code {
                409 => Answer::AlreadyExists,
                404 if status.reason == "NotFound" && !status.message.contains("namespaces") => {
                    Answer::NotFound
                }
                408 | 429 | 500..=599 => Answer::Retry(why),
                _ => Answer::Refused(why),
            }
        }
        Err(error) => Answer::Retry(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> Result<Value, kube::Error> {
        let status = kube::core::Status {
            code,
            reason: reason.to_owned(),
            message: message.to_owned(),
            ..kube::core::Status::default()
        };
        Err(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn answers_are_told_apart_by_code() {
        assert_eq!(classify(Ok(Value::Null)), Answer::Done);
        assert_eq!(
            classify(api_error(409, "AlreadyExists", "exists")),
            Answer::AlreadyExists
        );
        assert_eq!(
            classify(api_error(404, "NotFound", "events.events.k8s.io \"x\" not found")),
            Answer::NotFound
        );
        // A missing namespace is not a missing Event: nothing to recreate.
        assert!(matches!(
            classify(api_error(404, "NotFound", "namespaces \"gone\" not found")),
            Answer::Refused(_)
        ));
        for code in [429, 500, 503, 504] {
            assert!(
                matches!(classify(api_error(code, "x", "y")), Answer::Retry(_)),
                "{code}"
            );
        }
        for code in [400, 401, 403, 422] {
            assert!(
                matches!(classify(api_error(code, "x", "y")), Answer::Refused(_)),
                "{code}"
            );
        }
    }
}
