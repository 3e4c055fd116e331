//! `serve.public.static_dir`: the sign-in page's files on the public listener, beside gRPC and
//! grpc-web on the same port, with security headers and no way out of the folder.

mod support;

use std::path::Path;
use support::server::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use twofold::proto::v1;

const INDEX: &str = "<!doctype html><title>Twofold sign-in</title>";
const SECRET: &str = "a file next to the page folder that must never be served";

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Raw HTTP/1.1, because client libraries resolve `..` before sending and the escape attempts
/// would never reach the server.
async fn request(
    address: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// `<tmp>/page/{index.html, assets/app.js}` and `<tmp>/secret.txt` beside the folder.
fn page_folder(root: &Path) -> std::path::PathBuf {
    let page = root.join("page");
    std::fs::create_dir_all(page.join("assets")).unwrap();
    std::fs::write(page.join("index.html"), INDEX).unwrap();
    std::fs::write(page.join("assets/app.js"), "console.log('twofold')").unwrap();
    std::fs::write(root.join("secret.txt"), SECRET).unwrap();
    page
}

async fn server_with_page(root: &Path) -> TestServer {
    let page = page_folder(root);
    let yaml = format!("serve:\n  public:\n    static_dir: '{}'\n", page.display());
    TestServer::start(Backend::Embedded, &yaml).await
}

fn assert_security_headers(reply: &Reply) {
    let csp = reply
        .header("content-security-policy")
        .expect("a content security policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_security_headers() {
    let root = tempfile::tempdir().unwrap();
    let server = server_with_page(root.path()).await;

    let index = request(server.public, "GET", "/", "", b"").await;
    assert_eq!(index.status, 200, "{}", index.head);
    assert_eq!(index.text(), INDEX);
    assert!(
        index
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_security_headers(&index);

    let script = request(server.public, "GET", "/assets/app.js", "", b"").await;
    assert_eq!(script.status, 200);
    assert_eq!(script.text(), "console.log('twofold')");
    assert!(
        script
            .header("content-type")
            .unwrap()
            .contains("javascript"),
        "{}",
        script.head
    );
    assert_security_headers(&script);

    let head = request(server.public, "HEAD", "/index.html", "", b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let missing = request(server.public, "GET", "/no-such-page.html", "", b"").await;
    assert_eq!(missing.status, 404);
    assert_security_headers(&missing);

    // No listing of a folder without an index.html, and no redirect that would reveal one.
    let folder = request(server.public, "GET", "/assets/", "", b"").await;
    assert_eq!(folder.status, 404);
    let folder = request(server.public, "GET", "/assets", "", b"").await;
    assert_eq!(folder.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_out_of_the_folder_are_not_found() {
    let root = tempfile::tempdir().unwrap();
    let server = server_with_page(root.path()).await;
    for target in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/%2e%2e%5csecret.txt",
        "/./../secret.txt",
    ] {
        let reply = request(server.public, "GET", target, "", b"").await;
        assert!(reply.status == 404, "{target}: {}", reply.head);
        assert!(!reply.text().contains(SECRET), "{target} leaked the file");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_grpc_web_still_work_on_the_same_port() {
    let root = tempfile::tempdir().unwrap();
    let server = server_with_page(root.path()).await;

    let created = server
        .flows()
        .await
        .create_registration_flow(v1::CreateRegistrationFlowRequest::default())
        .await
        .expect("gRPC over HTTP/2 is answered by the API");
    assert!(!created.into_inner().flow.expect("flow").id.is_empty());

    // The page's own calls: grpc-web over HTTP/1.1, from the page's origin (no CORS needed).
    let message = prost::Message::encode_to_vec(&v1::CreateRegistrationFlowRequest::default());
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let reply = request(
        server.public,
        "POST",
        "/twofold.v1.FlowService/CreateRegistrationFlow",
        "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n",
        &framed,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/grpc-web"),
        "{}",
        reply.head
    );
    assert!(reply.header("content-security-policy").is_none());
    assert!(
        String::from_utf8_lossy(&reply.body).contains("grpc-status:0"),
        "{}",
        reply.text()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_folder_no_page_is_served() {
    let server = TestServer::start(Backend::Embedded, "").await;
    let reply = request(server.public, "GET", "/", "", b"").await;
    assert_ne!(reply.status, 200, "{}", reply.head);
    assert!(reply.header("content-security-policy").is_none());
    assert!(!reply.text().contains("<!doctype html>"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_without_index_html_is_refused_at_load() {
    let root = tempfile::tempdir().unwrap();
    let yaml = format!(
        "serve:\n  public:\n    static_dir: '{}'\n",
        root.path().display()
    );
    let problems = twofold::config::parse_document(&yaml, None)
        .expect_err("a folder without index.html is refused")
        .0;
    assert_eq!(problems[0].key, "serve.public.static_dir");
    assert!(problems[0].message.contains("index.html"));

    let env = [(
        "SERVE_PUBLIC_STATIC_DIR".to_owned(),
        page_folder(root.path()).display().to_string(),
    )];
    let loaded = twofold::config::load(None, &env).expect("the env names a page folder");
    assert_eq!(
        loaded.config.serve.public.static_dir.as_deref(),
        Some(root.path().join("page").as_path())
    );
}
