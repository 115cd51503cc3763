//! A small HTTP/1.1 client for the collector's HTTP API: whole responses
//! (`Connection: close`, chunked or not) and server-sent event streams.
//! Written here rather than pulled in: the tests need GET and SSE only.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics (naming the body) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {} body is not JSON ({e}): {}", self.status, self.text()))
    }
}

async fn send(address: &str, path: &str, headers: &[(&str, &str)]) -> BufReader<TcpStream> {
    send_with_body(address, "GET", path, headers, None).await
}

async fn send_with_body(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(address)
        .await
        .unwrap_or_else(|e| panic!("connect {address}: {e}"));
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes()).await.expect("send request");
    BufReader::new(stream)
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.expect("header line");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (status, headers)
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
}

/// The next chunk of a chunked body; None at its end.
async fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(line.trim().split(';').next()?.trim(), 16).ok()?;
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).await.ok()?;
    chunk.truncate(size);
    (size > 0).then_some(chunk)
}

/// `GET path` with `headers`; the whole response.
pub async fn get(address: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    read_response(send(address, path, headers).await).await
}

/// Any request with an optional body; the whole response.
pub async fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    read_response(send_with_body(address, method, path, headers, body).await).await
}

/// `POST path` of a form (`application/x-www-form-urlencoded`).
pub async fn post_form(address: &str, path: &str, form: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    read_response(send_with_body(address, "POST", path, &all, Some(form)).await).await
}

async fn read_response(mut reader: BufReader<TcpStream>) -> Response {
    let (status, headers) = read_head(&mut reader).await;
    let mut body = Vec::new();
    if is_chunked(&headers) {
        while let Some(chunk) = read_chunk(&mut reader).await {
            body.extend(chunk);
        }
    } else if let Some(length) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        // Some servers keep the connection open whatever we asked.
        body.resize(length, 0);
        reader.read_exact(&mut body).await.expect("body");
    } else {
        reader.read_to_end(&mut body).await.expect("body");
    }
    Response {
        status,
        headers,
        body,
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An open server-sent event stream.
#[derive(Debug)]
pub struct EventStream {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    chunked: bool,
    buffer: String,
    ended: bool,
}

/// Opens `GET path` as an event stream (comments are skipped).
pub async fn stream(address: &str, path: &str, headers: &[(&str, &str)]) -> EventStream {
    let mut reader = send(address, path, headers).await;
    let (status, headers) = read_head(&mut reader).await;
    let chunked = is_chunked(&headers);
    EventStream {
        reader,
        status,
        headers,
        chunked,
        buffer: String::new(),
        ended: false,
    }
}

impl EventStream {
    /// The next event within `wait`; None when the stream ended or nothing
    /// came in time.
    pub async fn next(&mut self, wait: Duration) -> Option<ServerSent> {
        tokio::time::timeout(wait, self.next_event()).await.ok().flatten()
    }

    /// Whether the server ended the stream within `wait`.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.ended {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Err(_) => return false,
                Ok(Some(_)) => {}
                Ok(None) => {}
            }
        }
        true
    }

    async fn next_event(&mut self) -> Option<ServerSent> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if let Some(event) = parse_frame(&frame) {
                    return Some(event);
                }
            }
            if self.ended {
                return None;
            }
            let more = if self.chunked {
                read_chunk(&mut self.reader).await
            } else {
                let mut bytes = vec![0; 8192];
                match self.reader.read(&mut bytes).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        bytes.truncate(n);
                        Some(bytes)
                    }
                }
            };
            match more {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => self.ended = true,
            }
        }
    }
}

/// An event from one frame; None for a frame of comments only.
fn parse_frame(frame: &str) -> Option<ServerSent> {
    let mut event = ServerSent {
        event: "message".to_owned(),
        ..ServerSent::default()
    };
    let mut data: Vec<&str> = Vec::new();
    let mut any = false;
    for line in frame.lines() {
        if line.starts_with(':') || line.is_empty() {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "event" => event.event = value.to_owned(),
            "id" => event.id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    event.data = data.join("\n");
    any.then_some(event)
}

/// One request a [`Receiver`] took.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Respond = dyn Fn(usize, &Received) -> u16 + Send + Sync;

/// A webhook receiver on 127.0.0.1: answers each POST with the status
/// `respond(n, request)` picks (`n` counts requests from 0), keeps
/// connections alive as HTTP/1.1 clients expect, and records every
/// request. It can go down (connections refused) and come back on the
/// same port.
pub struct Receiver {
    port: u16,
    respond: std::sync::Arc<Respond>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    pub async fn start(respond: impl Fn(usize, &Received) -> u16 + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let mut receiver = Self {
            port,
            respond: std::sync::Arc::new(respond),
            requests: std::sync::Arc::default(),
            task: None,
        };
        receiver.serve(listener);
        receiver
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops listening and drops open connections: senders see refusals.
    pub fn go_down(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn come_back(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("rebind the receiver's port");
        self.serve(listener);
    }

    /// Waits until `done(requests)`; panics after `wait`.
    pub async fn wait_until(&self, wait: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver did not get what was expected within {wait:?}; it got {} requests",
                requests.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let respond = std::sync::Arc::clone(&self.respond);
        let requests = std::sync::Arc::clone(&self.requests);
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let respond = std::sync::Arc::clone(&respond);
                let requests = std::sync::Arc::clone(&requests);
                // Dropped with the set when this task is aborted.
                connections.spawn(async move {
                    let mut reader = BufReader::new(stream);
                    while let Some(mut request) = read_request(&mut reader).await {
                        let status = {
                            let mut all = requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            let status = respond(all.len(), &request);
                            request.status = status;
                            all.push(request);
                            status
                        };
                        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.go_down();
    }
}

async fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await.ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some(Received {
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
    })
}
