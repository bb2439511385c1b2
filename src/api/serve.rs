//! The connection loop of `serve` (SPEC.md section 11): at most `max_connections` served at
//! once (further ones wait in the listen backlog), request headers within `header_timeout`,
//! and a connection that neither reads nor writes for `idle_timeout` closed. HTTP parsing is
//! hyper's; this only decides which connections it gets and for how long, and answers 408
//! `request_timeout` when hyper's header timer closes a connection whose request had begun
//! (hyper itself closes without a word).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::debug;

/// Connections served at once unless `--max-connections` says otherwise.
pub const CONNECTIONS_MAX: usize = 1024;
/// Time for a request's headers, from connecting or from the previous response.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request's body once its headers are in.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that neither reads nor writes for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The limits of the connection loop (flags let tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: CONNECTIONS_MAX,
            header_timeout: HEADER_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Serves `app` on the connections of `listener` until `shutdown` completes, then lets the
/// open connections finish their requests (graceful) and returns.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stopping, stop_seen) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (io, _peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop_seen = stop_seen.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let shared = Arc::new(std::sync::Mutex::new(IdleTimeout::new(
                io,
                limits.idle_timeout,
            )));
            let timed_out = {
                let io = TokioIo::new(SharedIo(Arc::clone(&shared)));
                let mut connection = pin!(builder.serve_connection(io, service));
                let mut asked = false;
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            let timed_out = result.as_ref().is_err_and(hyper::Error::is_timeout);
                            if let Err(error) = result {
                                debug!(message = "Connection ended.", error = %error);
                            }
                            break timed_out;
                        }
                        _ = stop_seen.changed(), if !asked => {
                            asked = true;
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            };
            // hyper's header timer closes without an answer. When a request had begun (bytes
            // read since the last response), the protocol still allows one: 408 as JSON.
            if let (true, Ok(io)) = (timed_out, Arc::try_unwrap(shared)) {
                let mut io = io.into_inner().unwrap_or_else(|p| p.into_inner());
                if io.read_since_write {
                    let answer = request_timeout_answer(limits.header_timeout);
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        use tokio::io::AsyncWriteExt;
                        io.write_all(answer.as_bytes()).await?;
                        io.shutdown().await
                    })
                    .await;
                }
            }
            drop(permit);
        });
    }
    let _ = stopping.send(true);
    // Every connection has ended once every permit is back.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// The 408 `request_timeout` of a request whose headers did not arrive in time: a fixed
/// answer, written after hyper gave up on the connection.
fn request_timeout_answer(timeout: Duration) -> String {
    let body = serde_json::json!({
        "code": "request_timeout",
        "message": format!("the request headers did not arrive within {} ms", timeout.as_millis()),
    })
    .to_string();
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The connection's I/O, shared between hyper and the loop (which answers 408 after hyper's
/// header timer closed the connection). Only the connection's own task touches it.
struct SharedIo<T>(Arc<std::sync::Mutex<IdleTimeout<T>>>);

impl<T> SharedIo<T> {
    fn with<R>(&self, f: impl FnOnce(&mut IdleTimeout<T>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SharedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.with(|io| Pin::new(io).poll_read(cx, buf))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SharedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.with(|io| Pin::new(io).poll_write(cx, data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|io| Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|io| Pin::new(io).poll_shutdown(cx))
    }
}

/// A connection closed after `timeout` without a byte read or written. Also remembers whether
/// bytes were read since the last write (a request has begun).
struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    read_since_write: bool,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            read_since_write: false,
        }
    }

    fn progressed(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn idle_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the connection was idle too long",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.progressed();
                    self.read_since_write = true;
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(Ok(written)) => {
                self.progressed();
                self.read_since_write = false;
                Poll::Ready(Ok(written))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
