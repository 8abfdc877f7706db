//! The alert rules: pure functions of a listing, what it consumed, its stock and the time,
//! giving its level, the reasons for it, the effective thresholds and the forecast.
//!
//! # The rules (every number is a per-listing setting; defaults in brackets)
//!
//! - **Shares.** `consumed / forecast` at or above `yellow` [80 %], `orange` [100 %] or `red`
//!   [120 %] raises the level to that colour. Nothing available is red.
//! - **Coverage.** Yellow when `available < coverage × demand still to come`, where the demand
//!   still to come is the forecast times the share of the plan not yet reached. A slow supply
//!   chain raises the factor: `coverage × (1 + lead time / show length)`, so a restock that
//!   takes as long as the show needs twice the cover.
//! - **Dynamic thresholds.** Consumption at or above `tighten_share` [40 %] by
//!   `tighten_within` [30 min] into the show multiplies the shares by `tighten_factor` [0.85]
//!   and divides the coverage by it, for the rest of the show: alerts come earlier. Below
//!   `relax_share` [10 %] after `relax_after` [60 min], they are multiplied and divided by
//!   `relax_factor` [1.15] instead, while that lasts.
//! - **No flapping.** A level goes up at once. It goes down only when the numbers are
//!   `hysteresis` [5 % of the forecast; for the coverage, 5 % more cover] past the thresholds,
//!   and only after `dwell` [30 s] at the level.
//! - **Forecast.** Velocity is the consumption over the last `velocity_window` [2 min] (or
//!   the show so far, when shorter), in units a minute. Sell-out is `available / velocity`
//!   from now; the demand to the end is `velocity × time left`; the suggested restock is
//!   `effective coverage × demand to the end − available`, rounded up, never negative; it
//!   arrives in time when `now + lead time` is before the end.

use std::time::Duration;

use serde::Serialize;

use crate::clock::Timestamp;
use crate::ledger::{Listing, Policy, Room, Series};

/// Alert levels, in order.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Green,
    Yellow,
    Orange,
    Red,
}

impl Level {
    /// The level's name as the pages show it in Chinese.
    pub fn zh_cn(self) -> &'static str {
        match self {
            Level::Green => "正常",
            Level::Yellow => "预警",
            Level::Orange => "紧张",
            Level::Red => "告急",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Green => "green",
            Level::Yellow => "yellow",
            Level::Orange => "orange",
            Level::Red => "red",
        }
    }
}

/// How the dynamic rule adjusted the thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Adjustment {
    None,
    /// Selling far ahead of plan early: warnings come earlier.
    Tightened,
    /// Selling far behind plan: warnings come later.
    Relaxed,
}

/// The thresholds in force now, as shares of the forecast and a coverage factor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Thresholds {
    pub yellow: f64,
    pub orange: f64,
    pub red: f64,
    pub coverage: f64,
    pub adjustment: Adjustment,
    /// The share of the forecast sold in the show by the tightening deadline (or now, when
    /// that is earlier): what the dynamic rule measured.
    pub early_share: f64,
    /// The shares the dynamic rule compares with, the policy's scaled by the plan's pace:
    /// tightened at `tighten_share` sold by the deadline, relaxed under `relax_share` now.
    pub tighten_share: f64,
    pub relax_share: f64,
}

/// One rule that holds the level where it is, with its numbers.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reason {
    /// `consumed_share`, `coverage`, `sold_out`, `tightened`, `relaxed`, `hysteresis`,
    /// `dwell`.
    pub rule: &'static str,
    pub level: Level,
    /// The measured number and the threshold it was compared with.
    pub value: f64,
    pub threshold: f64,
    /// The same in words, in Chinese and in English: the pages choose.
    #[serde(rename = "zh-CN")]
    pub zh_cn: String,
    pub en: String,
}

impl Reason {
    pub fn new(
        rule: &'static str,
        level: Level,
        (value, threshold): (f64, f64),
        (zh_cn, en): (String, String),
    ) -> Reason {
        Reason {
            rule,
            level,
            value,
            threshold,
            zh_cn,
            en,
        }
    }
}

/// A listing's level as it was last decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelState {
    pub level: Level,
    /// When it took this level.
    pub since: Timestamp,
}

/// The forecast figures of a listing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Forecast {
    /// Units a minute over the velocity window.
    pub velocity_per_min: f64,
    /// When the available stock runs out at that velocity; `None` when nothing sells.
    #[serde(skip)]
    pub sellout_at: Option<Timestamp>,
    /// Units the velocity sells from now to the end of the show.
    pub demand_to_end: f64,
    /// Units to restock so the effective coverage holds to the end, plus what was refused
    /// in the last [`LOST_RECENT_WINDOW`].
    pub suggested_restock: u64,
    /// A restock ordered now arrives before the show ends.
    pub restock_arrives_in_time: bool,
    /// The share of the forecast the plan expects by now.
    pub plan_share: f64,
    /// The share of the forecast consumed.
    pub consumed_share: f64,
}

/// What the host should do, as a key that pages translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hint {
    SlowThePace,
    AddInteraction,
    StopSelling,
}

impl Hint {
    pub fn key(self) -> &'static str {
        match self {
            Hint::SlowThePace => "slow_the_pace",
            Hint::AddInteraction => "add_interaction",
            Hint::StopSelling => "stop_selling",
        }
    }

    /// The wording in (zh-CN, English).
    pub fn text(self) -> (&'static str, &'static str) {
        match self {
            Hint::SlowThePace => ("放慢节奏，控制出单", "Slow the pace"),
            Hint::AddInteraction => ("加强互动，带动下单", "Add interaction"),
            Hint::StopSelling => ("停止售卖，切换下一款", "Stop selling"),
        }
    }
}

/// What the rules say about a listing now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub level: Level,
    /// The level the rules give before hysteresis and dwell.
    pub raw_level: Level,
    pub reasons: Vec<Reason>,
    pub thresholds: Thresholds,
    pub forecast: Forecast,
    pub hint: Option<Hint>,
}

/// What the rules read.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub room: &'a Room,
    pub listing: &'a Listing,
    pub consumed: u64,
    pub available: u64,
    pub series: &'a Series,
    /// Units refused to orders naming the room in the last [`LOST_RECENT_WINDOW`]: demand
    /// a restock should cover too.
    pub lost_recent: u64,
    pub now: Timestamp,
}

/// How far back refused orders count toward the suggested restock.
pub const LOST_RECENT_WINDOW: Duration = Duration::from_secs(10 * 60);

fn share(thousandths: u32) -> f64 {
    f64::from(thousandths) / 1000.0
}

fn minutes(ms: u64) -> f64 {
    ms as f64 / 60_000.0
}

/// The share of the forecast the plan expects `elapsed_ms` into the show: linear over the
/// show without a plan; with one, straight lines from (0, 0) through its points, flat after
/// the last.
pub fn plan_share(room: &Room, listing: &Listing, elapsed_ms: u64) -> f64 {
    let show_ms = room.show_ms().max(1);
    if listing.plan.is_empty() {
        return elapsed_ms.min(show_ms) as f64 / show_ms as f64;
    }
    let mut previous = (0u64, 0u32);
    for point in &listing.plan {
        if elapsed_ms <= point.elapsed_ms {
            let span = (point.elapsed_ms - previous.0).max(1) as f64;
            let progress = (elapsed_ms - previous.0) as f64 / span;
            let from = share(previous.1);
            return from + (share(point.share) - from) * progress;
        }
        previous = (point.elapsed_ms, point.share);
    }
    share(previous.1)
}

/// How far the plan expects to be `elapsed_ms` into the show against a straight line: 1
/// for a straight line, above 1 for a plan that sells early, below 1 for a slow start. The
/// dynamic rules' shares are those of a straight-line plan, scaled by it, so a listing
/// selling to its shaped plan is neither ahead nor behind.
fn pace(room: &Room, listing: &Listing, elapsed_ms: u64) -> f64 {
    let show_ms = room.show_ms().max(1);
    let linear = elapsed_ms.min(show_ms) as f64 / show_ms as f64;
    if linear <= 0.0 {
        return 1.0;
    }
    // A plan that expects nothing yet would make any sale "ahead": a floor keeps the rule
    // from tightening on nothing.
    (plan_share(room, listing, elapsed_ms) / linear).max(PACE_MIN)
}

/// The least pace the dynamic rules assume: a tenth of a straight line's.
const PACE_MIN: f64 = 0.1;

/// The thresholds in force for `inputs`.
pub fn thresholds(inputs: &Inputs<'_>) -> Thresholds {
    let policy = &inputs.listing.policy;
    let room = inputs.room;
    let elapsed = inputs
        .now
        .as_millis()
        .saturating_sub(room.starts_at.as_millis());
    let forecast = inputs.listing.forecast as f64;
    let mark = room
        .starts_at
        .saturating_add(Duration::from_millis(policy.tighten_within_ms));
    let by_mark = inputs
        .series
        .interpolate(mark, inputs.now, inputs.consumed)
        .saturating_sub(inputs.series.before_start) as f64;
    let tighten_at =
        share(policy.tighten_share) * pace(room, inputs.listing, policy.tighten_within_ms);
    let relax_under = share(policy.relax_share) * pace(room, inputs.listing, elapsed);
    let adjustment = if tighten_at <= by_mark / forecast {
        Adjustment::Tightened
    } else if policy.relax_after_ms <= elapsed && (inputs.consumed as f64) / forecast < relax_under
    {
        Adjustment::Relaxed
    } else {
        Adjustment::None
    };
    let factor = match adjustment {
        Adjustment::None => 1.0,
        Adjustment::Tightened => share(policy.tighten_factor),
        Adjustment::Relaxed => share(policy.relax_factor),
    };
    let lead = 1.0 + policy.lead_time_ms as f64 / room.show_ms().max(1) as f64;
    Thresholds {
        yellow: share(policy.yellow) * factor,
        orange: share(policy.orange) * factor,
        red: share(policy.red) * factor,
        coverage: share(policy.coverage) * lead / factor,
        adjustment,
        early_share: by_mark / forecast,
        tighten_share: tighten_at,
        relax_share: relax_under,
    }
}

/// The level the numbers give, with the reasons, shifted by `margin` (a share of the
/// forecast, and a factor on the coverage) for deciding whether a higher level may be left.
fn level_of(
    inputs: &Inputs<'_>,
    thresholds: &Thresholds,
    consumed_share: f64,
    demand_to_come: f64,
    margin: f64,
) -> (Level, Vec<Reason>) {
    let mut reasons = Vec::new();
    if inputs.available == 0 {
        reasons.push(Reason::new(
            "sold_out",
            Level::Red,
            (0.0, 0.0),
            ("已无可售库存".to_owned(), "nothing is available".to_owned()),
        ));
    }
    for (level, threshold) in [
        (Level::Red, thresholds.red),
        (Level::Orange, thresholds.orange),
        (Level::Yellow, thresholds.yellow),
    ] {
        if threshold - margin <= consumed_share {
            let (consumed, at) = (consumed_share * 100.0, threshold * 100.0);
            reasons.push(Reason::new(
                "consumed_share",
                level,
                (consumed_share, threshold),
                (
                    format!(
                        "已消耗预估的 {consumed:.0}%，达到{}线 {at:.0}%",
                        level.zh_cn()
                    ),
                    format!(
                        "{consumed:.0} % of the forecast consumed, {} at {at:.0} %",
                        level.as_str()
                    ),
                ),
            ));
            break;
        }
    }
    let needed = thresholds.coverage * (1.0 + margin) * demand_to_come;
    if 0.0 < demand_to_come && (inputs.available as f64) < needed {
        let (available, factor) = (inputs.available, thresholds.coverage * (1.0 + margin));
        reasons.push(Reason::new(
            "coverage",
            Level::Yellow,
            (available as f64, needed),
            (
                format!("可售 {available} 件，不足后续预计需求 {demand_to_come:.0} 件的 {factor:.2} 倍"),
                format!(
                    "{available} available cover less than {factor:.2} × the {demand_to_come:.0} units still to come"
                ),
            ),
        ));
    }
    let level = reasons
        .iter()
        .map(|reason| reason.level)
        .max()
        .unwrap_or(Level::Green);
    (level, reasons)
}

/// The forecast figures for `inputs` under `thresholds`.
pub fn forecast(inputs: &Inputs<'_>, thresholds: &Thresholds) -> Forecast {
    let room = inputs.room;
    let policy: &Policy = &inputs.listing.policy;
    let now = inputs.now;
    let elapsed = now.as_millis().saturating_sub(room.starts_at.as_millis());
    let window = policy.velocity_window_ms.min(elapsed);
    let velocity_per_min = if window == 0 {
        0.0
    } else {
        let from = Timestamp::from_millis(now.as_millis() - window);
        let before = inputs.series.interpolate(from, now, inputs.consumed);
        inputs.consumed.saturating_sub(before) as f64 / minutes(window)
    };
    let left_ms = room.ends_at.as_millis().saturating_sub(now.as_millis());
    let sellout_at = (0.0 < velocity_per_min).then(|| {
        let minutes_left = inputs.available as f64 / velocity_per_min;
        now.saturating_add(Duration::from_millis(
            (minutes_left * 60_000.0).round() as u64
        ))
    });
    let demand_to_end = velocity_per_min * minutes(left_ms);
    let wanted = (thresholds.coverage * demand_to_end).ceil() as u64;
    let forecast = inputs.listing.forecast as f64;
    Forecast {
        velocity_per_min,
        sellout_at,
        demand_to_end,
        suggested_restock: wanted
            .saturating_add(inputs.lost_recent)
            .saturating_sub(inputs.available),
        restock_arrives_in_time: now.as_millis().saturating_add(policy.lead_time_ms)
            < room.ends_at.as_millis(),
        plan_share: plan_share(room, inputs.listing, elapsed),
        consumed_share: inputs.consumed as f64 / forecast,
    }
}

/// Evaluates a listing: its level given the last decided one (`None` for the first time),
/// the reasons, the thresholds, the forecast and the hint.
pub fn evaluate(inputs: &Inputs<'_>, previous: Option<LevelState>) -> Evaluation {
    let policy = &inputs.listing.policy;
    let thresholds = thresholds(inputs);
    let forecast = forecast(inputs, &thresholds);
    let demand_to_come = inputs.listing.forecast as f64 * (1.0 - forecast.plan_share).max(0.0);
    let (raw_level, mut reasons) = level_of(
        inputs,
        &thresholds,
        forecast.consumed_share,
        demand_to_come,
        0.0,
    );
    let mut level = raw_level;
    if let Some(previous) = previous
        && raw_level < previous.level
    {
        let margin = share(policy.hysteresis);
        let (held, held_reasons) = level_of(
            inputs,
            &thresholds,
            forecast.consumed_share,
            demand_to_come,
            margin,
        );
        let dwelt = inputs.now.saturating_since(previous.since).as_millis() as u64;
        if previous.level <= held {
            level = previous.level;
            reasons = held_reasons;
            let past = margin * 100.0;
            reasons.push(Reason::new(
                "hysteresis",
                previous.level,
                (margin, margin),
                (
                    format!(
                        "保持{}，直到指标回落到阈值以下 {past:.0}%",
                        previous.level.zh_cn()
                    ),
                    format!(
                        "stays {} until the numbers are {past:.0} % past its threshold",
                        previous.level.as_str()
                    ),
                ),
            ));
        } else if dwelt < policy.dwell_ms {
            level = previous.level;
            let (least, so_far) = (policy.dwell_ms / 1000, dwelt / 1000);
            reasons.push(Reason::new(
                "dwell",
                previous.level,
                (dwelt as f64 / 1000.0, policy.dwell_ms as f64 / 1000.0),
                (
                    format!(
                        "{}至少保持 {least} 秒，已保持 {so_far} 秒",
                        previous.level.zh_cn()
                    ),
                    format!(
                        "stays {} for at least {least} s; {so_far} s so far",
                        previous.level.as_str()
                    ),
                ),
            ));
        } else {
            level = held.max(raw_level);
            reasons = held_reasons;
        }
    }
    match thresholds.adjustment {
        Adjustment::None => {}
        Adjustment::Tightened => {
            let (sold, within, factor, at) = (
                thresholds.early_share * 100.0,
                policy.tighten_within_ms / 60_000,
                share(policy.tighten_factor),
                thresholds.tighten_share * 100.0,
            );
            reasons.push(Reason::new(
                "tightened",
                level,
                (thresholds.early_share, thresholds.tighten_share),
                (
                    format!(
                        "开播 {within} 分钟内已售出预估的 {sold:.0}%（按计划 {at:.0}% 即收紧）：阈值 × {factor:.2}"
                    ),
                    format!(
                        "{sold:.0} % of the forecast sold within {within} min (tightens at {at:.0} % on this plan): thresholds × {factor:.2}"
                    ),
                ),
            ));
        }
        Adjustment::Relaxed => {
            let (under, after, factor) = (
                thresholds.relax_share * 100.0,
                policy.relax_after_ms / 60_000,
                share(policy.relax_factor),
            );
            reasons.push(Reason::new(
                "relaxed",
                level,
                (forecast.consumed_share, thresholds.relax_share),
                (
                    format!("开播 {after} 分钟后售出不足预估的 {under:.0}%：阈值 × {factor:.2}"),
                    format!(
                        "under {under:.0} % of the forecast after {after} min: thresholds × {factor:.2}"
                    ),
                ),
            ));
        }
    }
    let hint = match level {
        Level::Red => Some(Hint::StopSelling),
        Level::Orange => Some(Hint::SlowThePace),
        _ if thresholds.adjustment == Adjustment::Relaxed => Some(Hint::AddInteraction),
        _ => None,
    };
    Evaluation {
        level,
        raw_level,
        reasons,
        thresholds,
        forecast,
        hint,
    }
}
