//! Channel sync's Prometheus metrics: updates delivered and attempts failed, listings waiting
//! and how long the oldest has waited, and reconciliation incidents, per platform.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabels {
    platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IncidentLabels {
    platform: String,
    kind: &'static str,
}

/// One platform's counts, as `Channels::stats` reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformStats {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub listings: u64,
    pub unsynced: u64,
    /// How long the listing waiting longest has waited, in milliseconds.
    pub oldest_unsynced_ms: u64,
    /// Incidents found by reconciliation, by kind.
    pub incidents: BTreeMap<&'static str, u64>,
}

/// The metric families, registered once.
pub struct ChannelMetrics {
    delivered: Family<PlatformLabels, Counter>,
    failed: Family<PlatformLabels, Counter>,
    listings: Family<PlatformLabels, Gauge>,
    unsynced: Family<PlatformLabels, Gauge>,
    lag: Family<PlatformLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    incidents: Family<IncidentLabels, Counter>,
}

impl ChannelMetrics {
    pub fn register(registry: &mut Registry) -> ChannelMetrics {
        let metrics = ChannelMetrics {
            delivered: Family::default(),
            failed: Family::default(),
            listings: Family::default(),
            unsynced: Family::default(),
            lag: Family::default(),
            incidents: Family::default(),
        };
        registry.register(
            "channel_updates_delivered",
            "Listing updates a platform acknowledged",
            metrics.delivered.clone(),
        );
        registry.register(
            "channel_attempts_failed",
            "Requests to a platform that failed (refused, rate-limited, unanswered)",
            metrics.failed.clone(),
        );
        registry.register(
            "channel_listings",
            "Platform listings kept in sync",
            metrics.listings.clone(),
        );
        registry.register(
            "channel_listings_unsynced",
            "Listings whose number their platform has not acknowledged yet",
            metrics.unsynced.clone(),
        );
        registry.register(
            "channel_sync_lag_seconds",
            "How long the listing waiting longest for its platform has waited",
            metrics.lag.clone(),
        );
        registry.register(
            "channel_incidents",
            "Reconciliation incidents, by kind (missing and released are oversells)",
            metrics.incidents.clone(),
        );
        metrics
    }

    /// Moves every family to `stats`.
    pub fn update(&self, stats: &BTreeMap<String, PlatformStats>) {
        let catch_up = |counter: &Counter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        for (platform, stats) in stats {
            let labels = PlatformLabels {
                platform: platform.clone(),
            };
            catch_up(&self.delivered.get_or_create(&labels), stats.delivered);
            catch_up(&self.failed.get_or_create(&labels), stats.failed_attempts);
            let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            self.listings
                .get_or_create(&labels)
                .set(gauge(stats.listings));
            self.unsynced
                .get_or_create(&labels)
                .set(gauge(stats.unsynced));
            self.lag
                .get_or_create(&labels)
                .set(stats.oldest_unsynced_ms as f64 / 1000.0);
            for (kind, count) in &stats.incidents {
                let labels = IncidentLabels {
                    platform: platform.clone(),
                    kind,
                };
                catch_up(&self.incidents.get_or_create(&labels), *count);
            }
        }
    }
}
