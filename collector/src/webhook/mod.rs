//! Webhook sinks: the collector POSTs each stored kill, as JSON, to
//! configured URLs: the simplest integration for chat, paging and
//! ticketing tools (docs/api.md#webhooks).
//!
//! Each sink reads the store after its own cursor, kept in the store, and
//! delivers in order, one event at a time: every kill is delivered at
//! least once, across receiver outages and collector restarts, and what
//! waits is in the store, not in memory (a sink holds one page). On
//! PostgreSQL one replica at a time delivers to each sink (an advisory
//! lock; another takes over when it goes). A receiver that refuses an
//! event (a 4xx other than 408 and 429) gets it a few more times and it
//! is then dead-lettered: counted, logged with its id, and skipped.

use std::path::PathBuf;
use std::sync::Arc;

use hyper::http::Uri;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sha2::Digest as _;

mod payload;
mod post;
mod sink;

pub use payload::{Format, body, signature};
pub use post::{Outcome, Poster, PosterError, classify};
pub use sink::start;

pub use crate::outbound::RetryPolicy;

/// What the collector's `--webhook*` flags configure.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    /// HMAC-SHA256 key for `X-Oomlens-Signature`; unsigned without it.
    pub secret: Option<Vec<u8>>,
    pub format: Format,
    /// A CA trusted beside the system's roots, for HTTPS receivers.
    pub ca_cert: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("webhook URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("cannot read the webhook CA {path}: {source}")]
    ReadCa { path: String, source: std::io::Error },
    #[error(transparent)]
    Poster(#[from] PosterError),
}

/// One receiver.
#[derive(Debug, Clone)]
pub struct Sink {
    pub url: Uri,
    /// For metrics and logs: its number and host, never its path or query
    /// (chat webhooks carry their secret there).
    pub label: String,
    /// Its cursor's name in the store: a digest of the whole URL, so a new
    /// URL starts afresh and none is stored in clear.
    pub reader: String,
}

impl Sink {
    pub fn parse(index: usize, url: &str) -> Result<Self, WebhookConfigError> {
        let bad = |why: &str| WebhookConfigError::Url {
            url: redact_url(url),
            why: why.to_owned(),
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad("use an http:// or https:// URL")),
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let label = match uri.port_u16() {
            Some(port) => format!("{index}:{host}:{port}"),
            None => format!("{index}:{host}"),
        };
        let digest = sha2::Sha256::digest(url.trim().as_bytes());
        let reader = format!(
            "webhook {}",
            digest
                .iter()
                .take(12)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(Self {
            url: uri,
            label,
            reader,
        })
    }
}

/// `scheme://host[:port]/…`: what of a URL may be printed.
fn redact_url(url: &str) -> String {
    match url.trim().parse::<Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => {
                let host = authority.as_str().rsplit('@').next().unwrap_or_default();
                format!("{scheme}://{host}/…")
            }
            _ => "(unparseable)".to_owned(),
        },
        Err(_) => "(unparseable)".to_owned(),
    }
}

/// The configured sinks and the client they share; checked at start.
#[derive(Debug, Clone)]
pub struct Webhooks {
    pub sinks: Vec<Sink>,
    pub poster: Poster,
    pub secret: Option<Arc<[u8]>>,
    pub format: Format,
    pub retry: RetryPolicy,
}

impl Webhooks {
    pub fn new(config: &WebhookConfig) -> Result<Self, WebhookConfigError> {
        let sinks = config
            .urls
            .iter()
            .enumerate()
            .map(|(i, url)| Sink::parse(i, url))
            .collect::<Result<Vec<_>, _>>()?;
        let ca = match &config.ca_cert {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read(path).map_err(|source| WebhookConfigError::ReadCa {
                    path: path.display().to_string(),
                    source,
                })?,
            )),
            None => None,
        };
        let poster = Poster::new(ca.as_ref().map(|(p, pem)| (p.as_str(), pem.as_slice())))?;
        Ok(Self {
            sinks,
            poster,
            secret: config.secret.as_deref().map(Arc::from),
            format: config.format,
            retry: RetryPolicy::default(),
        })
    }
}

/// What happened to a delivery attempt.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// An attempt failed and will be made again.
    Retried,
    /// Refused too often: skipped.
    DeadLetter,
}

impl EncodeLabelValue for Attempt {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(
            encoder,
            match self {
                Self::Delivered => "delivered",
                Self::Retried => "retried",
                Self::DeadLetter => "dead_letter",
            },
        )
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    sink: String,
    result: Attempt,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

/// The sinks' metrics, registered with the collector's.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    attempts: Family<AttemptLabels, Counter>,
    failing: Family<SinkLabels, Gauge>,
    cursor: Family<SinkLabels, Gauge>,
}

impl WebhookMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by sink and result (delivered, retried, dead_letter)",
            metrics.attempts.clone(),
        );
        registry.register(
            "webhook_failing",
            "1 while a sink's current event keeps failing (the receiver is down or refusing)",
            metrics.failing.clone(),
        );
        registry.register(
            "webhook_cursor",
            "The store sequence number each sink has handled up to",
            metrics.cursor.clone(),
        );
        metrics
    }

    pub fn attempt(&self, sink: &str, result: Attempt) {
        self.attempts
            .get_or_create(&AttemptLabels {
                sink: sink.to_owned(),
                result,
            })
            .inc();
    }

    pub fn attempts(&self, sink: &str, result: Attempt) -> u64 {
        self.attempts
            .get_or_create(&AttemptLabels {
                sink: sink.to_owned(),
                result,
            })
            .get()
    }

    pub fn failing(&self, sink: &str, failing: bool) {
        self.failing
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(i64::from(failing));
    }

    pub fn cursor(&self, sink: &str, seq: i64) {
        self.cursor
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_are_labelled_by_host_and_never_print_their_path() {
        let sink = Sink::parse(0, "https://hooks.example.com/services/T000/B000/XXXXSECRET").unwrap();
        assert_eq!(sink.label, "0:hooks.example.com");
        assert!(!sink.reader.contains("SECRET"));
        let other = Sink::parse(1, "http://127.0.0.1:9000/hook?token=abc").unwrap();
        assert_eq!(other.label, "1:127.0.0.1:9000");
        assert_ne!(sink.reader, other.reader);
        for bad in ["ftp://x/y", "hooks.example.com/x", "http:///nohost", ""] {
            let error = Sink::parse(0, bad).unwrap_err().to_string();
            assert!(!error.contains("SECRET"), "{error}");
        }
        let error = Sink::parse(0, "gopher://user:pw@host/SECRET")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("SECRET") && !error.contains("pw"), "{error}");
    }
}
