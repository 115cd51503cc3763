//! One POST to a receiver over HTTP or HTTPS (rustls, the system's roots
//! plus an optional CA), and what its answer means for the delivery.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::http::{HeaderValue, Method, Request, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use oomlens_common::client::error_chain;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// How long one attempt may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `Retry-After` obeyed; longer ones are cut to it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Bytes of a refusal's body kept for the log.
const REASON_BYTES: usize = 200;

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// Worth trying again: no connection, a timeout, 408, 429 or 5xx.
    /// `after` is the receiver's `Retry-After`, when it gave one.
    Retry { reason: String, after: Option<Duration> },
    /// The receiver refuses this delivery (another 4xx, or a redirect,
    /// which is not followed): retrying the same body will not help.
    Refused { reason: String },
}

/// The outcome of an HTTP status (and its `Retry-After` header).
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
    let reason = if body.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {body}")
    };
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry {
            reason,
            after: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER)),
        },
        _ => Outcome::Refused { reason },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PosterError {
    #[error("the webhook CA {path} holds no usable certificate")]
    NoCertificate { path: String },
    #[error("the webhook CA {path}: {why}")]
    BadCertificate { path: String, why: String },
    #[error("TLS for webhooks: {0}")]
    Tls(#[from] rustls::Error),
}

/// An HTTP client shared by every sink.
#[derive(Debug, Clone)]
pub struct Poster {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    user_agent: HeaderValue,
}

impl Poster {
    /// `extra_ca`: (path, PEM) of a CA trusted beside the system's roots.
    pub fn new(extra_ca: Option<(&str, &[u8])>) -> Result<Self, PosterError> {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates leave the extra CA (or nothing):
        // HTTPS receivers then fail their handshake, and say why.
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            let _ = roots.add(cert);
        }
        if let Some((path, pem)) = extra_ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| PosterError::BadCertificate {
                    path: path.to_owned(),
                    why: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(PosterError::NoCertificate {
                    path: path.to_owned(),
                });
            }
            for cert in certs {
                roots.add(cert).map_err(|e| PosterError::BadCertificate {
                    path: path.to_owned(),
                    why: e.to_string(),
                })?;
            }
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(ATTEMPT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let user_agent = HeaderValue::from_static(concat!("oomlens/", env!("CARGO_PKG_VERSION")));
        Ok(Self { client, user_agent })
    }

    /// POSTs `body` (JSON) to `url` with `headers`.
    pub async fn post(&self, url: &Uri, headers: &[(&'static str, String)], body: String) -> Outcome {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, self.user_agent.clone());
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(request) => request,
            Err(error) => {
                return Outcome::Refused {
                    reason: format!("cannot make the request: {error}"),
                };
            }
        };
        let attempt = async {
            let response = self.client.request(request).await.map_err(|e| error_chain(&e))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // Only a little of the body is read: enough to log a refusal.
            let mut text = String::new();
            if !response.status().is_success() {
                let mut body = response.into_body();
                while text.len() < REASON_BYTES {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                text.push_str(&String::from_utf8_lossy(data));
                            }
                        }
                        _ => break,
                    }
                }
            }
            let text: String = text.trim().chars().take(REASON_BYTES).collect();
            Ok::<_, String>(classify(status, retry_after.as_deref(), &text))
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(reason)) => Outcome::Retry { reason, after: None },
            Err(_) => Outcome::Retry {
                reason: format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
                after: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_retry_or_refusal() {
        assert_eq!(classify(204, None, ""), Outcome::Delivered);
        assert_eq!(
            classify(503, Some("7"), "busy"),
            Outcome::Retry {
                reason: "HTTP 503: busy".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(429, Some("86400"), ""),
            Outcome::Retry {
                reason: "HTTP 429".into(),
                after: Some(MAX_RETRY_AFTER)
            }
        );
        assert!(matches!(
            classify(408, None, ""),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(classify(400, None, ""), Outcome::Refused { .. }));
        assert!(matches!(classify(404, None, ""), Outcome::Refused { .. }));
        assert!(matches!(classify(301, None, ""), Outcome::Refused { .. }));
    }
}
