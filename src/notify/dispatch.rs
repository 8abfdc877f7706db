//! Who hears of an alert, when, and in what company: routing, one notification per
//! transition per receiver, grouping within a window, per-receiver rate limits that hold
//! alerts back and summarise them in the next message, acknowledgement, resolution, and
//! escalation of unacknowledged reds. Pure: time comes in as `now`, messages go out as
//! [`Outgoing`] values for the outbox.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::NotifyConfig;
use crate::alert::{AlertState, Level};
use crate::clock::Timestamp;

/// An alert as delivery sees it: what routing needs, and the alert as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub id: u64,
    pub room: String,
    pub sku: String,
    pub from: Level,
    pub to: Level,
    pub hot: bool,
    pub at: Timestamp,
    /// The alert's JSON (`GET /api/v1/alerts` and webhook bodies carry it).
    pub body: Arc<serde_json::Value>,
}

/// An alert and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub notice: Notice,
    pub state: AlertState,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    /// Receivers still owed a message about it (waiting in a group or behind a limit);
    /// kept so a restart does not forget them.
    pub owed: Vec<(String, bool)>,
    /// Escalations sent so far, and when the next one is due.
    pub escalations: u32,
    pub next_escalation: Option<Timestamp>,
    /// The deliveries that carried it.
    pub deliveries: Vec<u64>,
}

/// A message for one receiver, ready for the outbox.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Outgoing {
    pub delivery: u64,
    pub receiver: String,
    pub alerts: Vec<u64>,
    /// Each alert's escalation step in it, in `alerts`' order: 0 for its first notice, `k`
    /// for its k-th escalation.
    pub steps: Vec<u32>,
    /// Alerts in it that a rate limit held back past the grouping window.
    pub held_back: u64,
    pub escalation: bool,
    pub at: Timestamp,
}

impl Outgoing {
    /// The key a receiver drops repeats by: the receiver and each alert with its step, so a
    /// node that takes over and sends again what the last leader sent sends it under the
    /// same key. Hashed when long.
    pub(super) fn idempotency_key(&self) -> String {
        let mut key = format!("stockpulse-{}", self.receiver);
        for (id, step) in self.alerts.iter().zip(&self.steps) {
            let _ = write!(key, "-a{id}.{step}");
        }
        if key.len() <= IDEMPOTENCY_KEY_MAX {
            return key;
        }
        let hex = crate::auth::short_digest([key.as_bytes()]);
        format!("stockpulse-{}-h{hex}", self.receiver)
    }
}

/// The longest idempotency key sent as is.
const IDEMPOTENCY_KEY_MAX: usize = 128;

/// One receiver's timing: the group it is gathering and what it sent lately.
#[derive(Default)]
struct ReceiverTiming {
    /// When the first alert of the current group arrived.
    group_since: Option<Timestamp>,
    /// When each of its recent messages went out, oldest first (the last hour).
    sent: VecDeque<Timestamp>,
}

pub(super) struct Dispatcher {
    config: Arc<NotifyConfig>,
    pub(super) alerts: BTreeMap<u64, AlertRecord>,
    timing: HashMap<String, ReceiverTiming>,
    pub(super) next_delivery: u64,
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl Dispatcher {
    /// A dispatcher with the alerts a store kept; owed messages are owed again.
    pub(super) fn new(
        config: Arc<NotifyConfig>,
        alerts: BTreeMap<u64, AlertRecord>,
        next_delivery: u64,
        now: Timestamp,
    ) -> Dispatcher {
        let mut dispatcher = Dispatcher {
            config,
            alerts,
            timing: HashMap::new(),
            next_delivery,
        };
        let owed: Vec<String> = dispatcher
            .alerts
            .values()
            .flat_map(|record| record.owed.iter().map(|(receiver, _)| receiver.clone()))
            .collect();
        for receiver in owed {
            dispatcher
                .timing
                .entry(receiver)
                .or_default()
                .group_since
                .get_or_insert(now);
        }
        dispatcher
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.config.group_window_s)
    }

    /// The receivers the routes give an alert, each once.
    pub(super) fn route(&self, notice: &Notice) -> Vec<String> {
        let mut receivers: Vec<String> = Vec::new();
        for route in &self.config.routes {
            let matches = (route.levels.is_empty() || route.levels.contains(&notice.to))
                && (route.rooms.is_empty() || route.rooms.contains(&notice.room))
                && (route.skus.is_empty() || route.skus.contains(&notice.sku))
                && route.hot.is_none_or(|hot| hot == notice.hot);
            if matches {
                for receiver in &route.receivers {
                    if !receivers.contains(receiver) {
                        receivers.push(receiver.clone());
                    }
                }
            }
        }
        receivers
    }

    /// Takes a new alert: it supersedes the listing's earlier open alerts, and is owed to
    /// the receivers its routes name. Returns the ids of the records that changed.
    pub(super) fn add(&mut self, notice: Notice, now: Timestamp) -> Vec<u64> {
        if self.alerts.contains_key(&notice.id) {
            // Alerts are decided from the log, so an id names one alert wherever and
            // whenever it is raised: a node that started again from a shared snapshot
            // raises again the alerts after it, and keeps what it recorded of them
            // (acknowledgement, deliveries, escalations).
            return Vec::new();
        }
        let mut changed = Vec::new();
        for record in self.alerts.values_mut() {
            let same_listing = record.notice.room == notice.room && record.notice.sku == notice.sku;
            if same_listing && record.state != AlertState::Resolved {
                record.state = AlertState::Resolved;
                record.resolved_at = Some(now);
                record.next_escalation = None;
                record.owed.retain(|(_, escalation)| !escalation);
                changed.push(record.notice.id);
            }
        }
        let receivers = self.route(&notice);
        for receiver in &receivers {
            self.timing
                .entry(receiver.clone())
                .or_default()
                .group_since
                .get_or_insert(now);
        }
        let id = notice.id;
        let raised = notice.at;
        let red = notice.to == Level::Red;
        let settled = notice.to == Level::Green;
        self.alerts.insert(
            id,
            AlertRecord {
                notice,
                state: if settled {
                    AlertState::Resolved
                } else {
                    AlertState::Open
                },
                acknowledged_by: None,
                acknowledged_at: None,
                resolved_at: settled.then_some(now),
                owed: receivers
                    .into_iter()
                    .map(|receiver| (receiver, false))
                    .collect(),
                escalations: 0,
                next_escalation: (red && !self.config.escalation.is_empty())
                    .then(|| escalation_time(&self.config, raised, 1)),
                deliveries: Vec::new(),
            },
        );
        changed.push(id);
        changed
    }

    /// Acknowledges an alert: no more escalation, not even one already waiting. `None` when
    /// there is no such alert; otherwise whether this changed it (acknowledging twice keeps
    /// the first).
    pub(super) fn acknowledge(&mut self, id: u64, by: &str, now: Timestamp) -> Option<bool> {
        let record = self.alerts.get_mut(&id)?;
        if record.state != AlertState::Open {
            return Some(false);
        }
        record.state = AlertState::Acknowledged;
        record.acknowledged_by = Some(by.to_owned());
        record.acknowledged_at = Some(now);
        record.next_escalation = None;
        record.owed.retain(|(_, escalation)| !escalation);
        Some(true)
    }

    /// This node starts delivering (it leads a cluster now): what alerts raised before
    /// `before` were owed was the previous leader's to send, and is forgotten; their
    /// escalations keep their schedule. Returns the records that changed.
    pub(super) fn settle_owed_before(&mut self, before: Timestamp) -> Vec<u64> {
        let mut changed = Vec::new();
        for record in self.alerts.values_mut() {
            if record.notice.at < before && !record.owed.is_empty() {
                record.owed.clear();
                changed.push(record.notice.id);
            }
        }
        changed
    }

    /// Forgets receivers no longer configured; returns the records that changed.
    pub(super) fn forget_receivers(&mut self, known: &[String]) -> Vec<u64> {
        let mut changed = Vec::new();
        for record in self.alerts.values_mut() {
            let before = record.owed.len();
            record.owed.retain(|(receiver, _)| known.contains(receiver));
            if record.owed.len() != before {
                changed.push(record.notice.id);
            }
        }
        self.timing.retain(|receiver, _| known.contains(receiver));
        changed
    }

    /// Drops records finished before `before`: resolved or acknowledged, owed to nobody,
    /// and whose deliveries `finished` says are over. Returns their ids.
    pub(super) fn prune(&mut self, before: Timestamp, finished: impl Fn(u64) -> bool) -> Vec<u64> {
        // The newest record stays, so the next alert id never goes back.
        let newest = self.alerts.keys().next_back().copied();
        let old: Vec<u64> = self
            .alerts
            .values()
            .filter(|record| {
                let settled = record.resolved_at.or(record.acknowledged_at);
                Some(record.notice.id) != newest
                    && record.state != AlertState::Open
                    && record.owed.is_empty()
                    && settled.is_some_and(|at| at < before)
                    && record.deliveries.iter().all(|delivery| finished(*delivery))
            })
            .map(|record| record.notice.id)
            .collect();
        for id in &old {
            self.alerts.remove(id);
        }
        old
    }

    /// Escalations that came due, and the messages whose group window closed and whose
    /// receiver's rate limits allow them. Returns the messages and the ids of the records
    /// that changed.
    pub(super) fn due(&mut self, now: Timestamp) -> (Vec<Outgoing>, Vec<u64>) {
        let mut changed = Vec::new();
        for record in self.alerts.values_mut() {
            let Some(next) = record.next_escalation else {
                continue;
            };
            if now < next || record.state != AlertState::Open {
                continue;
            }
            // The schedule is the alert's own (its time in the log, plus the steps), the same
            // on every node: a node that takes over sends the step now due, under the key the
            // last leader sent it with, not the first step again.
            let step = steps_due(&self.config, record.notice.at, now).max(record.escalations + 1);
            for receiver in &self.config.escalation {
                match record.owed.iter_mut().find(|(owed, _)| owed == receiver) {
                    Some((_, escalation)) => *escalation = true,
                    None => record.owed.push((receiver.clone(), true)),
                }
                self.timing
                    .entry(receiver.clone())
                    .or_default()
                    .group_since
                    .get_or_insert(now);
            }
            record.escalations = step;
            record.next_escalation =
                Some(escalation_time(&self.config, record.notice.at, step + 1));
            changed.push(record.notice.id);
        }
        let window = self.window();
        let mut outgoing = Vec::new();
        let receivers: Vec<String> = self.timing.keys().cloned().collect();
        for receiver in receivers {
            let Some(limits) = self
                .config
                .receivers
                .iter()
                .find(|config| config.name == receiver)
                .map(|config| (config.per_minute, config.per_hour))
            else {
                continue;
            };
            let timing = self.timing.get_mut(&receiver).expect("listed above");
            let Some(since) = timing.group_since else {
                continue;
            };
            if now < since.saturating_add(window) {
                continue;
            }
            while timing
                .sent
                .front()
                .is_some_and(|sent| HOUR <= now.saturating_since(*sent))
            {
                timing.sent.pop_front();
            }
            let last_minute = timing
                .sent
                .iter()
                .filter(|sent| now.saturating_since(**sent) < MINUTE)
                .count() as u32;
            let limited = (0 < limits.0 && limits.0 <= last_minute)
                || (0 < limits.1 && limits.1 <= timing.sent.len() as u32);
            if limited {
                continue;
            }
            // Well past its window: a rate limit held this group back.
            let overdue =
                Duration::from_secs(1) < now.saturating_since(since.saturating_add(window));
            let mut alerts = Vec::new();
            let mut steps = Vec::new();
            let mut escalation = false;
            let mut held_back = 0;
            let delivery = self.next_delivery;
            for record in self.alerts.values_mut() {
                let Some(position) = record.owed.iter().position(|(owed, _)| *owed == receiver)
                else {
                    continue;
                };
                let (_, escalated) = record.owed.remove(position);
                let escalated = escalated && record.state == AlertState::Open;
                escalation |= escalated;
                steps.push(if escalated { record.escalations } else { 0 });
                if overdue {
                    held_back += 1;
                }
                record.deliveries.push(delivery);
                alerts.push(record.notice.id);
                changed.push(record.notice.id);
            }
            timing.group_since = None;
            if alerts.is_empty() {
                continue;
            }
            self.next_delivery += 1;
            timing.sent.push_back(now);
            outgoing.push(Outgoing {
                delivery,
                receiver,
                alerts,
                steps,
                held_back,
                escalation,
                at: now,
            });
        }
        changed.sort_unstable();
        changed.dedup();
        (outgoing, changed)
    }

    pub(super) fn record(&self, id: u64) -> Option<&AlertRecord> {
        self.alerts.get(&id)
    }

    /// Every alert, oldest first.
    pub(super) fn records(&self) -> impl Iterator<Item = &AlertRecord> {
        self.alerts.values()
    }

    /// The next alert id, after every one kept.
    pub(super) fn next_alert_id(&self) -> u64 {
        self.alerts.keys().next_back().map_or(1, |last| last + 1)
    }
}

/// When step `step` (1 for the first) of escalating an alert raised at `raised` is due.
fn escalation_time(config: &NotifyConfig, raised: Timestamp, step: u32) -> Timestamp {
    let repeats = u64::from(step.saturating_sub(1)).saturating_mul(config.repeat_every_s);
    raised.saturating_add(Duration::from_secs(
        config.escalate_after_s.saturating_add(repeats),
    ))
}

/// How many escalation steps of an alert raised at `raised` are due at `now`.
fn steps_due(config: &NotifyConfig, raised: Timestamp, now: Timestamp) -> u32 {
    let after = Duration::from_secs(config.escalate_after_s);
    let since = now.saturating_since(raised);
    if since < after {
        return 0;
    }
    let repeats = (since - after).as_secs() / config.repeat_every_s.max(1);
    u32::try_from(repeats.saturating_add(1)).unwrap_or(u32::MAX)
}
