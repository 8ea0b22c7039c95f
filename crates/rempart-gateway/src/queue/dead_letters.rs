//! The dead-letter queue as an operator sees it: what is there, and putting
//! jobs back once the cause is fixed (`rempart jobs dlq list|requeue`).
//!
//! Messages are read with `basic.get` and held unacked: whatever is not
//! requeued goes back to the dead-letter queue when the channel closes, so
//! listing never consumes, and a crash mid-way loses nothing. A requeued job
//! is published to the work queue with a confirm *before* its dead copy is
//! acked: a crash between the two leaves it in both places, never in none
//! (the worker's results store keeps the first result).

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use super::decision::{ATTEMPT_HEADER, ERROR_HEADER, REQUEUED_HEADER, attempt_of};
use super::job::Job;
use super::publish::{DEAD_REASON_HEADER, Publisher, header_int, header_text};
use super::topology::{self, QueueNames};
use super::{BrokerError, deadline};

/// One message in a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// The job id (the AMQP `message_id`), if the message has one.
    pub job_id: Option<String>,
    /// The attempts made before it was dead-lettered.
    pub attempts: u32,
    /// Why it was dead-lettered (`x-dead-reason`).
    pub reason: Option<String>,
    /// The last replay error (`x-last-error`), if any.
    pub last_error: Option<String>,
    /// The request's method and path, when the message is a readable job.
    pub request: Option<String>,
    /// Times an operator already requeued it.
    pub requeued: u32,
    /// The message's size in bytes.
    pub bytes: usize,
    /// False for a poison message: it cannot be replayed, only inspected.
    pub readable: bool,
}

impl DeadLetter {
    fn read(payload: &[u8], props: &BasicProperties) -> DeadLetter {
        let job = Job::decode(payload).ok();
        DeadLetter {
            job_id: props.message_id().as_ref().map(|s| s.to_string()),
            attempts: attempt_of(header_int(props, ATTEMPT_HEADER)),
            reason: header_text(props, DEAD_REASON_HEADER),
            last_error: header_text(props, ERROR_HEADER),
            request: job.as_ref().map(|j| format!("{} {}", j.method, j.path)),
            requeued: header_int(props, REQUEUED_HEADER)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            bytes: payload.len(),
            readable: job.is_some(),
        }
    }
}

/// Which dead jobs to put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The job with this id.
    One(String),
    /// Every readable job.
    All,
}

impl Selection {
    /// Whether `letter` is put back: a poison message never is, since the
    /// worker would only dead-letter it again.
    pub fn takes(&self, letter: &DeadLetter) -> bool {
        letter.readable
            && match self {
                Selection::All => true,
                Selection::One(id) => letter.job_id.as_deref() == Some(id.as_str()),
            }
    }
}

/// What a requeue did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Requeued {
    /// Jobs now back on the work queue.
    pub requeued: Vec<String>,
    /// Selected messages left in the dead-letter queue because they are
    /// unreadable (their ids, or `?` when they have none).
    pub unreadable: Vec<String>,
}

/// One service's dead-letter queue on an open connection.
#[derive(Debug)]
pub struct DeadLetters {
    conn: Connection,
    names: QueueNames,
    timeout: Duration,
}

impl DeadLetters {
    /// Connects to `amqp_url` for the queues named `names`; every broker
    /// operation then has `timeout` as its deadline.
    pub async fn open(
        amqp_url: &str,
        names: QueueNames,
        timeout: Duration,
    ) -> Result<DeadLetters, BrokerError> {
        let conn = topology::connect(amqp_url, timeout).await?;
        Ok(DeadLetters {
            conn,
            names,
            timeout,
        })
    }

    /// The service's queue names.
    pub fn names(&self) -> &QueueNames {
        &self.names
    }

    /// Up to `limit` dead letters, oldest first, and how many the queue
    /// holds in all. Nothing is consumed.
    pub async fn list(&self, limit: usize) -> Result<(Vec<DeadLetter>, u32), BrokerError> {
        let (channel, total) = self.held().await?;
        let mut letters = Vec::new();
        for _ in 0..total.min(u32::try_from(limit).unwrap_or(u32::MAX)) {
            match self.get(&channel).await? {
                Some((payload, props, _)) => letters.push(DeadLetter::read(&payload, &props)),
                None => break,
            }
        }
        self.release(channel).await;
        Ok((letters, total))
    }

    /// Puts the selected jobs back on the work queue at attempt 1.
    pub async fn requeue(&self, selection: &Selection) -> Result<Requeued, BrokerError> {
        let (channel, total) = self.held().await?;
        let publisher = Publisher::open(&self.conn, self.names.clone(), self.timeout).await?;
        let mut done = Requeued::default();
        for _ in 0..total {
            let Some((payload, props, acker)) = self.get(&channel).await? else {
                break;
            };
            let letter = DeadLetter::read(&payload, &props);
            let named = match selection {
                Selection::One(id) => letter.job_id.as_deref() == Some(id.as_str()),
                Selection::All => true,
            };
            if !selection.takes(&letter) {
                if named && !letter.readable {
                    done.unreadable
                        .push(letter.job_id.unwrap_or_else(|| "?".into()));
                }
                continue;
            }
            let id = letter.job_id.clone();
            publisher
                .requeue(&payload, id.as_deref(), letter.requeued.saturating_add(1))
                .await?;
            deadline(
                self.timeout,
                "acking the dead copy",
                acker.ack(BasicAckOptions::default()),
            )
            .await?;
            done.requeued.push(id.unwrap_or_else(|| "?".into()));
            if matches!(selection, Selection::One(_)) {
                break;
            }
        }
        self.release(channel).await;
        Ok(done)
    }

    /// A channel for reading the dead-letter queue, and its message count
    /// (a passive declare: a missing queue is an error, not created here).
    async fn held(&self) -> Result<(Channel, u32), BrokerError> {
        let channel = deadline(
            self.timeout,
            "opening a channel",
            self.conn.create_channel(),
        )
        .await?;
        let dead = self.names.dead.as_str();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let queue = deadline(
            self.timeout,
            &format!("reading queue {dead} (has the gateway or worker run once to declare it?)"),
            channel.queue_declare(dead.into(), passive, FieldTable::default()),
        )
        .await?;
        Ok((channel, queue.message_count()))
    }

    async fn get(
        &self,
        channel: &Channel,
    ) -> Result<Option<(Vec<u8>, BasicProperties, lapin::Acker)>, BrokerError> {
        let dead = self.names.dead.as_str();
        let got = deadline(
            self.timeout,
            &format!("reading from {dead}"),
            channel.basic_get(dead.into(), BasicGetOptions { no_ack: false }),
        )
        .await?;
        Ok(got.map(|m| (m.delivery.data, m.delivery.properties, m.delivery.acker)))
    }

    /// Closing the channel hands every message still held back to the queue.
    async fn release(&self, channel: Channel) {
        if let Err(e) = deadline(
            self.timeout,
            "closing the channel",
            channel.close(200, "done".into()),
        )
        .await
        {
            tracing::warn!(error = %e, "channel not closed cleanly; the broker requeues what it held");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(id: &str, readable: bool) -> DeadLetter {
        DeadLetter {
            job_id: Some(id.into()),
            attempts: 5,
            reason: Some("503".into()),
            last_error: None,
            request: readable.then(|| "POST /optimize".into()),
            requeued: 0,
            bytes: 10,
            readable,
        }
    }

    #[test]
    fn all_takes_every_readable_job_and_one_takes_only_its_own() {
        assert!(Selection::All.takes(&letter("a", true)));
        assert!(Selection::One("a".into()).takes(&letter("a", true)));
        assert!(!Selection::One("b".into()).takes(&letter("a", true)));
    }

    #[test]
    fn a_poison_message_is_never_put_back_to_loop() {
        assert!(!Selection::All.takes(&letter("a", false)));
        assert!(!Selection::One("a".into()).takes(&letter("a", false)));
    }
}
