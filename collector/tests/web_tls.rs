//! `--web-listen` on a collector with TLS: the JSON API and the pages move
//! to their own address and are served there over HTTPS with the gRPC
//! certificate, never in clear; the metrics address keeps the metrics and
//! probes only. A browser without a client certificate is admitted when
//! tokens authenticate it, refused when the client certificate is all
//! there is; a client that connects and never speaks holds up no one.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use hyper::http::{Method, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const READ: &str = "read-token-0123456789";

/// A CA, a server certificate for localhost and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        write("ca.pem", &ca_params.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca_params, ca_key);
        for (name, san) in [("server", "localhost"), ("client", "sre-laptop")] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![san.to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}-key.pem"), &key.serialize_pem());
        }
        write("tokens", &format!("read {READ}\n"));
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The collector binary, killed when the test ends however it ends.
struct Collector {
    child: Child,
    metrics: u16,
    web: u16,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(pki: &Pki, tokens: bool) -> Collector {
    let (metrics, web) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_oomlens-collector"));
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--web-listen", &format!("127.0.0.1:{web}")])
        .arg("--database")
        .arg(pki.path("events.db"))
        .arg("--tls-cert")
        .arg(pki.path("server.pem"))
        .arg("--tls-key")
        .arg(pki.path("server-key.pem"))
        .arg("--tls-client-ca")
        .arg(pki.path("ca.pem"))
        .env_remove("OOMLENS_TOKEN_FILE")
        .env_remove("OOMLENS_HTTP_API")
        .env_remove("OOMLENS_WEB_LISTEN")
        .stderr(Stdio::null());
    if tokens {
        command.arg("--token-file").arg(pki.path("tokens"));
    }
    let collector = Collector {
        child: command.spawn().unwrap(),
        metrics,
        web,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for port in [metrics, web] {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the collector never listened on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    collector
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, http_body_util::Full<Bytes>>;

/// An HTTPS client trusting `ca`, presenting `identity` (certificate and
/// key files) if given. Plain `http://` URLs work too.
fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

struct Answer {
    status: u16,
    headers: hyper::http::HeaderMap,
    body: String,
}

async fn fetch(
    client: &HttpsClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, String> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), client.request(request))
        .await
        .map_err(|_| format!("{url}: no answer in 20 s"))?
        .map_err(|e| format!("{url}: {e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .map_err(|_| format!("{url}: body not finished in 20 s"))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn get(client: &HttpsClient, url: &str, headers: &[(&str, &str)]) -> Result<Answer, String> {
    fetch(client, Method::GET, url, headers, "").await
}

#[tokio::test]
async fn the_web_address_serves_https_with_the_grpc_certificate_and_tokens() {
    let pki = Pki::new();
    let collector = start(&pki, true).await;
    let web = format!("https://localhost:{}", collector.web);
    // A browser: the CA trusted, no client certificate.
    let browser = client(&pki.path("ca.pem"), None);
    let bearer = format!("Bearer {READ}");

    let anonymous = get(&browser, &format!("{web}/"), &[]).await.unwrap();
    assert_eq!(anonymous.status, 303, "{}", anonymous.body);
    let page = get(&browser, &format!("{web}/"), &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.headers.contains_key(header::CONTENT_SECURITY_POLICY));
    assert!(page.body.contains("<html"), "{}", page.body);
    let api = get(
        &browser,
        &format!("{web}/api/v1/events"),
        &[("authorization", &bearer)],
    )
    .await
    .unwrap();
    assert_eq!(api.status, 200, "{}", api.body);
    assert!(api.body.starts_with('{'), "{}", api.body);

    // The login cookie is Secure on this address, besides HttpOnly and
    // SameSite=Strict.
    let login = fetch(
        &browser,
        Method::POST,
        &format!("{web}/login"),
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("token={READ}&next=%2F"),
    )
    .await
    .unwrap();
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = login.headers[header::SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }

    // Never in clear: plain HTTP to the web address gets no answer.
    let plain = get(&browser, &format!("http://127.0.0.1:{}/", collector.web), &[]).await;
    assert!(
        plain.is_err(),
        "plain HTTP was answered: status {:?}",
        plain.map(|a| a.status)
    );

    // The metrics address keeps metrics and probes, and nothing else.
    let metrics = format!("http://127.0.0.1:{}", collector.metrics);
    assert_eq!(
        get(&browser, &format!("{metrics}/metrics"), &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(&browser, &format!("{metrics}/readyz"), &[])
            .await
            .unwrap()
            .status,
        200
    );
    for path in ["/", "/api/v1/events"] {
        let answer = get(
            &browser,
            &format!("{metrics}{path}"),
            &[("authorization", &bearer)],
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 404, "{path} on the metrics address");
    }

    // Clients that connect and never finish a handshake (or never start
    // one) do not keep others out.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", collector.web))
                .await
                .unwrap(),
        );
    }
    let meanwhile = client(&pki.path("ca.pem"), None);
    let served = get(
        &meanwhile,
        &format!("{web}/api/v1/events"),
        &[("authorization", &bearer)],
    )
    .await
    .unwrap();
    assert_eq!(served.status, 200);
    drop(silent);
}

#[tokio::test]
async fn without_tokens_the_web_address_requires_the_client_certificate() {
    let pki = Pki::new();
    let collector = start(&pki, false).await;
    let url = format!("https://localhost:{}/api/v1/events", collector.web);

    let stranger = client(&pki.path("ca.pem"), None);
    let refused = get(&stranger, &url, &[]).await;
    assert!(refused.is_err(), "served without a client certificate");

    let holder = client(
        &pki.path("ca.pem"),
        Some((&pki.path("client.pem"), &pki.path("client-key.pem"))),
    );
    assert_eq!(get(&holder, &url, &[]).await.unwrap().status, 200);
}

#[test]
fn a_web_address_with_the_api_turned_off_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_oomlens-collector"))
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics-listen", ""])
        .args(["--web-listen", "127.0.0.1:0", "--http-api", "off"])
        .arg("--database")
        .arg(dir.path().join("events.db"))
        .env_remove("OOMLENS_WEB_LISTEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--web-listen") && stderr.contains("--http-api off"),
        "{stderr}"
    );
}
