//! Delivery to one platform: the latest number of each listing that waits, a request at a
//! time, paced by the connector's rate, retried with backoff, slowed by `429`.

use std::time::Duration;

use super::connector;
use super::outcome::Refused;
use super::{Channels, Connector};

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
    let limit = connector.config.max_updates_per_request.max(1) as usize;
    let gap = Duration::from_secs(1) / connector.config.max_updates_per_listing_per_s.max(1);
    let mut failures: u32 = 0;
    loop {
        let delivers = channels.delivers.load(std::sync::atomic::Ordering::Acquire);
        let now = tokio::time::Instant::now();
        let (updates, next_due) = if delivers {
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
            continue;
        }
        channels.book.lock().sent(&updates, now);
        let started = tokio::time::Instant::now();
        let sent = connector::send(client, &connector.config, &updates, channels.now()).await;
        match &sent {
            Ok(_) => channels.count(&connector.platform, updates.len() as u64, 0),
            Err(_) => channels.count(&connector.platform, 0, 1),
        }
        let wait = match sent {
            Ok(applied) => {
                failures = 0;
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
                // Journaled, so a restart and every node know what each listing was told.
                channels.ledger.note_synced(now, &connector.platform, acks);
                pace
            }
            Err(Refused::SlowDown(wait, error)) => {
                channels.book.lock().failed(&updates, &error, false);
                wait.max(pace)
            }
            Err(Refused::Rejected(error)) => {
                tracing::warn!(platform = %connector.platform, %error, "A platform refused listing updates; retrying with the latest numbers.");
                channels.book.lock().failed(&updates, &error, false);
                failures = failures.saturating_add(1);
                backoff(failures - 1).max(pace)
            }
            Err(Refused::InDoubt(error)) => {
                tracing::warn!(platform = %connector.platform, %error, "Listing updates went unanswered; sending them again as they are.");
                channels.book.lock().failed(&updates, &error, true);
                failures = failures.saturating_add(1);
                backoff(failures - 1).max(pace)
            }
        };
        tokio::time::sleep_until(started + wait).await;
    }
}
