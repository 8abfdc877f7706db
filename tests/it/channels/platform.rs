//! A stand-in platform behind the generic webhook contract (`docs/CHANNELS.md`): a real HTTP
//! server that keeps each listing's stock as a platform does, sells from it itself, checks
//! every request's signature, applies an update once per key and only above the version it
//! last applied, applies `delta` as platforms' incremental APIs do when it is measured from
//! the version it last applied (`quantity` otherwise, counted: an overwrite would undo the
//! sales the platform made meanwhile),
//! never lets stock go below zero, and can answer 429 with `Retry-After` or 500 on demand,
//! or apply a request and lose its answer.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;

pub(crate) const SECRET: &str = "platform-secret-0123456789";

#[derive(Default)]
struct Inner {
    /// listing → (stock, last applied version).
    listings: BTreeMap<String, (i64, u64)>,
    keys: HashSet<String>,
    /// Updates received, in order: (listing, quantity, delta, version, key, reason).
    updates: Vec<Value>,
    requests: u32,
    bad_signatures: u32,
    /// Answer the next this many requests 429 (with `Retry-After: 1`), then this many 500.
    throttle_next: u32,
    fail_next: u32,
    throttled: u32,
    failed: u32,
    /// Apply the next this many requests, then answer 500 as if the answer were lost.
    lose_next: u32,
    lost: u32,
    /// Updates applied as `quantity` rather than as `delta`.
    overwrites: u32,
}

#[derive(Clone)]
pub(crate) struct Platform {
    pub(crate) address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Platform {
    pub(crate) async fn start() -> Platform {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let platform = Platform {
            address: listener.local_addr().expect("address"),
            inner: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/stock", axum::routing::post(receive))
            .with_state(platform.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        platform
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/stock", self.address)
    }

    /// What the platform's listing shows, when it has heard of it.
    pub(crate) fn stock(&self, listing: &str) -> Option<i64> {
        self.inner
            .lock()
            .listings
            .get(listing)
            .map(|(stock, _)| *stock)
    }

    /// A buyer takes `qty` on the platform: its listing goes down before stockpulse hears of
    /// the order. False when the listing shows too little (the platform refuses).
    pub(crate) fn sell(&self, listing: &str, qty: i64) -> bool {
        let mut inner = self.inner.lock();
        match inner.listings.get_mut(listing) {
            Some((stock, _)) if qty <= *stock => {
                *stock -= qty;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn updates(&self) -> Vec<Value> {
        self.inner.lock().updates.clone()
    }

    pub(crate) fn requests(&self) -> u32 {
        self.inner.lock().requests
    }

    pub(crate) fn bad_signatures(&self) -> u32 {
        self.inner.lock().bad_signatures
    }

    /// The next `throttled` requests get 429, then `failed` get 500.
    pub(crate) fn refuse_next(&self, throttled: u32, failed: u32) {
        let mut inner = self.inner.lock();
        inner.throttle_next = throttled;
        inner.fail_next = failed;
    }

    /// The next `count` requests are applied and then answered 500: the answer is lost.
    pub(crate) fn lose_next(&self, count: u32) {
        self.inner.lock().lose_next = count;
    }

    /// Updates applied as `quantity` (nothing acknowledged yet, or measured from another
    /// version than the one applied last).
    pub(crate) fn overwrites(&self) -> u32 {
        self.inner.lock().overwrites
    }

    /// Requests applied whose answer was lost.
    pub(crate) fn lost(&self) -> u32 {
        self.inner.lock().lost
    }

    /// (429s answered, 500s answered).
    pub(crate) fn refused(&self) -> (u32, u32) {
        let inner = self.inner.lock();
        (inner.throttled, inner.failed)
    }
}

fn signed(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(header("x-stockpulse-timestamp").as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    header("x-stockpulse-signature") == expected && !header("idempotency-key").is_empty()
}

async fn receive(State(platform): State<Platform>, headers: HeaderMap, body: Bytes) -> Response {
    let mut inner = platform.inner.lock();
    inner.requests += 1;
    if !signed(&headers, &body) {
        inner.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if 0 < inner.throttle_next {
        inner.throttle_next -= 1;
        inner.throttled += 1;
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
    }
    if 0 < inner.fail_next {
        inner.fail_next -= 1;
        inner.failed += 1;
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut reported = Vec::new();
    for update in request["updates"].as_array().cloned().unwrap_or_default() {
        inner.updates.push(update.clone());
        let listing = update["listing"].as_str().unwrap_or_default().to_owned();
        let key = update["key"].as_str().unwrap_or_default().to_owned();
        let version = update["version"].as_u64().unwrap_or(0);
        let quantity = update["quantity"].as_i64().unwrap_or(0);
        let (stock, applied) = inner.listings.get(&listing).copied().unwrap_or((0, 0));
        let fresh = inner.keys.insert(key) && applied < version;
        if fresh {
            let measured_from_here = update["acknowledged_version"].as_u64() == Some(applied);
            let next = match update["delta"].as_i64() {
                Some(delta) if measured_from_here => stock + delta,
                _ => {
                    inner.overwrites += 1;
                    quantity
                }
            };
            // Stock may not go below zero: the platform clamps (Douyin refuses; either way
            // the listing sells nothing more).
            inner
                .listings
                .insert(listing.clone(), (next.max(0), version));
        }
        let now = inner.listings.get(&listing).map_or(0, |(stock, _)| *stock);
        reported.push(json!({"listing": listing, "quantity": now}));
    }
    if 0 < inner.lose_next {
        inner.lose_next -= 1;
        inner.lost += 1;
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (StatusCode::OK, Json(json!({ "listings": reported }))).into_response()
}
