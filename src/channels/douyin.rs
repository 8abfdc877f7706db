//! The Douyin shop (抖店) connector: `sku.syncStock` of its open platform, one listing per
//! request, signed as its SDK signs.
//!
//! What it relies on, from the platform's SDKs and documentation (`docs/CHANNELS.md` says
//! what a shop must confirm): `POST {url}/sku/syncStock` with `app_key`, `method`,
//! `timestamp` (Unix seconds), `v=2`, `sign_method=hmac-sha256`, `sign` and `access_token`
//! in the query and `param_json` as the body; the sign is the lowercase hex HMAC-SHA256,
//! keyed by the app secret, of the secret + `app_key…method…param_json…timestamp…v2` +
//! the secret, `param_json` with its keys sorted; an update with a delta is incremental
//! (`incremental: true`, `stock_num` the delta, `idempotent_id` the update's key and the
//! acknowledgement its delta counts from), one
//! without sets `stock_num`; `code` 10000 is success, 60000 a rate limit, a repeated
//! `idempotent_id` (`isv.parameter-invalid:40010`, `isv.idempotent-id-existed`) was applied
//! already, and a decrease below zero is refused with 库存不足.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::config::ChannelConfig;
use super::listing::Update;
use super::outcome::{Applied, Refused};
use crate::clock::Timestamp;

const METHOD: &str = "sku.syncStock";
/// Douyin's code for a call that succeeded, and for a rate limit.
const SUCCESS: i64 = 10_000;
const RATE_LIMITED: i64 = 60_000;

#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    sub_code: String,
    #[serde(default)]
    sub_msg: String,
}

impl Answer {
    fn describe(&self) -> String {
        format!(
            "code {} {} ({} {})",
            self.code, self.msg, self.sub_code, self.sub_msg
        )
    }

    /// The `idempotent_id` was used before: the update was applied then.
    fn repeated(&self) -> bool {
        self.sub_code.ends_with(":40010") || self.sub_code == "isv.idempotent-id-existed"
    }

    /// A decrease would take the listing below zero.
    fn short(&self) -> bool {
        self.sub_code.ends_with(":2010012") || self.sub_msg.contains("库存不足")
    }
}

/// The lowercase hex HMAC-SHA256 Douyin's open platform signs a call with.
pub fn sign(app_key: &str, secret: &str, timestamp: &str, param_json: &str) -> String {
    let pattern = format!(
        "{secret}app_key{app_key}method{METHOD}param_json{param_json}timestamp{timestamp}v2{secret}"
    );
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(pattern.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The update's key and the acknowledgement its delta counts from: the same on every retry
/// and every node, and another one when the delta is measured anew (after a listing was set
/// to 0), so Douyin never takes a new delta for a repeat of a refused one.
fn idempotent_id(update: &Update) -> String {
    format!(
        "{}-a{}",
        update.key(),
        update.acknowledged_version.unwrap_or(0)
    )
}

/// `param_json` for one update: its keys sorted (a `BTreeMap`), compact.
fn param_json(update: &Update, sku_id: i64, overwrite_to: Option<u64>) -> String {
    let mut params: BTreeMap<&str, Value> = BTreeMap::new();
    params.insert("sku_id", json!(sku_id));
    match (update.delta, overwrite_to) {
        (Some(delta), None) => {
            params.insert("incremental", json!(true));
            params.insert("idempotent_id", json!(idempotent_id(update)));
            params.insert("stock_num", json!(delta));
        }
        (_, to) => {
            params.insert("incremental", json!(false));
            params.insert("stock_num", json!(to.unwrap_or(update.quantity)));
        }
    }
    serde_json::to_string(&params).unwrap_or_default()
}

/// One `sku.syncStock` call.
async fn call(
    client: &reqwest::Client,
    config: &ChannelConfig,
    param_json: String,
    now: Timestamp,
) -> Result<Answer, Refused> {
    let timestamp = (now.as_millis() / 1000).to_string();
    let sign = sign(&config.app_key, &config.secret, &timestamp, &param_json);
    let url = format!("{}/sku/syncStock", config.url.trim_end_matches('/'));
    let query = [
        ("app_key", config.app_key.as_str()),
        ("method", METHOD),
        ("timestamp", timestamp.as_str()),
        ("v", "2"),
        ("sign_method", "hmac-sha256"),
        ("sign", sign.as_str()),
        ("access_token", config.access_token.as_str()),
    ];
    let url = reqwest::Url::parse_with_params(&url, query)
        .map_err(|error| Refused::Rejected(format!("the url does not parse: {error}")))?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-open-no-old-err-code", "1")
        .body(param_json)
        .send()
        .await
        .map_err(|error| Refused::InDoubt(error.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Refused::InDoubt(format!("answered {status}")));
    }
    response
        .json()
        .await
        .map_err(|error| Refused::InDoubt(format!("an answer that does not read: {error}")))
}

/// Delivers `updates` one call each (the connector takes one per request).
pub(super) async fn send(
    client: &reqwest::Client,
    config: &ChannelConfig,
    updates: &[Update],
    now: Timestamp,
) -> Result<Vec<Applied>, Refused> {
    let mut applied = Vec::with_capacity(updates.len());
    for update in updates {
        applied.push(send_one(client, config, update, now).await?);
    }
    Ok(applied)
}

async fn send_one(
    client: &reqwest::Client,
    config: &ChannelConfig,
    update: &Update,
    now: Timestamp,
) -> Result<Applied, Refused> {
    let Ok(sku_id) = update.listing.as_str().parse::<i64>() else {
        return Err(Refused::Rejected(format!(
            "listing {} is not a Douyin sku_id (a number)",
            update.listing
        )));
    };
    let done = |quantity| Applied {
        quantity,
        reported: None,
    };
    if update.delta == Some(0) {
        return Ok(done(update.quantity));
    }
    let answer = call(client, config, param_json(update, sku_id, None), now).await?;
    match answer.code {
        SUCCESS => Ok(done(update.quantity)),
        _ if answer.repeated() => Ok(done(update.quantity)),
        RATE_LIMITED => Err(Refused::SlowDown(Duration::from_secs(1), answer.describe())),
        _ if answer.short() => {
            // The listing has fewer units than the delta takes off: its platform sold some
            // we have not heard of yet. Nothing may be shown: set it to 0.
            let zero = call(client, config, param_json(update, sku_id, Some(0)), now).await?;
            match zero.code {
                SUCCESS => Ok(done(0)),
                _ => Err(Refused::Rejected(zero.describe())),
            }
        }
        code if (20_000..30_000).contains(&code) => Err(Refused::InDoubt(answer.describe())),
        _ => Err(Refused::Rejected(answer.describe())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sign_matches_the_sdks_algorithm() {
        // A vector computed from the official Go SDK's algorithm (utils/sign_util.go).
        let param_json = r#"{"idempotent_id":"req-0001","incremental":true,"product_id":3600000000000000001,"sku_id":1234567890,"stock_num":-5}"#;
        let signed = super::sign(
            "7000000000000000001",
            "test-secret",
            "1700000000",
            param_json,
        );
        assert_eq!(
            signed,
            "17716fdcb2fcdc7e2b5aab9e7f2ebe50dd8cfdeb6df36f2448fd7e2aaa42f193"
        );
    }
}
