//! Webhook requests: the body each format takes, the signature, and one attempt to send.
//!
//! Every request carries `Idempotency-Key` (the same on every attempt of a delivery),
//! `X-Stockpulse-Timestamp` (Unix seconds) and `X-Stockpulse-Signature:
//! sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" under the receiver's secret>`.

use std::time::Duration;

use serde_json::{Value, json};

use super::config::{Format, ReceiverConfig};
use super::dispatch::AlertRecord;
use crate::clock::{Rfc3339, Timestamp};

/// How long one attempt may take.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One line about what a message carries, the worst alert first: in Chinese and in English.
fn summaries(alerts: &[&AlertRecord], held_back: u64, escalation: bool) -> (String, String) {
    let worst = alerts
        .iter()
        .min_by_key(|record| std::cmp::Reverse(record.notice.to))
        .map(|record| &record.notice);
    let (mut zh, mut en) = (String::new(), String::new());
    if escalation {
        zh.push_str("【未确认】");
        en.push_str("UNACKNOWLEDGED: ");
    }
    if let Some(notice) = worst {
        let (room, sku) = (&notice.room, &notice.sku);
        zh.push_str(&format!(
            "直播间 {room} 商品 {sku}：{} → {}",
            notice.from.zh_cn(),
            notice.to.zh_cn()
        ));
        en.push_str(&format!(
            "{room} {sku} {} -> {}",
            notice.from.as_str(),
            notice.to.as_str()
        ));
    }
    let more = alerts.len().saturating_sub(1);
    if 0 < more {
        zh.push_str(&format!("，另有 {more} 条"));
        en.push_str(&format!(" and {more} more"));
    }
    if 0 < held_back {
        zh.push_str(&format!("；限流暂缓 {held_back} 条"));
        en.push_str(&format!("; {held_back} held back by the rate limit"));
    }
    (zh, en)
}

/// The request body for `receiver`.
pub(super) fn body(
    receiver: &ReceiverConfig,
    key: &str,
    alerts: &[&AlertRecord],
    held_back: u64,
    escalation: bool,
    at: Timestamp,
) -> String {
    let (summary_zh, summary) = summaries(alerts, held_back, escalation);
    let value = match receiver.format {
        Format::Json => json!({
            "idempotency_key": key,
            "sent_at": Rfc3339(at),
            "receiver": receiver.name,
            "escalation": escalation,
            "held_back": held_back,
            "summary": summary,
            "summary_zh": summary_zh,
            "alerts": alerts.iter().map(|record| record.notice.body.as_ref()).collect::<Vec<&Value>>(),
        }),
        Format::Sms => {
            let worst = alerts.iter().max_by_key(|record| record.notice.to);
            let parameters = json!({
                "room": worst.map(|record| record.notice.room.as_str()).unwrap_or_default(),
                "sku": worst.map(|record| record.notice.sku.as_str()).unwrap_or_default(),
                "level": worst.map(|record| record.notice.to.as_str()).unwrap_or_default(),
                "level_zh": worst.map(|record| record.notice.to.zh_cn()).unwrap_or_default(),
                "count": alerts.len(),
                "held_back": held_back,
                "escalation": escalation,
                "summary": summary,
                "summary_zh": summary_zh,
            });
            json!({
                "PhoneNumbers": receiver.phones.join(","),
                "SignName": receiver.sign_name,
                "TemplateCode": receiver.template_id,
                "TemplateParam": parameters.to_string(),
                "OutId": key,
            })
        }
    };
    value.to_string()
}

/// `sha256=<hex>` over `"<timestamp>.<body>"`.
pub fn signature(secret: &str, timestamp_s: u64, body: &str) -> String {
    crate::auth::sign_webhook(secret.as_bytes(), timestamp_s, body.as_bytes())
}

/// One attempt: `Ok` on a 2xx answer.
pub(super) async fn send(
    client: &reqwest::Client,
    receiver: &ReceiverConfig,
    key: &str,
    body: String,
    now: Timestamp,
) -> Result<(), String> {
    let timestamp_s = now.as_millis() / 1000;
    let mut request = client
        .post(&receiver.url)
        .timeout(ATTEMPT_TIMEOUT)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-stockpulse-timestamp", timestamp_s.to_string())
        .header(
            "x-stockpulse-signature",
            signature(&receiver.secret, timestamp_s, &body),
        );
    for (name, value) in &receiver.headers {
        request = request.header(name, value);
    }
    match request.body(body).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("answered {}", response.status())),
        Err(error) => Err(error.to_string()),
    }
}

/// The longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The wait after the `failures`-th failure (from 0): 1 s, doubling, at most 5 minutes, with
/// ±20 % jitter so receivers coming back are not hit all at once.
pub(super) fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1u64 << failures.min(9)).min(BACKOFF_MAX);
    base.mul_f64(0.8 + 0.4 * fastrand::f64()).min(BACKOFF_MAX)
}
