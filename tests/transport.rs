//! Transport behaviour that does not depend on the storage backend: grpc-web with the CORS
//! allow-list, health and reflection on both listeners, and request size limits.

mod support;

use support::server::{ALLOWED_ORIGIN, Backend, TestServer, admin, traits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use twofold::proto::v1;

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One HTTP/1.1 exchange over a fresh connection, as a browser's fetch would make it.
async fn http1(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");

    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Frames of a grpc-web body: (flags, payload).
fn grpc_web_frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let flags = body[0];
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        frames.push((flags, body[5..5 + length].to_vec()));
        body = &body[5 + length..];
    }
    frames
}

fn grpc_web_request(message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    framed
}

const CREATE_REGISTRATION_FLOW: &str = "/twofold.v1.FlowService/CreateRegistrationFlow";

async fn preflight(address: std::net::SocketAddr, origin: &str) -> HttpResponse {
    http1(
        address,
        "OPTIONS",
        CREATE_REGISTRATION_FLOW,
        &[
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "content-type,x-grpc-web,authorization",
            ),
        ],
        b"",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_from_an_allowed_origin_works_and_gets_a_cors_grant() {
    let server = TestServer::start(Backend::Embedded, "").await;
    let response = http1(
        server.public,
        "POST",
        CREATE_REGISTRATION_FLOW,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("origin", ALLOWED_ORIGIN),
        ],
        &grpc_web_request(&v1::CreateRegistrationFlowRequest::default()),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let exposed = response
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        exposed.contains("grpc-status-details-bin"),
        "exposed headers: {exposed}"
    );

    let frames = grpc_web_frames(&response.body);
    let (_, data) = frames
        .iter()
        .find(|(flags, _)| flags & 0x80 == 0)
        .expect("a data frame");
    let decoded = <v1::CreateRegistrationFlowResponse as prost::Message>::decode(data.as_slice())
        .expect("decodes");
    let flow = decoded.flow.expect("flow");
    assert!(!flow.id.is_empty());
    assert!(
        flow.schema_json.contains("ory.sh/kratos"),
        "the UI gets the schema to render fields"
    );
    let (_, trailers) = frames
        .iter()
        .find(|(flags, _)| flags & 0x80 != 0)
        .expect("a trailer frame");
    assert!(String::from_utf8_lossy(trailers).contains("grpc-status:0"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_from_another_origin_gets_no_cors_grant() {
    let server = TestServer::start(Backend::Embedded, "").await;
    let response = http1(
        server.public,
        "POST",
        CREATE_REGISTRATION_FLOW,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("origin", "https://evil.example.test"),
        ],
        &grpc_web_request(&v1::CreateRegistrationFlowRequest::default()),
    )
    .await;
    assert_eq!(response.header("access-control-allow-origin"), None);

    let allowed = preflight(server.public, ALLOWED_ORIGIN).await;
    assert!(allowed.status < 300, "preflight status {}", allowed.status);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some(ALLOWED_ORIGIN)
    );
    let denied = preflight(server.public, "https://evil.example.test").await;
    assert_eq!(denied.header("access-control-allow-origin"), None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_does_not_speak_grpc_web() {
    let server = TestServer::start(Backend::Embedded, "").await;
    // The admin listener speaks HTTP/2 only, so a browser's HTTP/1.1 grpc-web request gets no
    // usable answer at all, let alone a CORS grant.
    let mut stream = TcpStream::connect(server.admin).await.expect("connect");
    let body = grpc_web_request(&v1::ListIdentitiesRequest::default());
    let head = format!(
        "POST /twofold.v1.IdentityService/ListIdentities HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\
         content-type: application/grpc-web+proto\r\norigin: {ALLOWED_ORIGIN}\r\n\
         authorization: Bearer {}\r\ncontent-length: {}\r\n\r\n",
        server.admin,
        support::server::ADMIN_KEY,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let _ = stream.write_all(&body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut raw),
    )
    .await;
    let answer = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(!answer.starts_with("http/1.1 200"), "{answer}");
    assert!(!answer.contains("access-control-allow-origin"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_on_both_listeners() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(Backend::Embedded, "").await;
    for (channel, expected) in [
        (server.public_channel().await, "twofold.v1.FlowService"),
        (server.admin_channel().await, "twofold.v1.IdentityService"),
    ] {
        let health = HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            health.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("reflection")
            .into_inner();
        let answer = answers
            .message()
            .await
            .expect("answer")
            .expect("one answer");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_mebibyte_request_is_refused() {
    let server = TestServer::start(Backend::Embedded, "").await;
    let huge = "x".repeat(5 * 1024 * 1024);
    let mut identities = server.identities().await;
    let refused = identities
        .create_identity(admin(v1::CreateIdentityRequest {
            traits: Some(traits("big@example.test", None)),
            password: huge.clone(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");

    let mut flows = server.flows().await;
    let refused = flows
        .submit_login_password(v1::SubmitLoginPasswordRequest {
            flow_id: uuid::Uuid::new_v4().to_string(),
            identifier: "a@example.test".into(),
            password: huge,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");

    // Oversized metadata is refused before any handler runs.
    let mut request = tonic::Request::new(v1::CreateRegistrationFlowRequest::default());
    request
        .metadata_mut()
        .insert("x-padding", "y".repeat(64 * 1024).parse().unwrap());
    assert!(flows.create_registration_flow(request).await.is_err());
    server.stop().await;
}
