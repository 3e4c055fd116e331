//! In builds with the `bench` feature, every answer says how long the server took to produce it,
//! so the load harness can tell the server's share of a call's latency from the rest (the
//! sockets, both sides' waits for a core, its own thread). Other builds hand back the inner
//! service itself: production answers carry no timing and pay nothing for it.
//!
//! The time runs from the moment the router is called with the request's headers until the
//! answer's headers are ready. For a unary call that covers reading the request's message and
//! the whole handler; encoding the answer's message and writing it out are not in it.
use http::{HeaderValue, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::util::Either;
use tower::{Layer, Service};

/// The answer's header: microseconds, as a decimal number.
pub const HANDLED_TIME_HEADER: &str = "twofold-handled-us";

#[derive(Clone, Copy)]
pub struct HandledTimeLayer {
    enabled: bool,
}

impl HandledTimeLayer {
    /// Timed in bench builds, passed through in all others.
    pub fn for_this_build() -> Self {
        Self {
            enabled: cfg!(feature = "bench"),
        }
    }

    #[cfg(test)]
    fn enabled(enabled: bool) -> Self {
        Self { enabled }
    }
}

impl<S> Layer<S> for HandledTimeLayer {
    type Service = Either<HandledTime<S>, S>;

    fn layer(&self, inner: S) -> Self::Service {
        if self.enabled {
            Either::Left(HandledTime { inner })
        } else {
            Either::Right(inner)
        }
    }
}

#[derive(Clone)]
pub struct HandledTime<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for HandledTime<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let started = Instant::now();
        let answered = self.inner.call(request);
        Box::pin(async move {
            let mut response = answered.await?;
            let micros = started.elapsed().as_micros();
            response
                .headers_mut()
                .insert(HANDLED_TIME_HEADER, never_indexed(micros));
            Ok(response)
        })
    }
}

/// The header's value for an answer handled in `micros`, marked for HPACK's "never indexed"
/// literal. A value new with nearly every answer would otherwise go into each connection's
/// dynamic table: every answer's encoding walked all the entries of the same name comparing
/// values, and the insertions pushed out the headers that do repeat (`content-type`, the
/// trailers), which were then sent and inserted again. In `WhoAmI` runs that was about 7 % of
/// the server's CPU and 2 % of the harness's, work no production server does.
fn never_indexed(micros: u128) -> HeaderValue {
    let mut value = HeaderValue::from(u64::try_from(micros).unwrap_or(u64::MAX));
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::ServiceExt;

    /// Calls a service through `layer` that answers after `delay`, as a handler that takes that
    /// long would.
    async fn call_through(layer: HandledTimeLayer, delay: Duration) -> Response<()> {
        let handler = tower::service_fn(move |_request: Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(Response::new(()))
        });
        let response = layer.layer(handler).oneshot(Request::new(())).await;
        response.unwrap()
    }

    fn handled_micros(response: &Response<()>) -> Option<u64> {
        response
            .headers()
            .get(HANDLED_TIME_HEADER)
            .map(|value| value.to_str().unwrap().parse().unwrap())
    }

    #[tokio::test]
    async fn an_answer_carries_the_time_its_handler_took() {
        let delay = Duration::from_millis(30);
        let before = Instant::now();
        let response = call_through(HandledTimeLayer::enabled(true), delay).await;
        let whole_call = before.elapsed();
        let handled = handled_micros(&response).expect("the header is set");
        assert!(
            handled >= delay.as_micros() as u64,
            "{handled} µs is less than the handler's {delay:?}"
        );
        assert!(
            handled <= whole_call.as_micros() as u64,
            "{handled} µs is more than the whole call's {whole_call:?}"
        );
    }

    #[tokio::test]
    async fn the_time_stays_out_of_the_connections_header_tables() {
        let response = call_through(HandledTimeLayer::enabled(true), Duration::ZERO).await;
        let value = response.headers().get(HANDLED_TIME_HEADER);
        assert!(value.expect("the header is set").is_sensitive());
    }

    #[tokio::test]
    async fn a_disabled_layer_adds_nothing() {
        let response = call_through(HandledTimeLayer::enabled(false), Duration::ZERO).await;
        assert_eq!(handled_micros(&response), None);
    }

    #[test]
    fn only_bench_builds_time_their_answers() {
        assert_eq!(
            HandledTimeLayer::for_this_build().enabled,
            cfg!(feature = "bench")
        );
    }
}
