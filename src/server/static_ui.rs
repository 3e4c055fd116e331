//! The sign-in page beside the API on the public listener (`serve.public.static_dir`), so the
//! page and the API share one origin and need no CORS grant.
//!
//! Only plain browser fetches reach the files: GET and HEAD without a gRPC content type. gRPC,
//! grpc-web and CORS preflights pass through untouched. tower-http's `ServeDir` never lists a
//! folder and answers 404 for `..` segments, so nothing outside the folder can be read.
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tower::util::Either;
use tower::{Layer, Service, ServiceExt};
use tower_http::services::ServeDir;

/// A sign-in page needs nothing from other origins, must never be framed (clickjacking on a
/// password form) and must not leak flow ids in `Referer`.
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    // index.html names the hashed bundles of the current build: revalidate, never serve stale.
    (header::CACHE_CONTROL, "no-cache"),
];

/// Wraps the public listener's services; without a folder it hands back the inner service
/// itself, so gRPC calls pay nothing for a page that is not served.
#[derive(Clone)]
pub struct StaticUiLayer {
    files: Option<ServeDir>,
}

impl StaticUiLayer {
    pub fn new(dir: Option<&Path>) -> Self {
        Self {
            files: dir.map(|dir| ServeDir::new(dir).redirect_to_trailing_slash(false)),
        }
    }
}

impl<S> Layer<S> for StaticUiLayer {
    type Service = Either<StaticUi<S>, S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.files {
            Some(files) => Either::Left(StaticUi {
                inner,
                files: files.clone(),
            }),
            None => Either::Right(inner),
        }
    }
}

#[derive(Clone)]
pub struct StaticUi<S> {
    inner: S,
    files: ServeDir,
}

fn is_page_request<B>(request: &Request<B>) -> bool {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"));
    matches!(*request.method(), Method::GET | Method::HEAD) && !grpc
}

impl<S> Service<Request<Body>> for StaticUi<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    // The files never fail (ServeDir answers errors as responses), so the inner error type is
    // kept and the layer can hand back the bare inner service when no folder is set.
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !is_page_request(&request) {
            return Box::pin(self.inner.call(request));
        }
        let files = self.files.clone();
        Box::pin(async move {
            let response = files.oneshot(request).await.map_err(infallible)?;
            let mut response = response.map(Body::new);
            let headers = response.headers_mut();
            for (name, value) in SECURITY_HEADERS {
                headers.insert(name, HeaderValue::from_static(value));
            }
            Ok(response)
        })
    }
}

fn infallible<E>(never: Infallible) -> E {
    match never {}
}
