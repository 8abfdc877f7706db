//! The `/ws` endpoint: one WebSocket session per connection, a [`Session`] whose loop hands
//! each input to a method named for it. The session reads client messages (credentials,
//! subscriptions, pings, acknowledgements, order commands), forwards what the hub queued for
//! it (several queued messages travel as one frame, an array), answers order commands once
//! durable, sends heartbeats, and closes idle or abusive clients with a close code that says
//! why.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::AppState;
use super::dto::{BatchOp, LineBody, OrderRequestBody, OrderResponse};
use super::error::{ApiError, ErrorDetail};
use super::orders::execute;
use crate::auth::{Action, Claims};
use crate::hub::{
    Chunk, Codec, Join, Joined, Resync, SESSION_RESYNC_DECAY, SESSION_RESYNCS_MAX,
    SESSION_TOPICS_MAX, ServerMessage, SessionLink, Topic,
};
use crate::ledger::ACKNOWLEDGER_CHARS_MAX;

pub(crate) const PROTOCOL_JSON: &str = "stockpulse.v1.json";
pub(crate) const PROTOCOL_MSGPACK: &str = "stockpulse.v1.msgpack";
/// The largest client message: a subscribe to the most topics fits many times over.
const CLIENT_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// Queued messages sent together in one frame at most (a chunk is never split, so a frame
/// may hold a little more).
const FRAME_MESSAGES_MAX: usize = 256;
/// A ping goes out this often; a client silent for three of them is closed.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long one frame may take to leave: a client that stops reading is dropped after it,
/// rather than holding its session (and its queue) forever.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Bad messages a session may send before it is closed.
const BAD_MESSAGES_MAX: u32 = 20;
/// Close codes (RFC 6455): going away (idle, or the server stopping), policy violation.
const CLOSE_IDLE: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
/// A private close code: the client needed too many resyncs to keep up.
const CLOSE_TOO_SLOW: u16 = 4001;
/// A private close code: the session's token expired, or it never gave one in time.
const CLOSE_CREDENTIALS: u16 = 4003;
/// How long a session may stay without credentials when the server wants them.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// Subscribe and unsubscribe messages a session may send at once, and how often it earns
/// one more: each subscribe may cost the server a snapshot.
const SUBSCRIBES_BURST_MAX: u32 = 16;
const SUBSCRIBE_REFILL: Duration = Duration::from_millis(500);

/// A client message.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Subscribe {
        topics: Vec<String>,
        /// The last sequence seen per topic, to resume after a reconnect.
        #[serde(default)]
        since: std::collections::HashMap<String, u64>,
        /// The epoch of the snapshots `since` counts from; another epoch resyncs.
        #[serde(default)]
        epoch: Option<u64>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    Ping,
    /// Credentials, for clients that could not give a token with the handshake.
    Auth {
        token: String,
    },
    /// Acknowledges an alert, as `POST /api/v1/alerts/{id}/ack`.
    Ack {
        id: u64,
        #[serde(default)]
        by: Option<String>,
    },
    /// Order commands, as `POST /api/v1/orders` and its siblings, with a client `id` that the
    /// reply repeats. Answered once durable, in the order they were sent.
    Reserve(OrderCommand),
    Sell(OrderCommand),
    Confirm(OrderIdCommand),
    Cancel(OrderIdCommand),
    Refund(OrderIdCommand),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderCommand {
    id: String,
    order_id: String,
    sku: Option<String>,
    qty: Option<i64>,
    lines: Option<Vec<LineBody>>,
    platform: String,
    room: Option<String>,
    #[serde(default)]
    paid: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderIdCommand {
    id: String,
    order_id: String,
}

/// The answer to an order command.
#[derive(Serialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<OrderResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

impl<'a> Reply<'a> {
    fn refused(id: &'a str, error: &ApiError) -> Reply<'a> {
        Reply {
            kind: "reply",
            id,
            status: error.status.as_u16(),
            order: None,
            error: Some(error.body().error),
        }
    }

    fn encode(&self, codec: Codec) -> Bytes {
        codec.encode(self)
    }
}

/// Commands a session may have waiting for durability before more are refused.
const PENDING_REPLIES_MAX: usize = 10_000;
/// Replies, refusals included, a session may have waiting before it is closed (1008): with
/// ids of at most [`CLIENT_ID_CHARS_MAX`], a few megabytes.
const PENDING_REPLIES_CLOSE: usize = 2 * PENDING_REPLIES_MAX;
/// The longest client id of an order command, as the longest id of anything else.
const CLIENT_ID_CHARS_MAX: usize = crate::ledger::ID_CHARS_MAX;

/// A reply waiting for the journal.
struct PendingReply {
    /// The durable sequence the reply rests on; 0 when it rests on nothing (a refusal before
    /// the ledger saw the command).
    needed: u64,
    /// When it turns into `503 storage_unavailable`, as over HTTP.
    deadline: Instant,
    /// The command's client id, for that 503.
    id: String,
    reply: Awaited,
}

/// A reply as it waits: made here, or still coming from the leader (a standby's command).
enum Awaited {
    Ready(Bytes),
    Leader(tokio::sync::oneshot::Receiver<Bytes>),
}

/// Replies waiting for the journal, in command order.
type Pending = std::collections::VecDeque<PendingReply>;

pub(crate) async fn upgrade(
    State(shared): State<AppState>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header_text =
        |name: axum::http::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
    let origin = header_text(axum::http::header::ORIGIN);
    if !shared
        .access
        .origin_allowed(origin, header_text(axum::http::header::HOST))
    {
        return axum::response::IntoResponse::into_response(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "pages on {} may not open /ws here",
                origin.unwrap_or_default()
            ),
        ));
    }
    // A token in the query (browsers cannot set headers here) or the Authorization header;
    // without one the session must send `{"op":"auth"}` first.
    let claims = super::access::token(&headers, uri.query())
        .or(shared.access.authority.is_none().then_some(""))
        .and_then(|token| shared.access.claims(Some(token), shared.now()).ok());
    upgrade
        .protocols([PROTOCOL_JSON, PROTOCOL_MSGPACK])
        .max_message_size(CLIENT_MESSAGE_BYTES_MAX)
        .max_frame_size(CLIENT_MESSAGE_BYTES_MAX)
        // Small buffers: an idle connection should cost kilobytes, not the defaults' 128 KiB.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .on_upgrade(move |socket| session(shared, socket, claims))
}

/// Whether a session goes on after handling something.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    End,
}

impl Flow {
    fn from_sent(sent: bool) -> Flow {
        if sent { Flow::Go } else { Flow::End }
    }
}

type Sender = futures_util::stream::SplitSink<WebSocket, Message>;
type Receiver = futures_util::stream::SplitStream<WebSocket>;

/// One connection's session: what it follows, what it waits for, and how it has behaved.
/// Each input of [`run`](Session::run)'s loop has its own method.
struct Session {
    shared: AppState,
    codec: Codec,
    link: Arc<SessionLink>,
    sender: Sender,
    receiver: Receiver,
    /// The session's credentials: given at the handshake or by an `auth` message.
    claims: Option<Claims>,
    /// What a session without a secret configured is; borrowed per message, never cloned.
    open_claims: Claims,
    topics: Vec<Topic>,
    bad_messages: u32,
    /// Order replies waiting for the journal, in command order.
    pending: Pending,
    /// Told when an answer from the leader to a forwarded command came in.
    answered: std::sync::Arc<tokio::sync::Notify>,
    /// On a standby, what hands the session's order commands to the leader, once the first
    /// came.
    forwarder: Option<tokio::sync::mpsc::UnboundedSender<Forwarding>>,
    last_heard: Instant,
    started: Instant,
    /// Per topic (by its hub number), the sequence of the last snapshot sent: queued changes
    /// it already shows are dropped.
    floors: std::collections::HashMap<u64, u64>,
    subscribes: Allowance,
    slowness: Slowness,
}

async fn session(shared: AppState, socket: WebSocket, claims: Option<Claims>) {
    let codec = match socket
        .protocol()
        .and_then(|protocol| protocol.to_str().ok())
    {
        Some(PROTOCOL_MSGPACK) => Codec::MessagePack,
        _ => Codec::Json,
    };
    let (link, frames) = shared.hub.connect(codec);
    let (sender, receiver) = socket.split();
    let session = Session {
        shared,
        codec,
        link,
        sender,
        receiver,
        claims,
        open_claims: Claims::open(),
        topics: Vec::new(),
        bad_messages: 0,
        pending: Pending::new(),
        answered: std::sync::Arc::default(),
        forwarder: None,
        last_heard: Instant::now(),
        started: Instant::now(),
        floors: std::collections::HashMap::new(),
        subscribes: Allowance::new(SUBSCRIBES_BURST_MAX, SUBSCRIBE_REFILL),
        slowness: Slowness::default(),
    };
    session.run(frames).await;
}

impl Session {
    /// Serves the session until it ends: client messages, the hub's frames, durable order
    /// replies and their deadlines, resyncs, shutdown and heartbeats.
    async fn run(mut self, mut frames: tokio::sync::mpsc::Receiver<Chunk>) {
        let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
        let mut durable = self.shared.journal.durable_receiver();
        let shared = self.shared.clone();
        loop {
            let flow = tokio::select! {
                incoming = self.receiver.next() => match incoming {
                    Some(Ok(message)) => self.on_client_message(message).await,
                    _ => Flow::End,
                },
                frame = frames.recv() => match frame {
                    Some(first) => self.on_hub_frames(first, &mut frames).await,
                    None => Flow::End,
                },
                changed = durable.changed(), if !self.pending.is_empty() => match changed {
                    Ok(()) => {
                        durable.borrow_and_update();
                        self.flush_replies().await
                    }
                    Err(_) => Flow::End,
                },
                () = sleep_until_deadline(&self.pending) => self.flush_replies().await,
                () = self.answered.notified() => self.flush_replies().await,
                () = self.link.wake.notified() => self.on_wake(&mut frames).await,
                () = shared.shutdown.cancelled() => {
                    self.close(CLOSE_IDLE, "server shutting down").await
                }
                _ = heartbeat.tick() => self.on_heartbeat().await,
            };
            if flow == Flow::End {
                break;
            }
        }
        self.shared.hub.disconnect(&self.link, &self.topics);
    }

    /// Sends one frame.
    async fn send(&mut self, message: Message) -> Flow {
        Flow::from_sent(send_within(&mut self.sender, message).await)
    }

    /// Sends one encoded server message.
    async fn reply(&mut self, bytes: Bytes) -> Flow {
        let message = frame_message(self.codec, bytes);
        self.send(message).await
    }

    /// Closes the connection with `code` and `reason`, and reads what the client still sends
    /// until its own close frame.
    async fn close(&mut self, code: u16, reason: &'static str) -> Flow {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = send_within(&mut self.sender, frame).await;
        finish_close(&mut self.receiver).await;
        Flow::End
    }

    /// Refuses a bad message with an error naming the problem (the connection stays), or
    /// closes the session once it sent too many.
    async fn refuse(&mut self, refusal: (&'static str, String)) -> Flow {
        self.bad_messages += 1;
        Flow::from_sent(
            refuse(
                &mut self.sender,
                &mut self.receiver,
                self.codec,
                self.bad_messages,
                refusal,
            )
            .await,
        )
    }

    /// A frame from the client: credentials, an acknowledgement, an order command, a
    /// subscription, or one of the small messages.
    async fn on_client_message(&mut self, message: Message) -> Flow {
        self.last_heard = Instant::now();
        if !credentials_hold(&self.shared, &self.claims, self.started) {
            return self
                .close(CLOSE_CREDENTIALS, "credentials expired or missing")
                .await;
        }
        let request = match &message {
            Message::Text(text) => decode(text.as_bytes(), Codec::Json),
            Message::Binary(bytes) => decode(bytes, Codec::MessagePack),
            Message::Close(_) => return Flow::End,
            Message::Ping(_) | Message::Pong(_) => return Flow::Go,
        };
        let request = match request {
            Ok(request) => request,
            Err(reason) => return self.refuse(("invalid_message", reason)).await,
        };
        let request = match (request, &self.claims) {
            (ClientMessage::Auth { token }, _) => return self.on_auth(&token).await,
            (_, None) => {
                let refusal = (
                    "unauthorized",
                    "send {\"op\":\"auth\",\"token\":…} first".to_owned(),
                );
                return self.refuse(refusal).await;
            }
            (ClientMessage::Ack { id, by }, Some(_)) => return self.on_ack(id, by).await,
            (other, Some(_)) => other,
        };
        let request = match command(request) {
            Ok((id, op)) => return self.on_command(id, op).await,
            Err(request) => request,
        };
        if matches!(
            request,
            ClientMessage::Subscribe { .. } | ClientMessage::Unsubscribe { .. }
        ) && !self.subscribes.take(Instant::now())
        {
            let refusal = (
                "rate_limited",
                format!(
                    "at most {SUBSCRIBES_BURST_MAX} subscribes at once, then one every {} ms",
                    SUBSCRIBE_REFILL.as_millis()
                ),
            );
            return self.refuse(refusal).await;
        }
        if let ClientMessage::Subscribe {
            topics: names,
            since,
            epoch,
        } = request
        {
            return self.on_subscribe(&names, &since, epoch).await;
        }
        match handle(&self.shared, &self.link, &mut self.topics, request) {
            Ok(Some(reply)) => self.reply(reply).await,
            Ok(None) => Flow::Go,
            Err(refusal) => self.refuse(refusal).await,
        }
    }

    /// `auth`: the session takes the token's claims.
    async fn on_auth(&mut self, token: &str) -> Flow {
        match self.shared.access.claims(Some(token), self.shared.now()) {
            Ok(granted) => {
                self.claims = Some(granted);
                let reply = ServerMessage::bare("authed").encode(self.codec);
                self.reply(reply).await
            }
            Err(error) => self.refuse(("unauthorized", error.to_string())).await,
        }
    }

    /// `ack`: acknowledges an alert, when the claims allow it.
    async fn on_ack(&mut self, id: u64, by: Option<String>) -> Flow {
        let Some(granted) = &self.claims else {
            return Flow::Go;
        };
        if !granted.allows(Action::Acknowledge) {
            let refusal = (
                "forbidden",
                format!("{:?} may not acknowledge alerts", granted.role),
            );
            return self.refuse(refusal).await;
        }
        let by = by.or_else(|| Some(granted.sub.clone()));
        let reply = acknowledge(&self.shared, self.codec, granted, id, by).await;
        self.reply(reply).await
    }

    /// An order command: answered once durable, in command order (on a standby, by the
    /// leader).
    async fn on_command(&mut self, id: String, op: Result<BatchOp, ApiError>) -> Flow {
        let granted = self.claims.as_ref().unwrap_or(&self.open_claims);
        if !granted.allows(Action::Order) {
            let refusal = (
                "forbidden",
                format!("{:?} may not place orders", granted.role),
            );
            return self.refuse(refusal).await;
        }
        if id.is_empty()
            || CLIENT_ID_CHARS_MAX < id.chars().count()
            || id.chars().any(char::is_control)
        {
            let refusal = (
                "invalid_message",
                format!(
                    "a command's id is 1 to {CLIENT_ID_CHARS_MAX} characters without control characters"
                ),
            );
            return self.refuse(refusal).await;
        }
        if PENDING_REPLIES_CLOSE <= self.pending.len() {
            // Refused commands still queue their refusal in order; a client that keeps
            // sending while thousands wait is cut off rather than buffered.
            return self.close(CLOSE_POLICY, "too many commands waiting").await;
        }
        let standby = self
            .shared
            .cluster
            .as_ref()
            .is_some_and(|cluster| !cluster.leading());
        match op {
            Ok(op) if standby => {
                let claims = granted.clone();
                self.forward(id, op, claims);
            }
            op => command_reply(&self.shared, self.codec, &mut self.pending, id, op),
        }
        self.flush_replies().await
    }

    /// A standby takes order commands too: the leader runs them, in command order, while
    /// this session goes on; the answer queues in command order.
    fn forward(&mut self, id: String, op: BatchOp, claims: Claims) {
        let (done, answer) = tokio::sync::oneshot::channel();
        let command = Forwarding {
            id: id.clone(),
            op,
            claims,
            done,
        };
        let (shared, codec, answered) = (self.shared.clone(), self.codec, self.answered.clone());
        let forwarder = self.forwarder.get_or_insert_with(|| {
            let (queue, commands) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(forward_in_order(shared, codec, commands, answered));
            queue
        });
        let _ = forwarder.send(command);
        self.pending.push_back(PendingReply {
            needed: 0,
            deadline: Instant::now() + super::DURABLE_WAIT_MAX,
            id,
            reply: Awaited::Leader(answer),
        });
    }

    /// `subscribe`: a snapshot of each new topic (or what it missed since `since`), then its
    /// changes.
    async fn on_subscribe(
        &mut self,
        names: &[String],
        since: &std::collections::HashMap<String, u64>,
        epoch: Option<u64>,
    ) -> Flow {
        let granted = self.claims.as_ref().unwrap_or(&self.open_claims);
        let joins = match plan_subscribe(&self.shared, &self.topics, names, since, epoch, granted) {
            Ok(joins) => joins,
            Err(refusal) => return self.refuse(refusal).await,
        };
        let joined = join_topics(
            &self.shared,
            &self.link,
            &mut self.sender,
            &mut self.topics,
            &mut self.floors,
            joins,
        )
        .await;
        match joined {
            None => Flow::End,
            Some(Some(refusal)) => self.refuse(refusal).await,
            Some(None) => Flow::Go,
        }
    }

    /// Frames the hub queued: sent together (up to [`FRAME_MESSAGES_MAX`] messages), less
    /// what a snapshot sent since already shows.
    async fn on_hub_frames(
        &mut self,
        first: Chunk,
        frames: &mut tokio::sync::mpsc::Receiver<Chunk>,
    ) -> Flow {
        let mut messages = 0;
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(chunk) = next {
            self.link.taken(chunk.bytes.len());
            let covered = self
                .floors
                .get(&chunk.topic)
                .is_some_and(|floor| chunk.last <= *floor);
            if !covered {
                messages += chunk.messages as usize;
                batch.push(chunk);
            }
            next = if messages < FRAME_MESSAGES_MAX {
                frames.try_recv().ok()
            } else {
                None
            };
        }
        if batch.is_empty() {
            return Flow::Go;
        }
        let frame = frame_message(self.codec, Chunk::frame(self.codec, &batch));
        self.send(frame).await
    }

    /// Sends the order replies now due: durable, or past their deadline.
    async fn flush_replies(&mut self) -> Flow {
        let ready = flush_due(&self.shared, &mut self.pending, Instant::now(), self.codec);
        if ready.is_empty() {
            return Flow::Go;
        }
        let frame = frame_message(self.codec, Chunk::frame(self.codec, &ready));
        self.send(frame).await
    }

    /// The hub marked the session for a resync: its backlog is dropped and each topic sent
    /// afresh; a session that needed too many because it read too slowly is closed.
    async fn on_wake(&mut self, frames: &mut tokio::sync::mpsc::Receiver<Chunk>) -> Flow {
        if !self.link.resync_pending() {
            return Flow::Go;
        }
        // Drain before taking the mark: while the queue is still full, the hub would mark
        // the session slow a second time for the same episode.
        while let Ok(stale) = frames.try_recv() {
            self.link.taken(stale.bytes.len());
        }
        let Some(reason) = self.link.take_resync() else {
            return Flow::Go;
        };
        if reason == Resync::Slow && !self.slowness.note(Instant::now()) {
            return self.close(CLOSE_TOO_SLOW, "too slow to follow").await;
        }
        // The backlog is stale: drop it and send each topic afresh. What is queued between
        // here and a topic's snapshot is dropped by its floor.
        while let Ok(stale) = frames.try_recv() {
            self.link.taken(stale.bytes.len());
        }
        let rejoin: Vec<(Topic, Join)> = self
            .topics
            .iter()
            .map(|topic| (topic.clone(), Join::Resync))
            .collect();
        let mut followed = Vec::new();
        let joined = join_topics(
            &self.shared,
            &self.link,
            &mut self.sender,
            &mut followed,
            &mut self.floors,
            rejoin,
        )
        .await;
        if joined.is_none() {
            return Flow::End;
        }
        self.topics = followed;
        Flow::Go
    }

    /// Every [`HEARTBEAT_INTERVAL`]: credentials still good, the client still heard from,
    /// and a ping.
    async fn on_heartbeat(&mut self) -> Flow {
        if !credentials_hold(&self.shared, &self.claims, self.started) {
            return self
                .close(CLOSE_CREDENTIALS, "credentials expired or missing")
                .await;
        }
        if IDLE_TIMEOUT <= self.last_heard.elapsed() {
            return self.close(CLOSE_IDLE, "idle").await;
        }
        self.send(Message::Ping(Bytes::new())).await
    }
}

/// Resolves when the oldest waiting reply reaches its deadline; never without one.
async fn sleep_until_deadline(pending: &Pending) {
    match pending.front() {
        // A reply from the leader wakes the session when it comes (`answered`).
        Some(front) if matches!(front.reply, Awaited::Ready(_)) => {
            tokio::time::sleep_until(front.deadline).await;
        }
        _ => std::future::pending().await,
    }
}

/// Whether the session may go on: its token has not expired, or, without one yet, it is
/// still within the time to authenticate.
fn credentials_hold(shared: &AppState, claims: &Option<Claims>, started: Instant) -> bool {
    match claims {
        Some(claims) => shared.now().as_millis() / 1000 < claims.exp,
        None => started.elapsed() < AUTH_DEADLINE,
    }
}

/// Acknowledges an alert for the console: the alert as it now stands, or an error.
async fn acknowledge(
    shared: &AppState,
    codec: Codec,
    claims: &Claims,
    id: u64,
    by: Option<String>,
) -> Bytes {
    let rooms = claims.rooms.clone();
    let by = by.unwrap_or_else(|| "console".to_owned());
    if by.is_empty()
        || ACKNOWLEDGER_CHARS_MAX < by.chars().count()
        || by.chars().any(char::is_control)
    {
        return ServerMessage::error(
            "invalid_message",
            &format!(
                "by must be 1 to {ACKNOWLEDGER_CHARS_MAX} characters without control characters"
            ),
        )
        .encode(codec);
    }
    let standby = shared
        .cluster
        .as_ref()
        .is_some_and(|cluster| !cluster.leading());
    let answer = if standby {
        // The leader records it: asked under the session's claims.
        super::cluster::forward_acknowledgement(shared, claims, id, &by).await
    } else {
        super::alerts::acknowledge_alert(shared, id, by, rooms)
            .await
            .and_then(|alert| {
                alert
                    .map(|alert| {
                        serde_json::to_value(alert).map_err(|error| {
                            ApiError::new(
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                "internal",
                                format!("the alert did not encode: {error}"),
                            )
                        })
                    })
                    .transpose()
            })
    };
    match answer {
        Ok(Some(alert)) => {
            #[derive(Serialize)]
            struct Acked {
                #[serde(rename = "type")]
                kind: &'static str,
                alert: serde_json::Value,
            }
            let acked = Acked {
                kind: "acked",
                alert,
            };
            codec.encode(&acked)
        }
        Ok(None) => ServerMessage::error("alert_not_found", &format!("alert {id} does not exist"))
            .encode(codec),
        Err(error) => ServerMessage::error(error.code, &error.message).encode(codec),
    }
}

/// Answers a bad client message with an error, or closes the session (policy violation)
/// once it sent too many; `false` when the session is over.
async fn refuse(
    sender: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    receiver: &mut futures_util::stream::SplitStream<WebSocket>,
    codec: Codec,
    bad_messages: u32,
    (code, reason): (&'static str, String),
) -> bool {
    if BAD_MESSAGES_MAX < bad_messages {
        let close = Message::Close(Some(CloseFrame {
            code: CLOSE_POLICY,
            reason: "too many bad messages".into(),
        }));
        let _ = send_within(sender, close).await;
        finish_close(receiver).await;
        return false;
    }
    let reply = ServerMessage::error(code, &reason).encode(codec);
    send_within(sender, frame_message(codec, reply)).await
}

/// After sending a close frame, reads (and drops) what the client still sends until its own
/// close frame arrives, for at most a second: dropping the socket with unread bytes would
/// reset the connection and lose the close frame on its way.
async fn finish_close(receiver: &mut futures_util::stream::SplitStream<WebSocket>) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, receiver.next()).await {
        if matches!(message, Message::Close(_)) {
            return;
        }
    }
}

/// Sends one frame; `false` when the connection failed or the client stopped reading.
async fn send_within(
    sender: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    message: Message,
) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sender.send(message)).await,
        Ok(Ok(()))
    )
}

/// An order command's id and operation, or the message back when it is not a command.
#[allow(clippy::result_large_err)]
fn command(request: ClientMessage) -> Result<(String, Result<BatchOp, ApiError>), ClientMessage> {
    Ok(match request {
        ClientMessage::Reserve(command) => (command.id.clone(), command.into_op()),
        ClientMessage::Sell(command) => {
            let id = command.id.clone();
            let op = command.into_op().map(|op| match op {
                BatchOp::Reserve(body) => BatchOp::Sell(body),
                other => other,
            });
            (id, op)
        }
        ClientMessage::Confirm(command) => (
            command.id,
            Ok(BatchOp::Confirm {
                order_id: command.order_id,
            }),
        ),
        ClientMessage::Cancel(command) => (
            command.id,
            Ok(BatchOp::Cancel {
                order_id: command.order_id,
            }),
        ),
        ClientMessage::Refund(command) => (
            command.id,
            Ok(BatchOp::Refund {
                order_id: command.order_id,
            }),
        ),
        other => return Err(other),
    })
}

impl OrderCommand {
    fn into_op(self) -> Result<BatchOp, ApiError> {
        Ok(BatchOp::Reserve(OrderRequestBody {
            order_id: self.order_id,
            sku: self.sku,
            qty: self.qty,
            lines: self.lines,
            platform: self.platform,
            room: self.room,
            paid: self.paid,
        }))
    }
}

/// Runs one order command and queues its reply: behind the journal's sequence at that point
/// when the ledger decided it, ready at once when it was refused before (but still after
/// the replies queued before it).
fn command_reply(
    shared: &AppState,
    codec: Codec,
    pending: &mut Pending,
    id: String,
    op: Result<BatchOp, ApiError>,
) {
    let (result, decided) = if PENDING_REPLIES_MAX <= pending.len() {
        let refusal = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_pending",
            format!("at most {PENDING_REPLIES_MAX} commands may wait for their replies"),
        );
        (Err(refusal), false)
    } else {
        match op.and_then(|op| shared.writable().map(|()| op)) {
            Ok(op) => {
                let outcome = execute(shared, op);
                (outcome.result, outcome.decided)
            }
            Err(refusal) => (Err(refusal), false),
        }
    };
    let reply = match &result {
        Ok(done) => Reply {
            kind: "reply",
            id: &id,
            status: done.status.as_u16(),
            order: Some(OrderResponse::new(&done.order, done.replayed)),
            error: None,
        },
        Err(error) => Reply::refused(&id, error),
    };
    let reply = Awaited::Ready(reply.encode(codec));
    pending.push_back(PendingReply {
        needed: if decided {
            shared.journal.submitted()
        } else {
            0
        },
        deadline: Instant::now() + super::DURABLE_WAIT_MAX,
        id,
        reply,
    });
}

/// An order command on its way to the leader.
struct Forwarding {
    id: String,
    op: BatchOp,
    claims: Claims,
    done: tokio::sync::oneshot::Sender<Bytes>,
}

/// How many commands of a session go to the leader in one batch at most.
const FORWARDED_BATCH_MAX: usize = 64;

/// Hands a standby session's order commands to the leader in command order, those that
/// queued meanwhile together in one batch (which the leader runs in order), until the
/// session ends; tells `answered` as each batch's replies are ready.
async fn forward_in_order(
    shared: AppState,
    codec: Codec,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Forwarding>,
    answered: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut next = commands.recv().await;
    while let Some(first) = next.take() {
        let mut batch = vec![first];
        while batch.len() < FORWARDED_BATCH_MAX {
            match commands.try_recv() {
                // One batch runs under one set of claims.
                Ok(command) if command.claims == batch[0].claims => batch.push(command),
                Ok(command) => {
                    next = Some(command);
                    break;
                }
                Err(_) => break,
            }
        }
        let ops: Vec<&BatchOp> = batch.iter().map(|command| &command.op).collect();
        let results = super::cluster::forward_commands(&shared, &batch[0].claims, &ops).await;
        for (index, command) in batch.into_iter().enumerate() {
            let result = match &results {
                Ok(items) => Ok(items.get(index).cloned().unwrap_or_default()),
                Err(error) => Err(error.clone()),
            };
            let _ = command
                .done
                .send(forwarded_reply(codec, &command.id, result));
        }
        answered.notify_one();
        if next.is_none() {
            next = commands.recv().await;
        }
    }
}

/// The reply to a command the leader ran for this standby (the leader answered after its
/// change was in the log, and this node waited until it held it).
fn forwarded_reply(codec: Codec, id: &str, result: Result<serde_json::Value, ApiError>) -> Bytes {
    match result {
        Ok(item) => {
            let forwarded = ForwardedReply {
                kind: "reply",
                id,
                status: item["status"]
                    .as_u64()
                    .and_then(|status| u16::try_from(status).ok())
                    .unwrap_or(500),
                order: item.get("order").filter(|order| !order.is_null()),
                error: item.get("error").filter(|error| !error.is_null()),
            };
            codec.encode(&forwarded)
        }
        Err(error) => Reply::refused(id, &error).encode(codec),
    }
}

/// A reply the leader's answer makes, for a command forwarded from a standby.
#[derive(Serialize)]
struct ForwardedReply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a serde_json::Value>,
}

/// Takes the replies that may go now, in order: those whose changes are durable, and those
/// past their deadline or behind a poisoned journal, which become `503 storage_unavailable`
/// (the outcome is unknown).
fn flush_due(shared: &AppState, pending: &mut Pending, now: Instant, codec: Codec) -> Vec<Chunk> {
    let durable = shared.journal.durable();
    let poisoned = shared.journal.poisoned();
    let mut ready = Vec::new();
    while let Some(front) = pending.front_mut() {
        let reply = match &mut front.reply {
            // The leader's answer, or the refusal the forwarding ended in, always comes.
            Awaited::Leader(answer) => match answer.try_recv() {
                Ok(reply) => reply,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => break,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    let unknown = ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "outcome_unknown",
                        "the leader's answer to this command was lost; retry with the same \
                         order_id",
                    );
                    Reply::refused(&front.id, &unknown).encode(codec)
                }
            },
            Awaited::Ready(reply) if front.needed <= durable => reply.clone(),
            Awaited::Ready(_) if front.deadline <= now || poisoned => {
                let unknown = ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the journal could not make this change durable in time; its outcome is \
                     unknown: retry with the same order_id",
                );
                Reply::refused(&front.id, &unknown).encode(codec)
            }
            Awaited::Ready(_) => break,
        };
        pending.pop_front();
        ready.push(Chunk::one(reply));
    }
    ready
}

/// Applies one client message; `Ok(Some(bytes))` is a direct reply.
fn handle(
    shared: &AppState,
    link: &std::sync::Arc<crate::hub::SessionLink>,
    topics: &mut Vec<Topic>,
    request: ClientMessage,
) -> Result<Option<Bytes>, (&'static str, String)> {
    match request {
        ClientMessage::Ping => Ok(Some(ServerMessage::bare("pong").encode(link.codec))),
        ClientMessage::Unsubscribe { topics: names } => {
            let parsed = parse(&names)?;
            shared.hub.unsubscribe(link, &parsed);
            topics.retain(|topic| !parsed.contains(topic));
            Ok(None)
        }
        ClientMessage::Subscribe { .. }
        | ClientMessage::Ack { .. }
        | ClientMessage::Auth { .. }
        | ClientMessage::Reserve(_)
        | ClientMessage::Sell(_)
        | ClientMessage::Confirm(_)
        | ClientMessage::Cancel(_)
        | ClientMessage::Refund(_) => Err((
            "invalid_message",
            "this message is handled before this".to_owned(),
        )),
    }
}

/// Checks a subscribe and says how to join each topic it names that the session does not
/// follow yet, each once.
fn plan_subscribe(
    shared: &AppState,
    followed: &[Topic],
    names: &[String],
    since: &std::collections::HashMap<String, u64>,
    epoch: Option<u64>,
    claims: &Claims,
) -> Result<Vec<(Topic, Join)>, (&'static str, String)> {
    let foreign = epoch.is_some_and(|epoch| epoch != shared.hub.epoch());
    if SESSION_TOPICS_MAX < since.len() {
        return Err((
            "too_many_topics",
            format!("a session follows at most {SESSION_TOPICS_MAX} topics"),
        ));
    }
    let mut fresh: Vec<Topic> = Vec::new();
    for topic in parse(names)? {
        if !followed.contains(&topic) && !fresh.contains(&topic) {
            fresh.push(topic);
        }
    }
    if let Some(topic) = fresh.iter().find(|topic| {
        let action = match topic {
            Topic::Room(room) | Topic::RoomAlerts(room) => Action::ReadRoom(room.as_str()),
            Topic::Sku(_) | Topic::Alerts => Action::ReadAll,
        };
        !claims.allows(action)
    }) {
        return Err((
            "forbidden",
            format!("{:?} may not follow {}", claims.role, topic.name()),
        ));
    }
    if SESSION_TOPICS_MAX < followed.len() + fresh.len() {
        return Err((
            "too_many_topics",
            format!("a session follows at most {SESSION_TOPICS_MAX} topics"),
        ));
    }
    Ok(fresh
        .into_iter()
        .map(|topic| {
            let join = match since.get(&topic.name()) {
                None => Join::Fresh,
                Some(_) if foreign => Join::Resync,
                Some(seen) => Join::Since(*seen),
            };
            (topic, join)
        })
        .collect())
}

/// Joins each topic in turn, sending its snapshot (if it needs one) before the next is
/// captured, so the session holds one snapshot at a time. Adds the topics that exist to
/// `topics`. `None` when the connection failed; otherwise the refusal for a missing topic.
async fn join_topics(
    shared: &AppState,
    link: &std::sync::Arc<crate::hub::SessionLink>,
    sender: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    topics: &mut Vec<Topic>,
    floors: &mut std::collections::HashMap<u64, u64>,
    joins: Vec<(Topic, Join)>,
) -> Option<Option<(&'static str, String)>> {
    let mut missing = None;
    for (topic, join) in joins {
        match shared.hub.join(link, &topic, join) {
            Joined::Missing => {
                missing.get_or_insert_with(|| match topic {
                    Topic::Room(_) | Topic::RoomAlerts(_) => (
                        "room_not_found",
                        format!("topic {} names no room", topic.name()),
                    ),
                    _ => (
                        "sku_not_found",
                        format!("topic {} names no SKU", topic.name()),
                    ),
                });
                continue;
            }
            Joined::Streaming => {}
            Joined::Snapshot(snapshot) => {
                floors.insert(snapshot.topic_number, snapshot.seq);
                let bytes = shared.hub.encode_snapshot(&snapshot, link.codec);
                drop(snapshot);
                if !send_within(sender, frame_message(link.codec, bytes)).await {
                    topics.push(topic);
                    return None;
                }
            }
        }
        topics.push(topic);
    }
    Some(missing)
}

/// A budget of operations that refills over time: a token bucket.
struct Allowance {
    tokens: u32,
    tokens_max: u32,
    refill: Duration,
    refilled_at: Instant,
}

impl Allowance {
    fn new(tokens_max: u32, refill: Duration) -> Allowance {
        Allowance {
            tokens: tokens_max,
            tokens_max,
            refill,
            refilled_at: Instant::now(),
        }
    }

    /// Takes one operation's worth; `false` when the budget is spent.
    fn take(&mut self, now: Instant) -> bool {
        let earned = now.duration_since(self.refilled_at).as_millis() / self.refill.as_millis();
        if 0 < earned {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(self.tokens_max);
            self.refilled_at = if self.tokens == self.tokens_max {
                now
            } else {
                self.refilled_at + self.refill * earned
            };
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The resyncs a session needed because it read too slowly, one forgiven per
/// [`SESSION_RESYNC_DECAY`] without one.
#[derive(Default)]
struct Slowness {
    count: u32,
    decayed_at: Option<Instant>,
}

impl Slowness {
    /// Counts one more; `false` once there are too many to go on.
    fn note(&mut self, now: Instant) -> bool {
        let since = *self.decayed_at.get_or_insert(now);
        let periods = now.duration_since(since).as_millis() / SESSION_RESYNC_DECAY.as_millis();
        if 0 < periods {
            let periods = u32::try_from(periods).unwrap_or(u32::MAX);
            self.count = self.count.saturating_sub(periods);
            self.decayed_at = Some(now);
        }
        self.count += 1;
        self.count <= SESSION_RESYNCS_MAX
    }
}

fn parse(names: &[String]) -> Result<Vec<Topic>, (&'static str, String)> {
    if SESSION_TOPICS_MAX < names.len() {
        return Err((
            "too_many_topics",
            format!("a session follows at most {SESSION_TOPICS_MAX} topics"),
        ));
    }
    names
        .iter()
        .map(|name| Topic::parse(name).map_err(|reason| ("invalid_topic", reason)))
        .collect()
}

fn frame_message(codec: Codec, bytes: Bytes) -> Message {
    match codec {
        Codec::Json => match axum::extract::ws::Utf8Bytes::try_from(bytes) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Text("[]".into()),
        },
        Codec::MessagePack => Message::Binary(bytes),
    }
}

/// How deep a MessagePack client message may nest: a subscribe nests three levels.
const CLIENT_MESSAGE_DEPTH_MAX: usize = 16;

/// One client message, as text (JSON) or binary (MessagePack, refused past
/// [`CLIENT_MESSAGE_DEPTH_MAX`] levels).
fn decode(bytes: &[u8], codec: Codec) -> Result<ClientMessage, String> {
    match codec {
        Codec::Json => serde_json::from_slice(bytes).map_err(|error| error.to_string()),
        Codec::MessagePack => {
            let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
            deserializer.set_max_depth(CLIENT_MESSAGE_DEPTH_MAX);
            ClientMessage::deserialize(&mut deserializer).map_err(|error| error.to_string())
        }
    }
}

/// Decodes one client message as the session does, for the property tests and the fuzz
/// targets. `true` when it is a valid message.
pub(crate) fn decode_client_message(bytes: &[u8], codec: Codec) -> bool {
    decode(bytes, codec).is_ok()
}
