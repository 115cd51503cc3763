//! The web pages (docs/web.md): the kill list with live updates, one kill
//! with its memory chart, a summary and the containers closest to their
//! limits. Rendered on the server from the same `EventService` as the
//! API; everything (CSS, the one small script) embedded in the binary.
//!
//! Security: the same read tokens as the API, from the `Authorization`
//! header or from an HttpOnly, SameSite=Strict cookie set by the login
//! form; no write action; a strict Content-Security-Policy (no inline
//! script or style, nothing from elsewhere); every string from an event
//! escaped.

use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use oomlens_proto::v1::event_service_server::EventService as _;
use oomlens_proto::v1::{GetRequest, QueryRequest, SummaryRequest, TopRequest};
use tonic::{Code, Request};

use super::{Api, credentials, params};
use crate::auth::Role;

mod html;
mod pages;
mod svg;

const CSS: &str = include_str!("static/app.css");
const SCRIPT: &str = include_str!("static/live.js");
/// The login cookie's name.
pub(super) const COOKIE: &str = "oomlens_token";
/// How long the login cookie lasts.
const COOKIE_SECONDS: u32 = 12 * 3600;
/// Kills per page of the list.
const LIST_PAGE: u32 = 50;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn routes(api: Api) -> Router {
    Router::new()
        .route("/", get(list))
        .route("/kills/{id}", get(kill))
        .route("/kills/{id}/row", get(row))
        .route("/summary", get(summary))
        .route("/top", get(top))
        .route("/login", get(login_form).post(login))
        .route("/logout", get(logout))
        .route(
            "/static/app.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/static/live.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .with_state(api)
}

/// Headers every page carries.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn html(status: StatusCode, body: String) -> Response {
    secure((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

/// A page's answer when the caller may not see it: the login form for
/// someone without a token, a refusal for a token that may not read.
fn refused(status: &tonic::Status, uri: &Uri) -> Response {
    match status.code() {
        Code::Unauthenticated => {
            let next = uri.path_and_query().map_or("/", |p| p.as_str());
            let location = format!("/login?next={}", html::query_value(next));
            secure(
                (
                    StatusCode::SEE_OTHER,
                    [(header::LOCATION, location)],
                    "sign in first\n",
                )
                    .into_response(),
            )
        }
        _ => from_status(status),
    }
}

fn from_status(status: &tonic::Status) -> Response {
    let (code, title) = match status.code() {
        Code::NotFound => (StatusCode::NOT_FOUND, "Not found"),
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "Cannot show that"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "Not allowed"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong"),
    };
    html(code, pages::error(title, status.message()))
}

fn admit(api: &Api, headers: &HeaderMap) -> Result<(), tonic::Status> {
    api.tokens.admit(credentials(headers).as_deref(), Role::Read)
}

/// The value of one query parameter (the last, if repeated).
fn param(uri: &Uri, name: &str) -> String {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_owned())
        .last()
        .unwrap_or_default()
}

async fn list(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(status) = admit(&api, &headers) {
        return refused(&status, &uri);
    }
    let filters = pages::ListFilters {
        namespace: param(&uri, "namespace"),
        pod: param(&uri, "pod"),
        node: param(&uri, "node"),
        scope: param(&uri, "scope"),
        verdict: param(&uri, "verdict"),
        since: param(&uri, "since"),
    };
    let page_token = param(&uri, "page_token");
    let query = filters.query();
    let request = match params::query(Some(&query), SystemTime::now()) {
        Ok(request) => QueryRequest {
            page_size: LIST_PAGE,
            page_token: page_token.clone(),
            ..request
        },
        Err(error) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error("Cannot filter that", &error.to_string()),
            );
        }
    };
    match api.events.query(Request::new(request)).await {
        Ok(response) => {
            let page = response.into_inner();
            let next = (!page.next_page_token.is_empty()).then_some(page.next_page_token.as_str());
            html(
                StatusCode::OK,
                pages::list(&filters, &page.events, next, page_token.is_empty()),
            )
        }
        Err(status) => from_status(&status),
    }
}

async fn kill(State(api): State<Api>, Path(id): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(status) = admit(&api, &headers) {
        return refused(&status, &uri);
    }
    match api.events.get(Request::new(GetRequest { id })).await {
        Ok(event) => html(StatusCode::OK, pages::kill(&event.into_inner())),
        Err(status) => from_status(&status),
    }
}

/// One row of the list, for the live updates.
async fn row(State(api): State<Api>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(status) = admit(&api, &headers) {
        return from_status(&status);
    }
    match api.events.get(Request::new(GetRequest { id })).await {
        Ok(event) => html(StatusCode::OK, pages::row(&event.into_inner())),
        Err(status) => from_status(&status),
    }
}

async fn summary(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(status) = admit(&api, &headers) {
        return refused(&status, &uri);
    }
    let group_by = match param(&uri, "group_by").as_str() {
        "" => "scope".to_owned(),
        other => other.to_owned(),
    };
    let since = param(&uri, "since");
    // The end of the period, when a link gives one (the form keeps it).
    let until = param(&uri, "until");
    let mut query = format!("group_by={}", html::query_value(&group_by));
    for (name, value) in [("since", &since), ("until", &until)] {
        if !value.is_empty() {
            query.push_str(&format!("&{name}={}", html::query_value(value)));
        }
    }
    let mut request: SummaryRequest = match params::summary(Some(&query), SystemTime::now()) {
        Ok(request) => request,
        Err(error) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error("Cannot group that", &error.to_string()),
            );
        }
    };
    // Intervals that suit the period: about 60 of them (the collector
    // widens them for a longer span).
    request.bucket_seconds = match since.as_str() {
        "1h" => 60,
        "6h" => 360,
        "1d" => 1800,
        "7d" => 3 * 3600,
        "30d" => 12 * 3600,
        _ => 3600,
    };
    match api.events.summary(Request::new(request)).await {
        Ok(response) => html(
            StatusCode::OK,
            pages::summary(&group_by, &since, &until, &response.into_inner()),
        ),
        Err(status) => from_status(&status),
    }
}

async fn top(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(status) = admit(&api, &headers) {
        return refused(&status, &uri);
    }
    let request = TopRequest {
        limit: 100,
        ..TopRequest::default()
    };
    match api.events.top(Request::new(request)).await {
        Ok(response) => html(StatusCode::OK, pages::top(&response.into_inner().containers)),
        Err(status) => from_status(&status),
    }
}

async fn login_form(uri: Uri) -> Response {
    let next = param(&uri, "next");
    let next = html::local_path(&next).unwrap_or("/").to_owned();
    html(StatusCode::OK, pages::login(&next, false))
}

/// Checks the token; sets the cookie and goes back where the user was.
async fn login(
    State(api): State<Api>,
    over_tls: Option<axum::Extension<super::ServedOverTls>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut token = String::new();
    let mut next = String::from("/");
    for (key, value) in form_urlencoded::parse(&body) {
        match key.as_ref() {
            "token" => token = value.trim().to_owned(),
            "next" => next = value.into_owned(),
            _ => {}
        }
    }
    let next = html::local_path(&next).unwrap_or("/").to_owned();
    let presented = format!("Bearer {token}");
    let valid = !token.is_empty()
        && oomlens_common::secrets::check_token(&token).is_ok()
        && api.tokens.admit(Some(presented.as_bytes()), Role::Read).is_ok();
    if !valid {
        return html(StatusCode::UNAUTHORIZED, pages::login(&next, true));
    }
    // Secure when the page was reached over HTTPS: this collector's own
    // (--web-listen with TLS) or a proxy's in front.
    let secure_flag = over_tls.is_some()
        || headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={token}; Path=/; Max-Age={COOKIE_SECONDS}; HttpOnly; SameSite=Strict{}",
        if secure_flag { "; Secure" } else { "" }
    );
    secure(
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, next), (header::SET_COOKIE, cookie)],
            "signed in\n",
        )
            .into_response(),
    )
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    secure(
        (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/login".to_owned()),
                (header::SET_COOKIE, cookie),
            ],
            "signed out\n",
        )
            .into_response(),
    )
}
