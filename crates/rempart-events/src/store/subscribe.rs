//! Subscriptions to everything from a global position: catch up by reading
//! pages, then go live.
//!
//! Live means: woken at once by appends made through this process's
//! [`EventStore`] (a watch channel), and otherwise by a poll every
//! `poll` interval, which covers other processes on the same SQLite file or
//! PostgreSQL database. Polling rather than LISTEN/NOTIFY keeps one code path
//! for both backends; positions are gapless and in commit order, so a poll
//! never skips an event.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;

use super::{EventStore, RecordedEvent, StoreError};

const PAGE: u32 = 512;

/// Events from a position on, in order, forever.
#[derive(Debug)]
pub struct Subscription {
    store: EventStore,
    next: u64,
    buffer: VecDeque<RecordedEvent>,
    wake: watch::Receiver<u64>,
    poll: Duration,
}

impl EventStore {
    /// Every event from global position `from` (1: the start), caught up then
    /// live; `poll` bounds how late an append by another process is seen.
    pub fn subscribe_all(&self, from: u64, poll: Duration) -> Subscription {
        Subscription {
            store: self.clone(),
            next: from.max(1),
            buffer: VecDeque::new(),
            wake: self.head.subscribe(),
            poll,
        }
    }
}

impl Subscription {
    /// The next event, waiting for one if the subscription is caught up.
    pub async fn next(&mut self) -> Result<RecordedEvent, StoreError> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                self.next = e.position + 1;
                return Ok(e);
            }
            self.wake.mark_unchanged();
            let page = self.store.read_all(self.next, PAGE).await?;
            if page.is_empty() {
                tokio::select! {
                    _ = self.wake.changed() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                }
            } else {
                self.buffer.extend(page);
            }
        }
    }

    /// The position the next event will have at least.
    pub fn position(&self) -> u64 {
        self.next
    }
}
