//! The harness's connections to the server write each request in one system call instead of two.
//!
//! hyper's HTTP/2 client writes a request's HEADERS from the connection's task and its body from
//! a task of its own, and h2 gives that body room to be sent only as the HEADERS leave the
//! stream's queue. So the connection flushed every unary request's HEADERS before its DATA was
//! queued: two `writev`s per call, each a trip through loopback TCP whose receiving half the
//! sender pays for too. That was about a third of the harness's CPU in `WhoAmI` runs, CPU taken
//! from the server it measures on the same two cores.
//!
//! Here writes gather in memory, and the first flush after them first lets the tasks already
//! scheduled on this thread run (`tokio::task::yield_now`), the body's among them; the flush after
//! that writes what gathered, usually the whole request. The wait falls inside each call's timed
//! span, so it can only count against the figures, never for them.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Beyond this much gathered, a write waits until it has gone out: a bound on the memory held,
/// far above a request of the bench's (a few hundred bytes).
const MOST_GATHERED: usize = 64 * 1024;

/// Where the flush of what is gathered now stands.
enum Turn {
    /// Nothing flushed since the last write went out.
    NotTaken,
    /// The tasks scheduled before the flush are having their turn.
    Taking(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Their turn is over: the next flush writes what gathered.
    Taken,
}

/// A connection whose writes are held until a flush, and whose flushes wait once for the tasks
/// scheduled before them; reads pass through.
pub struct OneWrite<S> {
    stream: S,
    gathered: Vec<u8>,
    /// How much of `gathered` the socket has taken.
    sent: usize,
    turn: Turn,
}

impl<S> OneWrite<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            gathered: Vec::new(),
            sent: 0,
            turn: Turn::NotTaken,
        }
    }
}

impl<S: AsyncWrite + Unpin> OneWrite<S> {
    /// Writes out everything gathered.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.gathered.len() {
            let sent =
                ready!(Pin::new(&mut self.stream).poll_write(cx, &self.gathered[self.sent..]))?;
            if sent == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += sent;
        }
        self.gathered.clear();
        self.sent = 0;
        self.turn = Turn::NotTaken;
        Poll::Ready(Ok(()))
    }

    /// Makes room for more when the bound is reached.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.gathered.len() >= MOST_GATHERED {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for OneWrite<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OneWrite<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        self.gathered.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut taken = 0;
        for buf in bufs {
            self.gathered.extend_from_slice(buf);
            taken += buf.len();
        }
        Poll::Ready(Ok(taken))
    }

    /// Vectored, so that h2 hands over large payloads by reference instead of copying them into
    /// its own buffer first; they are copied once, here.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.gathered.is_empty() {
            if let Turn::NotTaken = this.turn {
                // `yield_now`, not a wake of our own: a task that wakes itself runs again before
                // the tasks it woke, and the body's task would still come after the write.
                this.turn = Turn::Taking(Box::pin(tokio::task::yield_now()));
            }
            if let Turn::Taking(others) = &mut this.turn {
                ready!(others.as_mut().poll(cx));
                this.turn = Turn::Taken;
            }
            ready!(this.poll_send(cx))?;
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::{TcpListener, TcpStream};

    trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
    impl<S: AsyncRead + AsyncWrite + Send + Unpin> Stream for S {}

    /// Counts the writes that reach the socket.
    struct Counted {
        stream: TcpStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let written = ready!(Pin::new(&mut self.stream).poll_write(cx, buf));
            self.writes.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(written)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let written = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs));
            self.writes.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(written)
        }

        fn is_write_vectored(&self) -> bool {
            self.stream.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.stream).poll_shutdown(cx)
        }
    }

    /// A gRPC server (the health service) on an ephemeral port of loopback.
    async fn health_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (_reporter, service) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{address}")
    }

    /// Socket writes made by `calls` unary calls on one connection, after a first call that opens
    /// it.
    async fn writes_for_calls(one_write: bool, calls: usize) -> usize {
        let url = health_server().await;
        let writes = Arc::new(AtomicUsize::new(0));
        let counter = writes.clone();
        let connector = tower::service_fn(move |uri: http::Uri| {
            let writes = counter.clone();
            async move {
                let address = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
                let stream = TcpStream::connect(address).await?;
                stream.set_nodelay(true)?;
                let counted = Counted { stream, writes };
                let io: Box<dyn Stream> = if one_write {
                    Box::new(OneWrite::new(counted))
                } else {
                    Box::new(counted)
                };
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect_with_connector(connector)
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = || tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        client.check(request()).await.unwrap();
        let before = writes.load(Ordering::Relaxed);
        for _ in 0..calls {
            client.check(request()).await.unwrap();
        }
        writes.load(Ordering::Relaxed) - before
    }

    #[tokio::test]
    async fn a_unary_call_is_written_in_one_system_call() {
        let calls = 20;
        let plain = writes_for_calls(false, calls).await;
        let gathered = writes_for_calls(true, calls).await;
        // The comparison shows that the plain connection splits the calls in this setting, so
        // the count below is not one that any connection would give.
        assert!(plain >= 2 * calls, "{plain} writes without gathering");
        assert_eq!(gathered, calls, "{gathered} writes for {calls} calls");
    }

    #[tokio::test]
    async fn bytes_beyond_the_bound_go_out_before_more_are_taken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut received)
                .await
                .unwrap();
            received
        });
        let writes = Arc::new(AtomicUsize::new(0));
        let stream = TcpStream::connect(address).await.unwrap();
        let mut connection = OneWrite::new(Counted {
            stream,
            writes: writes.clone(),
        });
        let chunk = vec![7u8; MOST_GATHERED];
        tokio::io::AsyncWriteExt::write_all(&mut connection, &chunk)
            .await
            .unwrap();
        assert_eq!(writes.load(Ordering::Relaxed), 0, "written before a flush");
        tokio::io::AsyncWriteExt::write_all(&mut connection, b"end")
            .await
            .unwrap();
        assert!(
            writes.load(Ordering::Relaxed) >= 1,
            "the bound held nothing back"
        );
        assert!(connection.gathered.len() <= MOST_GATHERED);
        tokio::io::AsyncWriteExt::shutdown(&mut connection)
            .await
            .unwrap();
        let received = reader.await.unwrap();
        assert_eq!(received.len(), MOST_GATHERED + 3);
        assert_eq!(&received[MOST_GATHERED..], b"end");
    }
}
