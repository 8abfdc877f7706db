//! The journal's record format: its own serde types, versioned, encoded with MessagePack.
//!
//! The ledger's types never derive `Serialize`; these do, and converting between the two is
//! written out here, so a change inside the ledger can never change the bytes on disk by
//! accident. Decoding validates every id and quantity as the API does: journal bytes are
//! outside input.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::ledger::{
    Allocation, AllotmentMove, Consumed, Exclusive, Fact, Halt, LedgerImage, Line, Lines, Listing,
    ListingAck, ListingId, ListingTally, Lost, LostEntry, OrderId, OrderImage, OrderRequest,
    OrderStatus, Outcomes, PlanPoint, PlanShape, Platform, PlatformLost, Policy, Qty, RestockId,
    Room, RoomId, Series, ShowRecord, SkuId, SkuImage, SkuSettings, Stock, Stocks, SyncMark,
};

/// Why bytes did not decode into a fact or an image.
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
    #[error("not a valid record: {0}")]
    Format(#[from] rmp_serde::decode::Error),
    #[error("invalid value in record: {0}")]
    Value(String),
}

/// How deep a record may nest: records nest a handful of levels, and a bound keeps hostile
/// bytes from exhausting the stack.
const RECORD_DEPTH_MAX: usize = 32;

fn from_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(RECORD_DEPTH_MAX);
    T::deserialize(&mut deserializer)
}

fn value<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, DecodeError> {
    result.map_err(|error| DecodeError::Value(error.to_string()))
}

#[derive(Serialize, Deserialize)]
struct StockRecord<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    total: u64,
    reserved: u64,
    locked: u64,
    sold: u64,
    available: u64,
    halted: bool,
    version: u64,
}

#[derive(Serialize, Deserialize)]
struct OrderRecord<'a> {
    #[serde(borrow)]
    order_id: Cow<'a, str>,
    #[serde(borrow)]
    platform: Cow<'a, str>,
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow)]
    lines: Vec<(Cow<'a, str>, u32)>,
}

#[derive(Serialize, Deserialize)]
struct SettingsRecord<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    lock_ttl_ms: Option<u64>,
    #[serde(borrow)]
    quotas: Vec<(Cow<'a, str>, u64)>,
}

/// A SKU's platform listings and allocation (see `ledger::SkuSettings`). Since format 7.
#[derive(Serialize, Deserialize, Default)]
struct ChannelsRecord<'a> {
    #[serde(borrow)]
    listings: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    allocation: AllocationRecord,
}

#[derive(Serialize, Deserialize)]
enum AllocationRecord {
    Shared {
        buffer: u64,
    },
    Exclusive {
        shares: Vec<(String, u32)>,
        floor: u64,
        allotted: Vec<(String, u64)>,
        rebalance_every_s: u64,
    },
}

impl Default for AllocationRecord {
    fn default() -> Self {
        AllocationRecord::Shared { buffer: 0 }
    }
}

/// A platform's acknowledgement of one listing update (see `ledger::ListingAck`): the SKU,
/// the listing, the version, the quantity and the platform's consumption then.
type SyncRecord<'a> = (Cow<'a, str>, Cow<'a, str>, u64, u64, u64);

fn sync_record(ack: &ListingAck) -> SyncRecord<'_> {
    (
        Cow::Borrowed(ack.sku.as_str()),
        Cow::Borrowed(ack.listing.as_str()),
        ack.version,
        ack.quantity,
        ack.consumed,
    )
}

fn listing_ack(record: SyncRecord<'_>) -> Result<ListingAck, DecodeError> {
    let (sku, listing, version, quantity, consumed) = record;
    Ok(ListingAck {
        sku: value(SkuId::new(&sku))?,
        listing: value(ListingId::new(&listing))?,
        version,
        quantity,
        consumed,
    })
}

/// What a SKU keeps of a platform's last acknowledgement (see `ledger::SyncMark`).
type MarkRecord<'a> = (Cow<'a, str>, Cow<'a, str>, u64, u64, u64, u64);

fn sync_mark(record: MarkRecord<'_>) -> Result<SyncMark, DecodeError> {
    let (platform, listing, version, quantity, consumed, at) = record;
    Ok(SyncMark {
        platform: value(Platform::new(&platform))?,
        listing: value(ListingId::new(&listing))?,
        version,
        quantity,
        consumed,
        at: Timestamp::from_millis(at),
    })
}

/// One fact as the journal stores it. New variants go at the end; existing ones never
/// change shape (a new shape is a new variant).
#[derive(Serialize, Deserialize)]
enum FactRecord<'a> {
    SkuPut {
        at: u64,
        #[serde(borrow)]
        settings: SettingsRecord<'a>,
        #[serde(borrow)]
        stock: StockRecord<'a>,
    },
    Restocked {
        at: u64,
        qty: u64,
        #[serde(borrow)]
        restock_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        stock: StockRecord<'a>,
    },
    Halted {
        at: u64,
        #[serde(borrow)]
        stock: StockRecord<'a>,
    },
    Resumed {
        at: u64,
        #[serde(borrow)]
        stock: StockRecord<'a>,
    },
    OrderReserved {
        at: u64,
        #[serde(borrow)]
        order: OrderRecord<'a>,
        expires_at: u64,
        #[serde(borrow)]
        stocks: Vec<StockRecord<'a>>,
    },
    OrderSold {
        at: u64,
        #[serde(borrow)]
        order: OrderRecord<'a>,
        #[serde(borrow)]
        stocks: Vec<StockRecord<'a>>,
    },
    OrderConfirmed {
        at: u64,
        /// Only the id: replay finds the order, placed earlier, in the ledger.
        #[serde(borrow)]
        order_id: Cow<'a, str>,
        retaken: bool,
        #[serde(borrow)]
        stocks: Vec<StockRecord<'a>>,
    },
    OrderCancelled {
        at: u64,
        /// Only the id: replay finds the order, placed earlier, in the ledger.
        #[serde(borrow)]
        order_id: Cow<'a, str>,
        #[serde(borrow)]
        stocks: Vec<StockRecord<'a>>,
    },
    OrderExpired {
        at: u64,
        /// Only the id: replay finds the order, placed earlier, in the ledger.
        #[serde(borrow)]
        order_id: Cow<'a, str>,
        #[serde(borrow)]
        stocks: Vec<StockRecord<'a>>,
    },
    OrderRefunded {
        at: u64,
        /// Only the id: replay finds the order, placed earlier, in the ledger.
        #[serde(borrow)]
        order_id: Cow<'a, str>,
        #[serde(borrow)]
        stocks: Vec<StockRecord<'a>>,
    },
    RoomPut {
        at: u64,
        #[serde(borrow)]
        room: RoomRecord<'a>,
    },
    ListingHalted {
        at: u64,
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        sku: Cow<'a, str>,
        auto: bool,
    },
    ListingResumed {
        at: u64,
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        sku: Cow<'a, str>,
    },
    Tick {
        at: u64,
    },
    AlertAcknowledged {
        at: u64,
        id: u64,
        #[serde(borrow)]
        by: Cow<'a, str>,
    },
    LostDemand {
        at: u64,
        #[serde(borrow)]
        entries: Vec<LostRecord<'a>>,
    },
    ShowEnded {
        at: u64,
        #[serde(borrow)]
        records: Vec<(Cow<'a, str>, ShowRecordRecord<'a>)>,
    },
    /// `ListingHalted` with who halted it.
    ListingHaltedBy {
        at: u64,
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        sku: Cow<'a, str>,
        auto: bool,
        #[serde(borrow)]
        by: Option<Cow<'a, str>>,
    },
    /// `ListingResumed` with who resumed it.
    ListingResumedBy {
        at: u64,
        #[serde(borrow)]
        room: Cow<'a, str>,
        #[serde(borrow)]
        sku: Cow<'a, str>,
        #[serde(borrow)]
        by: Option<Cow<'a, str>>,
    },
    /// Since format 6.
    OrdersForgotten {
        at: u64,
        settled_before: u64,
        sold_before: u64,
    },
    /// A platform acknowledged updates to its listings: (sku, listing, version, quantity,
    /// consumed) each. Since format 7.
    ListingsSynced {
        at: u64,
        #[serde(borrow)]
        platform: Cow<'a, str>,
        #[serde(borrow)]
        acks: Vec<SyncRecord<'a>>,
    },
    /// An exclusive SKU's allotments changed; `moved`: (from, to, units, why). Since
    /// format 7.
    Allotted {
        at: u64,
        #[serde(borrow)]
        sku: Cow<'a, str>,
        allotted: Vec<(String, u64)>,
        moved: Option<(String, String, u64, String)>,
    },
    /// `SkuPut` with the SKU's platform listings and allocation. Since format 7.
    SkuPutWithChannels {
        at: u64,
        #[serde(borrow)]
        settings: SettingsRecord<'a>,
        #[serde(borrow)]
        channels: ChannelsRecord<'a>,
        #[serde(borrow)]
        stock: StockRecord<'a>,
    },
}

/// What a finished show left of one listing (see `ledger::ShowRecord`).
#[derive(Serialize, Deserialize)]
struct ShowRecordRecord<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    starts_at: u64,
    ends_at: u64,
    forecast: u64,
    consumed: u64,
    lost: u64,
    peak_units: u64,
    bucket_ms: u64,
    peak_at: Option<u64>,
    curve: Vec<u16>,
    #[serde(default)]
    sold_out_at: Option<u64>,
}

fn show_record_record(record: &ShowRecord) -> ShowRecordRecord<'_> {
    ShowRecordRecord {
        room: Cow::Borrowed(record.room.as_str()),
        name: Cow::Borrowed(&record.name),
        starts_at: record.starts_at.as_millis(),
        ends_at: record.ends_at.as_millis(),
        forecast: record.forecast,
        consumed: record.consumed,
        lost: record.lost,
        peak_units: record.peak_units,
        bucket_ms: record.bucket_ms,
        peak_at: record.peak_at.map(Timestamp::as_millis),
        curve: record.curve.clone(),
        sold_out_at: record.sold_out_at.map(Timestamp::as_millis),
    }
}

fn show_record(record: ShowRecordRecord<'_>) -> Result<ShowRecord, DecodeError> {
    let curve_fits = record.curve.is_empty()
        || (record.curve.len() == crate::ledger::CURVE_POINTS
            && record.curve.windows(2).all(|pair| pair[0] <= pair[1])
            && record.curve.last() == Some(&1000));
    if !curve_fits || record.ends_at < record.starts_at || record.bucket_ms == 0 {
        return Err(DecodeError::Value(format!(
            "the record of show {} at {} does not fit a show",
            record.room, record.starts_at
        )));
    }
    Ok(ShowRecord {
        room: value(RoomId::new(&record.room))?,
        name: record.name.into_owned(),
        starts_at: Timestamp::from_millis(record.starts_at),
        ends_at: Timestamp::from_millis(record.ends_at),
        forecast: record.forecast,
        consumed: record.consumed,
        lost: record.lost,
        peak_units: record.peak_units,
        bucket_ms: record.bucket_ms,
        peak_at: record.peak_at.map(Timestamp::from_millis),
        curve: record.curve,
        sold_out_at: record.sold_out_at.map(Timestamp::from_millis),
    })
}

/// Units refused to orders naming a room, on one listing: (platform, for want of stock,
/// halted) per platform.
#[derive(Serialize, Deserialize)]
struct LostRecord<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    sku: Cow<'a, str>,
    #[serde(borrow)]
    platforms: Vec<(Cow<'a, str>, u64, u64)>,
}

fn lost_platforms(lost: &Lost) -> Vec<(Cow<'_, str>, u64, u64)> {
    lost.platforms
        .iter()
        .map(|entry| {
            (
                Cow::Borrowed(entry.platform.as_str()),
                entry.insufficient_stock,
                entry.halted,
            )
        })
        .collect()
}

fn lost(platforms: Vec<(Cow<'_, str>, u64, u64)>) -> Result<Lost, DecodeError> {
    Ok(Lost {
        platforms: platforms
            .into_iter()
            .map(|(platform, insufficient_stock, halted)| {
                Ok(PlatformLost {
                    platform: value(Platform::new(&platform))?,
                    insufficient_stock,
                    halted,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
    })
}

/// A listing's policy, field by field (see `ledger::Policy`).
#[derive(Serialize, Deserialize)]
struct PolicyRecord {
    yellow: u32,
    orange: u32,
    red: u32,
    coverage: u32,
    lead_time_ms: u64,
    tighten_share: u32,
    tighten_within_ms: u64,
    tighten_factor: u32,
    relax_share: u32,
    relax_after_ms: u64,
    relax_factor: u32,
    hysteresis: u32,
    dwell_ms: u64,
    velocity_window_ms: u64,
    auto_halt: bool,
    hot: bool,
}

#[derive(Serialize, Deserialize)]
struct ListingRecord<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    forecast: u64,
    /// (elapsed ms, share in thousandths) per plan point.
    plan: Vec<(u64, u32)>,
    policy: PolicyRecord,
    /// How the plan was made: 0 given (absent in earlier records), 1 front-loaded, 2 slow
    /// start, 3 history (of `shape_shows` shows), 4 history asked for, none found.
    #[serde(default)]
    shape: u8,
    #[serde(default)]
    shape_shows: u32,
}

fn shape_record(shape: PlanShape) -> (u8, u32) {
    match shape {
        PlanShape::Given => (0, 0),
        PlanShape::FrontLoaded => (1, 0),
        PlanShape::SlowStart => (2, 0),
        PlanShape::History { shows } => (3, shows),
        PlanShape::NoHistory => (4, 0),
    }
}

fn shape(code: u8, shows: u32) -> Result<PlanShape, DecodeError> {
    Ok(match code {
        0 => PlanShape::Given,
        1 => PlanShape::FrontLoaded,
        2 => PlanShape::SlowStart,
        3 => PlanShape::History { shows },
        4 => PlanShape::NoHistory,
        other => return Err(DecodeError::Value(format!("unknown plan shape {other}"))),
    })
}

#[derive(Serialize, Deserialize)]
struct RoomRecord<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    starts_at: u64,
    ends_at: u64,
    #[serde(borrow)]
    listings: Vec<ListingRecord<'a>>,
}

/// What one room listing of a SKU consumed, in a snapshot.
#[derive(Serialize, Deserialize)]
struct TallyRecord<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    halted: bool,
    consumed: u64,
    series_starts_at: u64,
    series_bucket_ms: u64,
    series_buckets: u64,
    series: Vec<u64>,
    #[serde(default)]
    series_before_start: u64,
    /// Added after the first snapshots: 0 (counts every order) when absent.
    #[serde(default)]
    generation: u64,
    /// Added with lost demand: none when absent.
    #[serde(borrow, default)]
    lost: Vec<(Cow<'a, str>, u64, u64)>,
    #[serde(default)]
    lost_series: Vec<u64>,
    #[serde(default)]
    lost_before_start: u64,
    /// Added with the post-show report: (sold, refunded, cancelled, expired) units.
    #[serde(default)]
    outcomes: (u64, u64, u64, u64),
    #[serde(default)]
    sold_out_at: Option<u64>,
    #[serde(borrow, default)]
    halts: Vec<HaltRecord<'a>>,
}

/// A halt of a listing and its resumption (see `ledger::Halt`).
#[derive(Serialize, Deserialize)]
struct HaltRecord<'a> {
    at: u64,
    auto: bool,
    #[serde(borrow)]
    by: Option<Cow<'a, str>>,
    resumed_at: Option<u64>,
    #[serde(borrow)]
    resumed_by: Option<Cow<'a, str>>,
}

fn policy_record(policy: &Policy) -> PolicyRecord {
    PolicyRecord {
        yellow: policy.yellow,
        orange: policy.orange,
        red: policy.red,
        coverage: policy.coverage,
        lead_time_ms: policy.lead_time_ms,
        tighten_share: policy.tighten_share,
        tighten_within_ms: policy.tighten_within_ms,
        tighten_factor: policy.tighten_factor,
        relax_share: policy.relax_share,
        relax_after_ms: policy.relax_after_ms,
        relax_factor: policy.relax_factor,
        hysteresis: policy.hysteresis,
        dwell_ms: policy.dwell_ms,
        velocity_window_ms: policy.velocity_window_ms,
        auto_halt: policy.auto_halt,
        hot: policy.hot,
    }
}

fn policy(record: PolicyRecord) -> Policy {
    Policy {
        yellow: record.yellow,
        orange: record.orange,
        red: record.red,
        coverage: record.coverage,
        lead_time_ms: record.lead_time_ms,
        tighten_share: record.tighten_share,
        tighten_within_ms: record.tighten_within_ms,
        tighten_factor: record.tighten_factor,
        relax_share: record.relax_share,
        relax_after_ms: record.relax_after_ms,
        relax_factor: record.relax_factor,
        hysteresis: record.hysteresis,
        dwell_ms: record.dwell_ms,
        velocity_window_ms: record.velocity_window_ms,
        auto_halt: record.auto_halt,
        hot: record.hot,
    }
}

fn room_record(room: &Room) -> RoomRecord<'_> {
    RoomRecord {
        id: Cow::Borrowed(room.id.as_str()),
        name: Cow::Borrowed(&room.name),
        starts_at: room.starts_at.as_millis(),
        ends_at: room.ends_at.as_millis(),
        listings: room
            .listings
            .iter()
            .map(|listing| ListingRecord {
                sku: Cow::Borrowed(listing.sku.as_str()),
                forecast: listing.forecast,
                plan: listing
                    .plan
                    .iter()
                    .map(|point| (point.elapsed_ms, point.share))
                    .collect(),
                policy: policy_record(&listing.policy),
                shape: shape_record(listing.shape).0,
                shape_shows: shape_record(listing.shape).1,
            })
            .collect(),
    }
}

fn room(record: RoomRecord<'_>) -> Result<Arc<Room>, DecodeError> {
    let room = Room {
        id: value(RoomId::new(&record.id))?,
        name: record.name.into_owned(),
        starts_at: Timestamp::from_millis(record.starts_at),
        ends_at: Timestamp::from_millis(record.ends_at),
        listings: record
            .listings
            .into_iter()
            .map(|listing| {
                Ok(Listing {
                    sku: value(SkuId::new(&listing.sku))?,
                    forecast: listing.forecast,
                    plan: listing
                        .plan
                        .into_iter()
                        .map(|(elapsed_ms, share)| PlanPoint { elapsed_ms, share })
                        .collect(),
                    shape: shape(listing.shape, listing.shape_shows)?,
                    policy: policy(listing.policy),
                })
            })
            .collect::<Result<_, DecodeError>>()?,
    };
    value(room.validate())?;
    Ok(Arc::new(room))
}

fn tally_record(tally: &ListingTally) -> TallyRecord<'_> {
    TallyRecord {
        room: Cow::Borrowed(tally.room.as_str()),
        halted: tally.halted,
        consumed: tally.consumed,
        series_starts_at: tally.series.starts_at.as_millis(),
        series_bucket_ms: tally.series.bucket_ms,
        series_buckets: tally.series.buckets,
        series: tally.series.points.clone(),
        series_before_start: tally.series.before_start,
        generation: tally.generation,
        lost: lost_platforms(&tally.lost),
        lost_series: tally.lost_series.points.clone(),
        lost_before_start: tally.lost_series.before_start,
        outcomes: (
            tally.outcomes.sold,
            tally.outcomes.refunded,
            tally.outcomes.cancelled,
            tally.outcomes.expired,
        ),
        sold_out_at: tally.sold_out_at.map(Timestamp::as_millis),
        halts: tally
            .halts
            .iter()
            .map(|halt| HaltRecord {
                at: halt.at.as_millis(),
                auto: halt.auto,
                by: halt.by.as_deref().map(Cow::Borrowed),
                resumed_at: halt.resumed_at.map(Timestamp::as_millis),
                resumed_by: halt.resumed_by.as_deref().map(Cow::Borrowed),
            })
            .collect(),
    }
}

fn tally(record: TallyRecord<'_>) -> Result<ListingTally, DecodeError> {
    let sane = (1..=crate::ledger::SHOW_MS_MAX).contains(&record.series_bucket_ms)
        && (1..=crate::ledger::SERIES_POINTS_MAX).contains(&record.series_buckets)
        && record.series.len() as u64 <= record.series_buckets
        && record.lost_series.len() as u64 <= record.series_buckets;
    if !sane {
        return Err(DecodeError::Value(format!(
            "the consumption series of room {} does not fit its show",
            record.room
        )));
    }
    let lost = lost(record.lost)?;
    let lost_series = Series {
        starts_at: Timestamp::from_millis(record.series_starts_at),
        bucket_ms: record.series_bucket_ms,
        buckets: record.series_buckets,
        before_start: record.lost_before_start,
        points: record.lost_series,
    };
    Ok(ListingTally {
        room: value(RoomId::new(&record.room))?,
        generation: record.generation,
        halted: record.halted,
        consumed: record.consumed,
        series: Series {
            starts_at: Timestamp::from_millis(record.series_starts_at),
            bucket_ms: record.series_bucket_ms,
            buckets: record.series_buckets,
            before_start: record.series_before_start,
            points: record.series,
        },
        lost,
        lost_series,
        outcomes: Outcomes {
            sold: record.outcomes.0,
            refunded: record.outcomes.1,
            cancelled: record.outcomes.2,
            expired: record.outcomes.3,
        },
        sold_out_at: record.sold_out_at.map(Timestamp::from_millis),
        halts: record
            .halts
            .into_iter()
            .map(|halt| {
                Ok(Halt {
                    at: Timestamp::from_millis(halt.at),
                    auto: halt.auto,
                    by: halt.by.map(|by| acknowledger(&by)).transpose()?,
                    resumed_at: halt.resumed_at.map(Timestamp::from_millis),
                    resumed_by: halt.resumed_by.map(|by| acknowledger(&by)).transpose()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
    })
}

fn stock_record(stock: &Stock) -> StockRecord<'_> {
    StockRecord {
        sku: Cow::Borrowed(stock.sku.as_str()),
        total: stock.total,
        reserved: stock.reserved,
        locked: stock.locked,
        sold: stock.sold,
        available: stock.available,
        halted: stock.halted,
        version: stock.version,
    }
}

fn stock(record: StockRecord<'_>) -> Result<Stock, DecodeError> {
    Ok(Stock {
        sku: value(SkuId::new(&record.sku))?,
        total: record.total,
        reserved: record.reserved,
        locked: record.locked,
        sold: record.sold,
        available: record.available,
        halted: record.halted,
        version: record.version,
    })
}

fn stocks_record(stocks: &[Stock]) -> Vec<StockRecord<'_>> {
    stocks.iter().map(stock_record).collect()
}

fn stocks(records: Vec<StockRecord<'_>>) -> Result<Stocks, DecodeError> {
    records.into_iter().map(stock).collect()
}

fn order_record(order: &OrderRequest) -> OrderRecord<'_> {
    OrderRecord {
        order_id: Cow::Borrowed(order.order_id.as_str()),
        platform: Cow::Borrowed(order.platform.as_str()),
        room: order.room.as_ref().map(|room| Cow::Borrowed(room.as_str())),
        lines: order
            .lines
            .iter()
            .map(|line| (Cow::Borrowed(line.sku.as_str()), line.qty.get() as u32))
            .collect(),
    }
}

fn order(record: OrderRecord<'_>) -> Result<Arc<OrderRequest>, DecodeError> {
    let lines = record
        .lines
        .into_iter()
        .map(|(sku, qty)| {
            Ok(Line {
                sku: value(SkuId::new(&sku))?,
                qty: value(Qty::new(i64::from(qty)))?,
            })
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    Ok(Arc::new(OrderRequest {
        order_id: value(OrderId::new(&record.order_id))?,
        platform: value(Platform::new(&record.platform))?,
        room: record
            .room
            .as_deref()
            .map(RoomId::new)
            .transpose()
            .map_err(|error| DecodeError::Value(error.to_string()))?,
        lines: value(Lines::new(lines))?,
    }))
}

fn settings_record(settings: &SkuSettings) -> SettingsRecord<'_> {
    SettingsRecord {
        name: Cow::Borrowed(settings.name.as_str()),
        lock_ttl_ms: settings.lock_ttl_ms,
        quotas: settings
            .quotas
            .iter()
            .map(|(platform, quota)| (Cow::Borrowed(platform.as_str()), *quota))
            .collect(),
    }
}

fn named<T: Copy>(values: &[(Platform, T)]) -> Vec<(String, T)> {
    values
        .iter()
        .map(|(platform, value)| (platform.to_string(), *value))
        .collect()
}

fn platforms<T>(values: Vec<(String, T)>) -> Result<Vec<(Platform, T)>, DecodeError> {
    values
        .into_iter()
        .map(|(platform, value_)| Ok((value(Platform::new(&platform))?, value_)))
        .collect()
}

fn allocation_record(allocation: &Allocation) -> AllocationRecord {
    match allocation {
        Allocation::Shared { buffer } => AllocationRecord::Shared { buffer: *buffer },
        Allocation::Exclusive(exclusive) => AllocationRecord::Exclusive {
            shares: named(&exclusive.shares),
            floor: exclusive.floor,
            rebalance_every_s: exclusive.rebalance_every_s,
            allotted: named(&exclusive.allotted),
        },
    }
}

fn allocation(record: AllocationRecord) -> Result<Allocation, DecodeError> {
    let stock = |field: &str, units: u64| {
        if units <= crate::ledger::STOCK_QTY_MAX {
            Ok(units)
        } else {
            Err(DecodeError::Value(format!("{field} {units} is too large")))
        }
    };
    Ok(match record {
        AllocationRecord::Shared { buffer } => Allocation::Shared {
            buffer: stock("buffer", buffer)?,
        },
        AllocationRecord::Exclusive {
            shares,
            floor,
            allotted,
            rebalance_every_s,
        } => {
            let shares = platforms(shares)?;
            if 1000
                < shares
                    .iter()
                    .map(|(_, share)| u64::from(*share))
                    .sum::<u64>()
            {
                return Err(DecodeError::Value(
                    "shares over 1,000 thousandths".to_owned(),
                ));
            }
            Allocation::Exclusive(Exclusive {
                shares,
                floor: stock("floor", floor)?,
                rebalance_every_s,
                allotted: platforms(allotted)?,
            })
        }
    })
}

fn channels_record(settings: &SkuSettings) -> ChannelsRecord<'_> {
    let allocation = allocation_record(&settings.allocation);
    ChannelsRecord {
        listings: settings
            .listings
            .iter()
            .map(|(platform, listing)| {
                (
                    Cow::Borrowed(platform.as_str()),
                    Cow::Borrowed(listing.as_str()),
                )
            })
            .collect(),
        allocation,
    }
}

/// Settings from a record of format 6 or older (no channels) or newer.
fn settings(
    record: SettingsRecord<'_>,
    channels: ChannelsRecord<'_>,
) -> Result<SkuSettings, DecodeError> {
    let listings = channels
        .listings
        .into_iter()
        .map(|(platform, listing)| {
            Ok((
                value(Platform::new(&platform))?,
                value(ListingId::new(&listing))?,
            ))
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let allocation = allocation(channels.allocation)?;
    Ok(SkuSettings {
        listings,
        allocation,
        name: record.name.into_owned(),
        lock_ttl_ms: record.lock_ttl_ms,
        quotas: record
            .quotas
            .into_iter()
            .map(|(platform, quota)| Ok((value(Platform::new(&platform))?, quota)))
            .collect::<Result<_, DecodeError>>()?,
    })
}

/// Appends the encoding of `fact` to `buffer`.
pub(super) fn encode_fact(fact: &Fact, buffer: &mut Vec<u8>) {
    let at = fact.at().as_millis();
    let record = match fact {
        Fact::SkuPut {
            settings, stock, ..
        } => FactRecord::SkuPutWithChannels {
            at,
            settings: settings_record(settings),
            channels: channels_record(settings),
            stock: stock_record(stock),
        },
        Fact::Restocked {
            qty,
            restock_id,
            stock,
            ..
        } => FactRecord::Restocked {
            at,
            qty: *qty,
            restock_id: restock_id.as_ref().map(|id| Cow::Borrowed(id.as_str())),
            stock: stock_record(stock),
        },
        Fact::Halted { stock, .. } => FactRecord::Halted {
            at,
            stock: stock_record(stock),
        },
        Fact::Resumed { stock, .. } => FactRecord::Resumed {
            at,
            stock: stock_record(stock),
        },
        Fact::OrderReserved {
            order,
            expires_at,
            stocks,
            ..
        } => FactRecord::OrderReserved {
            at,
            order: order_record(order),
            expires_at: expires_at.as_millis(),
            stocks: stocks_record(stocks),
        },
        Fact::OrderSold { order, stocks, .. } => FactRecord::OrderSold {
            at,
            order: order_record(order),
            stocks: stocks_record(stocks),
        },
        Fact::OrderConfirmed {
            order,
            retaken,
            stocks,
            ..
        } => FactRecord::OrderConfirmed {
            at,
            order_id: Cow::Borrowed(order.order_id.as_str()),
            retaken: *retaken,
            stocks: stocks_record(stocks),
        },
        Fact::OrderCancelled { order, stocks, .. } => FactRecord::OrderCancelled {
            at,
            order_id: Cow::Borrowed(order.order_id.as_str()),
            stocks: stocks_record(stocks),
        },
        Fact::OrderExpired { order, stocks, .. } => FactRecord::OrderExpired {
            at,
            order_id: Cow::Borrowed(order.order_id.as_str()),
            stocks: stocks_record(stocks),
        },
        Fact::OrderRefunded { order, stocks, .. } => FactRecord::OrderRefunded {
            at,
            order_id: Cow::Borrowed(order.order_id.as_str()),
            stocks: stocks_record(stocks),
        },
        Fact::RoomPut { room, .. } => FactRecord::RoomPut {
            at,
            room: room_record(room),
        },
        Fact::ListingHalted {
            room,
            sku,
            auto,
            by,
            ..
        } => FactRecord::ListingHaltedBy {
            at,
            room: Cow::Borrowed(room.as_str()),
            sku: Cow::Borrowed(sku.as_str()),
            auto: *auto,
            by: by.as_deref().map(Cow::Borrowed),
        },
        Fact::ListingResumed { room, sku, by, .. } => FactRecord::ListingResumedBy {
            at,
            room: Cow::Borrowed(room.as_str()),
            sku: Cow::Borrowed(sku.as_str()),
            by: by.as_deref().map(Cow::Borrowed),
        },
        Fact::Tick { .. } => FactRecord::Tick { at },
        Fact::AlertAcknowledged { id, by, .. } => FactRecord::AlertAcknowledged {
            at,
            id: *id,
            by: Cow::Borrowed(by.as_str()),
        },
        Fact::ShowEnded { records, .. } => FactRecord::ShowEnded {
            at,
            records: records
                .iter()
                .map(|(sku, record)| (Cow::Borrowed(sku.as_str()), show_record_record(record)))
                .collect(),
        },
        Fact::OrdersForgotten {
            settled_before,
            sold_before,
            ..
        } => FactRecord::OrdersForgotten {
            at,
            settled_before: settled_before.as_millis(),
            sold_before: sold_before.as_millis(),
        },
        Fact::Allotted {
            sku,
            allotted,
            moved,
            ..
        } => FactRecord::Allotted {
            at,
            sku: Cow::Borrowed(sku.as_str()),
            allotted: named(allotted),
            moved: moved.as_ref().map(|moved| {
                (
                    moved.from.to_string(),
                    moved.to.to_string(),
                    moved.qty,
                    moved.reason.clone(),
                )
            }),
        },
        Fact::ListingsSynced { platform, acks, .. } => FactRecord::ListingsSynced {
            at,
            platform: Cow::Borrowed(platform.as_str()),
            acks: acks.iter().map(sync_record).collect(),
        },
        Fact::LostDemand { entries, .. } => FactRecord::LostDemand {
            at,
            entries: entries
                .iter()
                .map(|entry| LostRecord {
                    room: Cow::Borrowed(entry.room.as_str()),
                    sku: Cow::Borrowed(entry.sku.as_str()),
                    platforms: lost_platforms(&entry.lost),
                })
                .collect(),
        },
    };
    rmp_serde::encode::write(buffer, &record).expect("writing to a Vec cannot fail");
}

/// Who acknowledged an alert, as the API takes it: a name of at most
/// [`ACKNOWLEDGER_CHARS_MAX`] characters with no control character.
fn acknowledger(by: &str) -> Result<String, DecodeError> {
    if by.is_empty()
        || crate::ledger::ACKNOWLEDGER_CHARS_MAX < by.chars().count()
        || by.chars().any(char::is_control)
    {
        return Err(DecodeError::Value(format!(
            "acknowledged by {by:?}: not a name of 1 to {} characters without control characters",
            crate::ledger::ACKNOWLEDGER_CHARS_MAX
        )));
    }
    Ok(by.to_owned())
}

/// The order a transition record names, as the ledger being rebuilt holds it.
fn known(
    order_id: &str,
    resolve: &dyn Fn(&OrderId) -> Option<Arc<OrderRequest>>,
) -> Result<Arc<OrderRequest>, DecodeError> {
    let order_id = value(OrderId::new(order_id))?;
    resolve(&order_id).ok_or_else(|| DecodeError::Value(format!("order {order_id} is unknown")))
}

/// Decodes one fact; `resolve` finds the orders that payments, cancellations, expiries
/// and refunds name (their records carry only the id).
pub(super) fn decode_fact(
    bytes: &[u8],
    resolve: &dyn Fn(&OrderId) -> Option<Arc<OrderRequest>>,
) -> Result<Fact, DecodeError> {
    let record: FactRecord = from_slice(bytes)?;
    let at = Timestamp::from_millis;
    Ok(match record {
        FactRecord::SkuPut {
            at: time,
            settings: record,
            stock: stock_,
        } => Fact::SkuPut {
            at: at(time),
            settings: settings(record, ChannelsRecord::default())?,
            stock: stock(stock_)?,
        },
        FactRecord::SkuPutWithChannels {
            at: time,
            settings: record,
            channels,
            stock: stock_,
        } => Fact::SkuPut {
            at: at(time),
            settings: settings(record, channels)?,
            stock: stock(stock_)?,
        },
        FactRecord::Restocked {
            at: time,
            qty,
            restock_id,
            stock: stock_,
        } => Fact::Restocked {
            at: at(time),
            qty,
            restock_id: restock_id
                .as_deref()
                .map(RestockId::new)
                .transpose()
                .map_err(|error| DecodeError::Value(error.to_string()))?,
            stock: stock(stock_)?,
        },
        FactRecord::Halted {
            at: time,
            stock: stock_,
        } => Fact::Halted {
            at: at(time),
            stock: stock(stock_)?,
        },
        FactRecord::Resumed {
            at: time,
            stock: stock_,
        } => Fact::Resumed {
            at: at(time),
            stock: stock(stock_)?,
        },
        FactRecord::OrderReserved {
            at: time,
            order: order_,
            expires_at,
            stocks: stocks_,
        } => Fact::OrderReserved {
            at: at(time),
            order: order(order_)?,
            expires_at: at(expires_at),
            stocks: stocks(stocks_)?,
            consumed: Consumed::new(),
        },
        FactRecord::OrderSold {
            at: time,
            order: order_,
            stocks: stocks_,
        } => Fact::OrderSold {
            at: at(time),
            order: order(order_)?,
            stocks: stocks(stocks_)?,
            consumed: Consumed::new(),
        },
        FactRecord::OrderConfirmed {
            at: time,
            order_id,
            retaken,
            stocks: stocks_,
        } => Fact::OrderConfirmed {
            at: at(time),
            order: known(&order_id, resolve)?,
            retaken,
            stocks: stocks(stocks_)?,
            consumed: Consumed::new(),
        },
        FactRecord::OrderCancelled {
            at: time,
            order_id,
            stocks: stocks_,
        } => Fact::OrderCancelled {
            at: at(time),
            order: known(&order_id, resolve)?,
            stocks: stocks(stocks_)?,
            consumed: Consumed::new(),
        },
        FactRecord::OrderExpired {
            at: time,
            order_id,
            stocks: stocks_,
        } => Fact::OrderExpired {
            at: at(time),
            order: known(&order_id, resolve)?,
            stocks: stocks(stocks_)?,
            consumed: Consumed::new(),
        },
        FactRecord::OrderRefunded {
            at: time,
            order_id,
            stocks: stocks_,
        } => Fact::OrderRefunded {
            at: at(time),
            order: known(&order_id, resolve)?,
            stocks: stocks(stocks_)?,
            consumed: Consumed::new(),
        },
        FactRecord::RoomPut {
            at: time,
            room: record,
        } => Fact::RoomPut {
            at: at(time),
            room: room(record)?,
        },
        FactRecord::ListingHalted {
            at: time,
            room,
            sku,
            auto,
        } => Fact::ListingHalted {
            at: at(time),
            room: value(RoomId::new(&room))?,
            sku: value(SkuId::new(&sku))?,
            auto,
            by: None,
        },
        FactRecord::ListingResumed {
            at: time,
            room,
            sku,
        } => Fact::ListingResumed {
            at: at(time),
            room: value(RoomId::new(&room))?,
            sku: value(SkuId::new(&sku))?,
            by: None,
        },
        FactRecord::ListingHaltedBy {
            at: time,
            room,
            sku,
            auto,
            by,
        } => Fact::ListingHalted {
            at: at(time),
            room: value(RoomId::new(&room))?,
            sku: value(SkuId::new(&sku))?,
            auto,
            by: by.map(|by| acknowledger(&by)).transpose()?,
        },
        FactRecord::ListingResumedBy {
            at: time,
            room,
            sku,
            by,
        } => Fact::ListingResumed {
            at: at(time),
            room: value(RoomId::new(&room))?,
            sku: value(SkuId::new(&sku))?,
            by: by.map(|by| acknowledger(&by)).transpose()?,
        },
        FactRecord::Tick { at: time } => Fact::Tick { at: at(time) },
        FactRecord::AlertAcknowledged { at: time, id, by } => Fact::AlertAcknowledged {
            at: at(time),
            id,
            by: acknowledger(&by)?,
        },
        FactRecord::ShowEnded { at: time, records } => Fact::ShowEnded {
            at: at(time),
            records: records
                .into_iter()
                .map(|(sku, record)| Ok((value(SkuId::new(&sku))?, show_record(record)?)))
                .collect::<Result<_, DecodeError>>()?,
        },
        FactRecord::OrdersForgotten {
            at: time,
            settled_before,
            sold_before,
        } => Fact::OrdersForgotten {
            at: at(time),
            settled_before: Timestamp::from_millis(settled_before),
            sold_before: Timestamp::from_millis(sold_before),
        },
        FactRecord::Allotted {
            at: time,
            sku,
            allotted,
            moved,
        } => Fact::Allotted {
            at: at(time),
            sku: value(SkuId::new(&sku))?,
            allotted: platforms(allotted)?,
            moved: moved
                .map(|(from, to, qty, reason)| {
                    Ok::<_, DecodeError>(AllotmentMove {
                        from: value(Platform::new(&from))?,
                        to: value(Platform::new(&to))?,
                        qty,
                        reason,
                    })
                })
                .transpose()?,
        },
        FactRecord::ListingsSynced {
            at: time,
            platform,
            acks,
        } => Fact::ListingsSynced {
            at: at(time),
            platform: value(Platform::new(&platform))?,
            acks: acks
                .into_iter()
                .map(listing_ack)
                .collect::<Result<_, DecodeError>>()?,
        },
        FactRecord::LostDemand { at: time, entries } => Fact::LostDemand {
            at: at(time),
            entries: entries
                .into_iter()
                .map(|entry| {
                    Ok(LostEntry {
                        room: value(RoomId::new(&entry.room))?,
                        sku: value(SkuId::new(&entry.sku))?,
                        lost: lost(entry.platforms)?,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
        },
    })
}

#[derive(Serialize, Deserialize)]
struct SkuImageRecord<'a> {
    #[serde(borrow)]
    stock: StockRecord<'a>,
    #[serde(borrow)]
    settings: SettingsRecord<'a>,
    #[serde(borrow)]
    platforms: Vec<(Cow<'a, str>, u64, u64)>,
    updated_at: u64,
    #[serde(borrow)]
    restocks: Vec<(Cow<'a, str>, u64)>,
    #[serde(borrow, default)]
    listings: Vec<TallyRecord<'a>>,
    /// Added with show histories: none when absent.
    #[serde(borrow, default)]
    shows: Vec<ShowRecordRecord<'a>>,
    /// Added with channels: no listings and the default allocation when absent.
    #[serde(borrow, default)]
    channels: ChannelsRecord<'a>,
    /// Each platform's last acknowledgement: (platform, listing, version, quantity,
    /// consumed, when).
    #[serde(borrow, default)]
    synced: Vec<MarkRecord<'a>>,
}

#[derive(Serialize, Deserialize)]
struct OrderImageRecord<'a> {
    #[serde(borrow)]
    order: OrderRecord<'a>,
    /// `OrderStatus` as a small number: 0 locked, 1 sold, 2 cancelled, 3 expired, 4 refunded.
    status: u8,
    sold_at_creation: bool,
    created_at: u64,
    expires_at: u64,
    updated_at: u64,
    /// Added after the first snapshots: empty (unknown) when absent.
    #[serde(default)]
    taken_versions: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct ImageRecord<'a> {
    #[serde(borrow)]
    skus: Vec<SkuImageRecord<'a>>,
    #[serde(borrow)]
    orders: Vec<OrderImageRecord<'a>>,
    #[serde(borrow, default)]
    rooms: Vec<RoomRecord<'a>>,
}

fn status_code(status: OrderStatus) -> u8 {
    match status {
        OrderStatus::Locked => 0,
        OrderStatus::Sold => 1,
        OrderStatus::Cancelled => 2,
        OrderStatus::Expired => 3,
        OrderStatus::Refunded => 4,
    }
}

fn status(code: u8) -> Result<OrderStatus, DecodeError> {
    Ok(match code {
        0 => OrderStatus::Locked,
        1 => OrderStatus::Sold,
        2 => OrderStatus::Cancelled,
        3 => OrderStatus::Expired,
        4 => OrderStatus::Refunded,
        other => return Err(DecodeError::Value(format!("unknown order status {other}"))),
    })
}

pub(super) fn encode_image(image: &LedgerImage) -> Vec<u8> {
    let record = ImageRecord {
        skus: image
            .skus
            .iter()
            .map(|sku| SkuImageRecord {
                stock: stock_record(&sku.stock),
                settings: settings_record(&sku.settings),
                channels: channels_record(&sku.settings),
                synced: sku
                    .synced
                    .iter()
                    .map(|mark| {
                        (
                            Cow::Borrowed(mark.platform.as_str()),
                            Cow::Borrowed(mark.listing.as_str()),
                            mark.version,
                            mark.quantity,
                            mark.consumed,
                            mark.at.as_millis(),
                        )
                    })
                    .collect(),
                platforms: sku
                    .platforms
                    .iter()
                    .map(|(platform, locked, sold)| {
                        (Cow::Borrowed(platform.as_str()), *locked, *sold)
                    })
                    .collect(),
                updated_at: sku.updated_at.as_millis(),
                restocks: sku
                    .restocks
                    .iter()
                    .map(|(id, qty)| (Cow::Borrowed(id.as_str()), *qty))
                    .collect(),
                listings: sku.listings.iter().map(tally_record).collect(),
                shows: sku.shows.iter().map(show_record_record).collect(),
            })
            .collect(),
        rooms: image.rooms.iter().map(|room| room_record(room)).collect(),
        orders: image
            .orders
            .iter()
            .map(|order| OrderImageRecord {
                order: order_record(&order.order),
                status: status_code(order.status),
                sold_at_creation: order.sold_at_creation,
                created_at: order.created_at.as_millis(),
                expires_at: order.expires_at.as_millis(),
                updated_at: order.updated_at.as_millis(),
                taken_versions: order.taken_versions.to_vec(),
            })
            .collect(),
    };
    rmp_serde::to_vec(&record).expect("encoding to a Vec cannot fail")
}

pub(super) fn decode_image(bytes: &[u8]) -> Result<LedgerImage, DecodeError> {
    let record: ImageRecord = from_slice(bytes)?;
    let at = Timestamp::from_millis;
    Ok(LedgerImage {
        skus: record
            .skus
            .into_iter()
            .map(|sku| {
                Ok(SkuImage {
                    stock: stock(sku.stock)?,
                    settings: settings(sku.settings, sku.channels)?,
                    synced: sku
                        .synced
                        .into_iter()
                        .map(sync_mark)
                        .collect::<Result<_, DecodeError>>()?,
                    platforms: sku
                        .platforms
                        .into_iter()
                        .map(|(platform, locked, sold)| {
                            Ok((value(Platform::new(&platform))?, locked, sold))
                        })
                        .collect::<Result<_, DecodeError>>()?,
                    updated_at: at(sku.updated_at),
                    restocks: sku
                        .restocks
                        .into_iter()
                        .map(|(id, qty)| Ok((value(RestockId::new(&id))?, qty)))
                        .collect::<Result<_, DecodeError>>()?,
                    listings: sku
                        .listings
                        .into_iter()
                        .map(tally)
                        .collect::<Result<_, DecodeError>>()?,
                    shows: sku
                        .shows
                        .into_iter()
                        .map(show_record)
                        .collect::<Result<_, DecodeError>>()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        orders: record
            .orders
            .into_iter()
            .map(|image| {
                Ok(OrderImage {
                    order: order(image.order)?,
                    status: status(image.status)?,
                    sold_at_creation: image.sold_at_creation,
                    created_at: at(image.created_at),
                    expires_at: at(image.expires_at),
                    updated_at: at(image.updated_at),
                    taken_versions: image.taken_versions.into_iter().collect(),
                })
            })
            .collect::<Result<_, DecodeError>>()?,
        rooms: record
            .rooms
            .into_iter()
            .map(room)
            .collect::<Result<_, DecodeError>>()?,
    })
}
