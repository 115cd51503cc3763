//! Connecting to a collector, for the agent and the `oomlens` CLI: plain
//! or TLS (a private CA), optionally presenting a client certificate
//! (mutual TLS), optionally with a bearer token. Errors are one line that
//! says what to fix.

use std::path::PathBuf;
use std::time::Duration;

use oomlens_proto::v1::event_service_client::EventServiceClient;
use oomlens_proto::v1::ingest_service_client::IngestServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The most a response may be (an event with its whole history).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

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
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
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
    fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, ClientError> {
        std::fs::read(path).map_err(|source| ClientError::Read {
            what,
            path: path.display().to_string(),
            source,
        })
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
            match &self.ca_cert {
                Some(ca) => {
                    tls = tls.ca_certificate(Certificate::from_pem(Self::read("the CA certificate", ca)?))
                }
                None => {
                    return Err(address(
                        "https needs the CA that signed the collector's certificate (--ca-cert)".to_owned(),
                    ));
                }
            }
            match (&self.client_cert, &self.client_key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(
                        Self::read("the client certificate", cert)?,
                        Self::read("the client key", key)?,
                    ));
                }
                (None, None) => {}
                _ => return Err(ClientError::HalfIdentity),
            }
            if let Some(name) = &self.tls_server_name {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| address(error_chain(&e)))?;
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
            why: error_chain(&e),
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

/// A gRPC status as one line for people.
pub fn status_line(status: &tonic::Status) -> String {
    use tonic::Code;
    let message = status.message();
    match status.code() {
        Code::Unauthenticated => format!("the collector rejected the credentials: {message}"),
        Code::PermissionDenied => format!("the collector refused: {message}"),
        Code::NotFound => message.to_owned(),
        Code::InvalidArgument => format!("invalid request: {message}"),
        Code::Unavailable => {
            let mut line = format!("the collector is unavailable: {message}");
            if let Some(source) = std::error::Error::source(status) {
                line = format!("{line}: {}", error_chain(source));
            }
            line
        }
        code => format!("{code:?}: {message}"),
    }
}
