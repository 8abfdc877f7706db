//! The demo's stand-in platforms: an HTTP receiver the demo serves itself, behind the
//! generic webhook contract, so `--demo` shows channel sync at work with nothing else
//! running. It is labelled as a stand-in wherever it shows (logs, the connectors' URL).
//!
//! It keeps each listing's stock as a platform does, applies an update's delta when it is
//! measured from the version it last applied (its quantity otherwise), and goes down for a
//! stretch of the show on one platform (`fail`), so the console shows a sync failing and
//! catching up.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::Value;

/// The secret the demo's connectors sign with and the stand-in checks.
pub(crate) const SECRET: &str = "demo-stand-in-platform-secret";
/// The platforms the stand-in plays.
pub(crate) const PLATFORMS: [&str; 2] = ["douyin", "kuaishou"];

/// One stand-in serving every platform at `/{platform}/stock`.
#[derive(Default)]
pub(crate) struct StandIn {
    /// (stock, last applied version) per listing.
    listings: Mutex<HashMap<String, (i64, u64)>>,
    /// The platform that is down, while it is.
    down: Mutex<Option<String>>,
    failing: AtomicBool,
}

impl StandIn {
    /// Takes `platform` down, or brings it back (`None`).
    pub(crate) fn fail(&self, platform: Option<&str>) {
        let mut down = self.down.lock();
        if down.as_deref() != platform {
            match platform {
                Some(name) => tracing::warn!(
                    platform = name,
                    "Demo: the stand-in platform goes down; its listings wait."
                ),
                None => {
                    tracing::info!("Demo: the stand-in platform is back; its listings catch up.")
                }
            }
        }
        *down = platform.map(str::to_owned);
        self.failing.store(platform.is_some(), Ordering::Release);
    }

    fn receive(&self, platform: &str, headers: &HeaderMap, body: &[u8]) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
        };
        let timestamp: u64 = header("x-stockpulse-timestamp").parse().unwrap_or(0);
        if header("x-stockpulse-signature")
            != crate::auth::sign_webhook(SECRET.as_bytes(), timestamp, body)
        {
            return StatusCode::UNAUTHORIZED;
        }
        if self.failing.load(Ordering::Acquire) && self.down.lock().as_deref() == Some(platform) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return StatusCode::BAD_REQUEST;
        };
        let mut listings = self.listings.lock();
        for update in request["updates"].as_array().into_iter().flatten() {
            let listing = update["listing"].as_str().unwrap_or_default().to_owned();
            let version = update["version"].as_u64().unwrap_or(0);
            let (stock, applied) = listings.get(&listing).copied().unwrap_or((0, 0));
            if version <= applied && applied != 0 {
                continue;
            }
            let measured_here = update["acknowledged_version"].as_u64() == Some(applied);
            let next = match update["delta"].as_i64() {
                Some(delta) if measured_here => stock + delta,
                _ => update["quantity"].as_i64().unwrap_or(0),
            };
            listings.insert(listing, (next.max(0), version));
        }
        StatusCode::OK
    }
}

/// Serves the stand-in on `listener` until the server stops.
pub(crate) async fn serve(
    stand_in: Arc<StandIn>,
    listener: std::net::TcpListener,
    stop: tokio_util::sync::CancellationToken,
) {
    let Ok(listener) = listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
    else {
        tracing::warn!("Demo: the stand-in platform cannot listen.");
        return;
    };
    let app = axum::Router::new().route(
        "/{platform}/stock",
        axum::routing::post(
            move |axum::extract::Path(platform): axum::extract::Path<String>,
                  headers: HeaderMap,
                  body: axum::body::Bytes| {
                let stand_in = stand_in.clone();
                async move { stand_in.receive(&platform, &headers, &body) }
            },
        ),
    );
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
}

/// The demo's connectors: one webhook per stand-in platform, at `address`.
pub(crate) fn connectors(address: std::net::SocketAddr) -> Vec<crate::channels::ChannelConfig> {
    PLATFORMS
        .iter()
        .map(|platform| crate::channels::ChannelConfig {
            platform: (*platform).to_owned(),
            connector: crate::channels::ConnectorKind::Webhook,
            url: format!("http://{address}/{platform}/stock"),
            secret: SECRET.to_owned(),
            secret_env: None,
            app_key: String::new(),
            access_token: String::new(),
            access_token_env: None,
            max_requests_per_s: 20,
            max_updates_per_request: 100,
            max_updates_per_listing_per_s: 5,
        })
        .collect()
}
