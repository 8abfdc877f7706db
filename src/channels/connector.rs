//! One attempt to deliver updates to a platform, by the connector its `[[channels]]` table
//! names.

use super::config::{ChannelConfig, ConnectorKind};
use super::listing::Update;
use super::outcome::{Applied, Refused};
use crate::clock::Timestamp;

/// One attempt to deliver `updates` (at most `max_updates_per_request` of them).
pub(super) async fn send(
    client: &reqwest::Client,
    config: &ChannelConfig,
    updates: &[Update],
    now: Timestamp,
) -> Result<Vec<Applied>, Refused> {
    match config.connector {
        ConnectorKind::Webhook => super::webhook::send(client, config, updates, now).await,
        ConnectorKind::Douyin => super::douyin::send(client, config, updates, now).await,
    }
}
