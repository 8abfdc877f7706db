//! What a finished show leaves of each listing: its forecast, what it consumed and lost, when
//! it sold fastest, and its consumption curve normalised to the show's length. Kept in the
//! SKU's entry (the latest [`SHOWS_KEPT_MAX`]), made when the show ends (`Fact::ShowEnded`)
//! and carried by snapshots, so plans shaped by history and suggested forecasts survive
//! restarts and the room being set up for the next show.

use super::room::{Listing, ListingTally, PlanPoint, PlanShape, Room, Series, corners_over};
use super::types::RoomId;
use crate::clock::Timestamp;

/// Finished shows kept per SKU, the newest last.
pub const SHOWS_KEPT_MAX: usize = 20;
/// A normalised curve's points: at every twentieth of the show, from its start to its end.
pub const CURVE_POINTS: usize = 21;

/// One listing of one finished show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShowRecord {
    pub room: RoomId,
    /// The room's name then: the show's title.
    pub name: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub forecast: u64,
    /// Consumed during the show (locked + sold by orders naming the room, less what was taken
    /// before it started), at its end.
    pub consumed: u64,
    /// Units refused to the show's orders (for want of stock, or halted).
    pub lost: u64,
    /// When the SKU first had nothing available during the show.
    pub sold_out_at: Option<Timestamp>,
    /// The fastest bucket of the show: units consumed in it, its length, and when it
    /// started (`None` when nothing was consumed).
    pub peak_units: u64,
    pub bucket_ms: u64,
    pub peak_at: Option<Timestamp>,
    /// The share of the most the show consumed at once reached at each twentieth of the
    /// show, in thousandths:
    /// [`CURVE_POINTS`] values from 0 to 1000, never going down; empty when nothing was
    /// consumed.
    pub curve: Vec<u16>,
}

impl ShowRecord {
    /// The record of `listing` in `room`, from its tally at the end of the show.
    pub fn of(room: &Room, listing: &Listing, tally: &ListingTally) -> ShowRecord {
        let series = &tally.series;
        let last = series.at_bucket(series.buckets.saturating_sub(1) as usize);
        let in_show = |at: Timestamp| {
            series
                .interpolate(at, room.ends_at, last)
                .saturating_sub(series.before_start)
        };
        let consumed = last.saturating_sub(series.before_start);
        // The curve is a share of the most the show had consumed at once: locks that later
        // expired or were cancelled do not push it past its end.
        let most = series
            .points
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(last)
            .saturating_sub(series.before_start);
        let show_ms = room.show_ms();
        let curve = if most == 0 {
            Vec::new()
        } else {
            let mut reached = 0u16;
            (0..CURVE_POINTS as u64)
                .map(|point| {
                    let at = Timestamp::from_millis(
                        room.starts_at.as_millis() + show_ms * point / (CURVE_POINTS as u64 - 1),
                    );
                    let share = if point == CURVE_POINTS as u64 - 1 {
                        1000
                    } else {
                        (in_show(at) * 1000 / most).min(1000) as u16
                    };
                    reached = reached.max(share);
                    reached
                })
                .collect()
        };
        let (peak_units, peak_at) = peak(series);
        ShowRecord {
            room: room.id.clone(),
            name: room.name.clone(),
            starts_at: room.starts_at,
            ends_at: room.ends_at,
            forecast: listing.forecast,
            consumed,
            lost: tally.lost.total(),
            sold_out_at: tally.sold_out_at.filter(|at| *at < room.ends_at),
            peak_units,
            bucket_ms: series.bucket_ms,
            peak_at,
            curve,
        }
    }

    /// The fastest rate of the show, in units a minute.
    pub fn peak_per_min(&self) -> f64 {
        self.peak_units as f64 * 60_000.0 / self.bucket_ms.max(1) as f64
    }

    /// The same show: a record is made once per show of a room.
    pub fn same_show(&self, other: &ShowRecord) -> bool {
        self.room == other.room && self.starts_at == other.starts_at
    }
}

/// The fastest bucket of a curve: units consumed in it, and when it started.
fn peak(series: &Series) -> (u64, Option<Timestamp>) {
    let mut best = (0u64, None);
    let mut before = series.before_start;
    for (bucket, value) in series.points.iter().enumerate() {
        let sold = value.saturating_sub(before);
        if best.0 < sold {
            best = (
                sold,
                Some(Timestamp::from_millis(
                    series.starts_at.as_millis() + bucket as u64 * series.bucket_ms,
                )),
            );
        }
        before = *value;
    }
    best
}

/// Adds `record` to a SKU's shows unless that show is there already; keeps the newest
/// [`SHOWS_KEPT_MAX`].
pub(super) fn remember(shows: &mut Vec<ShowRecord>, record: ShowRecord) {
    if shows.iter().any(|kept| kept.same_show(&record)) {
        return;
    }
    shows.push(record);
    shows.sort_by_key(|kept| kept.starts_at);
    if SHOWS_KEPT_MAX < shows.len() {
        shows.drain(..shows.len() - SHOWS_KEPT_MAX);
    }
}

/// The average normalised curve of the latest `count` shows that consumed anything, and how
/// many there were; `None` when there were none.
pub fn average_curve(shows: &[ShowRecord], count: usize) -> Option<(Vec<u16>, usize)> {
    let curves: Vec<&Vec<u16>> = shows
        .iter()
        .rev()
        .filter(|show| show.curve.len() == CURVE_POINTS)
        .take(count)
        .map(|show| &show.curve)
        .collect();
    if curves.is_empty() {
        return None;
    }
    let mut reached = 0u16;
    let average = (0..CURVE_POINTS)
        .map(|point| {
            let sum: u64 = curves.iter().map(|curve| u64::from(curve[point])).sum();
            let mean = ((sum + curves.len() as u64 / 2) / curves.len() as u64) as u16;
            reached = reached.max(mean);
            reached
        })
        .collect();
    Some((average, curves.len()))
}

/// A plan shaped by the SKU's history over a show of `show_ms`: the average curve of its
/// latest `count` shows that sold, as corners at every twentieth of the show; a straight
/// line ([`PlanShape::NoHistory`]) when there are none.
pub fn history_plan(
    shows: &[ShowRecord],
    count: usize,
    show_ms: u64,
) -> (Vec<PlanPoint>, PlanShape) {
    match average_curve(shows, count) {
        Some((curve, used)) => (
            corners_over(
                curve.iter().enumerate().skip(1).map(|(point, share)| {
                    (
                        point as u64 * 1000 / (CURVE_POINTS as u64 - 1),
                        u32::from(*share),
                    )
                }),
                show_ms,
            ),
            PlanShape::History { shows: used as u32 },
        ),
        None => (Vec::new(), PlanShape::NoHistory),
    }
}
