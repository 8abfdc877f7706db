//! Prometheus metrics of the HTTP edge and the ledger, served as text at `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::atomic::AtomicU64;

use crate::hub::HubStats;
use crate::journal::JournalStats;
use crate::ledger::LedgerCounts;

/// An order operation, as metrics label it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Op {
    reserve,
    sell,
    confirm,
    cancel,
    refund,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: Op,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    op: Op,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s, doubling: order acks live at the low end.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub(crate) struct Metrics {
    registry: Registry,
    orders_accepted: Family<OpLabels, Counter>,
    orders_refused: Family<RefusedLabels, Counter>,
    orders_replayed: Family<OpLabels, Counter>,
    locks_expired: Counter,
    request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    skus: Gauge,
    orders: Gauge,
    orders_locked: Gauge,
    journal_facts: Counter,
    journal_durable: Gauge,
    journal_batches: Counter,
    journal_syncs: Counter,
    journal_sync_seconds: Counter<f64, AtomicU64>,
    journal_failures: Counter,
    journal_healthy: Gauge,
    journal_snapshots: Counter,
    journal_snapshot_longest_hold: Gauge<f64, AtomicU64>,
    push_messages: Counter,
    push_bytes: Counter,
    push_resyncs: Counter,
    push_sessions: Gauge,
    notify_delivered: Counter,
    notify_failed_attempts: Counter,
    notify_dead: Counter,
    notify_dropped: Counter,
    connections_open: Gauge,
    connections_refused: Counter,
    cluster_leading: Gauge,
    cluster_term: Gauge,
    cluster_applied: Gauge,
    cluster_stream: Gauge,
    cluster_node_lag: Family<NodeLabels, Gauge>,
    cluster_forwards_refused: Counter,
    channels: crate::channels::ChannelMetrics,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("stockpulse");
        let orders_accepted = Family::<OpLabels, Counter>::default();
        registry.register(
            "orders_accepted",
            "Order operations that changed the ledger",
            orders_accepted.clone(),
        );
        let orders_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "orders_refused",
            "Order operations refused, by error code",
            orders_refused.clone(),
        );
        let orders_replayed = Family::<OpLabels, Counter>::default();
        registry.register(
            "orders_replayed",
            "Order operations answered again from idempotency, changing nothing",
            orders_replayed.clone(),
        );
        let locks_expired = Counter::default();
        registry.register(
            "locks_expired",
            "Order locks that ran out before payment",
            locks_expired.clone(),
        );
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, from the request read to the response written",
            request_duration.clone(),
        );
        let skus = Gauge::default();
        registry.register("skus", "SKUs in the ledger", skus.clone());
        let orders = Gauge::default();
        registry.register(
            "orders",
            "Orders remembered: locked ones and finished ones inside the idempotency window",
            orders.clone(),
        );
        let orders_locked = Gauge::default();
        registry.register(
            "orders_locked",
            "Orders placed and not yet paid",
            orders_locked.clone(),
        );
        let journal_facts = Counter::default();
        registry.register(
            "journal_facts",
            "Facts queued for the journal",
            journal_facts.clone(),
        );
        let journal_durable = Gauge::default();
        registry.register(
            "journal_durable_sequence",
            "The last fact durable under the sync policy",
            journal_durable.clone(),
        );
        let journal_batches = Counter::default();
        registry.register(
            "journal_batches",
            "Group commits: writes of everything that was waiting",
            journal_batches.clone(),
        );
        let journal_syncs = Counter::default();
        registry.register("journal_syncs", "fdatasync calls", journal_syncs.clone());
        let journal_sync_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "journal_sync_seconds",
            "Time spent in fdatasync",
            journal_sync_seconds.clone(),
        );
        let journal_failures = Counter::default();
        registry.register(
            "journal_failures",
            "Times the disk refused the journal",
            journal_failures.clone(),
        );
        let journal_healthy = Gauge::default();
        registry.register(
            "journal_healthy",
            "1 while the journal accepts writes, 0 while the disk refuses them",
            journal_healthy.clone(),
        );
        let cluster_leading = Gauge::default();
        registry.register(
            "cluster_leading",
            "1 while this node leads the cluster's log (cluster mode)",
            cluster_leading.clone(),
        );
        let cluster_term = Gauge::default();
        registry.register(
            "cluster_term",
            "The term of the lease this node last saw",
            cluster_term.clone(),
        );
        let cluster_applied = Gauge::default();
        registry.register(
            "cluster_applied_sequence",
            "The stream sequence of the last log message this node applied or appended",
            cluster_applied.clone(),
        );
        let cluster_stream = Gauge::default();
        registry.register(
            "cluster_stream_sequence",
            "The log stream's last sequence, as this node last saw it",
            cluster_stream.clone(),
        );
        let cluster_node_lag = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "cluster_node_lag",
            "Log messages each node that answered has not applied yet",
            cluster_node_lag.clone(),
        );
        let cluster_forwards_refused = Counter::default();
        registry.register(
            "cluster_forwards_refused",
            "Forwarded requests refused unread: not sealed by a node of this cluster, stale or replayed",
            cluster_forwards_refused.clone(),
        );
        let channels = crate::channels::ChannelMetrics::register(&mut registry);
        let journal_snapshots = Counter::default();
        registry.register(
            "journal_snapshots",
            "Snapshots written since start",
            journal_snapshots.clone(),
        );
        let journal_snapshot_longest_hold = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "journal_snapshot_longest_hold_seconds",
            "The longest the newest snapshot held a ledger lock: the pause it imposed on orders",
            journal_snapshot_longest_hold.clone(),
        );
        let push_messages = Counter::default();
        registry.register(
            "push_messages",
            "Messages queued to WebSocket sessions",
            push_messages.clone(),
        );
        let push_bytes = Counter::default();
        registry.register(
            "push_bytes",
            "Bytes of messages queued to WebSocket sessions",
            push_bytes.clone(),
        );
        let push_resyncs = Counter::default();
        registry.register(
            "push_resyncs",
            "WebSocket sessions resynced because they fell behind",
            push_resyncs.clone(),
        );
        let push_sessions = Gauge::default();
        registry.register(
            "push_sessions",
            "WebSocket sessions connected",
            push_sessions.clone(),
        );
        let notify_delivered = Counter::default();
        registry.register(
            "notify_delivered",
            "Alert webhook deliveries a receiver accepted",
            notify_delivered.clone(),
        );
        let notify_failed_attempts = Counter::default();
        registry.register(
            "notify_failed_attempts",
            "Alert webhook attempts that failed (retried later)",
            notify_failed_attempts.clone(),
        );
        let notify_dead = Counter::default();
        registry.register(
            "notify_dead_letters",
            "Alert webhook deliveries given up after their maximum age",
            notify_dead.clone(),
        );
        let notify_dropped = Counter::default();
        registry.register(
            "notify_alerts_dropped",
            "Alerts the notifier was too far behind to take",
            notify_dropped.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "TCP connections open, WebSocket sessions included",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "TCP connections closed at once by a connection limit",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            connections_open,
            connections_refused,
            notify_delivered,
            notify_failed_attempts,
            notify_dead,
            notify_dropped,
            push_messages,
            push_bytes,
            push_resyncs,
            push_sessions,
            journal_facts,
            journal_durable,
            journal_batches,
            journal_syncs,
            journal_sync_seconds,
            journal_failures,
            journal_healthy,
            journal_snapshots,
            journal_snapshot_longest_hold,
            cluster_leading,
            cluster_term,
            cluster_applied,
            cluster_stream,
            cluster_node_lag,
            cluster_forwards_refused,
            channels,
            orders_accepted,
            orders_refused,
            orders_replayed,
            locks_expired,
            request_duration,
            skus,
            orders,
            orders_locked,
        }
    }

    /// The cluster's figures: this node's, and each node's lag as it answered.
    pub(crate) fn cluster(
        &self,
        status: &crate::cluster::Status,
        nodes: &[super::cluster::NodeView],
    ) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.cluster_leading
            .set(i64::from(status.role == crate::cluster::Role::Leader));
        self.cluster_term.set(gauge(status.term));
        self.cluster_applied.set(gauge(status.applied_seq));
        self.cluster_stream.set(gauge(status.stream_seq));
        self.cluster_node_lag.clear();
        for node in nodes {
            self.cluster_node_lag
                .get_or_create(&NodeLabels {
                    node: node.node.clone(),
                })
                .set(gauge(node.lag));
        }
    }

    /// A forwarded request refused unread: not sealed by a node of this cluster, stale or
    /// replayed.
    pub(crate) fn forward_refused(&self) {
        self.cluster_forwards_refused.inc();
    }

    pub(crate) fn order_accepted(&self, op: Op) {
        self.orders_accepted.get_or_create(&OpLabels { op }).inc();
    }

    pub(crate) fn order_replayed(&self, op: Op) {
        self.orders_replayed.get_or_create(&OpLabels { op }).inc();
    }

    pub(crate) fn order_refused(&self, op: Op, code: &'static str) {
        self.orders_refused
            .get_or_create(&RefusedLabels { op, code })
            .inc();
    }

    pub(crate) fn locks_expired(&self, count: u64) {
        self.locks_expired.inc_by(count);
    }

    pub(crate) fn request_finished(&self, method: &str, route: &str, seconds: f64) {
        self.request_duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Channel sync's families, moved to `stats`.
    pub(crate) fn channels(
        &self,
        stats: &std::collections::BTreeMap<String, crate::channels::PlatformStats>,
    ) {
        self.channels.update(stats);
    }

    /// The text exposition, with the gauges read from `counts` and `journal` first.
    pub(crate) fn render(
        &self,
        counts: LedgerCounts,
        journal: JournalStats,
        push: HubStats,
        notify: &crate::notify::NotifyCounters,
        edge: &crate::edge::EdgeCounters,
    ) -> String {
        let load = |counter: &std::sync::atomic::AtomicU64| {
            counter.load(std::sync::atomic::Ordering::Relaxed)
        };
        // Counters only go up: move each to the journal's own running total.
        let catch_up = |counter: &Counter, total: u64| {
            counter.inc_by(total.saturating_sub(counter.get()));
        };
        catch_up(&self.journal_facts, journal.submitted);
        catch_up(&self.journal_batches, journal.batches);
        catch_up(&self.journal_syncs, journal.syncs);
        catch_up(&self.journal_failures, journal.failures);
        catch_up(&self.journal_snapshots, journal.snapshots);
        self.journal_snapshot_longest_hold
            .set(journal.snapshot_longest_hold_seconds);
        catch_up(&self.push_messages, push.messages);
        catch_up(&self.push_bytes, push.bytes);
        catch_up(&self.push_resyncs, push.resyncs);
        catch_up(&self.notify_delivered, load(&notify.delivered));
        catch_up(&self.notify_failed_attempts, load(&notify.failed_attempts));
        catch_up(&self.notify_dead, load(&notify.dead));
        catch_up(&self.notify_dropped, load(&notify.dropped_alerts));
        catch_up(&self.connections_refused, load(&edge.refused));
        self.connections_open
            .set(i64::try_from(load(&edge.open)).unwrap_or(i64::MAX));
        self.push_sessions
            .set(i64::try_from(push.sessions).unwrap_or(i64::MAX));
        let seconds = journal.sync_seconds - self.journal_sync_seconds.get();
        if 0.0 < seconds {
            self.journal_sync_seconds.inc_by(seconds);
        }
        self.journal_durable
            .set(i64::try_from(journal.durable).unwrap_or(i64::MAX));
        self.journal_healthy.set(i64::from(journal.healthy));
        self.skus
            .set(i64::try_from(counts.skus).unwrap_or(i64::MAX));
        self.orders
            .set(i64::try_from(counts.orders).unwrap_or(i64::MAX));
        self.orders_locked
            .set(i64::try_from(counts.orders_locked).unwrap_or(i64::MAX));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "Metrics encoding failed.");
        }
        text
    }
}
