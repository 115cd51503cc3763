//! TLS mistakes said clearly, with certificates made by rcgen: each error
//! names the file or the certificate check that failed, on one line. The
//! old messages were "transport error", "invalid collector address" for a
//! key that does not match its certificate, an empty trust store for a CA
//! file holding no certificate, and "TLS configuration rejected:
//! transport error" for every bad server file.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use oomlens_collector::server::{Embedded, ServeError, ServerConfig, TlsFiles};
use oomlens_common::client::{ClientConfig, ClientError};
use oomlens_proto::v1::QueryRequest;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Two CAs (`ca`, `rogue-ca`) with the same (empty) name; from `ca`: a
    /// server certificate for localhost, an expired one, one for another
    /// name, a client certificate and an expired client certificate.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
        for prefix in ["", "rogue-"] {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).unwrap();
            write(&format!("{prefix}ca.pem"), &ca.pem());
            let issuer = Issuer::new(ca_params, ca_key);
            for (name, sans, expired) in [
                ("server", vec!["localhost"], false),
                ("expired", vec!["localhost"], true),
                ("elsewhere", vec!["elsewhere.example"], false),
                ("client", vec!["agent-node-a"], false),
                ("expired-client", vec!["agent-node-a"], true),
            ] {
                let key = KeyPair::generate().unwrap();
                let mut params =
                    CertificateParams::new(sans.into_iter().map(str::to_owned).collect::<Vec<_>>()).unwrap();
                if expired {
                    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
                }
                let cert = params.signed_by(&key, &issuer).unwrap();
                write(&format!("{prefix}{name}.pem"), &cert.pem());
                write(&format!("{prefix}{name}-key.pem"), &key.serialize_pem());
            }
        }
        write("garbage.pem", "not a certificate\n");
        write("empty.pem", "");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A collector serving TLS with `cert`, requiring client certificates
/// from `client_ca` if given.
async fn serve(pki: &Pki, cert: &str, client_ca: Option<&str>) -> (Embedded, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ServerConfig {
        tls: Some(TlsFiles {
            cert: pki.path(&format!("{cert}.pem")),
            key: pki.path(&format!("{cert}-key.pem")),
            client_ca: client_ca.map(|ca| pki.path(ca)),
        }),
        ..ServerConfig::default()
    };
    let database = pki.path(&format!("{cert}.db")).display().to_string();
    let collector = Embedded::start(&database, listener, config).await.unwrap();
    let port = collector.address().port();
    (collector, port)
}

fn client(pki: &Pki, port: u16, ca: &str) -> ClientConfig {
    ClientConfig {
        endpoint: format!("https://localhost:{port}"),
        ca_cert: Some(pki.path(ca)),
        ..ClientConfig::default()
    }
}

/// The error connecting, as the CLI and the agent print it.
async fn connect_error(config: &ClientConfig) -> String {
    let error = config.event_client().await.unwrap_err().to_string();
    assert!(!error.contains('\n'), "{error}");
    error
}

/// The error of a first query (a refused client certificate shows only
/// there with TLS 1.3), as `ClientConfig::status_line` says it.
async fn query_error(config: &ClientConfig) -> String {
    let mut events = config.event_client().await.unwrap();
    let status = events.query(QueryRequest::default()).await.unwrap_err();
    let line = config.status_line(&status);
    assert!(!line.contains('\n'), "{line}");
    line
}

#[tokio::test]
async fn server_certificate_problems_are_explained() {
    let pki = Pki::new();
    let (server, port) = serve(&pki, "server", None).await;
    let good = client(&pki, port, "ca.pem");
    assert!(good.event_client().await.is_ok());

    // Wrong CA: was "transport error: invalid peer certificate: BadSignature".
    let error = connect_error(&client(&pki, port, "rogue-ca.pem")).await;
    let rogue = pki.path("rogue-ca.pem").display().to_string();
    assert!(
        error.contains(&format!(
            "the collector's certificate is not signed by the CA in {rogue}"
        )),
        "{error}"
    );
    // A CA file with no certificate: was an empty trust store, and
    // "UnknownIssuer" at every connection.
    for (file, problem) in [
        ("garbage.pem", "holds no certificate"),
        ("empty.pem", "holds no certificate"),
        ("server-key.pem", "holds no certificate"),
    ] {
        let config = client(&pki, port, file);
        let error = connect_error(&config).await;
        let path = pki.path(file).display().to_string();
        assert_eq!(
            error,
            format!(
                "the CA certificate (--ca-cert) {path} {problem} (a `-----BEGIN CERTIFICATE-----` block)"
            )
        );
        // Found without connecting: the agent refuses to start on it.
        assert!(matches!(config.check(), Err(ClientError::TlsFile(_))));
    }
    // A missing file names it.
    let error = connect_error(&client(&pki, port, "missing.pem")).await;
    assert!(
        error.starts_with(&format!(
            "cannot read the CA certificate (--ca-cert) {}: ",
            pki.path("missing.pem").display()
        )),
        "{error}"
    );
    server.stop().await.unwrap();

    let (server, port) = serve(&pki, "expired", None).await;
    let error = connect_error(&client(&pki, port, "ca.pem")).await;
    assert!(
        error.contains("the collector's certificate has expired (certificate expired:"),
        "{error}"
    );
    server.stop().await.unwrap();

    let (server, port) = serve(&pki, "elsewhere", None).await;
    let error = connect_error(&client(&pki, port, "ca.pem")).await;
    assert!(
        error.contains("the collector's certificate does not hold the name connected to")
            && error.contains("elsewhere.example"),
        "{error}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn client_certificate_problems_are_explained() {
    let pki = Pki::new();
    let (server, port) = serve(&pki, "server", Some("ca.pem")).await;
    let base = client(&pki, port, "ca.pem");
    let with = |cert: &str, key: &str| ClientConfig {
        client_cert: Some(pki.path(cert)),
        client_key: Some(pki.path(key)),
        ..base.clone()
    };
    let mut agent = with("client.pem", "client-key.pem").event_client().await.unwrap();
    assert!(agent.query(QueryRequest::default()).await.is_ok());

    // A key that is not the certificate's: was "invalid collector address
    // ...: keys may not be consistent: KeyMismatch".
    let mismatched = with("client.pem", "server-key.pem");
    let error = connect_error(&mismatched).await;
    assert_eq!(
        error,
        format!(
            "the key {} does not belong to the certificate {}",
            pki.path("server-key.pem").display(),
            pki.path("client.pem").display()
        )
    );
    assert!(matches!(mismatched.check(), Err(ClientError::TlsFile(_))));
    let error = connect_error(&with("client.pem", "garbage.pem")).await;
    assert!(
        error.starts_with("the client key (--client-key) ") && error.contains("holds no private key"),
        "{error}"
    );
    let error = connect_error(&with("garbage.pem", "client-key.pem")).await;
    assert!(error.contains("holds no certificate"), "{error}");

    // Refused by the collector: was "Unknown: transport error".
    let error = query_error(&base).await;
    assert!(
        error.contains("the collector requires a client certificate (mutual TLS)"),
        "{error}"
    );
    let error = query_error(&with("rogue-client.pem", "rogue-client-key.pem")).await;
    assert!(
        error.contains(&format!(
            "the collector refused the client certificate {}",
            pki.path("rogue-client.pem").display()
        )) && error.contains("--tls-client-ca"),
        "{error}"
    );
    let error = query_error(&with("expired-client.pem", "expired-client-key.pem")).await;
    assert!(error.contains("it has expired"), "{error}");
    server.stop().await.unwrap();
}

/// The collector's own files: each mistake named at start (was "TLS
/// configuration rejected: transport error", after the listener was up).
#[test]
fn server_file_problems_name_the_file() {
    let pki = Pki::new();
    let files = |cert: &str, key: &str, ca: Option<&str>| TlsFiles {
        cert: pki.path(cert),
        key: pki.path(key),
        client_ca: ca.map(|c| pki.path(c)),
    };
    let shown = |name: &str| pki.path(name).display().to_string();
    let error = |files: TlsFiles| -> String {
        let error = files.check(false).unwrap_err();
        assert!(matches!(error, ServeError::TlsFile(_)), "{error}");
        error.to_string()
    };
    assert!(
        files("server.pem", "server-key.pem", Some("ca.pem"))
            .check(false)
            .is_ok()
    );
    assert_eq!(
        error(files("server.pem", "client-key.pem", None)),
        format!(
            "the key {} does not belong to the certificate {}",
            shown("client-key.pem"),
            shown("server.pem")
        )
    );
    assert_eq!(
        error(files("garbage.pem", "server-key.pem", None)),
        format!(
            "the server certificate (--tls-cert) {} holds no certificate (a `-----BEGIN CERTIFICATE-----` block)",
            shown("garbage.pem")
        )
    );
    assert!(
        error(files("server.pem", "garbage.pem", None)).starts_with(&format!(
            "the server key (--tls-key) {} holds no private key",
            shown("garbage.pem")
        ))
    );
    assert!(
        error(files("server.pem", "server-key.pem", Some("empty.pem"))).starts_with(&format!(
            "the client CA (--tls-client-ca) {} holds no certificate",
            shown("empty.pem")
        ))
    );
    assert!(
        error(files("server.pem", "server-key.pem", Some("nope.pem"))).starts_with(&format!(
            "cannot read the client CA (--tls-client-ca) {}: ",
            shown("nope.pem")
        ))
    );
    // The key file open to others: a warning, an error when strict.
    use std::os::unix::fs::PermissionsExt as _;
    let key = pki.path("server-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = files("server.pem", "server-key.pem", None);
    assert!(open.check(false).is_ok());
    let strict = open.check(true).unwrap_err().to_string();
    assert!(strict.contains("has mode 0644"), "{strict}");
    assert!(Path::new(&key).exists());
}
