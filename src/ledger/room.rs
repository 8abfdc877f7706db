//! Rooms and listings: a scheduled show, the SKUs it sells with their forecast, plan and alert
//! policy, and what each listing consumed (locked + sold by orders naming the room), kept as a
//! series of time buckets for the whole show.
//!
//! The ledger keeps a listing's tally inside its SKU's entry, so an order's lines update it in
//! the same critical section that moves the units, replay rebuilds it from the facts, and a
//! snapshot carries it. A listing halted for its room refuses orders naming that room.

use smallvec::SmallVec;

use super::types::{InvalidValue, Platform, RoomId, SkuId, Stock};
use crate::clock::Timestamp;

/// The longest show: two days.
pub const SHOW_MS_MAX: u64 = 2 * 86_400_000;
/// Listings one room may hold.
pub const ROOM_LISTINGS_MAX: usize = 200;
/// Plan points one listing may give.
pub const PLAN_POINTS_MAX: usize = 200;
/// The consumption series' bucket, unless the show is so long that it would need more than
/// [`SERIES_POINTS_MAX`] of them.
pub const SERIES_BUCKET_MS: u64 = 5_000;
pub const SERIES_POINTS_MAX: u64 = 4_096;

/// A listing's alert policy. Shares and factors are in thousandths (800 = 80 %, 1200 = 1.2×),
/// durations in milliseconds, so the policy is exact and comparable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Consumed shares of the forecast at which each level starts.
    pub yellow: u32,
    pub orange: u32,
    pub red: u32,
    /// Yellow when available stock is below this factor × the forecast demand still to come.
    pub coverage: u32,
    /// How long a restock takes to arrive; raises the coverage factor (see the alert engine).
    pub lead_time_ms: u64,
    /// Selling at least this share within `tighten_within_ms` of the start tightens the
    /// thresholds by `tighten_factor`.
    pub tighten_share: u32,
    pub tighten_within_ms: u64,
    pub tighten_factor: u32,
    /// Selling less than this share after `relax_after_ms` relaxes them by `relax_factor`.
    pub relax_share: u32,
    pub relax_after_ms: u64,
    pub relax_factor: u32,
    /// A level goes down only once the numbers are this far (a share of the forecast, or
    /// of the coverage) below its threshold, and only after `dwell_ms` at the level.
    pub hysteresis: u32,
    pub dwell_ms: u64,
    /// The window the sales velocity is measured over.
    pub velocity_window_ms: u64,
    /// Red halts the listing in its room.
    pub auto_halt: bool,
    /// A hot product: its alerts go to more channels.
    pub hot: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            yellow: 800,
            orange: 1000,
            red: 1200,
            coverage: 1200,
            lead_time_ms: 0,
            tighten_share: 400,
            tighten_within_ms: 30 * 60_000,
            tighten_factor: 850,
            relax_share: 100,
            relax_after_ms: 60 * 60_000,
            relax_factor: 1150,
            hysteresis: 50,
            dwell_ms: 30_000,
            velocity_window_ms: 120_000,
            auto_halt: false,
            hot: false,
        }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let invalid = |field: &'static str, value: u64| InvalidValue::Invalid {
            field,
            reason: format!("{value} is out of range"),
        };
        if !(1..=100_000).contains(&self.yellow) {
            return Err(invalid("policy.yellow", self.yellow.into()));
        }
        if self.orange < self.yellow || 100_000 < self.orange {
            return Err(invalid("policy.orange", self.orange.into()));
        }
        if self.red < self.orange || 100_000 < self.red {
            return Err(invalid("policy.red", self.red.into()));
        }
        if 100_000 < self.coverage {
            return Err(invalid("policy.coverage", self.coverage.into()));
        }
        for (field, factor) in [
            ("policy.tighten_factor", self.tighten_factor),
            ("policy.relax_factor", self.relax_factor),
        ] {
            if !(100..=10_000).contains(&factor) {
                return Err(invalid(field, factor.into()));
            }
        }
        for (field, share) in [
            ("policy.tighten_share", self.tighten_share),
            ("policy.relax_share", self.relax_share),
            ("policy.hysteresis", self.hysteresis),
        ] {
            if 100_000 < share {
                return Err(invalid(field, share.into()));
            }
        }
        for (field, ms) in [
            ("policy.lead_time", self.lead_time_ms),
            ("policy.tighten_within", self.tighten_within_ms),
            ("policy.relax_after", self.relax_after_ms),
            ("policy.dwell", self.dwell_ms),
        ] {
            if SHOW_MS_MAX < ms {
                return Err(invalid(field, ms / 1000));
            }
        }
        if !(1_000..=SHOW_MS_MAX).contains(&self.velocity_window_ms) {
            return Err(invalid(
                "policy.velocity_window",
                self.velocity_window_ms / 1000,
            ));
        }
        Ok(())
    }
}

/// One point of a plan curve: by `elapsed_ms` into the show, `share` (thousandths) of the
/// forecast is expected to be consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanPoint {
    pub elapsed_ms: u64,
    pub share: u32,
}

/// How a listing's plan curve was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlanShape {
    /// A straight line over the show (`plan` empty), or the corners given (`plan`).
    #[default]
    Given,
    /// Most of the forecast in the first pitch (开场即巅峰).
    FrontLoaded,
    /// Little at first, most in the second half (慢热型).
    SlowStart,
    /// The average curve of the SKU's latest `shows` finished shows.
    History { shows: u32 },
    /// History was asked for and the SKU has no finished show that sold: a straight line.
    NoHistory,
}

/// The named profiles' corners: (thousandths of the show, thousandths of the forecast).
const FRONT_LOADED: &[(u64, u32)] = &[(200, 500), (400, 750), (700, 920), (1000, 1000)];
const SLOW_START: &[(u64, u32)] = &[(300, 100), (550, 300), (800, 700), (1000, 1000)];

impl PlanShape {
    /// A named profile's corners over a show of `show_ms`; `None` for other shapes.
    pub fn profile(self, show_ms: u64) -> Option<Vec<PlanPoint>> {
        let corners = match self {
            PlanShape::FrontLoaded => FRONT_LOADED,
            PlanShape::SlowStart => SLOW_START,
            _ => return None,
        };
        Some(corners_over(corners.iter().copied(), show_ms))
    }
}

/// Corners given in thousandths of a show, over a show of `show_ms`.
pub fn corners_over(corners: impl Iterator<Item = (u64, u32)>, show_ms: u64) -> Vec<PlanPoint> {
    let mut points: Vec<PlanPoint> = Vec::new();
    for (fraction, share) in corners {
        let elapsed_ms = show_ms * fraction / 1000;
        // Two corners at the same time (a very short show): the later one holds.
        if let Some(last) = points.last_mut()
            && last.elapsed_ms == elapsed_ms
        {
            last.share = last.share.max(share);
            continue;
        }
        if 0 < elapsed_ms {
            points.push(PlanPoint { elapsed_ms, share });
        }
    }
    points
}

/// One SKU in one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub sku: SkuId,
    /// Units expected to sell in the show.
    pub forecast: u64,
    /// The plan curve; empty means linear over the show.
    pub plan: Vec<PlanPoint>,
    /// How `plan` was made.
    pub shape: PlanShape,
    pub policy: Policy,
}

/// A scheduled live show and its line-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    pub id: RoomId,
    pub name: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub listings: Vec<Listing>,
}

impl Room {
    /// Whether the show is on at `now`, or within `margin` of its start or end: while its
    /// listings' levels move with the clock.
    pub fn on_air(&self, now: Timestamp, margin: std::time::Duration) -> bool {
        self.starts_at.saturating_sub(margin) <= now && now <= self.ends_at.saturating_add(margin)
    }

    /// Checks the schedule, the line-up and every listing's plan and policy.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        let show_ms = self.show_ms();
        if self.ends_at <= self.starts_at || SHOW_MS_MAX < show_ms {
            return Err(InvalidValue::Invalid {
                field: "ends_at",
                reason: "must be after starts_at, and a show lasts at most two days".to_owned(),
            });
        }
        if ROOM_LISTINGS_MAX < self.listings.len() {
            return Err(InvalidValue::Invalid {
                field: "listings",
                reason: format!("a room holds at most {ROOM_LISTINGS_MAX} listings"),
            });
        }
        for (index, listing) in self.listings.iter().enumerate() {
            if self.listings[..index]
                .iter()
                .any(|other| other.sku == listing.sku)
            {
                return Err(InvalidValue::Invalid {
                    field: "listings",
                    reason: format!("sku {} is listed twice", listing.sku),
                });
            }
            if !(1..=super::STOCK_QTY_MAX).contains(&listing.forecast) {
                return Err(InvalidValue::Invalid {
                    field: "forecast",
                    reason: format!(
                        "must be between 1 and {}, got {}",
                        super::STOCK_QTY_MAX,
                        listing.forecast
                    ),
                });
            }
            if PLAN_POINTS_MAX < listing.plan.len() {
                return Err(InvalidValue::Invalid {
                    field: "plan",
                    reason: format!("a plan has at most {PLAN_POINTS_MAX} points"),
                });
            }
            let ordered = listing.plan.windows(2).all(|pair| {
                pair[0].elapsed_ms < pair[1].elapsed_ms && pair[0].share <= pair[1].share
            });
            let in_show = listing
                .plan
                .iter()
                .all(|point| point.elapsed_ms <= show_ms && point.share <= 100_000);
            if !ordered || !in_show {
                return Err(InvalidValue::Invalid {
                    field: "plan",
                    reason: "points must be within the show, in time order, with shares that \
                             never go down"
                        .to_owned(),
                });
            }
            listing.policy.validate()?;
            if listing.policy.velocity_window_ms < 2 * self.bucket_ms() {
                return Err(InvalidValue::Invalid {
                    field: "policy.velocity_window",
                    reason: format!(
                        "must cover at least two buckets of the consumption curve ({} s)",
                        2 * self.bucket_ms() / 1000
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn show_ms(&self) -> u64 {
        self.ends_at
            .as_millis()
            .saturating_sub(self.starts_at.as_millis())
    }

    /// The consumption series' bucket for this show.
    pub fn bucket_ms(&self) -> u64 {
        SERIES_BUCKET_MS.max(self.show_ms().div_ceil(SERIES_POINTS_MAX))
    }

    pub fn listing(&self, sku: &SkuId) -> Option<&Listing> {
        self.listings.iter().find(|listing| &listing.sku == sku)
    }
}

/// Why an order was refused, when the refusal is a sale lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    InsufficientStock,
    Halted,
}

/// Units one platform's orders were refused, by why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformLost {
    pub platform: Platform,
    pub insufficient_stock: u64,
    pub halted: u64,
}

/// Units refused to orders naming a room, per platform: demand the show lost. Counting it
/// changes no stock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    pub platforms: SmallVec<[PlatformLost; 2]>,
}

impl Lost {
    pub fn add(&mut self, platform: &Platform, reason: LostReason, units: u64) {
        let index = match self
            .platforms
            .iter()
            .position(|entry| &entry.platform == platform)
        {
            Some(index) => index,
            None => {
                self.platforms.push(PlatformLost {
                    platform: platform.clone(),
                    insufficient_stock: 0,
                    halted: 0,
                });
                self.platforms.len() - 1
            }
        };
        let entry = &mut self.platforms[index];
        let count = match reason {
            LostReason::InsufficientStock => &mut entry.insufficient_stock,
            LostReason::Halted => &mut entry.halted,
        };
        *count = count.saturating_add(units);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Lost) {
        for entry in &other.platforms {
            self.add(
                &entry.platform,
                LostReason::InsufficientStock,
                entry.insufficient_stock,
            );
            self.add(&entry.platform, LostReason::Halted, entry.halted);
        }
    }

    pub fn insufficient_stock(&self) -> u64 {
        self.platforms
            .iter()
            .map(|entry| entry.insufficient_stock)
            .sum()
    }

    pub fn halted(&self) -> u64 {
        self.platforms.iter().map(|entry| entry.halted).sum()
    }

    pub fn total(&self) -> u64 {
        self.insufficient_stock().saturating_add(self.halted())
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// What a listing consumed, kept in its SKU's entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingTally {
    pub room: RoomId,
    /// The SKU's version when the tally was created: orders that took their units at a later
    /// version are the ones it counts, so a release of an order placed before (before the
    /// listing was added, or added again) takes nothing off it.
    pub generation: u64,
    /// Orders naming the room are refused for this SKU.
    pub halted: bool,
    /// Locked + sold by orders naming the room, now.
    pub consumed: u64,
    pub series: Series,
    /// Units refused to orders naming the room, as far as the journal holds them.
    pub lost: Lost,
    /// `lost.total()` at the end of each bucket, on the same schedule as `series`.
    pub lost_series: Series,
    /// What became of the units of orders naming the room: paid, refunded, cancelled,
    /// left to expire.
    pub outcomes: Outcomes,
    /// When the SKU first had nothing available during the show.
    pub sold_out_at: Option<Timestamp>,
    /// Every halt of the listing in its room, oldest first.
    pub halts: Vec<Halt>,
}

/// Units of orders naming a room, by what became of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Paid (sold at once, or a lock confirmed); refunds do not take them off.
    pub sold: u64,
    pub refunded: u64,
    pub cancelled: u64,
    pub expired: u64,
}

/// Halts kept per listing: the first ones, then the newest (a listing an operator toggles
/// all show long keeps a bounded list).
pub const HALTS_KEPT_MAX: usize = 64;

/// One halt of a listing in its room, and its resumption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Halt {
    pub at: Timestamp,
    /// By the alert engine at red, rather than by an operator.
    pub auto: bool,
    /// Who halted it, when known.
    pub by: Option<String>,
    pub resumed_at: Option<Timestamp>,
    pub resumed_by: Option<String>,
}

/// `consumed` at the end of each bucket of the show, from its start up to the last change.
/// Changes before the start count in the first bucket (and in `before_start`), after the end
/// in the last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    pub starts_at: Timestamp,
    pub bucket_ms: u64,
    pub buckets: u64,
    /// Consumed when the show started: what was taken before it.
    pub before_start: u64,
    pub points: Vec<u64>,
}

impl Series {
    pub fn for_room(room: &Room) -> Series {
        let bucket_ms = room.bucket_ms();
        Series {
            starts_at: room.starts_at,
            bucket_ms,
            buckets: room.show_ms().div_ceil(bucket_ms).max(1),
            before_start: 0,
            points: Vec::new(),
        }
    }

    /// The bucket `at` falls in.
    pub fn bucket(&self, at: Timestamp) -> usize {
        let elapsed = at.as_millis().saturating_sub(self.starts_at.as_millis());
        (elapsed / self.bucket_ms).min(self.buckets - 1) as usize
    }

    /// Records that `consumed` is the value at `at`. A change stamped earlier than one
    /// already recorded (clocks read before a lock) also holds for every later bucket.
    pub fn record(&mut self, at: Timestamp, consumed: u64) {
        if at < self.starts_at {
            self.before_start = consumed;
        }
        let bucket = self.bucket(at);
        let last = self.points.last().copied().unwrap_or(self.before_start);
        if self.points.len() <= bucket {
            self.points.resize(bucket + 1, last);
        }
        for point in &mut self.points[bucket..] {
            *point = consumed;
        }
    }

    /// Consumed at the end of `bucket`, for any bucket up to now.
    pub fn at_bucket(&self, bucket: usize) -> u64 {
        match self.points.get(bucket) {
            Some(consumed) => *consumed,
            None => self.points.last().copied().unwrap_or(self.before_start),
        }
    }

    /// Consumed at the start of `at`'s bucket: at the end of the bucket before, or when the
    /// show started.
    pub fn before(&self, at: Timestamp) -> u64 {
        match self.bucket(at).checked_sub(1) {
            Some(previous) => self.at_bucket(previous),
            None => self.before_start,
        }
    }

    /// Consumed at `at`, reading the curve as straight between bucket ends; `now` and
    /// `consumed_now` close the bucket in progress.
    pub fn interpolate(&self, at: Timestamp, now: Timestamp, consumed_now: u64) -> u64 {
        if now <= at {
            return consumed_now;
        }
        if at <= self.starts_at {
            return self.before_start;
        }
        let bucket = self.bucket(at);
        let bucket_start = self.starts_at.as_millis() + bucket as u64 * self.bucket_ms;
        let (end_ms, end_value) = if bucket == self.bucket(now) {
            (now.as_millis(), consumed_now)
        } else {
            (bucket_start + self.bucket_ms, self.at_bucket(bucket))
        };
        let start_value = self.before(at);
        let span = end_ms.saturating_sub(bucket_start).max(1);
        let into = at.as_millis().saturating_sub(bucket_start).min(span);
        let delta = end_value as f64 - start_value as f64;
        (start_value as f64 + delta * into as f64 / span as f64).round() as u64
    }

    /// The same curve over another schedule: values resampled into the new buckets, and
    /// when the start moved, every bucket up to `at` holding `consumed`.
    fn resampled(&self, mut into: Series, at: Timestamp, consumed: u64) -> Series {
        into.before_start = self.before_start;
        if into.starts_at == self.starts_at {
            let recorded_ms = self.points.len() as u64 * self.bucket_ms;
            let count = recorded_ms.div_ceil(into.bucket_ms).min(into.buckets);
            into.points = (0..count)
                .map(|bucket| {
                    let end_ms = (bucket + 1) * into.bucket_ms;
                    let old = end_ms.div_ceil(self.bucket_ms).saturating_sub(1);
                    self.at_bucket(old as usize)
                })
                .collect();
        } else if 0 < consumed {
            into.before_start = consumed;
            into.record(at, consumed);
        }
        into
    }
}

impl ListingTally {
    pub fn new(room: &Room, generation: u64) -> ListingTally {
        ListingTally {
            room: room.id.clone(),
            generation,
            halted: false,
            consumed: 0,
            series: Series::for_room(room),
            lost: Lost::default(),
            lost_series: Series::for_room(room),
            outcomes: Outcomes::default(),
            sold_out_at: None,
            halts: Vec::new(),
        }
    }

    /// Notes that the SKU had nothing available at `at`, the first time during the show.
    pub(super) fn note_sold_out(&mut self, at: Timestamp) {
        let series = &self.series;
        let ends_ms = series.starts_at.as_millis() + series.buckets * series.bucket_ms;
        if self.sold_out_at.is_none() && series.starts_at <= at && at.as_millis() < ends_ms {
            self.sold_out_at = Some(at);
        }
    }

    /// Halts (`Some(auto)`) or resumes (`None`) the listing at `at`, by `by`.
    pub(super) fn set_halted(&mut self, at: Timestamp, halt: Option<bool>, by: Option<&str>) {
        self.halted = halt.is_some();
        match halt {
            // Halted already (an operator's halt, then the engine's at red): one halt.
            Some(_)
                if self
                    .halts
                    .last()
                    .is_some_and(|last| last.resumed_at.is_none()) => {}
            Some(auto) => {
                if HALTS_KEPT_MAX <= self.halts.len() {
                    self.halts.remove(HALTS_KEPT_MAX / 2);
                }
                self.halts.push(Halt {
                    at,
                    auto,
                    by: by.map(str::to_owned),
                    resumed_at: None,
                    resumed_by: None,
                });
            }
            None => {
                if let Some(last) = self.halts.last_mut()
                    && last.resumed_at.is_none()
                {
                    last.resumed_at = Some(at);
                    last.resumed_by = by.map(str::to_owned);
                }
            }
        }
    }

    /// Counts what became of `qty` units of an order naming the room.
    pub(super) fn count_outcome(&mut self, outcome: super::types::OrderStatus, qty: u64) {
        use super::types::OrderStatus;
        let count = match outcome {
            OrderStatus::Locked => return,
            OrderStatus::Sold => &mut self.outcomes.sold,
            OrderStatus::Refunded => &mut self.outcomes.refunded,
            OrderStatus::Cancelled => &mut self.outcomes.cancelled,
            OrderStatus::Expired => &mut self.outcomes.expired,
        };
        *count = count.saturating_add(qty);
    }

    /// Adds refused units the journal now holds, at `at`.
    pub(crate) fn add_lost(&mut self, at: Timestamp, lost: &Lost) {
        self.lost.merge(lost);
        self.lost_series.record(at, self.lost.total());
    }

    /// Adds what a movement took and gives back, at `at`.
    pub(super) fn consume(&mut self, at: Timestamp, taken: u64, released: u64) {
        self.consumed = self.consumed.saturating_add(taken).saturating_sub(released);
        self.series.record(at, self.consumed);
    }

    /// The tally under a new schedule: the consumed count stays, and the curve is carried
    /// over into the new buckets (from the new start, when the start moved).
    /// A start that moved is another show (a room set up again for the next one): what the
    /// last show lost, sold, gave back and when it sold out or was halted is its own, and
    /// the new show starts counting from nothing (its consumption carries over as what was
    /// taken before it). A halt still in force stays.
    pub(crate) fn reschedule(&mut self, room: &Room, at: Timestamp) {
        let series = Series::for_room(room);
        if series.starts_at != self.series.starts_at {
            self.lost = Lost::default();
            self.outcomes = Outcomes::default();
            self.sold_out_at = None;
            self.halts.retain(|halt| halt.resumed_at.is_none());
        }
        if series.starts_at != self.series.starts_at
            || series.bucket_ms != self.series.bucket_ms
            || series.buckets != self.series.buckets
        {
            self.series = self.series.resampled(series.clone(), at, self.consumed);
            self.lost_series = self.lost_series.resampled(series, at, self.lost.total());
        }
    }
}

/// A listing as read: its spec, its tally and its SKU's stock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingState {
    pub listing: Listing,
    pub tally: ListingTally,
    pub stock: Stock,
}

/// A room as read: the spec and every listing's state, in line-up order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomState {
    pub room: std::sync::Arc<Room>,
    pub listings: Vec<ListingState>,
}
