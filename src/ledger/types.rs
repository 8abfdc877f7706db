//! The ledger's value types: identifiers and quantities validated once, at construction, so
//! the operations never see an empty id or a zero quantity.

use std::fmt;
use std::sync::Arc;

use compact_str::CompactString;
use smallvec::SmallVec;

use crate::clock::Timestamp;

/// Longest identifier accepted, in characters: platform order ids are rarely over 40.
pub const ID_CHARS_MAX: usize = 128;
/// The longest name an alert may be acknowledged by, in characters.
pub const ACKNOWLEDGER_CHARS_MAX: usize = 128;
/// Largest quantity on one order line: more than any live room sells of one SKU at once, so a
/// bigger number is a client bug, not an order.
pub const LINE_QTY_MAX: u32 = 1_000_000;
/// Most lines on one order: a basket, not a warehouse transfer.
pub const ORDER_LINES_MAX: usize = 64;
/// Largest stock figure (`total`, `reserved`, a quota, a restock): ten billion units leaves
/// every sum of them far from `u64` overflow.
pub const STOCK_QTY_MAX: u64 = 10_000_000_000;

/// Why an identifier or a quantity was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is {chars} characters long; the limit is {ID_CHARS_MAX}")]
    TooLong { field: &'static str, chars: usize },
    #[error("{field} contains a control character")]
    ControlCharacter { field: &'static str },
    #[error("{field} must be between 1 and {max}, got {value}")]
    OutOfRange {
        field: &'static str,
        value: i128,
        max: u64,
    },
    #[error("an order needs at least one line")]
    NoLines,
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("an order has at most {ORDER_LINES_MAX} lines, got {count}")]
    TooManyLines { count: usize },
    #[error("sku {sku} appears on more than one line")]
    DuplicateSku { sku: String },
}

fn check_id(field: &'static str, value: &str) -> Result<(), InvalidValue> {
    if value.is_empty() {
        return Err(InvalidValue::Empty { field });
    }
    // Characters, not bytes: what a JSON Schema's `maxLength` counts, so a client checking
    // against the API's document is refused nothing it allows (at most 512 bytes).
    let chars = value.chars().count();
    if ID_CHARS_MAX < chars {
        return Err(InvalidValue::TooLong { field, chars });
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidValue::ControlCharacter { field });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(CompactString);

        impl $name {
            /// Validates `value`: 1 to 128 characters, no control characters.
            pub fn new(value: &str) -> Result<Self, InvalidValue> {
                check_id($field, value)?;
                Ok($name(CompactString::new(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0.as_str(), f)
            }
        }
    };
}

identifier!(
    /// A SKU's id in the shared stock pool.
    SkuId,
    "sku"
);
identifier!(
    /// The platform's order id: unique, and the idempotency key of every order operation.
    OrderId,
    "order_id"
);
identifier!(
    /// The sales platform an order came from (`douyin`, `kuaishou`, `taobao`, ...).
    Platform,
    "platform"
);
identifier!(
    /// A live room (one scheduled show).
    RoomId,
    "room"
);
identifier!(
    /// A client's id for one restock, so a retried restock is applied once.
    RestockId,
    "restock_id"
);
identifier!(
    /// A platform's id for the listing (商品 SKU) that sells one of our SKUs there.
    ListingId,
    "listing"
);

/// A positive quantity on an order line, at most [`LINE_QTY_MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Qty(u32);

impl Qty {
    pub fn new(value: i64) -> Result<Self, InvalidValue> {
        match u32::try_from(value) {
            Ok(qty) if 0 < qty && qty <= LINE_QTY_MAX => Ok(Qty(qty)),
            _ => Err(InvalidValue::OutOfRange {
                field: "qty",
                value: i128::from(value),
                max: u64::from(LINE_QTY_MAX),
            }),
        }
    }

    pub fn get(self) -> u64 {
        u64::from(self.0)
    }
}

/// Checks a stock figure (`total`, `reserved`, a quota): `0..=STOCK_QTY_MAX`.
pub fn stock_qty(field: &'static str, value: i64) -> Result<u64, InvalidValue> {
    match u64::try_from(value) {
        Ok(qty) if qty <= STOCK_QTY_MAX => Ok(qty),
        _ => Err(InvalidValue::OutOfRange {
            field,
            value: i128::from(value),
            max: STOCK_QTY_MAX,
        }),
    }
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub sku: SkuId,
    pub qty: Qty,
}

/// The lines of one order: at least one, at most [`ORDER_LINES_MAX`], each SKU once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lines(SmallVec<[Line; 1]>);

impl Lines {
    pub fn new(lines: impl IntoIterator<Item = Line>) -> Result<Self, InvalidValue> {
        let lines: SmallVec<[Line; 1]> = lines.into_iter().collect();
        if lines.is_empty() {
            return Err(InvalidValue::NoLines);
        }
        if ORDER_LINES_MAX < lines.len() {
            return Err(InvalidValue::TooManyLines { count: lines.len() });
        }
        for (index, line) in lines.iter().enumerate() {
            if lines[..index].iter().any(|earlier| earlier.sku == line.sku) {
                return Err(InvalidValue::DuplicateSku {
                    sku: line.sku.to_string(),
                });
            }
        }
        Ok(Lines(lines))
    }

    pub fn one(sku: SkuId, qty: Qty) -> Self {
        Lines(smallvec::smallvec![Line { sku, qty }])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Line> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Lines {
    type Item = &'a Line;
    type IntoIter = std::slice::Iter<'a, Line>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// An order as a platform places it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRequest {
    pub order_id: OrderId,
    pub platform: Platform,
    pub room: Option<RoomId>,
    pub lines: Lines,
}

/// Where an order stands in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    /// Placed, unpaid: its units are `locked` until `expires_at`.
    Locked,
    /// Paid: its units are `sold`.
    Sold,
    /// Cancelled by the platform before payment: its units went back to `available`.
    Cancelled,
    /// Its lock ran out before payment: its units went back to `available`.
    Expired,
    /// Paid, then refunded: its units went back to `available`.
    Refunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Locked => "locked",
            OrderStatus::Sold => "sold",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::Refunded => "refunded",
        }
    }
}

/// The quantities of one SKU at one moment, as every reader and every fact reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stock {
    pub sku: SkuId,
    pub total: u64,
    pub reserved: u64,
    pub locked: u64,
    pub sold: u64,
    pub available: u64,
    pub halted: bool,
    /// Bumped by every change to this SKU: a reader orders two reports of one SKU by it.
    pub version: u64,
}

/// Locked and sold units of one SKU taken by one platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformCount {
    pub platform: Platform,
    pub locked: u64,
    pub sold: u64,
    /// The most this platform may hold (locked + sold) of this SKU, when capped.
    pub quota: Option<u64>,
    /// The platform's listing of this SKU, when it names one.
    pub listing: Option<ListingId>,
}

/// The settings of a SKU, as the last create or update left them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuSettings {
    pub name: String,
    /// How long a lock on this SKU lasts; the ledger's default when `None`.
    pub lock_ttl_ms: Option<u64>,
    /// Per-platform caps on locked + sold, sorted by platform.
    pub quotas: Vec<(Platform, u64)>,
    /// Each platform's listing of this SKU, sorted by platform: what channel sync keeps at
    /// the number the pool can honour.
    pub listings: Vec<(Platform, ListingId)>,
    /// How the pool is split between the listings.
    pub allocation: Allocation,
}

/// How a SKU's available units are split between its platform listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allocation {
    /// Every listing shows what its platform could still take: its quota's headroom, capped
    /// by `available - buffer`. Two platforms can sell the same last units.
    Shared { buffer: u64 },
    /// Each platform with a share holds units no other platform can take.
    Exclusive(Exclusive),
}

/// Per-platform allotments: a platform with a share may hold (locked + sold) at most its
/// allotment, and the allotments' unsold units never sum to more than `available`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exclusive {
    /// Each platform's share of the pool in thousandths, sorted by platform; at most 1,000
    /// in all.
    pub shares: Vec<(Platform, u32)>,
    /// A move between platforms never leaves a platform fewer unsold units than this.
    pub floor: u64,
    /// While a show that lists the SKU is live, units move from a platform that will not
    /// sell its allotment to one that will run out, at most this often (0: never).
    pub rebalance_every_s: u64,
    /// What each platform with a share may hold in total: what it took plus what it may
    /// still take. Kept by the ledger (a split, a restock, a move), not set by a client.
    pub allotted: Vec<(Platform, u64)>,
}

impl Default for Allocation {
    fn default() -> Self {
        Allocation::Shared { buffer: 0 }
    }
}

/// A create-or-update of a SKU: every `None` keeps the current value (or the default, for a
/// new SKU).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SkuUpdate {
    pub name: Option<String>,
    pub total: Option<u64>,
    pub reserved: Option<u64>,
    /// `Some(None)` goes back to the ledger's default TTL.
    pub lock_ttl_ms: Option<Option<u64>>,
    /// Replaces every quota when given.
    pub quotas: Option<Vec<(Platform, u64)>>,
    /// Replaces every listing when given.
    pub listings: Option<Vec<(Platform, ListingId)>>,
    pub allocation: Option<Allocation>,
}

/// Everything a reader sees of one SKU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuView {
    pub stock: Stock,
    pub settings: SkuSettings,
    pub platforms: Vec<PlatformCount>,
    pub updated_at: Timestamp,
}

/// Everything a reader sees of one order: the order as it was placed, and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    /// Shared with the ledger's entry and the order's facts: placing an order allocates it
    /// once, and every later view or fact only counts another reference.
    pub order: Arc<OrderRequest>,
    pub status: OrderStatus,
    pub created_at: Timestamp,
    /// When the lock runs (or ran) out.
    pub expires_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::ops::Deref for OrderView {
    type Target = OrderRequest;

    fn deref(&self) -> &OrderRequest {
        &self.order
    }
}

/// A platform's acknowledgement of one update to its listing of `sku`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingAck {
    pub sku: SkuId,
    pub listing: ListingId,
    /// The update's version: the log sequence of the change it carried.
    pub version: u64,
    /// The number the update told the listing to show.
    pub quantity: u64,
    /// The platform's consumption (locked + sold) of the SKU when the update was made: what
    /// it takes after that comes off its listing on its own side.
    pub consumed: u64,
}

/// The newest acknowledgement of one platform listing, as a SKU keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncMark {
    pub platform: Platform,
    pub listing: ListingId,
    pub version: u64,
    pub quantity: u64,
    pub consumed: u64,
    pub at: Timestamp,
}
