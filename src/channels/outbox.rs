//! Delivery to one platform: the latest number of each listing that waits, a request at a
//! time, paced by the connector's rate, retried with backoff, slowed by `429`.

use std::time::Duration;

use super::connector;
use super::listing::Update;
use super::outcome::{Applied, Refused};
use super::{Channels, Connector};
use crate::ledger::Platform;

/// The longest wait between two attempts after failures.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The wait after `failures` failures in a row: 250 ms, doubling, at most 30 s, with ±20 %
/// jitter.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(250u64 << failures.min(7)).min(BACKOFF_MAX);
    base.mul_f64(0.8 + 0.4 * fastrand::f64()).min(BACKOFF_MAX)
}

/// Delivers connector `index`'s listings for as long as it runs.
pub(super) async fn deliver(channels: &Channels, index: usize, client: &reqwest::Client) {
    let connector: &Connector = &channels.connectors[index];
    let pace = Duration::from_secs(1) / connector.config.max_requests_per_s.max(1);
    let mut failures: u32 = 0;
    loop {
        let Some(updates) = next_updates(channels, connector).await else {
            continue;
        };
        let started = tokio::time::Instant::now();
        let sent = connector::send(client, &connector.config, &updates, channels.now()).await;
        let wait = settle(channels, connector, &updates, sent, &mut failures, pace);
        tokio::time::sleep_until(started + wait).await;
    }
}

/// The updates to send now, marked sent; `None` after waiting for a listing to fall due or
/// for a wake-up, when there are none.
async fn next_updates(channels: &Channels, connector: &Connector) -> Option<Vec<Update>> {
    let limit = connector.config.max_updates_per_request.max(1) as usize;
    let gap = Duration::from_secs(1) / connector.config.max_updates_per_listing_per_s.max(1);
    let now = tokio::time::Instant::now();
    let (updates, next_due) = if channels.delivers.load(std::sync::atomic::Ordering::Acquire) {
        channels
            .book
            .lock()
            .updates(&connector.platform, limit, now, gap)
    } else {
        (Vec::new(), None)
    };
    if updates.is_empty() {
        match next_due {
            Some(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = connector.wake.notified() => {}
                }
            }
            None => connector.wake.notified().await,
        }
        return None;
    }
    channels.book.lock().sent(&updates, now);
    Some(updates)
}

/// Takes in what came of sending `updates` and says how long to wait before the next
/// request.
fn settle(
    channels: &Channels,
    connector: &Connector,
    updates: &[Update],
    sent: Result<Vec<Applied>, Refused>,
    failures: &mut u32,
    pace: Duration,
) -> Duration {
    let platform = &connector.platform;
    let (error, in_doubt) = match sent {
        Ok(applied) => {
            channels.count(platform, updates.len() as u64, 0);
            *failures = 0;
            acknowledge(channels, platform, updates, applied);
            return pace;
        }
        Err(Refused::SlowDown(wait, error)) => {
            channels.count(platform, 0, 1);
            channels.book.lock().failed(updates, &error, false);
            return wait.max(pace);
        }
        Err(Refused::Rejected(error)) => {
            tracing::warn!(%platform, %error, "A platform refused listing updates; retrying with the latest numbers.");
            (error, false)
        }
        Err(Refused::InDoubt(error)) => {
            tracing::warn!(%platform, %error, "Listing updates went unanswered; sending them again as they are.");
            (error, true)
        }
    };
    channels.count(platform, 0, 1);
    channels.book.lock().failed(updates, &error, in_doubt);
    *failures = failures.saturating_add(1);
    backoff(*failures - 1).max(pace)
}

/// The platform applied `updates`: the book keeps each acknowledgement, and the ledger
/// journals them, so a restart and every node know what each listing was told.
fn acknowledge(
    channels: &Channels,
    platform: &Platform,
    updates: &[Update],
    applied: Vec<Applied>,
) {
    let now = channels.now();
    let mut acks = Vec::with_capacity(updates.len());
    {
        let mut book = channels.book.lock();
        for (update, applied) in updates.iter().zip(applied) {
            let ack = update.ack_applied(applied.quantity);
            book.acknowledged(update, &ack, applied.reported, now);
            acks.push(ack);
        }
    }
    channels.ledger.note_synced(now, platform, acks);
}
