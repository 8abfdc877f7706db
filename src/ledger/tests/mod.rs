//! Tests of the ledger, by concern: the order life cycle (`lifecycle`), a property test
//! against a `HashMap` model (`model`), threads (`threads`), replay and snapshots (`replay`),
//! and rooms (`rooms`). The helpers they share are here.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

mod allotments;
mod lifecycle;
mod model;
mod replay;
mod rooms;
mod threads;

// Helpers.

/// An arbitrary start of the show; every test counts time from here.
const START_MS: u64 = 1_700_000_000_000;
const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 24 * 60 * MINUTE_MS;
/// The ledger's default lock TTL, as DESIGN gives it.
const DEFAULT_LOCK_TTL_MS: u64 = 15 * MINUTE_MS;

/// The time `offset_ms` after the start.
fn at(offset_ms: u64) -> Timestamp {
    Timestamp::from_millis(START_MS + offset_ms)
}

fn sku_id(value: &str) -> SkuId {
    SkuId::new(value).expect("a valid sku id")
}

fn order_id(value: &str) -> OrderId {
    OrderId::new(value).expect("a valid order id")
}

fn platform(value: &str) -> Platform {
    Platform::new(value).expect("a valid platform")
}

fn lines(items: &[(&str, i64)]) -> Lines {
    Lines::new(items.iter().map(|(sku, qty)| Line {
        sku: sku_id(sku),
        qty: Qty::new(*qty).expect("a valid quantity"),
    }))
    .expect("valid lines")
}

fn request(order: &str, platform_name: &str, items: &[(&str, i64)]) -> OrderRequest {
    OrderRequest {
        order_id: order_id(order),
        platform: platform(platform_name),
        room: None,
        lines: lines(items),
    }
}

fn total_update(total: u64) -> SkuUpdate {
    SkuUpdate {
        total: Some(total),
        ..SkuUpdate::default()
    }
}

/// A ledger with the default settings and one SKU per `(sku, total)`.
fn ledger_with_skus(skus: &[(&str, u64)]) -> Ledger {
    let ledger = Ledger::new(LedgerConfig::default());
    for (sku, total) in skus {
        ledger
            .put_sku(at(0), &sku_id(sku), total_update(*total))
            .expect("put_sku");
    }
    ledger
}

fn stock(ledger: &Ledger, sku: &str) -> Stock {
    ledger.sku(&sku_id(sku)).expect("the sku exists").stock
}

/// `[total, reserved, locked, sold, available]` of one SKU.
fn quantities(ledger: &Ledger, sku: &str) -> [u64; 5] {
    let stock = stock(ledger, sku);
    [
        stock.total,
        stock.reserved,
        stock.locked,
        stock.sold,
        stock.available,
    ]
}

fn status(ledger: &Ledger, order: &str) -> Option<OrderStatus> {
    ledger.order(&order_id(order)).map(|view| view.status)
}

/// Checks `available == total - reserved - locked - sold` on every SKU.
fn assert_stock_identity(ledger: &Ledger) {
    for view in ledger.skus() {
        let stock = view.stock;
        let committed = stock.reserved + stock.locked + stock.sold;
        assert!(committed <= stock.total, "{stock:?} is overcommitted");
        assert_eq!(stock.available, stock.total - committed, "{stock:?}");
    }
}

/// Runs `retry`, a call already made once, and checks that it is answered as `replayed` with
/// `expected`, no fact, and every SKU (versions included) as it was.
fn assert_replayed(
    ledger: &Ledger,
    expected: OrderStatus,
    retry: impl FnOnce(&Ledger) -> Result<Answer, LedgerError>,
) {
    let skus_before = ledger.skus();
    let answer = retry(ledger).expect("a retry is answered");
    assert!(answer.replayed, "{answer:?}");
    assert_eq!(answer.fact, None);
    assert_eq!(answer.order.status, expected);
    assert_eq!(ledger.skus(), skus_before);
}

/// Applies `facts` in order to a fresh ledger with `config`, and checks that it ends equal to
/// `ledger` on every SKU and on each of `orders`.
fn assert_replay_equal(ledger: &Ledger, config: LedgerConfig, facts: &[Fact], orders: &[&str]) {
    let replayed = Ledger::new(config);
    for fact in facts {
        assert_eq!(replayed.apply(fact), Ok(()), "replaying {fact:?}");
    }
    assert_eq!(replayed.skus(), ledger.skus());
    for order in orders {
        assert_eq!(
            replayed.order(&order_id(order)),
            ledger.order(&order_id(order))
        );
    }
    assert_eq!(replayed.counts(), ledger.counts());
}

/// A fact sink that keeps every fact, as the journal would write them.
#[derive(Default)]
struct Recorder {
    facts: parking_lot::Mutex<Vec<Fact>>,
}

impl FactSink for Recorder {
    fn append(&self, fact: &Fact) {
        self.facts.lock().push(fact.clone());
    }
}

fn room_id(value: &str) -> RoomId {
    RoomId::new(value).expect("a valid room id")
}

/// A one-hour room starting at `at(0)` that lists each `(sku, forecast)`.
fn room(id: &str, listings: &[(&str, u64)]) -> Room {
    Room {
        id: room_id(id),
        name: format!("show {id}"),
        starts_at: at(0),
        ends_at: at(60 * MINUTE_MS),
        listings: listings
            .iter()
            .map(|(sku, forecast)| Listing {
                sku: sku_id(sku),
                forecast: *forecast,
                plan: Vec::new(),
                shape: crate::ledger::PlanShape::Given,
                policy: Policy::default(),
            })
            .collect(),
    }
}

fn in_room(order: &str, room: &str, items: &[(&str, i64)]) -> OrderRequest {
    OrderRequest {
        room: Some(room_id(room)),
        ..request(order, "douyin", items)
    }
}

fn consumed(ledger: &Ledger, room: &str, sku: &str) -> u64 {
    let state = ledger.room(&room_id(room)).expect("the room exists");
    state
        .listings
        .iter()
        .find(|listing| listing.listing.sku == sku_id(sku))
        .expect("the sku is listed")
        .tally
        .consumed
}

/// The facts that created every SKU of `ledger`, as they stand now (for replays that start
/// from the SKUs).
fn ledger_sku_facts(ledger: &Ledger) -> Vec<Fact> {
    ledger
        .skus()
        .into_iter()
        .map(|view| Fact::SkuPut {
            at: at(0),
            settings: view.settings.clone(),
            stock: Stock {
                locked: 0,
                sold: 0,
                available: view.stock.total - view.stock.reserved,
                version: 1,
                ..view.stock
            },
        })
        .collect()
}
