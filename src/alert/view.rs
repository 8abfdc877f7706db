//! A room as screens and the API read it: every listing with its stock, level, reasons,
//! thresholds, forecast, hint and consumption curve (actual and plan) from the start of the
//! show. Built from the ledger's room state and the rules; serialised as JSON or MessagePack.

use serde::Serialize;

use super::rules::{self, Evaluation, Hint, Inputs, LevelState};
use crate::clock::{Rfc3339, Timestamp};
use crate::ledger::{ListingState, Policy, Room, RoomState};

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RoomView {
    pub room: String,
    pub name: String,
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Rfc3339,
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: Rfc3339,
    /// The server's time when this view was taken.
    #[schema(value_type = String, format = DateTime)]
    pub now: Rfc3339,
    pub elapsed_s: u64,
    pub remaining_s: u64,
    pub totals: Totals,
    pub listings: Vec<ListingView>,
    /// In a room change only: every listing's SKU in line-up order; `listings` then holds
    /// only the listings that changed, and the reader keeps the others as it has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lineup: Option<Vec<String>>,
}

/// Sums over the listings.
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub forecast: u64,
    pub consumed: u64,
    pub available: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ListingView {
    pub sku: String,
    pub name: String,
    pub forecast: u64,
    /// Locked + sold by orders naming this room.
    pub consumed: u64,
    /// Halted in this room (orders naming it are refused).
    pub halted: bool,
    pub stock: StockFigures,
    pub level: rules::Level,
    pub reasons: Vec<rules::Reason>,
    pub thresholds: rules::Thresholds,
    pub projection: Projection,
    pub hint: Option<HintView>,
    pub policy: PolicyView,
    pub series: SeriesView,
    pub lost: LostView,
    pub plan_shape: PlanShapeView,
}

/// How the listing's plan was made: `linear`, `points`, `front_loaded`, `slow_start` or
/// `history` (with the finished shows it averages); `note` says why a plan asked to follow
/// history is a straight line.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PlanShapeView {
    pub shape: &'static str,
    pub shows: Option<u32>,
    pub note: Option<Words>,
}

/// Words in Chinese and English: the pages choose.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Words {
    #[serde(rename = "zh-CN")]
    pub zh_cn: &'static str,
    pub en: &'static str,
}

impl PlanShapeView {
    fn of(listing: &crate::ledger::Listing) -> PlanShapeView {
        use crate::ledger::PlanShape;
        let (shape, shows, note) = match listing.shape {
            PlanShape::Given if listing.plan.is_empty() => ("linear", None, None),
            PlanShape::Given => ("points", None, None),
            PlanShape::FrontLoaded => ("front_loaded", None, None),
            PlanShape::SlowStart => ("slow_start", None, None),
            PlanShape::History { shows } => ("history", Some(shows), None),
            PlanShape::NoHistory => (
                "linear",
                None,
                Some(Words {
                    zh_cn: "该商品还没有卖出过的已结束场次，按直线计划",
                    en: "no finished show of this SKU sold anything yet: a straight line",
                }),
            ),
        };
        PlanShapeView { shape, shows, note }
    }
}

/// Units refused to orders naming the room, for want of stock or a halt: sales the show
/// lost. Counting them changes no stock.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LostView {
    pub units: u64,
    pub insufficient_stock: u64,
    pub halted: u64,
    /// Refused in the last ten minutes: the suggested restock covers these too.
    pub last_10_min: u64,
    /// Per platform, those that had any refused.
    pub platforms: Vec<PlatformLostView>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PlatformLostView {
    pub platform: String,
    pub insufficient_stock: u64,
    pub halted: u64,
}

/// The SKU's pool quantities (shared by every room and platform).
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct StockFigures {
    pub total: u64,
    pub reserved: u64,
    pub locked: u64,
    pub sold: u64,
    pub available: u64,
    pub halted: bool,
    /// Grows by one with each change of the SKU: a `stock` message with a higher one is
    /// newer.
    pub version: u64,
}

#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct Projection {
    pub velocity_per_min: f64,
    /// When the stock runs out at this velocity; `null` when nothing sells.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sellout_at: Option<Rfc3339>,
    /// Seconds from now to the sell-out.
    pub sellout_in_s: Option<u64>,
    pub demand_to_end: f64,
    pub suggested_restock: u64,
    pub restock_arrives_in_time: bool,
    pub plan_share: f64,
    pub consumed_share: f64,
}

/// A hint with its wording in both languages.
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct HintView {
    pub key: &'static str,
    #[serde(rename = "zh-CN")]
    pub zh_cn: &'static str,
    pub en: &'static str,
}

impl From<Hint> for HintView {
    fn from(hint: Hint) -> Self {
        let (zh_cn, en) = hint.text();
        HintView {
            key: hint.key(),
            zh_cn,
            en,
        }
    }
}

/// A listing's policy in API units: shares and factors as decimals, durations in seconds.
#[derive(Clone, Copy, Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub yellow: f64,
    pub orange: f64,
    pub red: f64,
    pub coverage: f64,
    pub lead_time_s: u64,
    pub tighten_share: f64,
    pub tighten_within_s: u64,
    pub tighten_factor: f64,
    pub relax_share: f64,
    pub relax_after_s: u64,
    pub relax_factor: f64,
    pub hysteresis: f64,
    pub dwell_s: u64,
    pub velocity_window_s: u64,
    pub auto_halt: bool,
    pub hot: bool,
}

impl From<&Policy> for PolicyView {
    fn from(policy: &Policy) -> Self {
        let decimal = |thousandths: u32| f64::from(thousandths) / 1000.0;
        PolicyView {
            yellow: decimal(policy.yellow),
            orange: decimal(policy.orange),
            red: decimal(policy.red),
            coverage: decimal(policy.coverage),
            lead_time_s: policy.lead_time_ms / 1000,
            tighten_share: decimal(policy.tighten_share),
            tighten_within_s: policy.tighten_within_ms / 1000,
            tighten_factor: decimal(policy.tighten_factor),
            relax_share: decimal(policy.relax_share),
            relax_after_s: policy.relax_after_ms / 1000,
            relax_factor: decimal(policy.relax_factor),
            hysteresis: decimal(policy.hysteresis),
            dwell_s: policy.dwell_ms / 1000,
            velocity_window_s: policy.velocity_window_ms / 1000,
            auto_halt: policy.auto_halt,
            hot: policy.hot,
        }
    }
}

/// The consumption curve: `actual[i]` is consumed at the end of bucket `i` (up to now, from
/// `before_start`, what was taken before the show); `plan` the planned curve as the corners
/// of a line, `[seconds into the show, units]`, from the start to the end of the show.
/// `actual` is left out where the reader has it already (a room change: the curve of a
/// listing that stays on the same schedule did not change; `point` messages extend it).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    pub bucket_s: f64,
    pub before_start: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Vec<u64>>,
    pub plan: Vec<(u64, u64)>,
}

/// Which curves a view carries.
#[derive(Clone, Copy)]
pub(super) enum Curves<'a> {
    /// None: a room in a list.
    None,
    /// Every listing's plan and actual curve: a snapshot.
    All,
    /// A room change: only the listings `changed` names, with their plan, and the actual
    /// curve of those `reshaped` names (new, or on a new schedule).
    Changed {
        changed: &'a dyn Fn(&ListingState) -> bool,
        reshaped: &'a dyn Fn(&ListingState) -> bool,
    },
}

/// The inputs of the rules for one listing of `room` at `now`.
pub(super) fn inputs<'a>(room: &'a Room, state: &'a ListingState, now: Timestamp) -> Inputs<'a> {
    Inputs {
        room,
        listing: &state.listing,
        consumed: state.tally.consumed,
        available: state.stock.available,
        series: &state.tally.series,
        lost_recent: lost_recent(state, now),
        now,
    }
}

/// Units refused to orders naming the room in the last [`rules::LOST_RECENT_WINDOW`].
fn lost_recent(state: &ListingState, now: Timestamp) -> u64 {
    let tally = &state.tally;
    let total = tally.lost.total();
    let from = Timestamp::from_millis(
        now.as_millis()
            .saturating_sub(rules::LOST_RECENT_WINDOW.as_millis() as u64),
    );
    total.saturating_sub(tally.lost_series.interpolate(from, now, total))
}

/// A listing's lost demand as screens and the API read it.
pub(super) fn lost_view(state: &ListingState, now: Timestamp) -> LostView {
    let lost = &state.tally.lost;
    LostView {
        units: lost.total(),
        insufficient_stock: lost.insufficient_stock(),
        halted: lost.halted(),
        last_10_min: lost_recent(state, now),
        platforms: lost
            .platforms
            .iter()
            .map(|entry| PlatformLostView {
                platform: entry.platform.as_str().to_owned(),
                insufficient_stock: entry.insufficient_stock,
                halted: entry.halted,
            })
            .collect(),
    }
}

/// The plan curve of a listing, in units, as the corners of a line from the start of the
/// show to its end.
pub(super) fn plan_units(room: &Room, state: &ListingState) -> Vec<(u64, u64)> {
    let show_ms = room.show_ms();
    let listing = &state.listing;
    let units = |elapsed_ms: u64| {
        (rules::plan_share(room, listing, elapsed_ms) * listing.forecast as f64).round() as u64
    };
    let mut corners = vec![(0, 0)];
    corners.extend(
        listing
            .plan
            .iter()
            .filter(|point| 0 < point.elapsed_ms && point.elapsed_ms < show_ms)
            .map(|point| (point.elapsed_ms / 1000, units(point.elapsed_ms))),
    );
    corners.push((show_ms / 1000, units(show_ms)));
    corners
}

/// One listing's view, given its evaluation and its SKU's name.
pub(super) fn listing_view(
    room: &Room,
    state: &ListingState,
    evaluation: Evaluation,
    name: String,
    now: Timestamp,
    curves: Curves<'_>,
) -> ListingView {
    let series = &state.tally.series;
    let current = if now < room.starts_at {
        0
    } else {
        series.bucket(now) + 1
    };
    let (with_plan, with_actual) = match curves {
        Curves::None => (false, false),
        Curves::All => (true, true),
        Curves::Changed { reshaped, .. } => (true, reshaped(state)),
    };
    let actual = with_actual.then(|| {
        (0..current.max(series.points.len()))
            .map(|bucket| series.at_bucket(bucket))
            .collect()
    });
    let forecast = evaluation.forecast;
    let stock = &state.stock;
    ListingView {
        sku: state.listing.sku.as_str().to_owned(),
        name,
        forecast: state.listing.forecast,
        consumed: state.tally.consumed,
        halted: state.tally.halted,
        stock: StockFigures {
            total: stock.total,
            reserved: stock.reserved,
            locked: stock.locked,
            sold: stock.sold,
            available: stock.available,
            halted: stock.halted,
            version: stock.version,
        },
        level: evaluation.level,
        reasons: evaluation.reasons,
        thresholds: evaluation.thresholds,
        projection: Projection {
            velocity_per_min: forecast.velocity_per_min,
            sellout_at: forecast.sellout_at.map(Rfc3339),
            sellout_in_s: forecast
                .sellout_at
                .map(|at| at.saturating_since(now).as_secs()),
            demand_to_end: forecast.demand_to_end,
            suggested_restock: forecast.suggested_restock,
            restock_arrives_in_time: forecast.restock_arrives_in_time,
            plan_share: forecast.plan_share,
            consumed_share: forecast.consumed_share,
        },
        hint: evaluation.hint.map(HintView::from),
        policy: PolicyView::from(&state.listing.policy),
        lost: lost_view(state, now),
        plan_shape: PlanShapeView::of(&state.listing),
        series: SeriesView {
            bucket_s: series.bucket_ms as f64 / 1000.0,
            before_start: series.before_start,
            actual,
            plan: if with_plan {
                plan_units(room, state)
            } else {
                Vec::new()
            },
        },
    }
}

/// The whole room's view; `level_of` gives each listing's last decided level.
pub(super) fn room_view(
    state: &RoomState,
    now: Timestamp,
    curves: Curves<'_>,
    level_of: impl Fn(&ListingState) -> Option<LevelState>,
    name_of: impl Fn(&ListingState) -> String,
) -> RoomView {
    let room = &state.room;
    let listings: Vec<ListingView> = state
        .listings
        .iter()
        .filter(|listing| match curves {
            Curves::Changed { changed, .. } => changed(listing),
            Curves::None | Curves::All => true,
        })
        .map(|listing| {
            let evaluation = rules::evaluate(&inputs(room, listing, now), level_of(listing));
            listing_view(room, listing, evaluation, name_of(listing), now, curves)
        })
        .collect();
    let lineup = matches!(curves, Curves::Changed { .. }).then(|| {
        state
            .listings
            .iter()
            .map(|listing| listing.listing.sku.as_str().to_owned())
            .collect()
    });
    let totals = Totals {
        forecast: state
            .listings
            .iter()
            .map(|listing| listing.listing.forecast)
            .sum(),
        consumed: state
            .listings
            .iter()
            .map(|listing| listing.tally.consumed)
            .sum(),
        available: state
            .listings
            .iter()
            .map(|listing| listing.stock.available)
            .sum(),
    };
    RoomView {
        room: room.id.as_str().to_owned(),
        name: room.name.clone(),
        starts_at: Rfc3339(room.starts_at),
        ends_at: Rfc3339(room.ends_at),
        now: Rfc3339(now),
        elapsed_s: now.saturating_since(room.starts_at).as_secs(),
        remaining_s: room.ends_at.saturating_since(now).as_secs(),
        totals,
        listings,
        lineup,
    }
}
