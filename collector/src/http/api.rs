//! The `/api/v1/` handlers: each parses its query string, checks the
//! bearer token, asks `EventService` and writes the answer in the event's
//! documented JSON form.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{Stream, StreamExt as _};
use oomlens_proto::json::event_to_json_line;
use oomlens_proto::time::format_rfc3339;
use oomlens_proto::v1::event_service_server::EventService as _;
use oomlens_proto::v1::{GetRequest, SubscribeResponse, subscribe_response};
use tonic::{Code, Request};

use super::{Api, params};
use crate::auth::Role;

/// Comments sent on an idle stream, so proxies and load balancers that
/// close quiet connections (often after 60 s) keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The OpenAPI document of these routes, served as written.
const OPENAPI: &str = include_str!("../../../docs/api/openapi.json");

pub(super) fn routes(api: Api) -> Router {
    Router::new()
        .route("/api/v1/events", get(list))
        .route("/api/v1/events/{id}", get(one))
        .route("/api/v1/stream", get(stream))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/top", get(top))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(api)
}

/// An answer that is not a success: an HTTP status and a JSON body
/// `{"error": {"code": "...", "message": "..."}}` with the gRPC code's name.
struct ApiError {
    code: Code,
    message: String,
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

impl From<params::ParamError> for ApiError {
    fn from(error: params::ParamError) -> Self {
        Self {
            code: Code::InvalidArgument,
            message: error.to_string(),
        }
    }
}

/// The HTTP status for a gRPC code (as grpc-gateway maps them).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// `invalid_argument` for `Code::InvalidArgument`.
fn code_word(code: Code) -> String {
    let name = format!("{code:?}");
    let mut word = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            word.push('_');
        }
        word.push(c.to_ascii_lowercase());
    }
    word
}

fn error_json(code: Code, message: &str) -> String {
    serde_json::json!({ "error": { "code": code_word(code), "message": message } }).to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            http_status(self.code),
            [(header::CONTENT_TYPE, "application/json")],
            error_json(self.code, &self.message),
        )
            .into_response();
        if self.code == Code::Unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn admit(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    Ok(api
        .tokens
        .admit(super::credentials(headers).as_deref(), Role::Read)?)
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /api/v1/events`: a page of stored events, newest first.
async fn list(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    admit(&api, &headers)?;
    let request = params::query(uri.query(), SystemTime::now())?;
    let page = api.events.query(Request::new(request)).await?.into_inner();
    // Written by hand rather than through a Value: the page's events are
    // already serialisable, and a page may be megabytes.
    let mut body = String::from("{\"events\":[");
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event_to_json_line(event));
    }
    body.push_str("],\"next_page_token\":");
    body.push_str(&match page.next_page_token.as_str() {
        "" => "null".to_owned(),
        token => serde_json::Value::from(token).to_string(),
    });
    body.push('}');
    Ok(json(body))
}

/// `GET /api/v1/events/{id}`: one event, by its id or a unique prefix.
async fn one(
    State(api): State<Api>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admit(&api, &headers)?;
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(params::ParamError {
            name: uri.query().unwrap_or_default().to_owned(),
            problem: "this endpoint takes no parameters".to_owned(),
        }
        .into());
    }
    let event = api
        .events
        .get(Request::new(GetRequest { id }))
        .await?
        .into_inner();
    Ok(json(event_to_json_line(&event)))
}

/// `GET /api/v1/summary`: kill counts grouped by scope, namespace, node
/// or workload.
async fn summary(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    admit(&api, &headers)?;
    let request = params::summary(uri.query(), SystemTime::now())?;
    let response = api.events.summary(Request::new(request)).await?.into_inner();
    let time = |t: Option<prost_types::Timestamp>| {
        t.map(|t| format_rfc3339(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
    };
    let groups: Vec<serde_json::Value> = response
        .groups
        .into_iter()
        .map(|g| {
            serde_json::json!({
                "key": (!g.key.is_empty()).then_some(g.key),
                "count": g.count,
                "silent": g.silent,
                "first": time(g.first),
                "last": time(g.last),
            })
        })
        .collect();
    Ok(json(
        serde_json::json!({ "total": response.total, "groups": groups }).to_string(),
    ))
}

/// `GET /api/v1/top`: live containers closest to their limits.
async fn top(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    admit(&api, &headers)?;
    let request = params::top(uri.query())?;
    let response = api.events.top(Request::new(request)).await?.into_inner();
    let containers = serde_json::to_string(&response.containers)
        .map_err(|e| ApiError::from(tonic::Status::internal(format!("container status JSON: {e}"))))?;
    Ok(json(format!("{{\"containers\":{containers}}}")))
}

/// `GET /api/v1/openapi.json`: open, like `/metrics`: it describes the
/// routes, not the data.
async fn openapi() -> Response {
    json(OPENAPI.to_owned())
}

/// `GET /api/v1/stream`: events as they are stored, as server-sent
/// events. Each `oom` event's id is its cursor: an `EventSource` that
/// reconnects sends it back as `Last-Event-ID` and misses nothing. A
/// `lagged` or `error` event ends the stream; reconnecting resumes.
async fn stream(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    admit(&api, &headers)?;
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let request = params::subscribe(uri.query(), last_event_id, SystemTime::now())?;
    let responses = api.events.subscribe(Request::new(request)).await?.into_inner();
    let mut response = Sse::new(server_sent(responses))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx (and so most ingresses) would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// What one subscription item becomes on the wire, and whether the stream
/// ends after it.
fn sse_event(item: Result<SubscribeResponse, tonic::Status>) -> (Event, bool) {
    match item {
        Ok(response) => match response.item {
            Some(subscribe_response::Item::Event(event)) => (
                Event::default()
                    .event("oom")
                    .id(response.cursor)
                    .data(event_to_json_line(&event)),
                false,
            ),
            Some(subscribe_response::Item::Warning(warning)) => (
                Event::default()
                    .event("warning")
                    .data(serde_json::to_string(&warning).unwrap_or_else(|_| "{}".to_owned())),
                false,
            ),
            // Ending makes the client reconnect with its Last-Event-ID,
            // which replays what was missed from the store.
            Some(subscribe_response::Item::Lagged(lagged)) => (
                Event::default()
                    .event("lagged")
                    .data(serde_json::json!({ "missed": lagged.missed }).to_string()),
                true,
            ),
            None => (Event::default().comment(""), false),
        },
        Err(status) => (
            Event::default()
                .event("error")
                .data(error_json(status.code(), status.message())),
            true,
        ),
    }
}

fn server_sent(
    responses: impl Stream<Item = Result<SubscribeResponse, tonic::Status>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    responses.map(sse_event).scan(false, |ended, (event, last)| {
        if *ended {
            return std::future::ready(None);
        }
        *ended = last;
        std::future::ready(Some(Ok(event)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_words_with_grpc_gateway_statuses() {
        assert_eq!(code_word(Code::InvalidArgument), "invalid_argument");
        assert_eq!(code_word(Code::NotFound), "not_found");
        assert_eq!(code_word(Code::Unavailable), "unavailable");
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_lag_notice_or_an_error_ends_the_stream() {
        let lagged = SubscribeResponse {
            item: Some(subscribe_response::Item::Lagged(oomlens_proto::v1::Lagged {
                missed: 3,
            })),
            cursor: String::new(),
        };
        let event = SubscribeResponse {
            item: Some(subscribe_response::Item::Event(Default::default())),
            cursor: "9".into(),
        };
        let items = futures_util::stream::iter(vec![Ok(event.clone()), Ok(lagged), Ok(event)]);
        assert_eq!(server_sent(items).count().await, 2);
        let items = futures_util::stream::iter(vec![
            Err(tonic::Status::resource_exhausted("slow")),
            Ok(SubscribeResponse::default()),
        ]);
        assert_eq!(server_sent(items).count().await, 1);
    }
}
