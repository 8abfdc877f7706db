//! Node-to-node request and reply: a standby hands a write to the leader over NATS and
//! waits for its answer.
//!
//! A request carries what the standby proved of its client (the [`Claims`] its token or its
//! platform signature gave), never the credential itself, so no client token travels over
//! NATS. It is sealed ([`super::seal`]) with the sender's name, a number that sender never
//! uses twice and the time; the leader opens it, refuses a replay, runs it and seals its
//! answer, naming the request it answers. An answer larger than a NATS message travels in
//! parts.
//!
//! What the standby tells its client depends on what it knows: a request nobody took
//! ([`ForwardError::NotDelivered`]) did not run; one sent but not answered in time, or
//! answered with something that does not open ([`ForwardError::OutcomeUnknown`]), may have.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Cluster;
use super::seal::{SealError, Sender};
use crate::auth::Claims;

/// How long a standby waits for the leader's answer to a forwarded write.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the framing of a request or an answer part adds to its contents, at most.
pub const FORWARD_OVERHEAD_BYTES: usize = 1024;

/// Forwarded requests the leader runs at once; more are answered 503 `busy`.
pub const FORWARDED_IN_FLIGHT_MAX: usize = 512;

/// A write as a standby hands it on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub method: String,
    /// Path and query, the credential taken out.
    pub uri: String,
    /// The headers the handlers read (content type).
    pub headers: Vec<(String, String)>,
    /// Who the standby proved the client to be.
    pub claims: Claims,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// The leader's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct RequestEnvelope {
    sender: Sender,
    number: u64,
    sent_ms: u64,
    request: Request,
}

#[derive(Serialize, Deserialize)]
struct AnswerEnvelope {
    sender: Sender,
    number: u64,
    answer: Answer,
}

/// Which request an answer is for.
pub struct Ticket {
    sender: Sender,
    number: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nobody took the request: it did not run.
    #[error("not delivered: {0}")]
    NotDelivered(String),
    /// The request may have run, but no answer this node can trust came back.
    #[error("no answer: {0}")]
    OutcomeUnknown(String),
    /// Larger than one NATS message: not sent.
    #[error("{bytes} bytes, over the {max_payload} bytes of a NATS message")]
    TooLarge { bytes: usize, max_payload: usize },
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Cluster {
    /// The subject `node` answers forwarded requests on.
    pub fn forward_subject(&self, node: &str) -> String {
        format!("{}.fwd.{node}", self.inner.config.stream)
    }

    /// This process, as the sender of sealed requests.
    fn sender(&self) -> Sender {
        Sender {
            node: self.inner.config.node_id.clone(),
            process: self.inner.process,
        }
    }

    /// The largest NATS message the server takes (0: unknown).
    pub fn max_payload(&self) -> usize {
        self.inner.client.server_info().max_payload
    }

    /// Hands `request` to `leader` and waits for its answer.
    pub async fn ask(&self, leader: &str, request: Request) -> Result<Answer, ForwardError> {
        let number = self.inner.forwarded.fetch_add(1, Ordering::Relaxed) + 1;
        let envelope = RequestEnvelope {
            sender: self.sender(),
            number,
            sent_ms: now_ms(),
            request,
        };
        let body = rmp_serde::to_vec_named(&envelope)
            .map_err(|error| ForwardError::NotDelivered(error.to_string()))?;
        let payload = self.inner.seal.seal(&body);
        let max_payload = self.max_payload();
        if 0 < max_payload && max_payload < payload.len() + FORWARD_OVERHEAD_BYTES {
            return Err(ForwardError::TooLarge {
                bytes: payload.len(),
                max_payload,
            });
        }
        let client = &self.inner.client;
        let inbox = client.new_inbox();
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|error| ForwardError::NotDelivered(error.to_string()))?;
        client
            .publish_with_reply(self.forward_subject(leader), inbox, payload.into())
            .await
            .map_err(|error| ForwardError::NotDelivered(error.to_string()))?;
        let sealed = tokio::time::timeout(FORWARD_TIMEOUT, gather_parts(&mut answers))
            .await
            .map_err(|_| ForwardError::OutcomeUnknown("no answer in time".to_owned()))??;
        let opened = self
            .inner
            .seal
            .open(&sealed)
            .map_err(|error| ForwardError::OutcomeUnknown(error.to_string()))?;
        let answer: AnswerEnvelope = rmp_serde::from_slice(opened)
            .map_err(|error| ForwardError::OutcomeUnknown(error.to_string()))?;
        if answer.sender != envelope.sender || answer.number != number {
            return Err(ForwardError::OutcomeUnknown(
                "the answer is for another request".to_owned(),
            ));
        }
        Ok(answer.answer)
    }

    /// Opens a forwarded request: its seal, then whether it is fresh and new.
    pub fn open_request(&self, payload: &[u8]) -> Result<(Ticket, Request), String> {
        let body = self
            .inner
            .seal
            .open(payload)
            .map_err(|error| error.to_string())?;
        let envelope: RequestEnvelope =
            rmp_serde::from_slice(body).map_err(|error| error.to_string())?;
        self.inner
            .replays
            .admit(
                &envelope.sender,
                envelope.number,
                envelope.sent_ms,
                now_ms(),
            )
            .map_err(|error: SealError| error.to_string())?;
        Ok((
            Ticket {
                sender: envelope.sender,
                number: envelope.number,
            },
            envelope.request,
        ))
    }

    /// Seals `answer` to the request `ticket` names and sends it to `reply`, in as many
    /// parts as NATS's message size needs.
    pub async fn reply(
        &self,
        reply: async_nats::Subject,
        ticket: Ticket,
        answer: Answer,
    ) -> Result<(), String> {
        let envelope = AnswerEnvelope {
            sender: ticket.sender,
            number: ticket.number,
            answer,
        };
        let body = rmp_serde::to_vec_named(&envelope).map_err(|error| error.to_string())?;
        let sealed = self.inner.seal.seal(&body);
        let part_bytes = match self.max_payload() {
            0 => usize::MAX,
            max => max.saturating_sub(FORWARD_OVERHEAD_BYTES).max(1),
        };
        let parts: Vec<&[u8]> = sealed.chunks(part_bytes).collect();
        let count = parts.len() as u32;
        for (index, part) in parts.into_iter().enumerate() {
            let mut framed = Vec::with_capacity(8 + part.len());
            framed.extend_from_slice(&(index as u32).to_le_bytes());
            framed.extend_from_slice(&count.to_le_bytes());
            framed.extend_from_slice(part);
            self.inner
                .client
                .publish(reply.clone(), framed.into())
                .await
                .map_err(|error| error.to_string())?;
        }
        Ok(())
    }
}

/// Reads an answer's parts from `answers` and joins them.
async fn gather_parts(answers: &mut async_nats::Subscriber) -> Result<Vec<u8>, ForwardError> {
    let mut joined = Vec::new();
    let mut expected = 0u32;
    loop {
        let Some(message) = answers.next().await else {
            return Err(ForwardError::OutcomeUnknown(
                "the connection to NATS closed".to_owned(),
            ));
        };
        if message.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            return Err(ForwardError::NotDelivered(
                "no node answers on the leader's subject".to_owned(),
            ));
        }
        let payload = &message.payload;
        if payload.len() < 8 {
            return Err(ForwardError::OutcomeUnknown(
                "an answer part is cut short".to_owned(),
            ));
        }
        let index = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let count = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if index != expected || count == 0 || count <= index {
            return Err(ForwardError::OutcomeUnknown(format!(
                "answer part {index} of {count} came where part {expected} was due"
            )));
        }
        joined.extend_from_slice(&payload[8..]);
        expected += 1;
        if expected == count {
            return Ok(joined);
        }
    }
}
