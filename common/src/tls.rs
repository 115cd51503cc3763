//! Certificate and key files checked when they are read, and TLS handshake
//! failures said in words, for the agent, the collector and the CLI.
//!
//! tonic takes PEM bytes and checks little: a CA file that holds no
//! certificate became an empty trust store (every connection then failed
//! with `UnknownIssuer`), and a key that does not match its certificate
//! was reported as an invalid collector address. So each file is parsed
//! here with rustls (the library tonic uses) first, and every error names
//! the file and the problem.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError};

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} is not valid PEM: {why}")]
    Pem {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("{what} {path} holds no certificate (a `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate { what: &'static str, path: String },
    #[error("{what} {path}: certificate {index} cannot be used: {why}")]
    BadCertificate {
        what: &'static str,
        path: String,
        index: usize,
        why: String,
    },
    #[error("{what} {path} holds no private key (a `-----BEGIN PRIVATE KEY-----`, RSA or EC key block)")]
    NoKey { what: &'static str, path: String },
    #[error("{what} {path} cannot be used: {why}")]
    BadKey {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("the key {key} does not belong to the certificate {cert}")]
    KeyMismatch { cert: String, key: String },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| TlsFileError::Pem {
            what,
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Reads a CA bundle (PEM): every certificate in it must be usable as a
/// trust anchor. Returns the file's bytes, for tonic.
pub fn read_ca(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let pem = read(what, path)?;
    let mut roots = rustls::RootCertStore::empty();
    for (index, cert) in certificates(what, path, &pem)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsFileError::BadCertificate {
            what,
            path: path.display().to_string(),
            index: index + 1,
            why: e.to_string(),
        })?;
    }
    Ok(pem)
}

/// Reads a certificate chain and its private key (PEM), checking that the
/// key is one rustls can sign with and that it belongs to the first
/// certificate. Returns both files' bytes, for tonic.
pub fn read_identity(
    cert_what: &'static str,
    cert_path: &Path,
    key_what: &'static str,
    key_path: &Path,
) -> Result<(Vec<u8>, Vec<u8>), TlsFileError> {
    let cert_pem = read(cert_what, cert_path)?;
    let key_pem = read(key_what, key_path)?;
    let chain = certificates(cert_what, cert_path, &cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsFileError::NoKey {
            what: key_what,
            path: key_path.display().to_string(),
        },
        e => TlsFileError::Pem {
            what: key_what,
            path: key_path.display().to_string(),
            why: e.to_string(),
        },
    })?;
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
        Ok(_) => Ok((cert_pem, key_pem)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsFileError::KeyMismatch {
            cert: cert_path.display().to_string(),
            key: key_path.display().to_string(),
        }),
        // The certificate parsed as PEM but not as X.509.
        Err(rustls::Error::InvalidCertificate(e)) => Err(TlsFileError::BadCertificate {
            what: cert_what,
            path: cert_path.display().to_string(),
            index: 1,
            why: e.to_string(),
        }),
        Err(e) => Err(TlsFileError::BadKey {
            what: key_what,
            path: key_path.display().to_string(),
            why: e.to_string(),
        }),
    }
}

/// The rustls error somewhere in an error's chain: a failed handshake, as
/// tonic and hyper wrap it (inside an `io::Error`, whose `source` skips
/// it). An alert the peer sent after the handshake (a refused client
/// certificate, with TLS 1.3) reaches us through h2, which keeps only its
/// text: `received fatal alert: CertificateRequired`; it is read back.
pub fn handshake_error(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(found) = error.downcast_ref::<rustls::Error>() {
            return Some(found.clone());
        }
        if let Some(found) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found.clone());
        }
        if let Some(alert) = alert_in_text(&error.to_string()) {
            return Some(rustls::Error::AlertReceived(alert));
        }
        next = error.source();
    }
    None
}

/// The alert in rustls's text for a received one (its `Debug` name).
fn alert_in_text(text: &str) -> Option<AlertDescription> {
    let (_, after) = text.split_once("received fatal alert: ")?;
    let name: String = after.chars().take_while(char::is_ascii_alphanumeric).collect();
    (0..=u8::MAX)
        .map(AlertDescription::from)
        .find(|alert| format!("{alert:?}") == name)
}

/// The files a client used, to name them in explanations.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientFiles<'a> {
    pub ca_cert: Option<&'a Path>,
    pub client_cert: Option<&'a Path>,
}

/// A failed handshake as a sentence that says what to check.
pub fn explain_handshake(error: &rustls::Error, files: ClientFiles<'_>) -> String {
    let ca = files.ca_cert.map_or_else(
        || "the CA (--ca-cert)".to_owned(),
        |p| format!("the CA in {}", p.display()),
    );
    let client_cert = files.client_cert.map_or_else(
        || "this client's certificate".to_owned(),
        |p| format!("the client certificate {}", p.display()),
    );
    match error {
        rustls::Error::InvalidCertificate(problem) => match problem {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the collector's certificate is not signed by {ca} ({problem:?}): use the CA that \
                 signed it"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the collector's certificate has expired ({problem})")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("the collector's certificate is not valid yet ({problem}): check the clocks")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the collector's certificate does not hold the name connected to ({problem}): \
                     connect by a name the certificate holds"
                )
            }
            CertificateError::Revoked => "the collector's certificate is revoked".to_owned(),
            other => format!("the collector's certificate was refused: {other}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => {
                "the collector requires a client certificate (mutual TLS): give --client-cert and \
                 --client-key"
                    .to_owned()
            }
            AlertDescription::CertificateExpired => {
                format!("the collector refused {client_cert}: it has expired")
            }
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::DecryptError
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked => format!(
                "the collector refused {client_cert} ({alert:?}): is it signed by the CA the \
                 collector trusts (its --tls-client-ca)?"
            ),
            other => format!("the collector ended the TLS handshake: {other:?}"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("the TLS handshake failed ({error}): is the collector serving TLS on this port?")
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_are_read_back_from_their_text() {
        assert_eq!(
            alert_in_text("connection error: received fatal alert: CertificateRequired"),
            Some(AlertDescription::CertificateRequired)
        );
        assert_eq!(
            alert_in_text("received fatal alert: UnknownCA; more"),
            Some(AlertDescription::UnknownCA)
        );
        assert_eq!(alert_in_text("connection refused"), None);
        assert_eq!(alert_in_text("received fatal alert: Nonsense"), None);
    }
}
