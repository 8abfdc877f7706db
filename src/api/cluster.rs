//! The cluster at the HTTP edge: `GET /api/v1/cluster`, and writes that reach a standby
//! forwarded to the leader over NATS request-reply, so any node accepts any request.
//!
//! A forwarded request travels whole (method, path, the headers that carry credentials and
//! content, body) to `<stream>.fwd.<leader>`; the leader runs it through its own router,
//! authorisation included, and the answer comes back whole. A forwarded request is marked, and
//! a node that is not (or no longer) the leader answers it 503 `not_leader` instead of
//! forwarding it again; the client retries, with the same `order_id` where it places orders.

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
use crate::cluster::{Cluster, Role};

/// Marks a request another node forwarded.
const FORWARDED: &str = "x-stockpulse-forwarded";

/// How long a standby waits for the leader's answer to a forwarded write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers a forwarded request keeps: credentials, content, and what the handlers read.
const FORWARDED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "host",
    "idempotency-key",
    "x-stockpulse-platform",
    "x-stockpulse-timestamp",
    "x-stockpulse-signature",
];

#[derive(Serialize, Deserialize)]
struct ForwardedRequest {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct ForwardedResponse {
    status: u16,
    headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

/// The subject a node answers forwarded requests on.
fn forward_subject(cluster: &Cluster, node: &str) -> String {
    format!("{}.fwd.{node}", cluster.config().stream)
}

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
        .publish_with_reply(status_subject(cluster), inbox, bytes::Bytes::new())
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut views = Vec::new();
    let deadline = tokio::time::Instant::now() + STATUS_WAIT;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await {
        if let Ok(view) = rmp_serde::from_slice::<ClusterView>(&message.payload) {
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
            let (Some(reply), Ok(payload)) = (
                message.reply,
                rmp_serde::to_vec_named(&ClusterView::of(cluster.status())),
            ) else {
                return;
            };
            let _ = cluster.client().publish(reply, payload.into()).await;
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

/// Sends `forwarded` to `leader` and waits for its answer; why not, otherwise.
async fn ask_leader(
    cluster: &Cluster,
    leader: &str,
    forwarded: &ForwardedRequest,
) -> Result<ForwardedResponse, String> {
    let payload = rmp_serde::to_vec(forwarded).map_err(|error| error.to_string())?;
    let request = cluster
        .client()
        .request(forward_subject(cluster, leader), payload.into());
    let message = tokio::time::timeout(FORWARD_TIMEOUT, request)
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|error| error.to_string())?;
    rmp_serde::from_slice(&message.payload).map_err(|error| error.to_string())
}

/// What a forwarded request's encoding adds to its parts, at most.
const FORWARD_OVERHEAD_BYTES: usize = 1024;

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
    if !is_write(&request) || cluster.leading() {
        return next.run(request).await;
    }
    if request.headers().contains_key(FORWARDED) {
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
    let forwarded = ForwardedRequest {
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
        body: body.to_vec(),
    };
    // A request travels to the leader as one NATS message: what NATS would refuse is refused
    // here, plainly, rather than retried as if the leader were away.
    let max_payload = cluster.client().server_info().max_payload;
    let encoded = forwarded.body.len()
        + forwarded.uri.len()
        + forwarded
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>();
    if 0 < max_payload && max_payload < encoded + FORWARD_OVERHEAD_BYTES {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "this node forwards writes to the leader in messages of at most {max_payload} \
                 bytes; send this one to the leader, or in smaller parts"
            ),
        )
        .into_response();
    }
    let answer = match ask_leader(&cluster, &leader, &forwarded).await {
        Ok(answer) => answer,
        Err(reason) => {
            tracing::warn!(%leader, %reason, "Forwarding a write to the leader failed.");
            return not_leader(&cluster);
        }
    };
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// Sends one order operation of a WebSocket session on a standby to the leader, as a
/// one-item batch under the session's claims (a short-lived token signed with the shared
/// secret, when there is one). The batch item's answer: its status and its `order` or
/// `error`.
pub(super) async fn forward_command(
    shared: &AppState,
    claims: &crate::auth::Claims,
    op: &super::dto::BatchOp,
) -> Result<serde_json::Value, ApiError> {
    let body = serde_json::json!({ "ops": [op] });
    let (status, mut body) = forward_as(shared, claims, "/api/v1/orders/batch", &body).await?;
    if status != 200 {
        // The whole batch was refused (503 on a node that lost the lead, 401, 403…): its
        // error is the command's.
        return Ok(serde_json::json!({"status": status, "error": body["error"].take()}));
    }
    Ok(body["results"][0].take())
}

/// Sends a WebSocket session's acknowledgement of alert `id` on a standby to the leader,
/// which records it: the alert as it now stands, `None` when there is no such alert.
pub(super) async fn forward_acknowledgement(
    shared: &AppState,
    claims: &crate::auth::Claims,
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

/// POSTs `body` to `uri` on the leader under `claims` (a short-lived token signed with the
/// shared secret, when there is one): the answer's status and JSON body.
async fn forward_as(
    shared: &AppState,
    claims: &crate::auth::Claims,
    uri: &str,
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), ApiError> {
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            "the leader could not be reached; retry",
        )
    };
    let cluster = shared.cluster.as_ref().ok_or_else(unavailable)?;
    let leader = leader_of(cluster).ok_or_else(unavailable)?;
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(authority) = &shared.access.authority {
        let now = shared.clock.now().as_millis() / 1000;
        let short = crate::auth::Claims {
            exp: now + 60,
            ..claims.clone()
        };
        headers.push((
            "authorization".to_owned(),
            format!("Bearer {}", authority.issue(&short)),
        ));
    }
    let forwarded = ForwardedRequest {
        method: "POST".to_owned(),
        uri: uri.to_owned(),
        headers,
        body: serde_json::to_vec(body).map_err(|_| unavailable())?,
    };
    let answer = ask_leader(cluster, &leader, &forwarded)
        .await
        .map_err(|reason| {
            tracing::warn!(%leader, %reason, "Forwarding a command to the leader failed.");
            unavailable()
        })?;
    let body = serde_json::from_slice(&answer.body).map_err(|_| unavailable())?;
    Ok((answer.status, body))
}

fn not_leader(cluster: &Cluster) -> Response {
    let status = cluster.status();
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_leader",
        match (&status.leader, status.role) {
            (_, Role::Candidate) => "this node is taking over the log; retry".to_owned(),
            (Some(leader), _) => format!("the leader ({leader}) could not be reached; retry"),
            (None, _) => "no leader yet; retry".to_owned(),
        },
    )
    .into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    response
}

/// Answers the writes other nodes forward to this one, through `app` (the whole router),
/// until `stop` is cancelled or the subscription ends.
pub(crate) async fn answer_forwarded(
    cluster: Cluster,
    app: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) {
    let subject = forward_subject(&cluster, &cluster.status().node);
    each_request(&cluster, subject, stop, "forwarded writes", |message| {
        let (cluster, app) = (cluster.clone(), app.clone());
        async move {
            let Some(reply) = message.reply.clone() else {
                return;
            };
            // Each forwarded write is served on its own task: a slow one holds up no other.
            tokio::spawn(async move {
                let answer = match rmp_serde::from_slice::<ForwardedRequest>(&message.payload) {
                    Ok(request) => serve_forwarded(app, request).await,
                    Err(error) => ForwardedResponse {
                        status: 400,
                        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                        body: serde_json::to_vec(&serde_json::json!({"error": {
                            "code": "malformed_forward",
                            "message": error.to_string(),
                        }}))
                        .unwrap_or_default(),
                    },
                };
                if let Ok(payload) = rmp_serde::to_vec(&answer)
                    && let Err(error) = cluster.client().publish(reply, payload.into()).await
                {
                    tracing::warn!(%error, "Cannot answer a forwarded write.");
                }
            });
        }
    })
    .await;
}

async fn serve_forwarded(app: axum::Router, forwarded: ForwardedRequest) -> ForwardedResponse {
    let mut builder = axum::http::Request::builder()
        .method(forwarded.method.as_str())
        .uri(forwarded.uri.as_str())
        .header(FORWARDED, "1");
    for (name, value) in &forwarded.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let response = match builder.body(Body::from(forwarded.body)) {
        Ok(request) => match app.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(error) => {
            return ForwardedResponse {
                status: 400,
                headers: Vec::new(),
                body: error.to_string().into_bytes(),
            };
        }
    };
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|bytes| bytes.to_vec())
        .unwrap_or_default();
    ForwardedResponse {
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
