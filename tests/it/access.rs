//! Access control over the real server with a secret configured: every role against the
//! routes and WebSocket operations it may and may not use, tokens that are missing,
//! malformed, forged or expired, signed order webhooks, and the WebSocket origin check.
//! What is refused changes nothing.

use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stockpulse::auth::{Authority, Claims, Role};
use stockpulse::config::{AuthConfig, ConfigLayer, PlatformSecret};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::push::{Socket, next_messages, send};
use crate::support::{START_MILLIS, TestServer, code};

const SECRET: &str = "a server secret of at least 32 bytes!";
const PLATFORM_SECRET: &str = "douyin webhook secret";

fn token(role: Role, rooms: Option<&[&str]>, expires_in_s: i64) -> String {
    let exp = (START_MILLIS / 1000).saturating_add_signed(expires_in_s);
    Authority::new(SECRET.as_bytes()).issue(&Claims {
        sub: format!("{role:?}").to_lowercase(),
        role,
        rooms: rooms.map(|rooms| rooms.iter().map(|room| (*room).to_owned()).collect()),
        exp,
    })
}

async fn secured() -> TestServer {
    let server = TestServer::with_config(ConfigLayer {
        auth: Some(AuthConfig {
            secret: Some(SECRET.to_owned()),
            allowed_origins: vec!["https://screen.example.com".to_owned()],
            allowed_hosts: Vec::new(),
            platforms: vec![PlatformSecret {
                name: "douyin".to_owned(),
                secret: PLATFORM_SECRET.to_owned(),
            }],
        }),
        ..ConfigLayer::default()
    })
    .await;
    let admin = token(Role::Admin, None, 3600);
    for (sku, total) in [("A", 100), ("B", 100)] {
        let status = call(
            &server,
            Some(&admin),
            "PUT",
            &format!("/api/v1/skus/{sku}"),
            Some(json!({"total": total})),
        )
        .await
        .0;
        assert_eq!(status, StatusCode::OK);
    }
    for room in ["r1", "r2"] {
        let body = json!({
            "starts_at": "2026-11-25T12:00:00Z",
            "ends_at": "2026-11-25T15:00:00Z",
            "listings": [{"sku": "A", "forecast": 50}],
        });
        let (status, answer) = call(
            &server,
            Some(&admin),
            "PUT",
            &format!("/api/v1/rooms/{room}"),
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    server
}

/// (credential, method, path, body, expected status).
type Case<'a> = (Option<&'a str>, &'a str, &'a str, Option<Value>, StatusCode);

async fn call(
    server: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = server.client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The stock of A, which no refused request may change.
async fn stock_of_a(server: &TestServer) -> Value {
    let admin = token(Role::Admin, None, 3600);
    call(server, Some(&admin), "GET", "/api/v1/skus/A", None)
        .await
        .1
}

#[tokio::test]
async fn every_role_gets_exactly_its_routes() {
    // Goal: a matrix of roles × routes: allowed calls succeed, the others get 403 (or 401
    // without valid credentials) and change nothing.
    let server = secured().await;
    let admin = token(Role::Admin, None, 3600);
    let operator = token(Role::Operator, Some(&["r1"]), 3600);
    let chief = token(Role::Operator, None, 3600);
    let ingest = token(Role::Ingest, None, 3600);
    let screen = token(Role::Viewer, Some(&["r1"]), 3600);
    let viewer = token(Role::Viewer, None, 3600);
    let expired = token(Role::Admin, None, -1);
    let forged = Authority::new(b"not the server's secret, but 32+ bytes").issue(&Claims {
        sub: "mallory".to_owned(),
        role: Role::Admin,
        rooms: None,
        exp: u64::MAX,
    });
    let before = stock_of_a(&server).await;
    let mut serial = 0;
    let mut order = || {
        serial += 1;
        json!({"order_id": format!("m{serial}"), "sku": "B", "qty": 1, "platform": "douyin"})
    };
    let room = json!({"starts_at": "2026-11-25T12:00:00Z", "ends_at": "2026-11-25T15:00:00Z", "listings": [{"sku": "A", "forecast": 60}]});
    let viewer_query = format!("/api/v1/skus?limit=5&token={viewer}");
    let cases: Vec<Case<'_>> = vec![
        (None, "GET", "/api/v1/skus", None, StatusCode::UNAUTHORIZED),
        (
            Some("garbage"),
            "GET",
            "/api/v1/skus",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some(&expired),
            "GET",
            "/api/v1/skus",
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Some(&forged),
            "PUT",
            "/api/v1/skus/A",
            Some(json!({"total": 1})),
            StatusCode::UNAUTHORIZED,
        ),
        (None, "GET", "/healthz", None, StatusCode::OK),
        (None, "GET", "/", None, StatusCode::OK),
        (Some(&admin), "GET", "/metrics", None, StatusCode::OK),
        (
            Some(&screen),
            "GET",
            "/metrics",
            None,
            StatusCode::FORBIDDEN,
        ),
        // Stock.
        (
            Some(&chief),
            "POST",
            "/api/v1/skus/B/restock",
            Some(json!({"qty": 1})),
            StatusCode::OK,
        ),
        (
            Some(&operator),
            "POST",
            "/api/v1/skus/B/restock",
            Some(json!({"qty": 1})),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&operator),
            "GET",
            "/api/v1/deliveries",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&operator),
            "GET",
            "/api/v1/rooms/r1",
            None,
            StatusCode::OK,
        ),
        (
            Some(&ingest),
            "POST",
            "/api/v1/skus/A/restock",
            Some(json!({"qty": 1})),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&viewer),
            "POST",
            "/api/v1/skus/A/halt",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&screen),
            "PUT",
            "/api/v1/skus/A",
            Some(json!({"total": 5})),
            StatusCode::FORBIDDEN,
        ),
        // Orders.
        (
            Some(&ingest),
            "POST",
            "/api/v1/orders",
            Some(order()),
            StatusCode::CREATED,
        ),
        (
            Some(&admin),
            "POST",
            "/api/v1/orders",
            Some(order()),
            StatusCode::CREATED,
        ),
        (
            Some(&operator),
            "POST",
            "/api/v1/orders",
            Some(order()),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&viewer),
            "POST",
            "/api/v1/orders/batch",
            Some(json!({"ops": []})),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&screen),
            "POST",
            "/api/v1/orders/m1/cancel",
            None,
            StatusCode::FORBIDDEN,
        ),
        // Rooms.
        (
            Some(&operator),
            "PUT",
            "/api/v1/rooms/r1",
            Some(room.clone()),
            StatusCode::OK,
        ),
        (
            Some(&operator),
            "PUT",
            "/api/v1/rooms/r2",
            Some(room.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&operator),
            "POST",
            "/api/v1/rooms/r2/listings/A/halt",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&ingest),
            "POST",
            "/api/v1/rooms/r1/listings/A/halt",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&screen),
            "PUT",
            "/api/v1/rooms/r1/listings/A/forecast",
            Some(json!({"forecast": 9})),
            StatusCode::FORBIDDEN,
        ),
        // Reads.
        (
            Some(&screen),
            "GET",
            "/api/v1/rooms/r1",
            None,
            StatusCode::OK,
        ),
        (
            Some(&screen),
            "GET",
            "/api/v1/rooms/r2",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&screen),
            "GET",
            "/api/v1/skus",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&screen),
            "GET",
            "/api/v1/orders/m1",
            None,
            StatusCode::FORBIDDEN,
        ),
        (Some(&viewer), "GET", "/api/v1/skus", None, StatusCode::OK),
        (None, "GET", &viewer_query, None, StatusCode::OK),
        (
            Some(&viewer),
            "GET",
            "/api/v1/deliveries",
            None,
            StatusCode::OK,
        ),
        (
            Some(&ingest),
            "GET",
            "/api/v1/orders/m1",
            None,
            StatusCode::OK,
        ),
        // Alerts.
        (
            Some(&viewer),
            "POST",
            "/api/v1/alerts/1/ack",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Some(&ingest),
            "POST",
            "/api/v1/alerts/1/ack",
            None,
            StatusCode::FORBIDDEN,
        ),
    ];
    for (credential, method, path, body, expected) in cases {
        let (status, answer) = call(&server, credential, method, path, body).await;
        assert_eq!(
            status, expected,
            "{method} {path} with {credential:?}: {answer}"
        );
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(code(&answer), "unauthorized");
        }
        if status == StatusCode::FORBIDDEN && path.starts_with("/api") {
            assert_eq!(code(&answer), "forbidden");
        }
    }
    assert_eq!(stock_of_a(&server).await["total"], before["total"]);
    assert_eq!(stock_of_a(&server).await["halted"], false);

    let (_, rooms) = call(&server, Some(&screen), "GET", "/api/v1/rooms", None).await;
    let listed: Vec<&Value> = rooms["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|room| &room["room"])
        .collect();
    assert_eq!(listed, [&json!("r1")]);
    server.stop().await;
}

async fn socket(server: &TestServer, query: &str, origin: Option<&str>) -> Result<Socket, u16> {
    let mut request = format!("ws://{}/ws{query}", server.address)
        .into_client_request()
        .expect("a request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("a header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("handshake: {error}"),
    }
}

#[tokio::test]
async fn websocket_sessions_follow_only_what_their_token_allows() {
    // Goal: a screen's token in the query follows its room and nothing else and may not
    // order; a session without a token must authenticate first; a foreign origin is refused.
    let server = secured().await;
    let screen = token(Role::Viewer, Some(&["r1"]), 3600);
    let mut session = socket(&server, &format!("?token={screen}"), None)
        .await
        .expect("open");
    send(
        &mut session,
        json!({"op": "subscribe", "topics": ["room:r1"]}),
    )
    .await;
    assert_eq!(next_messages(&mut session).await[0]["type"], "snapshot");
    for message in [
        json!({"op": "subscribe", "topics": ["room:r2"]}),
        json!({"op": "subscribe", "topics": ["alerts"]}),
        json!({"op": "reserve", "id": "c1", "order_id": "w1", "sku": "A", "qty": 1, "platform": "douyin"}),
        json!({"op": "ack", "id": 1}),
    ] {
        send(&mut session, message.clone()).await;
        // The room's own changes may still be on their way: the refusal is what counts.
        let answer = loop {
            let messages = next_messages(&mut session).await;
            if let Some(error) = messages
                .into_iter()
                .find(|message| message["type"] == "error")
            {
                break error;
            }
        };
        assert_eq!(answer["code"], "forbidden", "{message} → {answer:?}");
    }

    // An operator of r1 follows r1's alerts, not every room's.
    let operator = token(Role::Operator, Some(&["r1"]), 3600);
    let mut console = socket(&server, &format!("?token={operator}"), None)
        .await
        .expect("open");
    for (topics, expected) in [
        (json!(["alerts"]), "forbidden"),
        (json!(["alerts:r2"]), "forbidden"),
        (json!(["alerts:r1", "room:r1"]), "snapshot"),
    ] {
        send(&mut console, json!({"op": "subscribe", "topics": topics})).await;
        let answer = next_messages(&mut console).await;
        let got = answer[0]["code"].as_str().or(answer[0]["type"].as_str());
        assert_eq!(got, Some(expected), "{topics} → {answer:?}");
    }

    let mut anonymous = socket(&server, "", None).await.expect("open");
    send(
        &mut anonymous,
        json!({"op": "subscribe", "topics": ["room:r1"]}),
    )
    .await;
    assert_eq!(
        next_messages(&mut anonymous).await[0]["code"],
        "unauthorized"
    );
    send(
        &mut anonymous,
        json!({"op": "auth", "token": "sp1.bad.token"}),
    )
    .await;
    assert_eq!(
        next_messages(&mut anonymous).await[0]["code"],
        "unauthorized"
    );
    send(&mut anonymous, json!({"op": "auth", "token": screen})).await;
    assert_eq!(next_messages(&mut anonymous).await[0]["type"], "authed");
    send(
        &mut anonymous,
        json!({"op": "subscribe", "topics": ["room:r1"]}),
    )
    .await;
    assert_eq!(next_messages(&mut anonymous).await[0]["type"], "snapshot");

    assert_eq!(
        socket(&server, "", Some("https://evil.example"))
            .await
            .err(),
        Some(403)
    );
    let mut listed = socket(
        &server,
        &format!("?token={screen}"),
        Some("https://screen.example.com"),
    )
    .await
    .expect("a listed origin");
    listed
        .send(Message::Text(r#"{"op":"ping"}"#.into()))
        .await
        .expect("sent");
    assert_eq!(next_messages(&mut listed).await[0]["type"], "pong");
    server.stop().await;
}

#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    // Goal: a session whose token runs out is closed (4003) at its next message, and the
    // time it followed changes nothing after.
    let server = secured().await;
    let short = token(Role::Viewer, Some(&["r1"]), 60);
    let mut session = socket(&server, &format!("?token={short}"), None)
        .await
        .expect("open");
    send(&mut session, json!({"op": "ping"})).await;
    assert_eq!(next_messages(&mut session).await[0]["type"], "pong");
    server.clock.advance(std::time::Duration::from_secs(61));
    send(&mut session, json!({"op": "ping"})).await;
    let closed = loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(std::time::Duration::from_secs(5), session.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|frame| u16::from(frame.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(closed, Some(4003));
    server.stop().await;
}

fn signed(body: &str, timestamp: u64, secret: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_platform_signs_its_order_webhooks() {
    // Goal: an order signed by a known platform within five minutes is taken; a bad
    // signature, a stale timestamp or an unknown platform is refused and places nothing.
    let server = secured().await;
    let now = START_MILLIS / 1000;
    let post = |body: String, platform: &'static str, timestamp: u64, signature: String| {
        let request = server
            .client
            .post(server.url("/api/v1/orders"))
            .header("content-type", "application/json")
            .header("x-stockpulse-platform", platform)
            .header("x-stockpulse-timestamp", timestamp.to_string())
            .header("x-stockpulse-signature", signature)
            .body(body);
        async move { request.send().await.expect("answered").status() }
    };
    let body = |id: &str| format!(r#"{{"order_id":"{id}","sku":"A","qty":2,"platform":"douyin"}}"#);
    let good = body("dy-1");
    assert_eq!(
        post(
            good.clone(),
            "douyin",
            now,
            signed(&good, now, PLATFORM_SECRET)
        )
        .await,
        StatusCode::CREATED
    );
    let refused = [
        (
            body("dy-2"),
            "douyin",
            now,
            signed(&body("dy-other"), now, PLATFORM_SECRET),
        ),
        (
            body("dy-3"),
            "douyin",
            now - 301,
            signed(&body("dy-3"), now - 301, PLATFORM_SECRET),
        ),
        (
            body("dy-4"),
            "kuaishou",
            now,
            signed(&body("dy-4"), now, PLATFORM_SECRET),
        ),
        (
            body("dy-5"),
            "douyin",
            now,
            signed(&body("dy-5"), now, "a guessed secret!!"),
        ),
    ];
    for (body, platform, timestamp, signature) in refused {
        assert_eq!(
            post(body, platform, timestamp, signature).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // A captured signature works nowhere but on placing the platform's own orders.
    let cancel = server
        .client
        .post(server.url("/api/v1/orders/dy-1/cancel"))
        .header("x-stockpulse-platform", "douyin")
        .header("x-stockpulse-timestamp", now.to_string())
        .header(
            "x-stockpulse-signature",
            signed(&good, now, PLATFORM_SECRET),
        )
        .body(good.clone())
        .send()
        .await
        .expect("answered");
    assert_eq!(cancel.status(), StatusCode::FORBIDDEN);
    let other = r#"{"order_id":"ks-1","sku":"A","qty":2,"platform":"kuaishou"}"#;
    assert_eq!(
        post(
            other.to_owned(),
            "douyin",
            now,
            signed(other, now, PLATFORM_SECRET)
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let admin = token(Role::Admin, None, 3600);
    for id in ["dy-2", "dy-3", "dy-4", "dy-5", "ks-1"] {
        let (status, _) = call(
            &server,
            Some(&admin),
            "GET",
            &format!("/api/v1/orders/{id}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id} was not placed");
    }
    assert_eq!(stock_of_a(&server).await["locked"], 2);
    // A token, when the request carries one, decides: the platform headers beside it (a
    // proxy may add them) are not read, whether their signature is bad or good.
    let with_token = |token: String, body: String, signature: String| {
        let request = server
            .client
            .post(server.url("/api/v1/orders"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("x-stockpulse-platform", "douyin")
            .header("x-stockpulse-timestamp", now.to_string())
            .header("x-stockpulse-signature", signature)
            .body(body);
        async move { request.send().await.expect("answered").status() }
    };
    let ingest = token(Role::Ingest, None, 3600);
    assert_eq!(
        with_token(ingest, body("dy-6"), "not a signature".to_owned()).await,
        StatusCode::CREATED
    );
    let viewer = token(Role::Viewer, None, 3600);
    assert_eq!(
        with_token(
            viewer,
            body("dy-7"),
            signed(&body("dy-7"), now, PLATFORM_SECRET)
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(stock_of_a(&server).await["locked"], 4);
    server.stop().await;
}

#[tokio::test]
async fn rooms_are_authorised_on_their_decoded_ids() {
    // Goal: a token scoped to a room reaches that room however its id is percent-encoded in
    // the path, and only that room: a Chinese room id requested encoded is its own room, and
    // an operator of room `r%31` cannot act on room `r1` by sending `r%31` in the path.
    // Method: rooms 抖音1, r1 and r%31 listing A; a viewer of 抖音1 reads it encoded; an
    // operator of r%31 halts a listing through /rooms/r%31 (refused, r1 unchanged) and
    // through /rooms/r%2531 (its own room, allowed).
    let server = secured().await;
    let admin = token(Role::Admin, None, 3600);
    for room in ["%E6%8A%96%E9%9F%B31", "r%2531"] {
        let body = json!({
            "starts_at": "2026-11-25T12:00:00Z",
            "ends_at": "2026-11-25T15:00:00Z",
            "listings": [{"sku": "A", "forecast": 50}],
        });
        let path = format!("/api/v1/rooms/{room}");
        let (status, answer) = call(&server, Some(&admin), "PUT", &path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    let screen = token(Role::Viewer, Some(&["抖音1"]), 3600);
    let (status, room) = call(
        &server,
        Some(&screen),
        "GET",
        "/api/v1/rooms/%E6%8A%96%E9%9F%B31",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    assert_eq!(room["room"], "抖音1");
    let (status, _) = call(&server, Some(&screen), "GET", "/api/v1/rooms/r1", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let operator = token(Role::Operator, Some(&["r%31"]), 3600);
    let (status, body) = call(
        &server,
        Some(&operator),
        "POST",
        "/api/v1/rooms/r%31/listings/A/halt",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, r1) = call(&server, Some(&admin), "GET", "/api/v1/rooms/r1", None).await;
    assert_eq!(r1["listings"][0]["halted"], false, "{r1}");
    let (status, body) = call(
        &server,
        Some(&operator),
        "POST",
        "/api/v1/rooms/r%2531/listings/A/halt",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room"], "r%31");
    server.stop().await;
}

#[tokio::test]
async fn without_a_secret_a_rebound_host_name_is_refused() {
    // Goal: with no secret every request is an administrator, so a page whose name was
    // re-bound to 127.0.0.1 (DNS rebinding) must not be served: its requests carry its own
    // name as Host, with a matching Origin.
    // Method: a server without a secret; a PUT with Host and Origin of evil.example is
    // refused with 421 misdirected_host and creates nothing, so is a /ws upgrade; the same
    // PUT to the address, or to localhost, is served.
    let server = TestServer::start().await;
    let port = server.address.port();
    let evil = format!("evil.example:{port}");
    let response = server
        .client
        .put(server.url("/api/v1/skus/REBIND"))
        .header("host", &evil)
        .header("origin", format!("http://{evil}"))
        .json(&json!({"total": 5}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    let body: Value = response.json().await.expect("an error body");
    assert_eq!(code(&body), "misdirected_host");
    let (status, _) = server.get("/api/v1/skus/REBIND").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut request = format!("ws://{}/ws", server.address)
        .into_client_request()
        .expect("a request");
    request
        .headers_mut()
        .insert("host", evil.parse().expect("a header value"));
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 421);
        }
        other => panic!("a rebound /ws was not refused: {:?}", other.map(|(_, r)| r)),
    }

    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let response = server
            .client
            .put(server.url("/api/v1/skus/LOCAL"))
            .header("host", host)
            .json(&json!({"total": 5}))
            .send()
            .await
            .expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK);
    }
    server.stop().await;
}

#[tokio::test]
async fn the_document_says_how_to_authenticate_and_which_roles_each_route_takes() {
    // Goal: with an auth secret, the API's document names the ways to authenticate (bearer,
    // `?token=`, a platform's signed webhook) and, on every route, the roles the server lets
    // through, decided by the same rules as requests. Method: read it without credentials
    // (it is public) and compare a few routes with the role matrix above.
    let server = secured().await;
    let response = reqwest::get(server.url("/api/openapi.json"))
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    let document: serde_json::Value = response.json().await.expect("JSON");
    let schemes = &document["components"]["securitySchemes"];
    for scheme in ["bearer", "token", "platform", "timestamp", "signature"] {
        assert!(schemes[scheme].is_object(), "no {scheme} scheme");
    }
    let roles = |path: &str, method: &str| document["paths"][path][method]["x-roles"].clone();
    assert_eq!(roles("/api/v1/orders", "post"), json!(["admin", "ingest"]));
    assert_eq!(
        roles("/api/v1/skus/{sku}", "put"),
        json!(["admin", "operator"])
    );
    assert_eq!(
        roles("/api/v1/alerts/{id}/ack", "post"),
        json!(["admin", "operator"])
    );
    assert_eq!(
        roles("/api/v1/skus", "get"),
        json!(["admin", "operator", "ingest", "viewer"])
    );
    let place = &document["paths"]["/api/v1/orders"]["post"]["security"];
    assert_eq!(place[0], json!({"bearer": ["admin", "ingest"]}));
    assert_eq!(
        place[2],
        json!({"platform": [], "timestamp": [], "signature": []})
    );
    assert_eq!(
        document["paths"]["/healthz"]["get"]["security"],
        json!([{}])
    );
    server.stop().await;
}
