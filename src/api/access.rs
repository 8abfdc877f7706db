//! Access control at the edge: every request's credentials (a bearer token, a `?token=`
//! query for browsers, or a platform's signed order webhook) become [`Claims`], and the
//! route decides which [`Action`] it needs. Without a configured secret the server is open
//! (and listens on loopback only).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
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
    /// Names besides addresses and `localhost` that requests may give as `Host` when no
    /// secret is configured.
    pub(crate) allowed_hosts: Vec<String>,
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// What a route needs beyond a valid credential, if anything.
enum Need<'a> {
    Public,
    Authenticated,
    Act(Action<'a>),
}

impl Need<'_> {
    /// Whether `claims` may do what this route needs.
    fn allows(&self, claims: &Claims) -> bool {
        match self {
            Need::Public | Need::Authenticated => true,
            Need::Act(action) => claims.allows(*action),
        }
    }
}

/// A path's segments under `/api/v1/`, percent-decoded exactly as the handlers' `Path`
/// extractors decode them, so a route is authorised on the ids it will act on. `None` for a
/// path outside the API, `Some(Err)` for one that does not decode (the handler would refuse
/// it too).
fn api_segments(path: &str) -> Option<Result<Vec<String>, ()>> {
    let rest = path.strip_prefix("/api/v1/")?;
    Some(
        rest.split('/')
            .map(|segment| {
                percent_encoding::percent_decode_str(segment)
                    .decode_utf8()
                    .map(std::borrow::Cow::into_owned)
                    .map_err(drop)
            })
            .collect(),
    )
}

fn classify<'a>(method: &Method, path: &str, segments: Option<&'a [String]>) -> Need<'a> {
    let Some(segments) = segments else {
        return match path {
            "/metrics" => Need::Act(Action::ReadAll),
            // The pages, their files, health, the OpenAPI document; `/ws` checks its own.
            _ => Need::Public,
        };
    };
    let parts: Vec<&'a str> = segments.iter().map(String::as_str).collect();
    let read = method == Method::GET || method == Method::HEAD;
    match parts.as_slice() {
        ["rooms"] | ["alerts"] if read => Need::Authenticated,
        ["rooms", room] | ["rooms", room, "report" | "report.csv"] if read => {
            Need::Act(Action::ReadRoom(room))
        }
        ["rooms", room, ..] => Need::Act(Action::OperateRoom(room)),
        ["alerts", _, "ack"] => Need::Act(Action::Acknowledge),
        ["orders", ..] if !read => Need::Act(Action::Order),
        ["skus", ..] | ["channels", ..] if !read => Need::Act(Action::Stock),
        _ if read => Need::Act(Action::ReadAll),
        _ => Need::Authenticated,
    }
}

/// The roles that may call `method` on the route `template` (its parameters in braces, as
/// the API's document writes them), decided by the same rules as requests are: `None` for a
/// route anyone may call. Operators and viewers limited to some rooms reach only those.
pub(crate) fn roles(method: &Method, template: &str) -> Option<Vec<&'static str>> {
    let path: String = template
        .chars()
        .filter(|c| !matches!(c, '{' | '}'))
        .collect();
    let segments = api_segments(&path).and_then(Result::ok);
    let need = classify(method, &path, segments.as_deref());
    if matches!(need, Need::Public) {
        return None;
    }
    let every = [
        (Role::Admin, "admin"),
        (Role::Operator, "operator"),
        (Role::Ingest, "ingest"),
        (Role::Viewer, "viewer"),
    ];
    Some(
        every
            .into_iter()
            .filter(|(role, _)| {
                need.allows(&Claims {
                    sub: String::new(),
                    role: *role,
                    rooms: None,
                    exp: u64::MAX,
                })
            })
            .map(|(_, name)| name)
            .collect(),
    )
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

    /// Whether a request naming `host` may be served without credentials. With no secret
    /// every request is an administrator and loopback is the only protection, which a page
    /// whose name re-binds to 127.0.0.1 would get past: such a page sends its own name as
    /// `Host`. A name re-binds, an address does not, so IP literals and `localhost` pass,
    /// as do the names configured in `allowed_hosts`.
    pub(crate) fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            // HTTP/1.0 without a Host: not a browser.
            return true;
        };
        let name = match host.strip_prefix('[') {
            Some(bracketed) => {
                return bracketed.split_once(']').is_some_and(|(address, port)| {
                    address.parse::<std::net::Ipv6Addr>().is_ok()
                        && (port.is_empty() || port.strip_prefix(':').is_some_and(is_port))
                });
            }
            None => match host.rsplit_once(':') {
                Some((name, port)) if is_port(port) => name,
                Some(_) => return false,
                None => host,
            },
        };
        name.parse::<std::net::Ipv4Addr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self
                .allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(name))
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

/// [`api_segments`], or the refusal of a path that does not decode.
fn segments_of(path: &str) -> Result<Option<Vec<String>>, ApiError> {
    match api_segments(path) {
        Some(Ok(segments)) => Ok(Some(segments)),
        Some(Err(())) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path is not valid percent-encoded UTF-8",
        )),
        None => Ok(None),
    }
}

/// A request a standby forwarded, under the claims the standby proved (the seal on it
/// says a node of this cluster sent it): the claims are checked against the route here too.
fn admit_forwarded(mut request: Request, claims: Claims) -> Result<Request, ApiError> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let segments = segments_of(&path)?;
    if !classify(&method, &path, segments.as_deref()).allows(&claims) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{:?} {} may not {method} {path}", claims.role, claims.sub),
        ));
    }
    request.extensions_mut().insert(claims);
    Ok(request)
}

/// Credentials to claims, claims against the route: the request to serve (with its claims),
/// or the refusal to answer.
pub(crate) async fn admit(shared: &AppState, request: Request) -> Result<Request, Response> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    if let Some(super::cluster::Forwarded(claims)) = request.extensions().get().cloned() {
        return admit_forwarded(request, claims).map_err(IntoResponse::into_response);
    }
    if shared.access.authority.is_none() {
        // HTTP/2 names the host in the URI's authority, not in a header.
        let host = request
            .headers()
            .get(header::HOST)
            .map(|value| value.to_str().unwrap_or("\u{fffd}"))
            .or_else(|| {
                request
                    .uri()
                    .authority()
                    .map(|authority| authority.as_str())
            });
        if !shared.access.host_allowed(host) {
            return Err(refused(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_host",
                format!(
                    "this server takes no credentials and answers only requests to its \
                     address or localhost, not {}; name the host in [auth] allowed_hosts, \
                     or configure a secret",
                    host.unwrap_or_default()
                ),
            ));
        }
    }
    let segments = segments_of(&path).map_err(IntoResponse::into_response)?;
    let need = classify(&method, &path, segments.as_deref());
    if matches!(need, Need::Public) {
        return Ok(request);
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
            return Err(refused(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "pages on {} may not change this server",
                    origin.unwrap_or_default()
                ),
            ));
        }
    }
    let platform = request
        .headers()
        .get("x-stockpulse-platform")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    // A token, when the request carries one, decides; the platform headers are read only
    // without one (a proxy may add them to every request it forwards).
    let has_token = token(request.headers(), request.uri().query()).is_some();
    let request = match platform {
        Some(platform) if shared.access.authority.is_some() && !has_token => {
            // Signed webhooks place orders, nothing else: a captured signature cannot be
            // replayed against another route.
            if method != Method::POST || path != "/api/v1/orders" {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a signed platform webhook may only POST /api/v1/orders".to_owned(),
                ));
            }
            signed_webhook(shared, request, platform).await?
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
                    return Err(refused(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        error.to_string(),
                    ));
                }
            }
        }
    };
    let claims = request
        .extensions()
        .get::<Claims>()
        .cloned()
        .unwrap_or_else(Claims::open);
    if !need.allows(&claims) {
        return Err(refused(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{:?} {} may not {method} {path}", claims.role, claims.sub),
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_they_change() {
        let need = |method: Method, path: &'static str| {
            let segments = api_segments(path).map(|decoded| decoded.expect("decodes"));
            match classify(&method, path, segments.as_deref()) {
                Need::Public => "public".to_owned(),
                Need::Authenticated => "authenticated".to_owned(),
                Need::Act(action) => format!("{action:?}"),
            }
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
        assert_eq!(
            need(Method::GET, "/api/v1/rooms/r1/report.csv"),
            "ReadRoom(\"r1\")"
        );
        assert_eq!(need(Method::PUT, "/api/v1/rooms/r1"), "OperateRoom(\"r1\")");
        assert_eq!(
            need(Method::POST, "/api/v1/rooms/r1/listings/A/halt"),
            "OperateRoom(\"r1\")"
        );
        assert_eq!(need(Method::POST, "/api/v1/alerts/3/ack"), "Acknowledge");
        assert_eq!(need(Method::GET, "/api/v1/deliveries"), "ReadAll");
        assert_eq!(
            need(Method::GET, "/api/v1/rooms/%E6%8A%96%E9%9F%B31"),
            "ReadRoom(\"抖音1\")"
        );
        assert_eq!(
            need(Method::POST, "/api/v1/rooms/r%31/listings/A/halt"),
            "OperateRoom(\"r1\")"
        );
        assert_eq!(
            need(Method::PUT, "/api/v1/rooms/r%2531"),
            "OperateRoom(\"r%31\")"
        );
    }

    #[test]
    fn without_a_secret_only_addresses_localhost_and_listed_names_are_served() {
        let open = Access {
            authority: None,
            platforms: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: vec!["screen.shop.example".to_owned()],
        };
        for host in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "[::1]",
            "10.0.0.7:8080",
            "screen.shop.example:8080",
        ] {
            assert!(open.host_allowed(Some(host)), "{host}");
        }
        for host in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1.evil.example",
            "localhost.evil.example:80",
            "[::1",
            "[evil]:80",
            "127.0.0.1:port",
            "",
        ] {
            assert!(!open.host_allowed(Some(host)), "{host}");
        }
    }

    #[test]
    fn browsers_may_open_the_websocket_from_this_server_or_a_listed_origin() {
        let open = Access {
            authority: None,
            platforms: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
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
