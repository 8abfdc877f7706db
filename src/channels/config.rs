//! Channel connectors' settings: one `[[channels]]` table of the configuration file per
//! platform.

use serde::Deserialize;

/// How stock reaches a platform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    /// The generic contract of `docs/CHANNELS.md`: `POST {url}` with `{"updates": [...]}`.
    #[default]
    Webhook,
    /// Douyin shop's `sku.syncStock` (`app_key`, `access_token`, `secret` = the app secret);
    /// one listing per request; listing ids are Douyin's numeric `sku_id`.
    Douyin,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The platform whose listings this connector keeps (`douyin`, `kuaishou`, ...): the
    /// name orders carry and SKUs' `listings` use.
    pub platform: String,
    #[serde(default)]
    pub connector: ConnectorKind,
    /// `http://` or `https://`.
    pub url: String,
    /// The HMAC-SHA256 key requests are signed with; `secret_env` names an environment
    /// variable to read it from instead.
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The platform's app key and access token (Douyin), or the variable to read the token
    /// from.
    #[serde(default)]
    pub app_key: String,
    #[serde(default)]
    pub access_token: String,
    #[serde(default)]
    pub access_token_env: Option<String>,
    /// At most this many requests a second to this platform.
    #[serde(default = "requests_per_s_default")]
    pub max_requests_per_s: u32,
    /// At most this many listing updates in one request.
    #[serde(default = "updates_per_request_default")]
    pub max_updates_per_request: u32,
    /// At most this many updates a second of one listing: changes in between are coalesced
    /// into the next (platforms limit how often one SKU's stock may change).
    #[serde(default = "updates_per_listing_per_s_default")]
    pub max_updates_per_listing_per_s: u32,
}

fn updates_per_listing_per_s_default() -> u32 {
    5
}

fn requests_per_s_default() -> u32 {
    10
}

fn updates_per_request_default() -> u32 {
    100
}

impl ChannelConfig {
    /// Checks every connector and reads secrets named by `secret_env`.
    pub fn resolve(channels: &mut [ChannelConfig]) -> Result<(), String> {
        for index in 0..channels.len() {
            let channel = &channels[index];
            if crate::ledger::Platform::new(&channel.platform).is_err()
                || channels[..index]
                    .iter()
                    .any(|other| other.platform == channel.platform)
            {
                return Err(format!(
                    "channels: each platform must be named once and be a valid id, got {:?}",
                    channel.platform
                ));
            }
            let scheme_ok =
                channel.url.starts_with("http://") || channel.url.starts_with("https://");
            if !scheme_ok || reqwest::Url::parse(&channel.url).is_err() {
                return Err(format!(
                    "channels {}: url must be http:// or https://, got {:?}",
                    channel.platform, channel.url
                ));
            }
            if channel.max_requests_per_s == 0
                || channel.max_updates_per_request == 0
                || channel.max_updates_per_listing_per_s == 0
            {
                return Err(format!(
                    "channels {}: max_requests_per_s, max_updates_per_request and max_updates_per_listing_per_s must be at least 1",
                    channel.platform
                ));
            }
            let channel = &mut channels[index];
            if channel.connector == ConnectorKind::Douyin {
                channel.max_updates_per_request = 1;
            }
            if let Some(name) = &channel.access_token_env {
                channel.access_token = std::env::var(name).map_err(|_| {
                    format!(
                        "channels {}: the environment variable {name} (access_token_env) is not set",
                        channel.platform
                    )
                })?;
            }
            if channel.connector == ConnectorKind::Douyin
                && (channel.app_key.is_empty() || channel.access_token.is_empty())
            {
                return Err(format!(
                    "channels {}: the douyin connector needs app_key and access_token (or access_token_env)",
                    channel.platform
                ));
            }
            if let Some(name) = &channel.secret_env {
                channel.secret = std::env::var(name).map_err(|_| {
                    format!(
                        "channels {}: the environment variable {name} (secret_env) is not set",
                        channel.platform
                    )
                })?;
            }
            if channel.secret.is_empty() {
                return Err(format!(
                    "channels {}: a secret (or secret_env) is required: receivers check the signature",
                    channel.platform
                ));
            }
        }
        Ok(())
    }
}
