//! Alert delivery settings: webhook receivers (a generic JSON webhook or an SMS/phone gateway
//! request), routing rules, grouping, rate limits, escalation and the outbox's patience.
//! They come from the `[notify]` table of the configuration file.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::alert::Level;

/// The body a receiver gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"idempotency_key", "sent_at", "receiver", "escalation", "alerts": [...],
    /// "held_back", "summary"}`.
    #[default]
    Json,
    /// The request SMS and voice gateways take: phone numbers, sign name, template code and
    /// template parameters (a JSON string), and an out-id for de-duplication.
    Sms,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// The HMAC-SHA256 key the requests are signed with.
    pub secret: String,
    /// Extra request headers (credentials, for instance).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// At most this many messages a minute and an hour (0: no limit).
    #[serde(default)]
    pub per_minute: u32,
    #[serde(default)]
    pub per_hour: u32,
    /// SMS only: the template, the sign name and the numbers to text or call.
    #[serde(default)]
    pub template_id: String,
    #[serde(default)]
    pub sign_name: String,
    #[serde(default)]
    pub phones: Vec<String>,
}

/// Alerts matching every given condition go to `receivers`; an absent condition matches
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub levels: Vec<Level>,
    #[serde(default)]
    pub rooms: Vec<String>,
    #[serde(default)]
    pub skus: Vec<String>,
    pub hot: Option<bool>,
    pub receivers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Alerts for one receiver within this many seconds go out as one message.
    pub group_window_s: u64,
    /// A red alert not acknowledged after this long goes to the escalation receivers…
    pub escalate_after_s: u64,
    /// …and again this often until acknowledged or resolved.
    pub repeat_every_s: u64,
    pub escalation: Vec<String>,
    /// A delivery still failing after this long is dead-lettered.
    pub max_age_s: u64,
    pub receivers: Vec<ReceiverConfig>,
    pub routes: Vec<RouteConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            group_window_s: 5,
            escalate_after_s: 120,
            repeat_every_s: 120,
            escalation: Vec::new(),
            max_age_s: 6 * 3600,
            receivers: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl NotifyConfig {
    /// Checks names, URLs and that every route and escalation names a receiver.
    pub fn validate(&self) -> Result<(), String> {
        for (index, receiver) in self.receivers.iter().enumerate() {
            if receiver.name.is_empty()
                || self.receivers[..index]
                    .iter()
                    .any(|other| other.name == receiver.name)
            {
                return Err(format!(
                    "notify receiver names must be present and unique: {:?}",
                    receiver.name
                ));
            }
            let scheme_ok =
                receiver.url.starts_with("http://") || receiver.url.starts_with("https://");
            if !scheme_ok || reqwest::Url::parse(&receiver.url).is_err() {
                return Err(format!(
                    "notify receiver {}: url must be http:// or https://, got {:?}",
                    receiver.name, receiver.url
                ));
            }
            for (name, value) in &receiver.headers {
                let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && reqwest::header::HeaderValue::from_str(value).is_ok();
                if !valid {
                    return Err(format!(
                        "notify receiver {}: header {name:?} is not a valid HTTP header",
                        receiver.name
                    ));
                }
            }
            if receiver.secret.len() < 16 {
                return Err(format!(
                    "notify receiver {}: secret must be at least 16 bytes",
                    receiver.name
                ));
            }
            if receiver.format == Format::Sms
                && (receiver.template_id.is_empty() || receiver.phones.is_empty())
            {
                return Err(format!(
                    "notify receiver {}: an sms receiver needs template_id and phones",
                    receiver.name
                ));
            }
        }
        let known = |name: &String| self.receivers.iter().any(|receiver| &receiver.name == name);
        for name in self
            .routes
            .iter()
            .flat_map(|route| route.receivers.iter())
            .chain(&self.escalation)
        {
            if !known(name) {
                return Err(format!("notify: no receiver is named {name:?}"));
            }
        }
        if self.group_window_s > 3600 || self.repeat_every_s == 0 || self.max_age_s == 0 {
            return Err(
                "notify: group_window_s at most 3600, repeat_every_s and max_age_s above 0"
                    .to_owned(),
            );
        }
        Ok(())
    }
}
