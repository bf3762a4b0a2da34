//! The listener: accepted TCP connections, capped in number, each closed
//! when it stays silent too long.
//!
//! At most [`Limits::max_connections`] connections are open at a time:
//! beyond, the listener stops accepting (new connections wait in the
//! kernel's backlog) until one closes, so that descriptors never run out.
//! A connection must send its first bytes (the HTTP/2 preface or the TLS
//! ClientHello) within [`Limits::handshake_timeout`], and after that must
//! never stay silent for [`Limits::idle_timeout`]: the server's HTTP/2
//! keepalive pings, answered by any live client, keep a healthy connection
//! talking well within it, whatever its streams do.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bounds on the connections a server holds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest wait for a new connection's first bytes.
    pub handshake_timeout: Duration,
    /// Longest silence of a connection after its first bytes.
    pub idle_timeout: Duration,
}

/// The connections accepted on `listener`, within `limits`.
pub fn incoming(
    listener: TcpListener,
    limits: Limits,
) -> impl Stream<Item = io::Result<Connection>> + Send {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    futures_util::stream::unfold((listener, slots), move |(listener, slots)| async move {
        // Closed never: the semaphore lives here.
        let permit = slots.clone().acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    // Small replies go out at once instead of waiting for
                    // the peer's delayed ACK (Nagle).
                    let _ = tcp.set_nodelay(true);
                    let connection = Connection::new(tcp, permit, limits);
                    return Some((Ok(connection), (listener, slots)));
                }
                Err(e) => {
                    // Out of descriptors, or a connection reset before it
                    // was accepted: wait a little and go on listening.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// An accepted connection, holding its place among the open ones.
pub struct Connection {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
    limits: Limits,
    /// Whether any byte was read yet.
    talked: bool,
    /// When the last bytes were read (or the connection accepted).
    last_read: Instant,
    /// Fires at the silence deadline; re-armed lazily from `last_read`.
    deadline: Pin<Box<Sleep>>,
}

impl Connection {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit, limits: Limits) -> Connection {
        let now = Instant::now();
        Connection {
            tcp,
            _permit: permit,
            limits,
            talked: false,
            last_read: now,
            deadline: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
        }
    }

    /// The longest silence allowed now.
    fn allowed_silence(&self) -> Duration {
        match self.talked {
            false => self.limits.handshake_timeout,
            true => self.limits.idle_timeout,
        }
    }

    /// Whether the silence deadline passed (arming the timer otherwise).
    fn silent_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        let due = self.last_read + self.allowed_silence();
        if self.deadline.deadline() != due {
            self.deadline.as_mut().reset(due);
        }
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.talked = true;
                    self.last_read = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.silent_too_long(cx) => {
                let (what, silence) = match self.talked {
                    false => ("no first bytes", self.limits.handshake_timeout),
                    true => ("nothing read", self.limits.idle_timeout),
                };
                tracing::debug!(?silence, "closing a connection: {what}");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what} for {} s", silence.as_secs_f64()),
                )))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}
