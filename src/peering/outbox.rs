//! The hand-over between a server stream's producer task and its gRPC
//! response, shared by `GetPeerData` and `Follow`.
//!
//! The producer runs as a task of its own and hands its messages to the
//! response through a channel of a few messages, so a caller that reads
//! slowly holds back only its own producer, and one that reads nothing
//! holds at most the channel and its HTTP/2 window. When a message waits
//! longer than the [`Delivery::send_timeout`] for room (the caller read
//! nothing meanwhile), the stream ends with `DEADLINE_EXCEEDED` and
//! whatever the producer held (a database connection, a stream slot) is
//! freed; the caller resumes with a new call. It ends with
//! `UNAUTHENTICATED` as soon as its token is revoked. The final status
//! travels beside the channel, so it is delivered even when the channel is
//! full. A stream with a [`StreamMeter`] is counted open in the metrics
//! until it is dropped, with the bytes of each message it hands over.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::api::sessions::StreamSlot;
use crate::error::{Error, Result};
use crate::metrics::StreamMeter;

/// How long a stream waits for its caller to take the next message, unless
/// configured otherwise.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How a stream reaches its caller.
pub struct Delivery {
    /// Longest wait for the caller to take the next message.
    pub send_timeout: Duration,
    /// The caller's stream slot: the stream ends when its token is revoked,
    /// and the slot is held until the response is dropped.
    pub slot: Option<StreamSlot>,
    /// Counts the stream in the metrics; `None` for a stream read in
    /// process (the changes a `Follow` event carries).
    pub meter: Option<StreamMeter>,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            send_timeout: DEFAULT_SEND_TIMEOUT,
            slot: None,
            meter: None,
        }
    }
}

/// The response side of a stream: the producer's messages, then the status
/// of its failure, if any.
pub struct Inbox<T> {
    messages: mpsc::Receiver<T>,
    failure: Option<oneshot::Receiver<Status>>,
    /// The stream's place among its token's, held until the caller is gone.
    _slot: Option<StreamSlot>,
    meter: Option<StreamMeter>,
}

impl<T: prost::Message> Stream for Inbox<T> {
    type Item = std::result::Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(message) = ready!(self.messages.poll_recv(cx)) {
            if let Some(meter) = &self.meter {
                meter.sent(&message);
            }
            return Poll::Ready(Some(Ok(message)));
        }
        let Some(failure) = self.failure.as_mut() else {
            return Poll::Ready(None);
        };
        let failure = ready!(Pin::new(failure).poll(cx));
        self.failure = None;
        Poll::Ready(failure.ok().map(Err))
    }
}

/// The producer's side of a stream.
pub struct Outbox<T> {
    tx: mpsc::Sender<T>,
    timeout: Duration,
    revoked: Option<CancellationToken>,
    call: &'static str,
}

impl<T> Outbox<T> {
    /// Hands `message` to the caller's side; fails when the caller took
    /// nothing for the send timeout, went away, or its token was revoked.
    pub async fn send(&mut self, message: T) -> Result<()> {
        let revocation = &self.revoked;
        let revoked = async move {
            match revocation {
                Some(revoked) => revoked.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = revoked => Err(Error::Unauthenticated(format!(
                "the token was revoked; the {} stream ends", self.call
            ))),
            sent = self.tx.send_timeout(message, self.timeout) => sent.map_err(|e| match e {
                SendTimeoutError::Timeout(_) => Error::DeadlineExceeded(format!(
                    "the caller read nothing for {} s; the {} stream ends",
                    self.timeout.as_secs_f64(),
                    self.call
                )),
                SendTimeoutError::Closed(_) => self.gone(),
            }),
        }
    }

    /// Completes when the caller has gone away, with the error that says so.
    pub async fn closed(&self) -> Error {
        self.tx.closed().await;
        self.gone()
    }

    fn gone(&self) -> Error {
        Error::Aborted(format!("the caller closed the {} stream", self.call))
    }
}

/// Starts the producer of the `call` stream (`"GetPeerData"`, `"Follow"`)
/// as a task, with a channel of `depth` messages, and returns the response
/// side. What the producer returns ends the stream: `Ok` as complete, an
/// error as its status (logged unless the caller went away).
pub fn spawn<T, F>(
    call: &'static str,
    depth: usize,
    delivery: Delivery,
    produce: impl FnOnce(Outbox<T>) -> F,
) -> Inbox<T>
where
    T: Send + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    let (tx, messages) = mpsc::channel(depth);
    let (fail, failure) = oneshot::channel();
    let outbox = Outbox {
        tx,
        timeout: delivery.send_timeout,
        revoked: delivery.slot.as_ref().map(StreamSlot::revocation),
        call,
    };
    let producing = produce(outbox);
    tokio::spawn(async move {
        if let Err(e) = producing.await {
            match e {
                Error::Aborted(_) => {}
                Error::DeadlineExceeded(_) | Error::Unauthenticated(_) => {
                    tracing::info!(error = %e, "{call} ended")
                }
                _ => tracing::warn!(error = %e, "{call} failed"),
            }
            let _ = fail.send(Status::from(e));
        }
    });
    Inbox {
        messages,
        failure: Some(failure),
        _slot: delivery.slot,
        meter: delivery.meter,
    }
}
