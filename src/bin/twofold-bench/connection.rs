//! A virtual user's HTTP/2 connection to the server, which the generated clients use as it is.
//!
//! tonic's `Channel` puts a queue and a task of its own in front of hyper's connection (for
//! reconnects, load balancing and back-pressure across callers), so each call woke one task more
//! than it needed: the harness's CPU, taken from the machine it measures. A virtual user makes one
//! call at a time on a connection of its own, and the server it measures does not go away
//! mid-run, so none of that is needed here. A call on a closed connection fails; the harness
//! counts it as an error.
use crate::one_write::OneWrite;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::error::Error;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;

type BoxError = Box<dyn Error + Send + Sync>;

/// A connection to a server over HTTP/2 without TLS (`http://`).
#[derive(Clone)]
pub struct Connection {
    send: http2::SendRequest<tonic::body::Body>,
    authority: Authority,
}

fn failed_to_connect<E: Display>(url: &str) -> impl FnOnce(E) -> String + '_ {
    move |error| format!("connecting to {url}: {error}")
}

/// Opens an HTTP/2 connection (without TLS) to `url` (`http://host:port`).
pub async fn connect(url: &str) -> Result<Connection, String> {
    let uri: Uri = url.parse().map_err(|error| format!("{url}: {error}"))?;
    let (Some(authority), Some(port)) = (uri.authority().cloned(), uri.port_u16()) else {
        return Err(format!("{url} names no host and port"));
    };
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(format!(
            "{url}: the harness speaks HTTP/2 without TLS (http://)"
        ));
    }
    // An IPv6 literal comes in brackets, which the resolver does not take.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(failed_to_connect(url))?;
    stream.set_nodelay(true).map_err(failed_to_connect(url))?;
    let (send, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(OneWrite::new(stream)))
        .await
        .map_err(failed_to_connect(url))?;
    tokio::spawn(async move {
        // Its end is seen by the calls on it, which fail.
        let _ = connection.await;
    });
    Ok(Connection { send, authority })
}

impl tower::Service<Request<tonic::body::Body>> for Connection {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.send.poll_ready(cx).map_err(BoxError::from)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        // The generated clients give the path only; HTTP/2 needs the scheme and authority too.
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        match Uri::from_parts(parts) {
            Ok(uri) => *request.uri_mut() = uri,
            Err(error) => return Box::pin(std::future::ready(Err(error.into()))),
        }
        let response = self.send.send_request(request);
        Box::pin(async move { response.await.map_err(BoxError::from) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn the_generated_clients_call_through_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("bench", tonic_health::ServingStatus::NotServing)
            .await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let connection = connect(&format!("http://{address}")).await.unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(connection);
        let check = |service: &str| tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        };
        let answer = client.check(check("bench")).await.unwrap().into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        );
        // An error answer comes through as the server's status.
        let unknown = client.check(check("nothing")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn a_url_it_cannot_reach_is_refused_with_the_url_named() {
        let tls = connect("https://127.0.0.1:1").await.err().unwrap();
        assert!(tls.contains("without TLS"), "{tls}");
        let no_port = connect("http://127.0.0.1").await.err().unwrap();
        assert!(no_port.contains("no host and port"), "{no_port}");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let refused = connect(&format!("http://{closed}")).await.err().unwrap();
        assert!(refused.contains(&closed.to_string()), "{refused}");
    }
}
