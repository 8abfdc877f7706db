//! Access control at the edge: every request's credentials (a bearer token, a `?token=`
//! query for browsers, or a platform's signed order webhook) become [`Claims`], and the
//! route decides which [`Action`] it needs. Without a configured secret the server is open
//! (and listens on loopback only).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Action, AuthError, Authority, Claims, Role};
use crate::clock::Timestamp;

/// What the edge checks credentials against.
pub(crate) struct Access {
    pub(crate) authority: Option<Authority>,
    /// (platform, secret) of the platforms whose order webhooks are signed.
    pub(crate) platforms: Vec<(String, Vec<u8>)>,
    /// Origins allowed to open `/ws`; empty means only this server's own pages.
    pub(crate) allowed_origins: Vec<String>,
}

/// What a route needs beyond a valid credential, if anything.
enum Need<'a> {
    Public,
    Authenticated,
    Acknowledge,
    Act(Action<'a>),
}

fn classify<'a>(method: &Method, path: &'a str) -> Need<'a> {
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return match path {
            "/metrics" => Need::Act(Action::ReadAll),
            // The pages, their files, health, the OpenAPI document; `/ws` checks its own.
            _ => Need::Public,
        };
    };
    let parts: Vec<&'a str> = rest.split('/').collect();
    let read = method == Method::GET || method == Method::HEAD;
    match parts.as_slice() {
        ["rooms"] | ["alerts"] if read => Need::Authenticated,
        ["rooms", room] if read => Need::Act(Action::ReadRoom(room)),
        ["rooms", room, ..] => Need::Act(Action::OperateRoom(room)),
        ["alerts", _, "ack"] => Need::Acknowledge,
        ["orders", ..] if !read => Need::Act(Action::Order),
        ["skus", ..] if !read => Need::Act(Action::Stock),
        _ if read => Need::Act(Action::ReadAll),
        _ => Need::Authenticated,
    }
}

fn refused(status: StatusCode, code: &'static str, message: String) -> Response {
    let mut response = ApiError::new(status, code, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The token a request carries: `Authorization: Bearer …`, or `?token=…`.
pub(crate) fn token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(value) = headers.get(header::AUTHORIZATION)
        && let Ok(text) = value.to_str()
    {
        return text.strip_prefix("Bearer ").map(str::trim);
    }
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

impl Access {
    /// The claims of a token; open claims when no secret is configured.
    pub(crate) fn claims(&self, token: Option<&str>, now: Timestamp) -> Result<Claims, AuthError> {
        match &self.authority {
            None => Ok(Claims::open()),
            Some(authority) => authority.verify(token.ok_or(AuthError::Missing)?, now),
        }
    }

    /// Whether a browser on `origin` may open `/ws` on `host`.
    pub(crate) fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            // Not a browser: credentials decide.
            return true;
        };
        // This server's own pages, and the listed origins.
        let own = origin.split_once("://").map(|(_, authority)| authority);
        (own.is_some() && own == host)
            || self.allowed_origins.iter().any(|allowed| allowed == origin)
    }
}

/// Drops `token=…` from the query once it is read, so routes with strict query parameters
/// do not see it.
fn without_token(request: &mut Request) {
    let Some(query) = request.uri().query() else {
        return;
    };
    if !query.split('&').any(|pair| pair.starts_with("token=")) {
        return;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.starts_with("token="))
        .collect();
    let path = request.uri().path();
    let rebuilt = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    if let Ok(uri) = rebuilt.parse() {
        *request.uri_mut() = uri;
    }
}

/// Checks a platform's signed order webhook and, when it verifies, lets it in as `ingest`.
async fn signed_webhook(
    shared: &AppState,
    request: Request,
    platform: String,
) -> Result<Request, Response> {
    let secret = shared
        .access
        .platforms
        .iter()
        .find(|(name, _)| *name == platform)
        .map(|(_, secret)| secret.clone())
        .ok_or_else(|| {
            refused(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("platform {platform:?} signs no webhooks here"),
            )
        })?;
    // Read before the body is awaited: a borrow of the request must not live across it.
    let (timestamp, signature) = {
        let headers = request.headers();
        let header_text = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        (
            header_text("x-stockpulse-timestamp"),
            header_text("x-stockpulse-signature"),
        )
    };
    let (parts, body) = request.into_parts();
    let limit = shared.body_limit_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {limit} bytes"),
        )
    })?;
    crate::auth::verify_webhook(&secret, &timestamp, &signature, &bytes, shared.now())
        .map_err(|error| refused(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string()))?;
    // A platform places its own orders: the body must name it.
    let named = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|body| {
            body.get("platform")
                .and_then(|name| name.as_str().map(str::to_owned))
        });
    if named.as_deref() != Some(platform.as_str()) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("a webhook signed by {platform} may place only {platform}'s orders"),
        ));
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(Claims {
        sub: platform,
        role: Role::Ingest,
        rooms: None,
        exp: u64::MAX,
    });
    Ok(request)
}

/// The middleware: credentials to claims, claims against the route.
pub(crate) async fn authorize(
    State(shared): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let need = classify(&method, &path);
    if matches!(need, Need::Public) {
        return next.run(request).await;
    }
    // Without credentials configured every request is an administrator: a page on another
    // site must not be able to use that (a cross-site POST from a browser carries Origin).
    if shared.access.authority.is_none() && method != Method::GET && method != Method::HEAD {
        let header_text = |name: header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        let origin = header_text(header::ORIGIN);
        if origin.is_some()
            && !shared
                .access
                .origin_allowed(origin, header_text(header::HOST))
        {
            return refused(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "pages on {} may not change this server",
                    origin.unwrap_or_default()
                ),
            );
        }
    }
    let platform = request
        .headers()
        .get("x-stockpulse-platform")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let request = match platform {
        Some(platform) if shared.access.authority.is_some() => {
            // Signed webhooks place orders, nothing else: a captured signature cannot be
            // replayed against another route.
            if method != Method::POST || path != "/api/v1/orders" {
                return refused(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a signed platform webhook may only POST /api/v1/orders".to_owned(),
                );
            }
            match signed_webhook(&shared, request, platform).await {
                Ok(request) => request,
                Err(response) => return response,
            }
        }
        _ => {
            let found = token(request.headers(), request.uri().query());
            match shared.access.claims(found, shared.now()) {
                Ok(claims) => {
                    let mut request = request;
                    without_token(&mut request);
                    request.extensions_mut().insert(claims);
                    request
                }
                Err(error) => {
                    return refused(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string());
                }
            }
        }
    };
    let claims = request
        .extensions()
        .get::<Claims>()
        .cloned()
        .unwrap_or_else(Claims::open);
    let allowed = match classify(&method, &path) {
        Need::Public | Need::Authenticated => true,
        Need::Acknowledge => matches!(claims.role, Role::Admin | Role::Operator),
        Need::Act(action) => claims.allows(action),
    };
    if !allowed {
        return refused(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{:?} {} may not {method} {path}", claims.role, claims.sub),
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_they_change() {
        let need = |method: Method, path: &'static str| match classify(&method, path) {
            Need::Public => "public".to_owned(),
            Need::Authenticated => "authenticated".to_owned(),
            Need::Acknowledge => "acknowledge".to_owned(),
            Need::Act(action) => format!("{action:?}"),
        };
        assert_eq!(need(Method::GET, "/"), "public");
        assert_eq!(need(Method::GET, "/healthz"), "public");
        assert_eq!(need(Method::GET, "/metrics"), "ReadAll");
        assert_eq!(need(Method::GET, "/api/v1/skus"), "ReadAll");
        assert_eq!(need(Method::PUT, "/api/v1/skus/A"), "Stock");
        assert_eq!(need(Method::POST, "/api/v1/skus/A/restock"), "Stock");
        assert_eq!(need(Method::POST, "/api/v1/orders"), "Order");
        assert_eq!(need(Method::POST, "/api/v1/orders/o1/cancel"), "Order");
        assert_eq!(need(Method::GET, "/api/v1/orders/o1"), "ReadAll");
        assert_eq!(need(Method::GET, "/api/v1/rooms"), "authenticated");
        assert_eq!(need(Method::GET, "/api/v1/rooms/r1"), "ReadRoom(\"r1\")");
        assert_eq!(need(Method::PUT, "/api/v1/rooms/r1"), "OperateRoom(\"r1\")");
        assert_eq!(
            need(Method::POST, "/api/v1/rooms/r1/listings/A/halt"),
            "OperateRoom(\"r1\")"
        );
        assert_eq!(need(Method::POST, "/api/v1/alerts/3/ack"), "acknowledge");
        assert_eq!(need(Method::GET, "/api/v1/deliveries"), "ReadAll");
    }

    #[test]
    fn browsers_may_open_the_websocket_from_this_server_or_a_listed_origin() {
        let open = Access {
            authority: None,
            platforms: Vec::new(),
            allowed_origins: Vec::new(),
        };
        assert!(open.origin_allowed(None, Some("127.0.0.1:8080")));
        assert!(open.origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(!open.origin_allowed(Some("https://evil.example"), Some("127.0.0.1:8080")));
        let listed = Access {
            allowed_origins: vec!["https://screen.example.com".to_owned()],
            ..open
        };
        assert!(listed.origin_allowed(Some("https://screen.example.com"), Some("10.0.0.1")));
        assert!(listed.origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(!listed.origin_allowed(Some("https://evil.example"), Some("127.0.0.1:8080")));
    }
}
