//! A stand-in HTTP/1.1 server for gateway tests: it listens on `127.0.0.1:0`, records every
//! request (method, path, headers, body) and answers each with the next scripted response, so a
//! test can check exactly what a sender put on the wire and how it reads an answer. One request
//! per connection (`Connection: close`), `Content-Length` or chunked bodies; enough for reqwest,
//! not a general server.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the stub received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("body is not json ({error}): {}", self.body_text()))
    }

    /// The form-encoded body's pairs, decoded, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect()
    }

    /// The decoded value of one form field.
    pub fn form_field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// An answer the stub gives.
#[derive(Debug, Clone)]
pub struct ScriptedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ScriptedResponse {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::new(status, body.to_string()).header("Content-Type", "application/json")
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

pub struct HttpStub {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    load: Arc<Load>,
    task: JoinHandle<()>,
}

/// Requests being answered right now, and the most there ever were at once.
#[derive(Default)]
struct Load {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts one request as in flight until dropped.
struct InFlight(Arc<Load>);

impl InFlight {
    fn enter(load: &Arc<Load>) -> Self {
        let now = load.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        load.peak.fetch_max(now, Ordering::SeqCst);
        Self(load.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HttpStub {
    /// Starts a stub that answers requests with `script` in order, then `200 {}` once the script
    /// runs out.
    pub async fn start(script: Vec<ScriptedResponse>) -> Self {
        Self::start_slow(script, Duration::ZERO).await
    }

    /// Like `start`, but every answer waits `delay` after the request arrived: a slow gateway,
    /// so a test can see how many requests a client keeps open at once.
    pub async fn start_slow(script: Vec<ScriptedResponse>, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the http stub");
        let address = listener.local_addr().expect("stub address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let recorded = requests.clone();
        let load = Arc::new(Load::default());
        let counted = load.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                let script = script.clone();
                let counted = counted.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, recorded, script, &counted, delay).await;
                });
            }
        });
        Self {
            address,
            requests,
            load,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `base_url` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.lock().expect("stub lock").clone()
    }

    /// The most requests the stub was answering at the same time.
    pub fn peak_in_flight(&self) -> usize {
        self.load.peak.load(Ordering::SeqCst)
    }

    /// The only request received; fails the test if there were none or several.
    pub fn single_request(&self) -> RecordedRequest {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected exactly one request");
        requests.into_iter().next().expect("one request")
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL on 127.0.0.1 where nothing listens: the port was just bound and released.
pub async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a port");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}")
}

async fn serve(
    mut stream: TcpStream,
    recorded: Arc<Mutex<Vec<RecordedRequest>>>,
    script: Arc<Mutex<VecDeque<ScriptedResponse>>>,
    load: &Arc<Load>,
    delay: Duration,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        if read_more(&mut stream, &mut buffer).await? == 0 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };

    let mut rest = buffer[head_end + 4..].to_vec();
    let body = if header("transfer-encoding").is_some_and(|value| value.contains("chunked")) {
        read_chunked(&mut stream, &mut rest).await?
    } else {
        let length: usize = header("content-length")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        while rest.len() < length {
            if read_more(&mut stream, &mut rest).await? == 0 {
                break;
            }
        }
        rest.truncate(length);
        rest
    };

    let _in_flight = InFlight::enter(load);
    recorded.lock().expect("stub lock").push(RecordedRequest {
        method,
        path,
        headers,
        body,
    });
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = script
        .lock()
        .expect("stub lock")
        .pop_front()
        .unwrap_or_else(|| ScriptedResponse::json(200, serde_json::json!({})));

    let mut answer = format!("HTTP/1.1 {} Stub\r\n", response.status);
    for (name, value) in &response.headers {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        response.body.len(),
        response.body
    ));
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..read]);
    Ok(read)
}

async fn read_chunked(stream: &mut TcpStream, rest: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(end) = find(rest, b"\r\n") {
                break end;
            }
            if read_more(stream, rest).await? == 0 {
                return Ok(body);
            }
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        rest.drain(..line_end + 2);
        if size == 0 {
            return Ok(body);
        }
        while rest.len() < size + 2 {
            if read_more(stream, rest).await? == 0 {
                return Ok(body);
            }
        }
        body.extend_from_slice(&rest[..size]);
        rest.drain(..size + 2);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
