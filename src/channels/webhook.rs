//! The generic connector: `POST {url}` with `{"updates": [...]}`, signed as the alert
//! webhooks are (`docs/CHANNELS.md`).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::config::ChannelConfig;
use super::listing::Update;
use super::outcome::{Applied, Refused};
use crate::clock::Timestamp;

/// The longest a `Retry-After` is obeyed; a longer one is taken as this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// What the receiver says it applied: its platform's own number per listing.
#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    listings: Vec<Reported>,
}

#[derive(Deserialize)]
struct Reported {
    listing: String,
    quantity: u64,
}

/// The request body for `updates`.
pub(super) fn body(updates: &[Update]) -> String {
    let updates: Vec<serde_json::Value> = updates
        .iter()
        .map(|update| {
            json!({
                "platform": update.platform.as_str(),
                "sku": update.sku.as_str(),
                "listing": update.listing.as_str(),
                "quantity": update.quantity,
                "delta": update.delta,
                "acknowledged_version": update.acknowledged_version,
                "version": update.version,
                "key": update.key(),
                "reason": update.reason.as_str(),
            })
        })
        .collect();
    json!({ "updates": updates }).to_string()
}

/// The request's idempotency key: one update's key, or a digest of all of them.
fn request_key(updates: &[Update]) -> String {
    if let [update] = updates {
        return update.key();
    }
    let keys: Vec<String> = updates.iter().map(Update::key).collect();
    let hex = crate::auth::short_digest(keys.iter().map(String::as_bytes));
    format!("stockpulse-batch-{hex}")
}

/// One attempt: a 2xx answer applied every update (429: slow down; another 4xx: refused; a
/// 5xx or no answer: in doubt).
pub(super) async fn send(
    client: &reqwest::Client,
    config: &ChannelConfig,
    updates: &[Update],
    now: Timestamp,
) -> Result<Vec<Applied>, Refused> {
    let body = body(updates);
    let timestamp_s = now.as_millis() / 1000;
    let request = client
        .post(&config.url)
        .header("content-type", "application/json")
        .header("idempotency-key", request_key(updates))
        .header("x-stockpulse-timestamp", timestamp_s.to_string())
        .header(
            "x-stockpulse-signature",
            crate::auth::sign_webhook(config.secret.as_bytes(), timestamp_s, body.as_bytes()),
        );
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|error| Refused::InDoubt(error.to_string()))?;
    let status = response.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs)
            .min(RETRY_AFTER_MAX);
        return Err(Refused::SlowDown(wait, format!("answered {status}")));
    }
    if status.is_client_error() && status != reqwest::StatusCode::REQUEST_TIMEOUT {
        return Err(Refused::Rejected(format!("answered {status}")));
    }
    if !status.is_success() {
        return Err(Refused::InDoubt(format!("answered {status}")));
    }
    // The answer's body is optional; one that does not parse reports nothing.
    let answer: Answer = response.json().await.unwrap_or_default();
    Ok(updates
        .iter()
        .map(|update| Applied {
            quantity: update.quantity,
            reported: answer
                .listings
                .iter()
                .find(|reported| reported.listing == update.listing.as_str())
                .map(|reported| reported.quantity),
        })
        .collect())
}
