//! The cluster at the HTTP edge: `GET /api/v1/cluster`, and writes that reach a standby
//! forwarded to the leader over NATS request-reply, so any node accepts any request.
//!
//! The standby admits a request as it would serve it (credentials to claims, claims against
//! the route), then hands the leader the request with the claims it proved, sealed
//! ([`crate::cluster::forward`]); the leader runs it through its own router under those
//! claims, checking them against the route again, and the answer comes back whole. A
//! forwarded request that reaches a node that is not (or no longer) the leader is answered
//! 503 `not_leader` instead of being forwarded again; the client retries, with the same
//! `order_id` where it places orders.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use super::AppState;
use super::error::ApiError;
use crate::auth::Claims;
use crate::cluster::forward::{self, Answer, ForwardError};
use crate::cluster::{Cluster, Role};

/// The headers a forwarded request keeps: what the handlers read. Credentials stay on the
/// standby, which proved them; the claims they gave travel instead.
const FORWARDED_HEADERS: &[&str] = &["content-type"];

/// Marks, on the leader, a request a standby forwarded, with the claims that standby proved.
#[derive(Clone)]
pub(super) struct Forwarded(pub(super) Claims);

#[derive(Serialize, Deserialize, Clone)]
pub(super) struct ClusterView {
    node: String,
    role: String,
    leader: Option<String>,
    term: u64,
    applied_seq: u64,
    stream_seq: u64,
    /// The last fact this node holds.
    facts: u64,
    /// Every node that answered within a moment, this one included, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    nodes: Vec<NodeView>,
}

/// A node as the others see it.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct NodeView {
    pub(super) node: String,
    pub(super) role: String,
    pub(super) applied_seq: u64,
    /// Messages of the log it had not applied when it answered, against the newest head
    /// any node reported in the same round of answers.
    pub(super) lag: u64,
}

impl ClusterView {
    fn of(status: crate::cluster::Status) -> ClusterView {
        ClusterView {
            node: status.node,
            role: status.role.as_str().to_owned(),
            leader: status.leader,
            term: status.term,
            applied_seq: status.applied_seq,
            stream_seq: status.stream_seq,
            facts: status.facts,
            nodes: Vec::new(),
        }
    }

    /// This node as the others see it, against the log's head `head`.
    fn node_view(&self, head: u64) -> NodeView {
        NodeView {
            node: self.node.clone(),
            role: self.role.clone(),
            applied_seq: self.applied_seq,
            lag: head.saturating_sub(self.applied_seq),
        }
    }
}

/// The subject every node answers status requests on.
fn status_subject(cluster: &Cluster) -> String {
    format!("{}.status", cluster.config().stream)
}

/// How long a status request waits for the other nodes' answers.
const STATUS_WAIT: Duration = Duration::from_millis(200);

/// Every node's status that arrives within [`STATUS_WAIT`], sorted by name.
pub(crate) async fn gather(cluster: &Cluster) -> Vec<NodeView> {
    let client = cluster.client();
    let inbox = client.new_inbox();
    let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
        return Vec::new();
    };
    if client
        .publish_with_reply(
            status_subject(cluster),
            inbox,
            cluster.seal().seal(&[]).into(),
        )
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut views = Vec::new();
    let deadline = tokio::time::Instant::now() + STATUS_WAIT;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await {
        // Only what a node of this cluster sealed counts.
        if let Ok(view) = cluster
            .seal()
            .open(&message.payload)
            .map_err(|error| error.to_string())
            .and_then(|body| {
                rmp_serde::from_slice::<ClusterView>(body).map_err(|error| error.to_string())
            })
        {
            views.push(view);
        }
    }
    // A node's lag: how far the log's head, as the most advanced answer saw it (the
    // leader's, in the same moment), is ahead of what the node applied.
    let head = views
        .iter()
        .map(|view| view.stream_seq.max(view.applied_seq))
        .max()
        .unwrap_or(0);
    let mut nodes: Vec<NodeView> = views.iter().map(|view| view.node_view(head)).collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    nodes
}

/// Answers other nodes' status requests until `stop`.
pub(crate) async fn answer_status(cluster: Cluster, stop: tokio_util::sync::CancellationToken) {
    let subject = status_subject(&cluster);
    each_request(&cluster, subject, stop, "status requests", |message| {
        let cluster = cluster.clone();
        async move {
            // A node tells its status only to a node of this cluster.
            let (Some(reply), Ok(_), Ok(payload)) = (
                message.reply,
                cluster.seal().open(&message.payload),
                rmp_serde::to_vec_named(&ClusterView::of(cluster.status())),
            ) else {
                return;
            };
            let sealed = cluster.seal().seal(&payload);
            let _ = cluster.client().publish(reply, sealed.into()).await;
        }
    })
    .await;
}

/// Runs `handle` on each request to `subject` (this node's to answer) until `stop` is
/// cancelled or the subscription ends.
async fn each_request<F, Fut>(
    cluster: &Cluster,
    subject: String,
    stop: tokio_util::sync::CancellationToken,
    what: &str,
    mut handle: F,
) where
    F: FnMut(async_nats::Message) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut requests = match cluster.client().subscribe(subject).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%error, "Cannot take {what}.");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = requests.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        handle(message).await;
    }
}

/// `GET /api/v1/cluster`: this node's view of the cluster; 404 when it runs alone.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "service",
    responses(
        (status = 200, description = "This node's role, the leader, the term, how far this node applied the log and how far the log goes, and every node that answered within 200 ms with its role and lag (README, \"Run a cluster\")"),
        (status = 404, description = "`not_clustered`: this server runs alone", body = super::error::ErrorBody)))]
pub(crate) async fn status(State(shared): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    let cluster = shared.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this server runs as a single node",
        )
    })?;
    let mut view = ClusterView::of(cluster.status());
    view.nodes = gather(cluster).await;
    Ok(Json(view))
}

/// The leader this standby forwards to: the lease holder, when it is another node.
fn leader_of(cluster: &Cluster) -> Option<String> {
    let status = cluster.status();
    status.leader.filter(|leader| *leader != status.node)
}

fn is_write(request: &Request) -> bool {
    let path = request.uri().path();
    !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && path.starts_with("/api/v1/")
}

/// On a standby, writes go to the leader; on the leader, and for reads, `next` serves the
/// request here.
pub(super) async fn forward_or_serve(shared: &AppState, request: Request, next: Next) -> Response {
    let Some(cluster) = shared.cluster.clone() else {
        return next.run(request).await;
    };
    if cluster.leading() {
        return next.run(request).await;
    }
    if !is_write(&request) {
        return read_here(&cluster, request, next).await;
    }
    if request.extensions().get::<Forwarded>().is_some() {
        return not_leader(&cluster);
    }
    let Some(leader) = leader_of(&cluster) else {
        return not_leader(&cluster);
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, shared.body_limit_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {} bytes", shared.body_limit_bytes),
            )
            .into_response();
        }
    };
    let (body, restock_id) = with_restock_id(&parts.method, parts.uri.path(), body.to_vec());
    let forwarded = forwarded_request(&parts, body);
    match cluster.ask(&leader, forwarded).await {
        Ok(answer) => {
            let lag = read_your_write(&cluster, &answer).await;
            let mut response = into_response(answer);
            if let Some(lag) = lag {
                response
                    .headers_mut()
                    .insert(LAG_HEADER, HeaderValue::from(lag));
            }
            response
        }
        Err(error) => {
            tracing::warn!(%leader, %error, "Forwarding a write to the leader failed.");
            forward_failed(&cluster, &error, restock_id.as_deref()).into_response()
        }
    }
}

/// The write as the leader runs it: method, path and query, the headers it reads, the
/// claims admission proved (without a secret every request is an administrator), `body`.
fn forwarded_request(parts: &axum::http::request::Parts, body: Vec<u8>) -> forward::Request {
    forward::Request {
        method: parts.method.as_str().to_owned(),
        uri: parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_owned(),
            |value| value.as_str().to_owned(),
        ),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| FORWARDED_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
        claims: parts
            .extensions
            .get::<Claims>()
            .cloned()
            .unwrap_or_else(Claims::open),
        body,
    }
}

/// A restock forwarded without a `restock_id` gets one here, so that the leader applies it
/// once however often NATS or a client retries it under that id; the id given, if any. A
/// body that is not a JSON object goes as it is (the leader refuses it).
fn with_restock_id(method: &Method, path: &str, body: Vec<u8>) -> (Vec<u8>, Option<String>) {
    let is_restock =
        *method == Method::POST && path.starts_with("/api/v1/skus/") && path.ends_with("/restock");
    if !is_restock {
        return (body, None);
    }
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(&body) else {
        return (body, None);
    };
    if fields.get("restock_id").is_some_and(|id| !id.is_null()) {
        return (body, None);
    }
    let restock_id = format!("forwarded-{:016x}", fastrand::u64(..));
    fields.insert("restock_id".to_owned(), restock_id.clone().into());
    match serde_json::to_vec(&fields) {
        Ok(body) => (body, Some(restock_id)),
        Err(_) => (body, None),
    }
}

/// The header a standby's answers carry: how many log messages this node is behind the
/// log's end as it last saw it.
const LAG_HEADER: &str = "x-stockpulse-lag";

/// The header a leader's answer to a forwarded request carries: the stream sequence it had
/// appended when it answered, which the write is in.
const LOG_SEQ_HEADER: &str = "x-stockpulse-log-seq";

/// How long a standby waits to apply a write it forwarded before it answers anyway (with
/// its lag in [`LAG_HEADER`]).
const READ_YOUR_WRITES_MAX: Duration = Duration::from_secs(2);

/// How long a standby that has not known itself at the log's end still answers reads: past
/// that it may be cut off from the log, and its numbers arbitrarily old.
const STALE_READS_AFTER: Duration = Duration::from_secs(10);

/// Serves a read on a standby: with its lag, or 503 `stale` when it has not known itself at
/// the log's end for longer than [`STALE_READS_AFTER`]. The cluster's own view is always
/// answered: it is how one finds out.
async fn read_here(cluster: &Cluster, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/api/v1/") || path.starts_with("/api/v1/cluster") {
        return next.run(request).await;
    }
    let unheard = cluster.unheard_for();
    if STALE_READS_AFTER < unheard {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stale",
            format!(
                "this node has not reached the log for {} s and may answer from old numbers; read from another node",
                unheard.as_secs()
            ),
        )
        .into_response();
    }
    let lag = cluster.lag();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(LAG_HEADER, HeaderValue::from(lag));
    response
}

/// Waits until this standby has applied the log as far as the leader had when it answered
/// a forwarded write, within [`READ_YOUR_WRITES_MAX`]: the client then reads its own write
/// back here. The lag left, when the wait ran out.
async fn read_your_write(cluster: &Cluster, answer: &Answer) -> Option<u64> {
    let sequence = answer
        .headers
        .iter()
        .find(|(name, _)| name == LOG_SEQ_HEADER)
        .and_then(|(_, value)| value.parse::<u64>().ok())?;
    if cluster.applied(sequence, READ_YOUR_WRITES_MAX).await {
        return None;
    }
    Some(sequence.saturating_sub(cluster.applied_seq()))
}

fn into_response(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if name == LOG_SEQ_HEADER {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// What the client is told when its write could not be handed on, by what this node knows
/// of its outcome; `restock_id` is the id this node gave a restock that came without one.
fn forward_failed(cluster: &Cluster, error: &ForwardError, restock_id: Option<&str>) -> ApiError {
    match error {
        ForwardError::NotDelivered(_) => not_leader_error(cluster),
        ForwardError::OutcomeUnknown(_) if let Some(restock_id) = restock_id => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome_unknown",
            format!(
                "the leader took this restock but its answer did not come back; it may have \
                 been applied: retry with \"restock_id\": \"{restock_id}\" (this node gave it \
                 that id), which is applied once"
            ),
        ),
        ForwardError::OutcomeUnknown(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome_unknown",
            "the leader took this write but its answer did not come back; it may have been \
             applied: retry with the same order_id (a retried order is answered from \
             idempotency) or restock_id, and read the SKU before retrying a restock without one",
        ),
        ForwardError::TooLarge { max_payload, .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "this node forwards writes to the leader in messages of at most {max_payload} \
                 bytes; send this one to the leader, or in smaller parts"
            ),
        ),
    }
}

/// Sends order operations of a WebSocket session on a standby to the leader, as one batch
/// under the session's claims (the leader runs it in order). Each item's answer: its status
/// and its `order` or `error`.
pub(super) async fn forward_commands(
    shared: &AppState,
    claims: &Claims,
    ops: &[&super::dto::BatchOp],
) -> Result<Vec<serde_json::Value>, ApiError> {
    let body = serde_json::json!({ "ops": ops });
    let (status, mut body) = forward_as(shared, claims, "/api/v1/orders/batch", &body).await?;
    if status != 200 {
        // The whole batch was refused (503 on a node that lost the lead, 403…): its error is
        // each command's.
        let refused = serde_json::json!({"status": status, "error": body["error"].take()});
        return Ok(vec![refused; ops.len()]);
    }
    match body["results"].take() {
        serde_json::Value::Array(results) => Ok(results),
        _ => Err(no_leader()),
    }
}

/// Sends a WebSocket session's acknowledgement of alert `id` on a standby to the leader,
/// which records it: the alert as it now stands, `None` when there is no such alert.
pub(super) async fn forward_acknowledgement(
    shared: &AppState,
    claims: &Claims,
    id: u64,
    by: &str,
) -> Result<Option<serde_json::Value>, ApiError> {
    let uri = format!("/api/v1/alerts/{id}/ack");
    let (status, mut body) =
        forward_as(shared, claims, &uri, &serde_json::json!({ "by": by })).await?;
    match status {
        200 => Ok(Some(body)),
        404 => Ok(None),
        _ => {
            let code = match body["error"]["code"].as_str() {
                Some("storage_unavailable") => "storage_unavailable",
                Some("forbidden") => "forbidden",
                Some("unauthorized") => "unauthorized",
                Some("invalid_request") => "invalid_request",
                _ => "not_leader",
            };
            let message = body["error"]["message"]
                .take()
                .as_str()
                .unwrap_or("the leader refused it")
                .to_owned();
            Err(ApiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                code,
                message,
            ))
        }
    }
}

/// POSTs `body` to `uri` on the leader under `claims`: the answer's status and JSON body.
async fn forward_as(
    shared: &AppState,
    claims: &Claims,
    uri: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), ApiError> {
    let cluster = shared.cluster.as_ref().ok_or_else(no_leader)?;
    let leader = leader_of(cluster).ok_or_else(|| not_leader_error(cluster))?;
    let forwarded = forward::Request {
        method: "POST".to_owned(),
        uri: uri.to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        claims: claims.clone(),
        body: serde_json::to_vec(body).map_err(|_| no_leader())?,
    };
    let answer = cluster.ask(&leader, forwarded).await.map_err(|error| {
        tracing::warn!(%leader, %error, "Forwarding a command to the leader failed.");
        forward_failed(cluster, &error, None)
    })?;
    read_your_write(cluster, &answer).await;
    let body = serde_json::from_slice(&answer.body).map_err(|_| no_leader())?;
    Ok((answer.status, body))
}

fn no_leader() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_leader",
        "the leader could not be reached; retry",
    )
}

fn not_leader_error(cluster: &Cluster) -> ApiError {
    let status = cluster.status();
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_leader",
        match (&status.leader, status.role) {
            (_, Role::Candidate) => "this node is taking over the log; retry".to_owned(),
            (Some(leader), _) => format!("the leader ({leader}) could not be reached; retry"),
            (None, _) => "no leader yet; retry".to_owned(),
        },
    )
}

fn not_leader(cluster: &Cluster) -> Response {
    let mut response = not_leader_error(cluster).into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    response
}

/// An answer to a forwarded request that was not run: `code` and `message` as the API
/// writes errors.
fn refusal(status: StatusCode, code: &str, message: String) -> Answer {
    Answer {
        status: status.as_u16(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: serde_json::to_vec(&serde_json::json!({"error": {
            "code": code,
            "message": message,
        }}))
        .unwrap_or_default(),
    }
}

/// Answers the writes other nodes forward to this one, through `app` (the whole router),
/// until `stop` is cancelled or the subscription ends. A request that does not open (not
/// sealed by a node of this cluster, stale, or seen already) is dropped unanswered and
/// counted: nothing in it is read.
pub(crate) async fn answer_forwarded(
    cluster: Cluster,
    app: axum::Router,
    metrics: std::sync::Arc<super::Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let subject = cluster.forward_subject(&cluster.status().node);
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(
        forward::FORWARDED_IN_FLIGHT_MAX,
    ));
    each_request(&cluster, subject, stop, "forwarded writes", |message| {
        let (cluster, app, metrics) = (cluster.clone(), app.clone(), metrics.clone());
        let in_flight = in_flight.clone();
        async move {
            let Some(reply) = message.reply.clone() else {
                return;
            };
            let (ticket, request) = match cluster.open_request(&message.payload) {
                Ok(opened) => opened,
                Err(reason) => {
                    metrics.forward_refused();
                    tracing::warn!(%reason, "Refused a forwarded request.");
                    return;
                }
            };
            // Each forwarded write is served on its own task, so a slow one holds up no
            // other; as many at once as the bound, then 503.
            let permit = in_flight.try_acquire_owned().ok();
            tokio::spawn(async move {
                let answer = match permit {
                    Some(_permit) => {
                        let mut answer = serve_forwarded(app, request).await;
                        // Where the log was once this answer was made: the standby waits
                        // until it holds that much before it answers its client.
                        let appended = cluster.applied_seq();
                        answer
                            .headers
                            .push((LOG_SEQ_HEADER.to_owned(), appended.to_string()));
                        answer
                    }
                    None => refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        "the leader runs as many forwarded writes as it takes; retry".to_owned(),
                    ),
                };
                if let Err(error) = cluster.reply(reply, ticket, answer).await {
                    tracing::warn!(%error, "Cannot answer a forwarded write.");
                }
            });
        }
    })
    .await;
}

async fn serve_forwarded(app: axum::Router, forwarded: forward::Request) -> Answer {
    let mut builder = axum::http::Request::builder()
        .method(forwarded.method.as_str())
        .uri(forwarded.uri.as_str())
        .extension(Forwarded(forwarded.claims));
    for (name, value) in &forwarded.headers {
        if FORWARDED_HEADERS.contains(&name.as_str()) {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let response = match builder.body(Body::from(forwarded.body)) {
        Ok(request) => match app.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(error) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "malformed_forward",
                error.to_string(),
            );
        }
    };
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|bytes| bytes.to_vec())
        .unwrap_or_default();
    Answer {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restock_forwarded_without_an_id_gets_one_and_nothing_else_changes() {
        // Goal: a restock a standby forwards always carries a `restock_id` (the leader then
        // applies it once, and the client is told the id when the answer is lost); one
        // with an id, other writes, and bodies that are not objects go as they came.
        let path = "/api/v1/skus/A/restock";
        let (body, given) = with_restock_id(&Method::POST, path, br#"{"qty": 5}"#.to_vec());
        let given = given.expect("an id given");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["qty"], 5);
        assert_eq!(body["restock_id"], given.as_str());
        assert!(crate::ledger::RestockId::new(&given).is_ok());
        let own = br#"{"qty": 5, "restock_id": "truck-7"}"#.to_vec();
        assert_eq!(
            with_restock_id(&Method::POST, path, own.clone()),
            (own, None)
        );
        let other = br#"{"qty": 5}"#.to_vec();
        assert_eq!(
            with_restock_id(&Method::POST, "/api/v1/skus/A/halt", other.clone()),
            (other.clone(), None)
        );
        assert_eq!(
            with_restock_id(&Method::PUT, path, other.clone()),
            (other, None)
        );
        let broken = b"[1, 2".to_vec();
        assert_eq!(
            with_restock_id(&Method::POST, path, broken.clone()),
            (broken, None)
        );
    }
}
