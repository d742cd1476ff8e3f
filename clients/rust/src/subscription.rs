//! A subscription: the items of one topic, as a receiver and a `Stream`.

use crate::driver::Cmd;
use crate::{Item, Position, Result};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The items of one topic: a snapshot first, then each change once in seq
/// order, across reconnects (see [`Item`]). Ends (None) when the client is
/// closed, after an `Err` when the server ended it (a revocation; a resume
/// of a deleted `task:N`). Dropping it unsubscribes.
pub struct Subscription {
    topic: String,
    rx: mpsc::UnboundedReceiver<Result<Item>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    position: Option<Position>,
}

impl Subscription {
    pub(crate) fn new(
        topic: String,
        rx: mpsc::UnboundedReceiver<Result<Item>>,
        cmds: mpsc::UnboundedSender<Cmd>,
        position: Option<Position>,
    ) -> Subscription {
        Subscription {
            topic,
            rx,
            cmds,
            position,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The position of the items taken so far: save it to resume from it
    /// after your program restarts ([`crate::Client::subscribe_with`]).
    pub fn position(&self) -> Option<Position> {
        self.position.clone()
    }

    /// The next item; None once the subscription is over.
    pub async fn next(&mut self) -> Option<Result<Item>> {
        let item = self.rx.recv().await;
        self.track(&item);
        item
    }

    fn track(&mut self, item: &Option<Result<Item>>) {
        match item {
            Some(Ok(Item::Snapshot { epoch, seq, .. } | Item::Resumed { epoch, seq, .. })) => {
                self.position = Some(Position {
                    epoch: epoch.clone(),
                    seq: *seq,
                });
            }
            Some(Ok(Item::Event(e))) => {
                if let (Some(p), Some(seq)) = (self.position.as_mut(), e.seq) {
                    p.seq = seq;
                }
            }
            _ => {}
        }
    }
}

impl futures_util::Stream for Subscription {
    type Item = Result<Item>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(item) = &polled {
            self.track(item);
        }
        polled
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Unsubscribe {
            topic: self.topic.clone(),
        });
    }
}
