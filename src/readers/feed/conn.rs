//! One accepted HTTP connection: its socket, wrapped so that a client that
//! stops reading is noticed and let go, and what handlers may know of it.
//!
//! A client that stops reading leaves our writes pending forever once its
//! receive window and our send buffer are full; hyper then waits on the
//! socket without end, holding the connection, its file descriptor and
//! whatever response it was sending. [`Guarded`] gives every pending write a
//! deadline: when the socket has taken no byte for the stall timeout, the
//! write fails and hyper closes the connection. (tokio-io-timeout has the
//! timeout alone; the feed also needs to see since when a socket has been
//! blocked, to choose whom to evict when it is full, so the few lines are ours.)

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What a handler may know about the connection its request came on
/// (a request extension).
#[derive(Debug, Clone)]
pub struct Conn {
    /// The peer's address.
    pub peer: IpAddr,
    /// Accepted beyond `feed.max_connections`, on the room kept for health
    /// checks and metrics scrapes: nothing else is served on it.
    pub reserved: bool,
    /// The socket's state, shared with its [`Guarded`] wrapper.
    pub state: Arc<SocketState>,
}

/// What the wrapper learns about its socket.
#[derive(Debug)]
pub struct SocketState {
    /// Milliseconds since [`SocketState::epoch`] at which a write began to
    /// wait for the socket, or 0 while writes go through.
    blocked_since_ms: AtomicU64,
    /// Whether the connection was closed because it stalled.
    stalled: AtomicBool,
    epoch: Instant,
}

impl SocketState {
    fn new() -> Self {
        Self {
            blocked_since_ms: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    /// How long writes have been waiting for the socket now, if they are.
    pub fn blocked_for(&self) -> Option<Duration> {
        match self.blocked_since_ms.load(Ordering::Relaxed) {
            0 => None,
            at => {
                let since = self.epoch + Duration::from_millis(at);
                Some(Instant::now().saturating_duration_since(since))
            }
        }
    }

    /// Whether the connection was given up because its socket stalled.
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    fn block(&self) {
        if self.blocked_since_ms.load(Ordering::Relaxed) == 0 {
            let ms = self.epoch.elapsed().as_millis().max(1);
            self.blocked_since_ms
                .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    fn unblock(&self) {
        self.blocked_since_ms.store(0, Ordering::Relaxed);
    }
}

/// A socket whose writes fail once it has taken nothing for `stall`.
#[derive(Debug)]
pub struct Guarded<T> {
    inner: T,
    stall: Duration,
    /// Armed while a write waits; reset by every byte that goes out.
    deadline: Option<Pin<Box<Sleep>>>,
    state: Arc<SocketState>,
}

impl<T> Guarded<T> {
    /// Wraps `inner`; returns it with the state handlers will see.
    pub fn new(inner: T, stall: Duration) -> (Self, Arc<SocketState>) {
        let state = Arc::new(SocketState::new());
        let guarded = Self {
            inner,
            stall,
            deadline: None,
            state: state.clone(),
        };
        (guarded, state)
    }

    /// The outcome of a write attempt: progress disarms the deadline, a wait
    /// arms it (once), and a deadline that passed fails the write.
    fn settle(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(result) => {
                self.deadline = None;
                self.state.unblock();
                Poll::Ready(result)
            }
            Poll::Pending => self.wait(cx).map(Err),
        }
    }

    /// Called when the socket cannot take more now: pending until the
    /// deadline, then the error that ends the connection.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.state.block();
        let stall = self.stall;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        ready!(deadline.as_mut().poll(cx));
        self.state.stalled.store(true, Ordering::Relaxed);
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no data for the stall timeout",
        ))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.settle(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.settle(cx, polled)
    }

    // hyper writes large bodies (a shared snapshot) straight from their
    // buffers when the socket takes vectored writes; it copies them otherwise.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => self.wait(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_write_after_the_stall_timeout() {
        // A pipe with a small buffer that nobody reads.
        let (ours, _theirs) = tokio::io::duplex(64);
        let (mut guarded, state) = Guarded::new(ours, Duration::from_secs(30));
        guarded.write_all(&[0; 64]).await.unwrap();
        assert!(state.blocked_for().is_none());
        let started = tokio::time::Instant::now();
        let err = guarded.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert!(state.stalled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_bytes_is_not_a_stall() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let (mut guarded, state) = Guarded::new(ours, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let mut total = 0;
            while total < 1024 {
                // Slower than one buffer per stall timeout would need, but steady.
                tokio::time::sleep(Duration::from_secs(20)).await;
                total += tokio::io::AsyncReadExt::read(&mut theirs, &mut buf)
                    .await
                    .unwrap();
            }
        });
        guarded.write_all(&[0; 1024]).await.unwrap();
        reader.await.unwrap();
        assert!(!state.stalled());
    }
}
