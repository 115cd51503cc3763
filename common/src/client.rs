//! Connecting to a collector, for the agent and the `oomlens` CLI: plain
//! or TLS (a private CA), optionally presenting a client certificate
//! (mutual TLS), optionally with a bearer token. Errors are one line that
//! says what to fix: a TLS problem names the file or the certificate
//! check that failed (see [`crate::tls`]).

use std::path::PathBuf;
use std::time::Duration;

use oomlens_proto::v1::event_service_client::EventServiceClient;
use oomlens_proto::v1::ingest_service_client::IngestServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::limits::MAX_MESSAGE;
use crate::render::printable;
use crate::tls::{ClientFiles, TlsFileError, explain_handshake, handshake_error};

#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// CA that signed the collector's certificate (https).
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Name expected in the collector's certificate, when it differs from
    /// the endpoint's host.
    pub tls_server_name: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid collector address {endpoint:?}: {why}")]
    Address { endpoint: String, why: String },
    #[error("{endpoint} is TLS: give --ca-cert, the CA that signed the collector's certificate")]
    NoCa { endpoint: String },
    /// A certificate or key file that cannot be used (named in the error).
    #[error(transparent)]
    TlsFile(#[from] TlsFileError),
    #[error("TLS settings refused: {0}")]
    TlsConfig(String),
    #[error("--client-cert and --client-key go together")]
    HalfIdentity,
    #[error("the token contains characters not allowed in a header")]
    Token,
    #[error("cannot connect to the collector at {endpoint}: {why}")]
    Connect { endpoint: String, why: String },
}

/// Adds `authorization: Bearer TOKEN` to every request.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type EventClient = EventServiceClient<InterceptedService<Channel, BearerToken>>;
pub type IngestClient = IngestServiceClient<InterceptedService<Channel, BearerToken>>;

/// The full chain of an error, on one line: tonic's transport errors
/// keep the useful part (connection refused, bad certificate) in sources.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl ClientConfig {
    /// Checks what can be checked without connecting: the address, and for
    /// https the CA and the client certificate and key (read and parsed).
    /// A process that cannot ever connect refuses to start on this.
    pub fn check(&self) -> Result<(), ClientError> {
        self.token()?;
        self.endpoint().map(drop)
    }

    /// The files named in explanations of handshake failures.
    fn files(&self) -> ClientFiles<'_> {
        ClientFiles {
            ca_cert: self.ca_cert.as_deref(),
            client_cert: self.client_cert.as_deref(),
        }
    }

    /// One line for an error reaching the collector: a failed TLS
    /// handshake explained (which certificate, what to check), otherwise
    /// the error's chain.
    pub fn explain(&self, error: &(dyn std::error::Error + 'static)) -> String {
        match handshake_error(error) {
            Some(tls) => explain_handshake(&tls, self.files()),
            None => error_chain(error),
        }
    }

    /// A gRPC status as one line ([`status_line`]), with a failed TLS
    /// handshake explained: with TLS 1.3 a refused client certificate is
    /// only seen at the first request.
    pub fn status_line(&self, status: &tonic::Status) -> String {
        match std::error::Error::source(status).and_then(handshake_error) {
            Some(tls) => format!(
                "cannot reach the collector at {}: {}",
                self.endpoint,
                explain_handshake(&tls, self.files())
            ),
            None => status_line(status),
        }
    }

    fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let address = |why: String| ClientError::Address {
            endpoint: self.endpoint.clone(),
            why,
        };
        let https = self.endpoint.starts_with("https://");
        if !https && !self.endpoint.starts_with("http://") {
            return Err(address("use http://HOST:PORT or https://HOST:PORT".to_owned()));
        }
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| address(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if https {
            let mut tls = ClientTlsConfig::new();
            let Some(ca) = &self.ca_cert else {
                return Err(ClientError::NoCa {
                    endpoint: self.endpoint.clone(),
                });
            };
            tls = tls.ca_certificate(Certificate::from_pem(crate::tls::read_ca(
                "the CA certificate (--ca-cert)",
                ca,
            )?));
            match (&self.client_cert, &self.client_key) {
                (Some(cert), Some(key)) => {
                    let (cert, key) = crate::tls::read_identity(
                        "the client certificate (--client-cert)",
                        cert,
                        "the client key (--client-key)",
                        key,
                    )?;
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => return Err(ClientError::HalfIdentity),
            }
            if let Some(name) = &self.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            // The files were checked above: what is left is tonic's own
            // settings, not the address.
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ClientError::TlsConfig(error_chain(&e)))?;
        }
        Ok(endpoint)
    }

    fn token(&self) -> Result<BearerToken, ClientError> {
        match &self.token {
            None => Ok(BearerToken(None)),
            Some(token) => format!("Bearer {}", token.trim())
                .parse()
                .map(|v| BearerToken(Some(v)))
                .map_err(|_| ClientError::Token),
        }
    }

    /// Connects now (so a wrong address or certificate is reported here).
    pub async fn connect(&self) -> Result<Channel, ClientError> {
        let endpoint = self.endpoint()?;
        endpoint.connect().await.map_err(|e| ClientError::Connect {
            endpoint: self.endpoint.clone(),
            why: self.explain(&e),
        })
    }

    pub async fn event_client(&self) -> Result<EventClient, ClientError> {
        let token = self.token()?;
        let channel = self.connect().await?;
        Ok(EventServiceClient::with_interceptor(channel, token).max_decoding_message_size(MAX_MESSAGE))
    }

    pub async fn ingest_client(&self) -> Result<IngestClient, ClientError> {
        let token = self.token()?;
        let channel = self.connect().await?;
        Ok(IngestServiceClient::with_interceptor(channel, token).max_encoding_message_size(MAX_MESSAGE))
    }
}

/// A gRPC status as one line for people. The message comes from the
/// collector (and may echo what was asked): escaped for a terminal.
pub fn status_line(status: &tonic::Status) -> String {
    use tonic::Code;
    let message = printable(status.message());
    // Transport failures (a connection reset, a refused handshake) keep
    // their reason in the source: "transport error" alone says nothing.
    let with_source = |line: String| match std::error::Error::source(status) {
        Some(source) => match handshake_error(source) {
            Some(tls) => format!("{line}: {}", explain_handshake(&tls, ClientFiles::default())),
            None => format!("{line}: {}", error_chain(source)),
        },
        None => line,
    };
    match status.code() {
        Code::Unauthenticated => format!("the collector rejected the credentials: {message}"),
        Code::PermissionDenied => format!("the collector refused: {message}"),
        Code::NotFound => message.into_owned(),
        Code::InvalidArgument => format!("invalid request: {message}"),
        Code::Unavailable => with_source(format!("the collector is unavailable: {message}")),
        Code::Unknown | Code::Cancelled | Code::Internal => {
            with_source(format!("{:?}: {message}", status.code()))
        }
        code => format!("{code:?}: {message}"),
    }
}
