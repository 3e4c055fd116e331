//! Accepted connections that tell HTTP/2 they take no vectored writes, so that a gRPC answer
//! goes out in one write instead of two.
//!
//! h2 keeps a DATA frame's payload of 256 bytes or more out of its write buffer when the socket
//! takes vectored writes, to send it by reference; it then buffers nothing more until that
//! payload is written. A unary answer is a HEADERS frame, one DATA frame and the trailers, and
//! nearly every answer of ours is over 256 bytes, so its trailers went in a second `writev`: a
//! second system call and a second segment on the wire, which woke the client a second time.
//! Without vectored writes h2 copies payloads under 1 KiB into its buffer, and the whole answer
//! is usually written at once (hyper answers from a task of its own, so now and then the
//! connection flushes the HEADERS before the DATA is queued). The step-up's answers are all under
//! 1 KiB. The price is paid by larger ones: a payload of 1 KiB or more is still sent by reference,
//! but without `writev` the buffer before it, the payload and the trailers are three writes
//! instead of two, and a stream's full 16 KiB frames two writes each instead of one. Twofold's
//! large answers are admin listings, which are rare.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection whose writes are never vectored; reads and everything else pass through.
pub struct WholeWrites<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for WholeWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WholeWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    // `is_write_vectored` keeps its default, `false`: that is the point of this type.
}

impl Connected for WholeWrites<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    /// The TCP connection's own, so `Request::remote_addr` works as before.
    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::bytes::Bytes;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn passes_bytes_both_ways_and_keeps_the_peer_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(b"ping").await.unwrap();
            let mut answer = [0u8; 4];
            stream.read_exact(&mut answer).await.unwrap();
            (answer, stream.local_addr().unwrap())
        });
        let (accepted, _) = listener.accept().await.unwrap();
        let mut server = WholeWrites(accepted);
        assert!(!server.is_write_vectored());
        let mut asked = [0u8; 4];
        server.read_exact(&mut asked).await.unwrap();
        assert_eq!(&asked, b"ping");
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        let (answer, client_address) = client.await.unwrap();
        assert_eq!(&answer, b"pong");
        assert_eq!(server.connect_info().remote_addr(), Some(client_address));
    }

    /// An in-memory socket that takes vectored writes, as a TCP socket does, and counts the
    /// writes made to it.
    struct Counted {
        inner: DuplexStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            // One buffer of all the slices, written whole, as `writev` would.
            let joined: Vec<u8> = bufs
                .iter()
                .flat_map(|slice| slice.iter().copied())
                .collect();
            Pin::new(&mut self.inner).poll_write(cx, &joined)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// How many writes an HTTP/2 server makes for one answer shaped like a unary gRPC one
    /// (HEADERS, a DATA frame of `payload` bytes, trailers), over a socket that takes vectored
    /// writes, seen through `wrap`.
    async fn writes_for_one_answer<T>(payload: usize, wrap: impl FnOnce(Counted) -> T) -> usize
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (client_end, server_end) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let server_io = wrap(Counted {
            inner: server_end,
            writes: writes.clone(),
        });
        let (mut client, client_connection) = h2::client::handshake(client_end).await.unwrap();
        tokio::spawn(client_connection);
        let mut server = h2::server::handshake(server_io).await.unwrap();
        let request = http::Request::post("http://twofold/twofold.v1.Test/Call")
            .body(())
            .unwrap();
        let (answer, _) = client.send_request(request, true).unwrap();
        let (_, mut respond) = server.accept().await.unwrap().unwrap();
        // Writes so far were the handshake's and the settings' acknowledgement.
        let before = writes.load(Ordering::SeqCst);
        let mut stream = respond
            .send_response(http::Response::new(()), false)
            .unwrap();
        stream
            .send_data(Bytes::from(vec![7u8; payload]), false)
            .unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        stream.send_trailers(trailers).unwrap();
        let serving = tokio::spawn(async move {
            while let Some(accepted) = server.accept().await {
                accepted.unwrap();
            }
        });
        let mut body = answer.await.unwrap().into_body();
        let mut received = 0;
        while let Some(chunk) = body.data().await {
            received += chunk.unwrap().len();
        }
        let got = body.trailers().await.unwrap().unwrap();
        assert_eq!(received, payload);
        assert_eq!(got["grpc-status"], "0");
        serving.abort();
        writes.load(Ordering::SeqCst) - before
    }

    #[tokio::test]
    async fn an_answer_of_a_kibibyte_or_more_takes_one_write_more() {
        assert_eq!(writes_for_one_answer(4096, |socket| socket).await, 2);
        assert_eq!(writes_for_one_answer(4096, WholeWrites).await, 3);
    }

    #[tokio::test]
    async fn an_answer_of_a_few_hundred_bytes_is_written_once() {
        for payload in [300, 1000] {
            assert_eq!(
                writes_for_one_answer(payload, |socket| socket).await,
                2,
                "the case this type is for: the trailers wait for a payload sent by reference"
            );
            assert_eq!(
                writes_for_one_answer(payload, WholeWrites).await,
                1,
                "{payload} bytes"
            );
        }
    }
}
