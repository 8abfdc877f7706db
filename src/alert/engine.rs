//! The alert engine at run time: it keeps each listing's last decided level and newest
//! alert, takes in each batch of facts as the journal makes it durable, re-evaluates the
//! listings they touch, and queues what changed, numbered on its channels, for the hub:
//! stock, level changes (which are also alerts), hints, curve points, halts, alert states.
//! A `Tick` fact re-evaluates every listing, because levels also move with time (the plan
//! advances, a dwell ends). Red on an `auto_halt` listing halts it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use super::event::{
    Alert, AlertState, Body, Channel, ChannelSnapshot, HintChange, Latest, ListingChange,
    LostChange, Message, Point, RoomEvent, StateChange,
};
use super::rules::{self, Hint, Level, LevelState, Reason};
use super::view::{self, HintView, RoomView};
use crate::clock::{Rfc3339, Timestamp};
use crate::ledger::{DurableState, Fact, Ledger, ListingState, RoomId, SkuId};

/// Alerts kept for the alerts topic's snapshot and `GET /api/v1/alerts`.
pub const RECENT_ALERTS_MAX: usize = 500;

/// Messages waiting for the hub beyond which they are dropped (their numbers stay taken, so
/// the hub sees the gap and resyncs the topic's subscribers).
const OUTBOX_MAX: usize = 1 << 16;

/// What the engine remembers of one listing.
struct Live {
    state: LevelState,
    hint: Option<Hint>,
    /// The last curve point sent: (bucket, consumed).
    point: (usize, u64),
}

#[derive(Default)]
struct Inner {
    live: HashMap<(RoomId, SkuId), Live>,
    /// The rooms listing each SKU.
    listed: HashMap<SkuId, Vec<RoomId>>,
    next_alert: u64,
    recent: VecDeque<Arc<Alert>>,
    /// Each room's spec as last seen, to tell what a change of it changed.
    specs: HashMap<RoomId, Arc<crate::ledger::Room>>,
    /// Each listing's newest alert, by room and SKU.
    latest: HashMap<(RoomId, SkuId), Latest>,
    /// The last sequence number of each channel.
    sequences: HashMap<Channel, u64>,
    /// Numbered messages the hub has not taken yet, oldest first.
    outbox: Vec<Message>,
    /// The sequence of the last durable fact taken in.
    position: u64,
    /// Started from an image: the rooms are read again from the durable state once it has
    /// caught up with the image.
    resuming: bool,
}

fn state_event(
    room: &RoomId,
    id: u64,
    state: AlertState,
    acknowledged_by: Option<String>,
    at: Rfc3339,
) -> RoomEvent {
    RoomEvent::AlertState {
        room: room.clone(),
        change: StateChange {
            id,
            room: room.as_str().to_owned(),
            state,
            acknowledged_by,
            at,
        },
    }
}

impl Inner {
    /// A level change of a listing: the next alert, kept among the latest.
    fn raise(
        &mut self,
        room: &RoomId,
        state: &ListingState,
        from: Level,
        to: Level,
        reasons: Vec<Reason>,
        now: Timestamp,
    ) -> Arc<Alert> {
        let alert = Arc::new(Alert {
            id: self.next_alert,
            room: room.as_str().to_owned(),
            sku: state.listing.sku.as_str().to_owned(),
            from,
            to,
            at: Rfc3339(now),
            reasons,
            hot: state.listing.policy.hot,
            consumed: state.tally.consumed,
            forecast: state.listing.forecast,
            available: state.stock.available,
        });
        self.next_alert += 1;
        if RECENT_ALERTS_MAX <= self.recent.len() {
            self.recent.pop_front();
        }
        self.recent.push_back(alert.clone());
        alert
    }

    /// A new alert of a listing: the events that say so, in order (the alert, then its
    /// predecessor resolved, then its own state: open, or resolved when back to green).
    fn raised(
        &mut self,
        room: &RoomId,
        sku: &SkuId,
        alert: Arc<Alert>,
        events: &mut Vec<RoomEvent>,
    ) {
        let at = alert.at;
        let state = if alert.to == Level::Green {
            AlertState::Resolved
        } else {
            AlertState::Open
        };
        let id = alert.id;
        events.push(RoomEvent::Level {
            room: room.clone(),
            alert,
        });
        let latest = Latest {
            id,
            state,
            acknowledged_by: None,
        };
        if let Some(previous) = self.latest.insert((room.clone(), sku.clone()), latest)
            && previous.state != AlertState::Resolved
        {
            events.push(state_event(
                room,
                previous.id,
                AlertState::Resolved,
                previous.acknowledged_by,
                at,
            ));
        }
        events.push(state_event(room, id, state, None, at));
    }

    /// An operator acknowledged alert `id`: it changes only while it is its listing's
    /// newest and open (an older one is resolved already).
    fn acknowledged(&mut self, id: u64, by: &str, at: Timestamp, events: &mut Vec<RoomEvent>) {
        let Some(((room, _), latest)) = self.latest.iter_mut().find(|(_, latest)| latest.id == id)
        else {
            return;
        };
        if latest.state != AlertState::Open {
            return;
        }
        latest.state = AlertState::Acknowledged;
        latest.acknowledged_by = Some(by.to_owned());
        let room = room.clone();
        events.push(state_event(
            &room,
            id,
            AlertState::Acknowledged,
            Some(by.to_owned()),
            Rfc3339(at),
        ));
    }

    /// Numbers events on their channels and queues them for the hub.
    fn number(&mut self, events: Vec<RoomEvent>) {
        for event in events {
            let room = event.room().clone();
            let alerts_body = match &event {
                RoomEvent::Level { alert, .. } => Some(Body::Alert(alert.clone())),
                RoomEvent::AlertState { change, .. } => Some(Body::State(Arc::new(change.clone()))),
                _ => None,
            };
            if let Some(body) = alerts_body {
                for channel in [Channel::Alerts, Channel::RoomAlerts(room.clone())] {
                    self.queue(channel, body.clone());
                }
            }
            if !matches!(event, RoomEvent::AlertState { .. }) {
                self.queue(Channel::Room(room), Body::Event(Arc::new(event)));
            }
        }
    }

    fn queue(&mut self, channel: Channel, body: Body) {
        let seq = self.sequences.entry(channel.clone()).or_insert(0);
        *seq += 1;
        let seq = *seq;
        if OUTBOX_MAX <= self.outbox.len() {
            return;
        }
        self.outbox.push(Message { channel, seq, body });
    }

    /// Every listing, by room and SKU.
    fn listings(&self) -> Vec<(RoomId, SkuId)> {
        let mut listings: Vec<(RoomId, SkuId)> = self
            .listed
            .iter()
            .flat_map(|(sku, rooms)| rooms.iter().map(|room| (room.clone(), sku.clone())))
            .collect();
        // In one order on every node: the order of evaluation is the order of the alerts.
        listings.sort();
        listings
    }

    /// Notes that `room` lists `sku`.
    fn list(&mut self, sku: &SkuId, room: &RoomId) {
        self.listed
            .entry(sku.clone())
            .or_default()
            .push(room.clone());
    }
}

pub struct Engine {
    /// Where auto-halts go, and where SKU names are read. Never read for a decision.
    ledger: Arc<Ledger>,
    /// What every decision and view reads: the rooms as the journal made them durable, so
    /// nothing is decided on a change a crash could take back.
    durable: Arc<DurableState>,
    inner: Mutex<Inner>,
    /// False on a cluster standby: only the log changes its ledger, so it auto-halts
    /// nothing (the leader's engine does, and the halt arrives through the log).
    halts: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// An engine for the rooms the ledger holds (after recovery). Each listing's level is
    /// decided from the numbers at `now`, silently: a restart raises no alert and halts
    /// nothing by itself. Alert ids go on from `first_alert_id` (after those kept).
    pub fn new(
        ledger: Arc<Ledger>,
        durable: Arc<DurableState>,
        now: Timestamp,
        first_alert_id: u64,
    ) -> Engine {
        let engine = Engine {
            ledger,
            durable,
            halts: std::sync::atomic::AtomicBool::new(true),
            inner: Mutex::new(Inner {
                next_alert: first_alert_id.max(1),
                ..Inner::default()
            }),
        };
        engine.reload(now);
        engine
    }

    /// Whether red auto-halts: false while this node follows a cluster's log.
    pub fn set_halts(&self, halts: bool) {
        self.halts
            .store(halts, std::sync::atomic::Ordering::Release);
    }

    /// Takes the rooms from the durable state and decides each listing's level silently:
    /// at start-up, where a restart must raise nothing by itself.
    pub fn reload(&self, now: Timestamp) {
        let mut inner = self.inner.lock();
        for (room_id, sku) in self.rediscover_locked(&mut inner) {
            let Some(room) = inner.specs.get(&room_id).cloned() else {
                continue;
            };
            let Some(state) = self.durable.listing(&room_id, &sku) else {
                continue;
            };
            let key = (room_id, sku);
            let previous = inner.live.get(&key).map(|live| live.state);
            let evaluation = rules::evaluate(&view::inputs(&room, &state, now), previous);
            let live = inner.live.entry(key).or_insert(Live {
                state: LevelState {
                    level: evaluation.level,
                    since: now,
                },
                hint: evaluation.hint,
                point: (state.tally.series.bucket(now), state.tally.consumed),
            });
            if live.state.level != evaluation.level {
                live.state = LevelState {
                    level: evaluation.level,
                    since: now,
                };
            }
        }
    }

    /// Which rooms list which SKU, and each room's spec, from the durable state; forgets
    /// listings no room has any more. Returns every listing.
    fn rediscover_locked(&self, inner: &mut Inner) -> Vec<(RoomId, SkuId)> {
        inner.listed.clear();
        inner.specs.clear();
        let mut listings = Vec::new();
        for room in self.durable.rooms() {
            inner.specs.insert(room.id.clone(), room.clone());
            for listing in &room.listings {
                inner.list(&listing.sku, &room.id);
                listings.push((room.id.clone(), listing.sku.clone()));
            }
        }
        let kept: HashSet<&(RoomId, SkuId)> = listings.iter().collect();
        inner.live.retain(|key, _| kept.contains(key));
        listings
    }

    /// Raises, at start-up, the alerts a crash may have lost: every listing whose level
    /// (decided silently from the recovered numbers) is above the last level its alerts
    /// recorded (`recorded`, by room and SKU; green when none) gets an alert from that level
    /// to this one, saying it was raised at start-up, and red on an `auto_halt` listing
    /// that is not halted halts it. The level changes themselves were durable; their alerts
    /// were not yet, and a red alert must reach someone.
    pub fn catch_up(
        &self,
        recorded: &HashMap<(String, String), Level>,
        now: Timestamp,
    ) -> Vec<Arc<Alert>> {
        let mut inner = self.inner.lock();
        let mut events = Vec::new();
        let mut listings: Vec<(RoomId, SkuId, Level)> = inner
            .live
            .iter()
            .map(|((room, sku), live)| (room.clone(), sku.clone(), live.state.level))
            .collect();
        listings.sort();
        let mut alerts = Vec::new();
        for (room_id, sku, level) in listings {
            let key = (room_id.as_str().to_owned(), sku.as_str().to_owned());
            let from = recorded.get(&key).copied().unwrap_or(Level::Green);
            if level <= from {
                continue;
            }
            let (Some(room), Some(state)) = (
                self.durable.room_spec(&room_id),
                self.durable.listing(&room_id, &sku),
            ) else {
                continue;
            };
            let evaluation = rules::evaluate(&view::inputs(&room, &state, now), None);
            let mut reasons = evaluation.reasons;
            reasons.push(Reason::new(
                "restart",
                level,
                (0.0, 0.0),
                (
                    format!(
                        "启动时补发：重启前该商品已达{}，其告警未及记录",
                        level.zh_cn()
                    ),
                    format!(
                        "raised at start-up: the listing reached {} before the server restarted, \
                         and its alert had not been recorded",
                        level.as_str()
                    ),
                ),
            ));
            let alert = inner.raise(&room_id, &state, from, level, reasons, now);
            alerts.push(alert.clone());
            inner.raised(&room_id, &sku, alert, &mut events);
            if level == Level::Red {
                self.auto_halt(&room_id, &state, now);
            }
        }
        inner.number(events);
        alerts
    }

    /// Halts every `auto_halt` listing at red that is not halted: what a node that just took
    /// over the log does first. A red level may have been decided by a batch whose leader
    /// died before appending the halt, and no later evaluation is a change that halts it.
    /// Returns how many it halted.
    pub fn halt_red(&self, now: Timestamp) -> usize {
        let red: Vec<(RoomId, SkuId)> = self
            .inner
            .lock()
            .live
            .iter()
            .filter(|(_, live)| live.state.level == Level::Red)
            .map(|(key, _)| key.clone())
            .collect();
        let mut halted = 0;
        for (room, sku) in red {
            let Some(state) = self.durable.listing(&room, &sku) else {
                continue;
            };
            if state.listing.policy.auto_halt && !state.tally.halted {
                self.auto_halt(&room, &state, now);
                halted += 1;
            }
        }
        halted
    }

    /// Re-evaluates what `facts` touched and returns what changed, in order.
    pub fn observe<'a>(
        &self,
        facts: impl IntoIterator<Item = &'a Fact>,
        now: Timestamp,
    ) -> Vec<RoomEvent> {
        let mut inner = self.inner.lock();
        self.observe_locked(&mut inner, facts, now)
    }

    fn observe_locked<'a>(
        &self,
        inner: &mut Inner,
        facts: impl IntoIterator<Item = &'a Fact>,
        now: Timestamp,
    ) -> Vec<RoomEvent> {
        let mut events = Vec::new();
        let mut touched: Vec<(RoomId, SkuId)> = Vec::new();
        let mut seen: HashSet<(RoomId, SkuId)> = HashSet::new();
        let mut touch = |room: &RoomId, sku: &SkuId, touched: &mut Vec<(RoomId, SkuId)>| {
            let key = (room.clone(), sku.clone());
            if seen.insert(key.clone()) {
                touched.push(key);
            }
        };
        for fact in facts {
            match fact {
                Fact::RoomPut { room, .. } => {
                    for rooms in inner.listed.values_mut() {
                        rooms.retain(|listed| listed != &room.id);
                    }
                    inner.listed.retain(|_, rooms| !rooms.is_empty());
                    inner.live.retain(|(listed_room, sku), _| {
                        listed_room != &room.id || room.listing(sku).is_some()
                    });
                    for listing in &room.listings {
                        inner.list(&listing.sku, &room.id);
                        touch(&room.id, &listing.sku, &mut touched);
                    }
                    // The change travels without the curves the screens have: only new
                    // listings', or all when the schedule moved (the buckets changed).
                    let previous = inner.specs.insert(room.id.clone(), room.clone());
                    let rescheduled = previous.as_ref().is_none_or(|previous| {
                        (previous.starts_at, previous.ends_at) != (room.starts_at, room.ends_at)
                    });
                    let before = |state: &ListingState| {
                        previous
                            .as_ref()
                            .and_then(|previous| previous.listing(&state.listing.sku))
                            .cloned()
                    };
                    let reshaped = |state: &ListingState| rescheduled || before(state).is_none();
                    let changed = |state: &ListingState| {
                        reshaped(state) || before(state).as_ref() != Some(&state.listing)
                    };
                    let curves = view::Curves::Changed {
                        changed: &changed,
                        reshaped: &reshaped,
                    };
                    if let Some(view) = self.build_view(inner, &room.id, now, curves) {
                        events.push(RoomEvent::Room {
                            room: room.id.clone(),
                            view: Box::new(view),
                        });
                    }
                }
                Fact::ListingHalted { at, room, sku, .. }
                | Fact::ListingResumed { at, room, sku, .. } => {
                    let auto = matches!(fact, Fact::ListingHalted { auto: true, .. });
                    events.push(RoomEvent::Listing {
                        room: room.clone(),
                        change: ListingChange {
                            room: room.as_str().to_owned(),
                            sku: sku.as_str().to_owned(),
                            halted: matches!(fact, Fact::ListingHalted { .. }),
                            auto,
                            at: Rfc3339(*at),
                        },
                    });
                    touch(room, sku, &mut touched);
                }
                Fact::Tick { at } => {
                    for (room, sku) in inner.listings() {
                        self.evaluate(inner, &room, &sku, *at, &mut events);
                    }
                }
                Fact::AlertAcknowledged { at, id, by } => {
                    inner.acknowledged(*id, by, *at, &mut events);
                }
                Fact::LostDemand { at, entries } => {
                    for entry in entries {
                        let Some(state) = self.durable.listing(&entry.room, &entry.sku) else {
                            continue;
                        };
                        events.push(RoomEvent::Lost {
                            room: entry.room.clone(),
                            change: LostChange {
                                room: entry.room.as_str().to_owned(),
                                sku: entry.sku.as_str().to_owned(),
                                lost: view::lost_view(&state, *at),
                                at: Rfc3339(*at),
                            },
                        });
                        // The suggested restock covers what was refused.
                        touch(&entry.room, &entry.sku, &mut touched);
                    }
                }
                // No room lists anything: nothing to look up for each change.
                _ if inner.listed.is_empty() => {}
                _ => {
                    for stock in fact.stocks() {
                        let Some(rooms) = inner.listed.get(&stock.sku) else {
                            continue;
                        };
                        for room in rooms {
                            // Every stock change of a listed SKU, in order, on its rooms.
                            events.push(RoomEvent::Stock {
                                room: room.clone(),
                                stock: stock.clone(),
                            });
                            touch(room, &stock.sku, &mut touched);
                        }
                    }
                }
            }
        }
        // In one order on every node: the order of evaluation is the order of the alerts.
        touched.sort();
        for (room, sku) in touched {
            self.evaluate(inner, &room, &sku, now, &mut events);
        }
        events
    }

    /// Re-evaluates every listing: levels move with time too.
    pub fn tick(&self, now: Timestamp) -> Vec<RoomEvent> {
        let mut inner = self.inner.lock();
        let mut events = Vec::new();
        for (room, sku) in inner.listings() {
            self.evaluate(&mut inner, &room, &sku, now, &mut events);
        }
        events
    }

    /// Takes in a batch of facts that just became durable, starting at `first_sequence`:
    /// first into the durable state, then re-evaluating what they touched at the time of
    /// the batch's newest fact (a [`Fact::Tick`] re-evaluates everything at its own time).
    /// What changed is numbered and queued for the hub ([`Engine::take`]). Everything here
    /// reads the facts and the durable state alone, never the clock: every node of a
    /// cluster, taking in the same batches, decides the same levels and numbers the same
    /// messages.
    pub fn durable(&self, first_sequence: u64, facts: &[Fact]) {
        let Some(now) = facts.iter().map(Fact::at).max() else {
            return;
        };
        let last = first_sequence + facts.len() as u64 - 1;
        let mut inner = self.inner.lock();
        if last <= inner.position {
            // Already in the image this engine started from: only the durable state lags.
            self.durable.apply(facts);
            return;
        }
        if inner.resuming {
            // The durable state is now where the image was taken: the rooms again.
            self.rediscover_locked(&mut inner);
            inner.resuming = false;
        }
        self.durable.apply(facts);
        let events = self.observe_locked(&mut inner, facts, now);
        inner.position = last;
        inner.number(events);
    }

    /// The numbered messages queued since the last call, oldest first.
    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut self.inner.lock().outbox)
    }

    /// Under one lock: the queued messages (as [`Engine::take`]), a channel's sequence
    /// number after them, and what the channel's snapshot shows at that number. For the
    /// hub, whose snapshots must show exactly what the messages up to their number did.
    pub fn take_with(
        &self,
        channel: &Channel,
        now: Timestamp,
    ) -> (Vec<Message>, u64, ChannelSnapshot) {
        let mut inner = self.inner.lock();
        let messages = std::mem::take(&mut inner.outbox);
        let seq = inner.sequences.get(channel).copied().unwrap_or(0);
        let snapshot = match channel {
            Channel::Room(room) => {
                ChannelSnapshot::Room(self.view_locked(&inner, room, now).map(Box::new))
            }
            Channel::Alerts => ChannelSnapshot::Alerts(inner.recent.iter().cloned().collect()),
            Channel::RoomAlerts(room) => ChannelSnapshot::Alerts(
                inner
                    .recent
                    .iter()
                    .filter(|alert| alert.room == room.as_str())
                    .cloned()
                    .collect(),
            ),
        };
        (messages, seq, snapshot)
    }

    /// Every listing's newest alert as the notifier's store keeps it, at start-up: a later
    /// alert resolves it and an acknowledgement acknowledges it as if seen live.
    pub fn remember(&self, latest: impl IntoIterator<Item = ((RoomId, SkuId), Latest)>) {
        self.inner.lock().latest.extend(latest);
    }

    /// The engine's state after the last batch it took in, for a shared snapshot.
    pub fn image(&self) -> super::image::EngineImage {
        let inner = self.inner.lock();
        let mut live: Vec<super::image::LiveImage> = inner
            .live
            .iter()
            .map(|((room, sku), live)| super::image::LiveImage {
                room: room.clone(),
                sku: sku.clone(),
                state: live.state,
                hint: live.hint,
                point: live.point,
            })
            .collect();
        live.sort_by(|a, b| (&a.room, &a.sku).cmp(&(&b.room, &b.sku)));
        super::image::EngineImage {
            position: inner.position,
            next_alert: inner.next_alert,
            live,
            latest: inner
                .latest
                .iter()
                .map(|(key, latest)| (key.clone(), latest.clone()))
                .collect(),
            sequences: inner
                .sequences
                .iter()
                .map(|(channel, seq)| (channel.clone(), *seq))
                .collect(),
            recent: inner.recent.clone(),
        }
    }

    /// Takes the state of `image`, taken after the batch ending at its position: batches
    /// up to there only move the durable state; at the first one after, the rooms are read
    /// again from the durable state (where the image was then) and the engine goes on as
    /// the one that made the image did.
    pub fn restore(&self, image: super::image::EngineImage) {
        let mut inner = self.inner.lock();
        inner.position = image.position;
        inner.next_alert = image.next_alert;
        inner.live = image
            .live
            .into_iter()
            .map(|live| {
                (
                    (live.room, live.sku),
                    Live {
                        state: live.state,
                        hint: live.hint,
                        point: live.point,
                    },
                )
            })
            .collect();
        inner.latest = image.latest.into_iter().collect();
        inner.sequences = image.sequences.into_iter().collect();
        inner.recent = image.recent;
        inner.outbox.clear();
        inner.resuming = true;
    }

    fn evaluate(
        &self,
        inner: &mut Inner,
        room_id: &RoomId,
        sku: &SkuId,
        now: Timestamp,
        events: &mut Vec<RoomEvent>,
    ) {
        let Some(room) = self.durable.room_spec(room_id) else {
            return;
        };
        let Some(state) = self.durable.listing(room_id, sku) else {
            return;
        };
        let key = (room_id.clone(), sku.clone());
        let previous = inner.live.get(&key).map(|live| live.state);
        let evaluation = rules::evaluate(&view::inputs(&room, &state, now), previous);
        let bucket = state.tally.series.bucket(now);
        let point = (bucket, state.tally.consumed);
        let live = inner.live.entry(key).or_insert(Live {
            state: LevelState {
                level: Level::Green,
                since: now,
            },
            hint: None,
            point: (usize::MAX, u64::MAX),
        });
        if live.point != point && room.starts_at <= now {
            live.point = point;
            events.push(RoomEvent::Point {
                room: room_id.clone(),
                point: Point {
                    room: room_id.as_str().to_owned(),
                    sku: sku.as_str().to_owned(),
                    bucket,
                    actual: state.tally.consumed,
                    at: Rfc3339(now),
                },
            });
        }
        let from = live.state.level;
        if evaluation.level != from {
            live.state = LevelState {
                level: evaluation.level,
                since: now,
            };
            let reasons = evaluation.reasons.clone();
            let alert = inner.raise(room_id, &state, from, evaluation.level, reasons, now);
            inner.raised(room_id, sku, alert, events);
            // Only a change seen live halts: a first evaluation (a new room) does not.
            if evaluation.level == Level::Red && previous.is_some() {
                self.auto_halt(room_id, &state, now);
            }
        }
        let live = inner
            .live
            .get_mut(&(room_id.clone(), sku.clone()))
            .expect("inserted above");
        if live.hint != evaluation.hint {
            live.hint = evaluation.hint;
            events.push(RoomEvent::Hint {
                room: room_id.clone(),
                change: HintChange {
                    room: room_id.as_str().to_owned(),
                    sku: sku.as_str().to_owned(),
                    level: evaluation.level,
                    hint: evaluation.hint.map(HintView::from),
                    at: Rfc3339(now),
                },
            });
        }
    }

    /// Red on an `auto_halt` listing that is not halted halts it in its room. Called with the
    /// engine's state locked: the ledger's room map, a SKU stripe and the journal's queue are
    /// taken below it, and none of them ever waits for the engine.
    fn auto_halt(&self, room: &RoomId, state: &ListingState, now: Timestamp) {
        if !state.listing.policy.auto_halt
            || state.tally.halted
            || !self.halts.load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        let sku = &state.listing.sku;
        if let Err(error) = self.ledger.halt_listing(now, room, sku, true, None) {
            tracing::warn!(%room, %sku, %error, "Auto-halt failed.");
        }
    }

    /// The room as the journal holds it: its spec and every listing's tally and stock.
    pub fn durable_room(&self, room: &RoomId) -> Option<crate::ledger::RoomState> {
        self.durable.room(room)
    }

    /// The room as screens see it now.
    pub fn room_view(&self, room: &RoomId, now: Timestamp) -> Option<RoomView> {
        let inner = self.inner.lock();
        self.view_locked(&inner, room, now)
    }

    /// The room without its curves: for listings of rooms.
    pub fn room_summary(&self, room: &RoomId, now: Timestamp) -> Option<RoomView> {
        let inner = self.inner.lock();
        self.build_view(&inner, room, now, view::Curves::None)
    }

    fn view_locked(&self, inner: &Inner, room: &RoomId, now: Timestamp) -> Option<RoomView> {
        self.build_view(inner, room, now, view::Curves::All)
    }

    fn build_view(
        &self,
        inner: &Inner,
        room: &RoomId,
        now: Timestamp,
        curves: view::Curves<'_>,
    ) -> Option<RoomView> {
        let state = self.durable.room(room)?;
        Some(view::room_view(
            &state,
            now,
            curves,
            |listing: &ListingState| {
                inner
                    .live
                    .get(&(room.clone(), listing.listing.sku.clone()))
                    .map(|live| live.state)
            },
            |listing: &ListingState| {
                self.ledger
                    .sku(&listing.listing.sku)
                    .map(|view| view.settings.name)
                    .unwrap_or_default()
            },
        ))
    }
}
