//! Tests of the ledger: the order life cycle step by step, a property test that checks random
//! operation sequences against a `HashMap` model and replays their facts, and multi-threaded
//! stress tests of one hot SKU and of multi-line orders.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

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

// Life cycle.

#[test]
fn reserve_then_confirm_moves_units_from_locked_to_sold() {
    // Goal: the ordinary paid order. Method: reserve 3 of 10 units, check the order, the lock
    // and the fact; then confirm and check that the units moved from locked to sold, for the SKU
    // and for the platform.
    let ledger = ledger_with_skus(&[("A", 10)]);

    let answer = ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 3)]))
        .expect("reserve");
    assert!(!answer.replayed);
    assert_eq!(answer.order.status, OrderStatus::Locked);
    assert_eq!(answer.order.created_at, at(0));
    assert_eq!(answer.order.expires_at, at(DEFAULT_LOCK_TTL_MS));
    let Some(Fact::OrderReserved {
        expires_at, stocks, ..
    }) = &answer.fact
    else {
        panic!("expected OrderReserved, got {:?}", answer.fact);
    };
    assert_eq!(*expires_at, at(DEFAULT_LOCK_TTL_MS));
    assert_eq!(stocks.as_slice(), [stock(&ledger, "A")]);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 3, 0, 7]);
    assert_eq!(ledger.order(&order_id("o1")), Some(answer.order));

    let answer = ledger
        .confirm(at(MINUTE_MS), &order_id("o1"))
        .expect("confirm");
    assert!(!answer.replayed);
    assert_eq!(answer.order.status, OrderStatus::Sold);
    assert_eq!(answer.order.updated_at, at(MINUTE_MS));
    assert!(matches!(
        answer.fact,
        Some(Fact::OrderConfirmed { retaken: false, .. })
    ));
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 3, 7]);
    let view = ledger.sku(&sku_id("A")).expect("the sku exists");
    assert_eq!(
        view.platforms,
        [PlatformCount {
            platform: platform("douyin"),
            locked: 0,
            sold: 3,
            quota: None,
        }]
    );
    assert_stock_identity(&ledger);
}

#[test]
fn reserve_then_cancel_releases_the_units() {
    // Goal: a cancelled unpaid order gives its units back. Method: reserve 4 of 10, cancel, and
    // check the status, the fact and the quantities.
    let ledger = ledger_with_skus(&[("A", 10)]);
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 4)]))
        .expect("reserve");

    let answer = ledger.cancel(at(1), &order_id("o1")).expect("cancel");
    assert_eq!(answer.order.status, OrderStatus::Cancelled);
    assert!(matches!(answer.fact, Some(Fact::OrderCancelled { .. })));
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 0, 10]);
    assert_eq!(status(&ledger, "o1"), Some(OrderStatus::Cancelled));
    assert_stock_identity(&ledger);
}

#[test]
fn lock_expires_exactly_at_the_default_ttl() {
    // Goal: with no TTL on the SKU, a lock lasts 15 minutes and expires at `expires_at`, not a
    // millisecond before. Method: reserve, sweep one millisecond before and then at
    // `expires_at`, and check what each sweep released.
    let ledger = ledger_with_skus(&[("A", 10)]);
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 4)]))
        .expect("reserve");
    assert_eq!(ledger.next_expiry(), Some(at(DEFAULT_LOCK_TTL_MS)));

    assert_eq!(ledger.expire_due(at(DEFAULT_LOCK_TTL_MS - 1)), []);
    assert_eq!(status(&ledger, "o1"), Some(OrderStatus::Locked));
    assert_eq!(quantities(&ledger, "A"), [10, 0, 4, 0, 6]);

    let facts = ledger.expire_due(at(DEFAULT_LOCK_TTL_MS));
    assert_eq!(facts.len(), 1);
    let Fact::OrderExpired {
        at: expired_at,
        order,
        stocks,
        ..
    } = &facts[0]
    else {
        panic!("expected OrderExpired, got {facts:?}");
    };
    assert_eq!(*expired_at, at(DEFAULT_LOCK_TTL_MS));
    assert_eq!(order.order_id, order_id("o1"));
    assert_eq!(stocks.as_slice(), [stock(&ledger, "A")]);
    assert_eq!(status(&ledger, "o1"), Some(OrderStatus::Expired));
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 0, 10]);
    assert_eq!(ledger.next_expiry(), None);

    // A second sweep finds nothing left to do.
    assert_eq!(ledger.expire_due(at(DEFAULT_LOCK_TTL_MS + MINUTE_MS)), []);
}

#[test]
fn sku_lock_ttl_overrides_the_default() {
    // Goal: a SKU's `lock_ttl_ms` replaces the default TTL, a multi-line order takes the
    // shortest TTL of its SKUs, and `Some(None)` goes back to the default. Method: reserve on
    // SKUs with different TTLs, check each `expires_at`, then sweep step by step.
    let ledger = ledger_with_skus(&[("A", 10)]);
    for (sku, lock_ttl_ms) in [("B", 2 * MINUTE_MS), ("C", 5 * MINUTE_MS)] {
        let update = SkuUpdate {
            total: Some(10),
            lock_ttl_ms: Some(Some(lock_ttl_ms)),
            ..SkuUpdate::default()
        };
        ledger
            .put_sku(at(0), &sku_id(sku), update)
            .expect("put_sku");
    }

    let expires_at = |order: &str, items: &[(&str, i64)]| {
        ledger
            .reserve(at(0), request(order, "douyin", items))
            .expect("reserve")
            .order
            .expires_at
    };
    assert_eq!(expires_at("a", &[("A", 1)]), at(DEFAULT_LOCK_TTL_MS));
    assert_eq!(expires_at("b", &[("B", 1)]), at(2 * MINUTE_MS));
    assert_eq!(expires_at("c", &[("C", 1)]), at(5 * MINUTE_MS));
    assert_eq!(expires_at("ac", &[("A", 1), ("C", 1)]), at(5 * MINUTE_MS));
    assert_eq!(expires_at("cb", &[("C", 1), ("B", 1)]), at(2 * MINUTE_MS));
    assert_eq!(ledger.next_expiry(), Some(at(2 * MINUTE_MS)));

    let mut expired: Vec<OrderId> = ledger
        .expire_due(at(2 * MINUTE_MS))
        .iter()
        .filter_map(|fact| fact.order_id().cloned())
        .collect();
    expired.sort();
    assert_eq!(expired, [order_id("b"), order_id("cb")]);
    assert_eq!(quantities(&ledger, "B"), [10, 0, 0, 0, 10]);
    assert_eq!(quantities(&ledger, "C"), [10, 0, 2, 0, 8]);

    let update = SkuUpdate {
        lock_ttl_ms: Some(None),
        ..SkuUpdate::default()
    };
    ledger
        .put_sku(at(3 * MINUTE_MS), &sku_id("B"), update)
        .expect("put_sku");
    let answer = ledger
        .reserve(at(3 * MINUTE_MS), request("b2", "douyin", &[("B", 1)]))
        .expect("reserve");
    assert_eq!(
        answer.order.expires_at,
        at(3 * MINUTE_MS + DEFAULT_LOCK_TTL_MS)
    );

    let expired = ledger.expire_due(at(5 * MINUTE_MS));
    assert_eq!(
        expired.len(),
        2,
        "c and ac expire at 5 minutes: {expired:?}"
    );
    assert_eq!(quantities(&ledger, "C"), [10, 0, 0, 0, 10]);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 1, 0, 9]);
    assert_stock_identity(&ledger);
}

#[test]
fn payment_after_expiry_retakes_units_still_available() {
    // Goal: a payment that arrives after its lock expired takes the units again when they are
    // still there. Method: reserve, let the lock expire, confirm, and check for
    // `OrderConfirmed { retaken: true }` and the units in sold.
    let ledger = ledger_with_skus(&[("A", 10)]);
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 4)]))
        .expect("reserve");
    assert_eq!(ledger.expire_due(at(DEFAULT_LOCK_TTL_MS)).len(), 1);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 0, 10]);

    let answer = ledger
        .confirm(at(DEFAULT_LOCK_TTL_MS + MINUTE_MS), &order_id("o1"))
        .expect("confirm");
    assert!(!answer.replayed);
    assert_eq!(answer.order.status, OrderStatus::Sold);
    assert!(matches!(
        answer.fact,
        Some(Fact::OrderConfirmed { retaken: true, .. })
    ));
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 4, 6]);
    assert_stock_identity(&ledger);
}

#[test]
fn payment_after_expiry_is_refused_when_the_units_are_gone() {
    // Goal: a late payment that cannot take its units again is refused with `lock_expired`
    // and changes nothing. Method: let a lock of 5 of 5 units expire, let another order take 3
    // of them, then pay the first order by `confirm` and by `sell`.
    let ledger = ledger_with_skus(&[("A", 5)]);
    let first = request("o1", "douyin", &[("A", 5)]);
    ledger.reserve(at(0), first.clone()).expect("reserve");
    ledger.expire_due(at(DEFAULT_LOCK_TTL_MS));
    ledger
        .reserve(
            at(DEFAULT_LOCK_TTL_MS),
            request("o2", "kuaishou", &[("A", 3)]),
        )
        .expect("reserve");
    let skus_before = ledger.skus();
    let order_before = ledger.order(&order_id("o1"));

    let later = at(DEFAULT_LOCK_TTL_MS + MINUTE_MS);
    assert_eq!(
        ledger.confirm(later, &order_id("o1")),
        Err(LedgerError::LockExpired {
            order_id: order_id("o1")
        })
    );
    assert_eq!(
        ledger.sell(later, first).map_err(|error| error.code()),
        Err("lock_expired")
    );
    assert_eq!(ledger.skus(), skus_before);
    assert_eq!(ledger.order(&order_id("o1")), order_before);
    assert_eq!(status(&ledger, "o1"), Some(OrderStatus::Expired));
}

#[test]
fn sell_takes_units_straight_to_sold() {
    // Goal: `sell` places a paid order in one step, and refuses what is not available. Method:
    // sell 4 of 10, check the fact, status and quantities; then ask for more than is left.
    let ledger = ledger_with_skus(&[("A", 10)]);
    let answer = ledger
        .sell(at(0), request("o1", "taobao", &[("A", 4)]))
        .expect("sell");
    assert_eq!(answer.order.status, OrderStatus::Sold);
    assert_eq!(answer.order.expires_at, answer.order.created_at);
    assert!(matches!(answer.fact, Some(Fact::OrderSold { .. })));
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 4, 6]);

    assert_eq!(
        ledger.sell(at(0), request("o2", "taobao", &[("A", 7)])),
        Err(LedgerError::InsufficientStock {
            sku: sku_id("A"),
            available: 6,
            requested: 7,
        })
    );
    assert_eq!(status(&ledger, "o2"), None);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 4, 6]);
}

#[test]
fn sell_of_a_reserved_order_is_its_payment() {
    // Goal: a platform that reports the paid order with the same content as the reservation
    // pays it rather than taking units twice. Method: reserve 2, `sell` the same request, and
    // check for a confirmation and 2 units sold.
    let ledger = ledger_with_skus(&[("A", 10)]);
    let placed = request("o1", "douyin", &[("A", 2)]);
    ledger.reserve(at(0), placed.clone()).expect("reserve");

    let answer = ledger.sell(at(1), placed).expect("sell");
    assert!(matches!(
        answer.fact,
        Some(Fact::OrderConfirmed { retaken: false, .. })
    ));
    assert_eq!(answer.order.status, OrderStatus::Sold);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 2, 8]);
}

#[test]
fn refund_returns_sold_units_to_available() {
    // Goal: a refund gives the units back, for the SKU and for the platform. Method: sell 4 of
    // 10, refund, and check fact, status and quantities.
    let ledger = ledger_with_skus(&[("A", 10)]);
    ledger
        .sell(at(0), request("o1", "douyin", &[("A", 4)]))
        .expect("sell");

    let answer = ledger.refund(at(1), &order_id("o1")).expect("refund");
    assert_eq!(answer.order.status, OrderStatus::Refunded);
    assert!(matches!(answer.fact, Some(Fact::OrderRefunded { .. })));
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 0, 10]);
    let view = ledger.sku(&sku_id("A")).expect("the sku exists");
    assert_eq!(view.platforms[0].sold, 0);
}

#[test]
fn restock_adds_units_and_refuses_to_pass_the_limit() {
    // Goal: `restock` grows `total`, makes room for orders, and refuses unknown SKUs and totals
    // beyond `STOCK_QTY_MAX`. Method: run out of stock, restock, reserve again; then try the
    // refused cases and check nothing changed.
    let ledger = ledger_with_skus(&[("A", 2)]);
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 2)]))
        .expect("reserve");
    assert_eq!(
        ledger
            .reserve(at(0), request("o2", "douyin", &[("A", 1)]))
            .map_err(|error| error.code()),
        Err("insufficient_stock")
    );

    let fact = ledger.restock(at(1), &sku_id("A"), 3).expect("restock");
    assert!(matches!(fact, Fact::Restocked { qty: 3, .. }));
    assert_eq!(fact.stocks(), [stock(&ledger, "A")]);
    assert_eq!(quantities(&ledger, "A"), [5, 0, 2, 0, 3]);
    ledger
        .reserve(at(1), request("o2", "douyin", &[("A", 1)]))
        .expect("reserve");

    let before = ledger.sku(&sku_id("A"));
    assert_eq!(
        ledger
            .restock(at(2), &sku_id("A"), STOCK_QTY_MAX)
            .map_err(|error| error.code()),
        Err("invalid_stock")
    );
    assert_eq!(
        ledger.restock(at(2), &sku_id("Z"), 1),
        Err(LedgerError::SkuNotFound { sku: sku_id("Z") })
    );
    assert_eq!(ledger.sku(&sku_id("A")), before);
}

#[test]
fn halt_refuses_new_orders_until_resume() {
    // Goal: a halted SKU refuses new orders (reserve, sell, and any multi-line order touching
    // it) with `halted`, while payments of existing locks and refunds still go through.
    // Method: halt with one order locked, try each operation, resume, and reserve again.
    let ledger = ledger_with_skus(&[("A", 10), ("B", 10)]);
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 2)]))
        .expect("reserve");

    let fact = ledger.halt(at(1), &sku_id("A")).expect("halt");
    assert!(matches!(fact, Fact::Halted { .. }));
    assert!(fact.stocks()[0].halted);
    assert!(stock(&ledger, "A").halted);

    let halted = Err(LedgerError::Halted { sku: sku_id("A") });
    assert_eq!(
        ledger.reserve(at(2), request("o2", "douyin", &[("A", 1)])),
        halted
    );
    assert_eq!(
        ledger.sell(at(2), request("o3", "douyin", &[("A", 1)])),
        halted
    );
    let b_before = ledger.sku(&sku_id("B"));
    assert_eq!(
        ledger.reserve(at(2), request("o4", "douyin", &[("B", 1), ("A", 1)])),
        halted
    );
    assert_eq!(ledger.sku(&sku_id("B")), b_before);
    assert_eq!(status(&ledger, "o4"), None);

    ledger.confirm(at(3), &order_id("o1")).expect("confirm");
    ledger.refund(at(4), &order_id("o1")).expect("refund");
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 0, 10]);

    let fact = ledger.resume(at(5), &sku_id("A")).expect("resume");
    assert!(matches!(fact, Fact::Resumed { .. }));
    assert!(!stock(&ledger, "A").halted);
    ledger
        .reserve(at(6), request("o2", "douyin", &[("A", 1)]))
        .expect("reserve after resume");
    assert_eq!(
        ledger.halt(at(7), &sku_id("Z")),
        Err(LedgerError::SkuNotFound { sku: sku_id("Z") })
    );
}

#[test]
fn platform_quota_caps_locked_plus_sold() {
    // Goal: a platform's quota caps what it holds (locked + sold) of a SKU, other platforms are
    // not capped by it, and units given back free quota. Method: walk douyin up to its quota of
    // 5 by reserve, confirm and sell; check each refusal's numbers; refund and reserve again.
    let ledger = Ledger::new(LedgerConfig::default());
    let update = SkuUpdate {
        total: Some(20),
        quotas: Some(vec![(platform("douyin"), 5)]),
        ..SkuUpdate::default()
    };
    ledger
        .put_sku(at(0), &sku_id("A"), update)
        .expect("put_sku");

    ledger
        .reserve(at(0), request("d1", "douyin", &[("A", 3)]))
        .expect("reserve");
    assert_eq!(
        ledger.reserve(at(0), request("d2", "douyin", &[("A", 3)])),
        Err(LedgerError::PlatformQuotaExceeded {
            sku: sku_id("A"),
            platform: platform("douyin"),
            quota: 5,
            held: 3,
            requested: 3,
        })
    );
    assert_eq!(status(&ledger, "d2"), None);
    ledger
        .reserve(at(0), request("k1", "kuaishou", &[("A", 10)]))
        .expect("no quota on kuaishou");
    ledger.confirm(at(1), &order_id("d1")).expect("confirm");
    ledger
        .sell(at(1), request("d3", "douyin", &[("A", 2)]))
        .expect("sell up to the quota");
    assert_eq!(
        ledger
            .sell(at(1), request("d4", "douyin", &[("A", 1)]))
            .map_err(|error| error.code()),
        Err("platform_quota_exceeded")
    );

    ledger.refund(at(2), &order_id("d1")).expect("refund");
    ledger
        .reserve(at(2), request("d4", "douyin", &[("A", 1)]))
        .expect("the refund freed quota");
    let view = ledger.sku(&sku_id("A")).expect("the sku exists");
    assert_eq!(
        view.platforms,
        [
            PlatformCount {
                platform: platform("douyin"),
                locked: 1,
                sold: 2,
                quota: Some(5),
            },
            PlatformCount {
                platform: platform("kuaishou"),
                locked: 10,
                sold: 0,
                quota: None,
            },
        ]
    );
    assert_stock_identity(&ledger);
}

#[test]
fn retry_with_the_same_content_is_answered_again_and_changes_nothing() {
    // Goal: every operation is idempotent on its order id. Method: make each call twice and
    // check that the second is `replayed`, has no fact, and leaves every SKU (versions
    // included) and the order as the first left them.
    let ledger = ledger_with_skus(&[("A", 10)]);
    let placed = request("o1", "douyin", &[("A", 3)]);
    let sold = request("o2", "douyin", &[("A", 2)]);
    let cancelled = request("o3", "douyin", &[("A", 1)]);
    ledger.reserve(at(0), placed.clone()).expect("reserve");
    ledger.sell(at(0), sold.clone()).expect("sell");
    ledger.reserve(at(0), cancelled).expect("reserve");
    ledger.cancel(at(0), &order_id("o3")).expect("cancel");

    assert_replayed(&ledger, OrderStatus::Locked, |ledger| {
        ledger.reserve(at(1), placed.clone())
    });
    assert_replayed(&ledger, OrderStatus::Sold, |ledger| {
        ledger.sell(at(1), sold.clone())
    });
    assert_replayed(&ledger, OrderStatus::Cancelled, |ledger| {
        ledger.cancel(at(1), &order_id("o3"))
    });

    ledger.confirm(at(2), &order_id("o1")).expect("confirm");
    assert_replayed(&ledger, OrderStatus::Sold, |ledger| {
        ledger.confirm(at(3), &order_id("o1"))
    });
    // The retried reservation still gets its first answer, `locked`.
    assert_replayed(&ledger, OrderStatus::Locked, |ledger| {
        ledger.reserve(at(3), placed.clone())
    });

    ledger.refund(at(4), &order_id("o1")).expect("refund");
    assert_replayed(&ledger, OrderStatus::Refunded, |ledger| {
        ledger.refund(at(5), &order_id("o1"))
    });
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 2, 8]);
    assert_eq!(status(&ledger, "o1"), Some(OrderStatus::Refunded));
}

#[test]
fn same_order_id_with_different_content_is_a_conflict() {
    // Goal: an order id names one order: a request with that id and different content is
    // refused with `order_conflict` and changes nothing. Method: reserve, then send the same id
    // with another quantity, platform, room, SKU and extra line, by reserve and by sell.
    let ledger = ledger_with_skus(&[("A", 10), ("B", 10)]);
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 3)]))
        .expect("reserve");
    let skus_before = ledger.skus();
    let order_before = ledger.order(&order_id("o1"));

    let mut in_a_room = request("o1", "douyin", &[("A", 3)]);
    in_a_room.room = Some(RoomId::new("room-1").expect("a valid room"));
    let variants = [
        request("o1", "douyin", &[("A", 4)]),
        request("o1", "kuaishou", &[("A", 3)]),
        request("o1", "douyin", &[("B", 3)]),
        request("o1", "douyin", &[("A", 3), ("B", 1)]),
        in_a_room,
    ];
    let conflict = Err(LedgerError::OrderConflict {
        order_id: order_id("o1"),
    });
    for variant in variants {
        assert_eq!(ledger.reserve(at(1), variant.clone()), conflict);
        assert_eq!(ledger.sell(at(1), variant), conflict);
    }
    assert_eq!(ledger.skus(), skus_before);
    assert_eq!(ledger.order(&order_id("o1")), order_before);
}

#[test]
fn a_retry_with_its_lines_in_another_order_is_the_same_order() {
    // Goal: an order's lines are a set: a retry that lists them in another order gets the
    // first answer and changes nothing, and a paid re-send in another order pays the lock.
    // Method: reserve A+B, retry as B+A by reserve (replayed) and by sell (the payment).
    let ledger = ledger_with_skus(&[("A", 10), ("B", 10)]);
    let first = ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 3), ("B", 1)]))
        .expect("reserve");
    let skus_before = ledger.skus();
    let again = ledger
        .reserve(at(1), request("o1", "douyin", &[("B", 1), ("A", 3)]))
        .expect("the same order again");
    assert!(again.replayed);
    assert_eq!(again.fact, None);
    assert_eq!(again.order, first.order);
    assert_eq!(ledger.skus(), skus_before);
    let paid = ledger
        .sell(at(2), request("o1", "douyin", &[("B", 1), ("A", 3)]))
        .expect("its payment");
    assert_eq!(paid.order.status, OrderStatus::Sold);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 3, 7]);
}

#[test]
fn concurrent_forecast_edits_and_room_changes_lose_nothing() {
    // Goal: a forecast edit is one read-modify-write under the room lock, so two operators
    // editing two listings both keep their changes, and an edit never undoes a room change
    // that added a listing.
    // Method: two threads each set their own listing's forecast 1..=300 while a third puts
    // the room again with a new listing C; then C is listed with its tally. Then the two
    // editors alone again: both forecasts end at 300.
    let ledger = std::sync::Arc::new(ledger_with_skus(&[("A", 10), ("B", 10), ("C", 10)]));
    let room = |skus: &[&str]| Room {
        id: RoomId::new("r1").expect("room id"),
        name: "show".to_owned(),
        starts_at: at(0),
        ends_at: at(180 * MINUTE_MS),
        listings: skus
            .iter()
            .map(|sku| Listing {
                sku: sku_id(sku),
                forecast: 1,
                plan: Vec::new(),
                shape: crate::ledger::PlanShape::Given,
                policy: Policy::default(),
            })
            .collect(),
    };
    ledger.put_room(at(0), room(&["A", "B"])).expect("put_room");
    let room_id = RoomId::new("r1").expect("room id");
    let edit_both = |ledger: &std::sync::Arc<Ledger>| -> Vec<thread::JoinHandle<()>> {
        ["A", "B"]
            .into_iter()
            .map(|sku| {
                let ledger = ledger.clone();
                let room_id = room_id.clone();
                thread::spawn(move || {
                    for forecast in 1..=300 {
                        ledger
                            .set_forecast(at(1), &room_id, &sku_id(sku), forecast)
                            .expect("set_forecast");
                    }
                })
            })
            .collect()
    };
    let editors = edit_both(&ledger);
    ledger
        .put_room(at(1), room(&["A", "B", "C"]))
        .expect("put_room");
    for editor in editors {
        editor.join().expect("editor");
    }
    let spec = ledger.rooms_get(&room_id).expect("room");
    assert!(
        spec.listing(&sku_id("C")).is_some(),
        "the added listing stays"
    );
    assert!(ledger.listing(&room_id, &sku_id("C")).is_some());

    for editor in edit_both(&ledger) {
        editor.join().expect("editor");
    }
    let spec = ledger.rooms_get(&room_id).expect("room");
    let forecast = |sku: &str| spec.listing(&sku_id(sku)).map(|listing| listing.forecast);
    assert_eq!(forecast("A"), Some(300));
    assert_eq!(forecast("B"), Some(300));
    assert_eq!(forecast("C"), Some(1));
}

#[test]
fn multi_line_order_locks_every_line_or_none() {
    // Goal: an order's lines are taken all together or not at all. Method: reserve an order
    // whose second line is short (then unknown, then halted, then over quota) and check the
    // first line's SKU is untouched, version included; then reserve a fitting order, check
    // every line is locked, and cancel and expire multi-line orders.
    let ledger = ledger_with_skus(&[("A", 10), ("B", 2), ("H", 10)]);
    ledger.halt(at(0), &sku_id("H")).expect("halt");
    let update = SkuUpdate {
        quotas: Some(vec![(platform("douyin"), 1)]),
        ..SkuUpdate::default()
    };
    ledger
        .put_sku(at(0), &sku_id("B"), update)
        .expect("put_sku");
    let a_before = ledger.sku(&sku_id("A"));

    let refusals = [
        (&[("A", 3), ("B", 3)], "kuaishou", "insufficient_stock"),
        (&[("A", 3), ("Z", 1)], "kuaishou", "sku_not_found"),
        (&[("A", 3), ("H", 1)], "kuaishou", "halted"),
        (&[("A", 3), ("B", 2)], "douyin", "platform_quota_exceeded"),
    ];
    for (items, platform_name, code) in refusals {
        let result = ledger.reserve(at(1), request("o1", platform_name, items));
        assert_eq!(result.map_err(|error| error.code()), Err(code));
        let result = ledger.sell(at(1), request("o1", platform_name, items));
        assert_eq!(result.map_err(|error| error.code()), Err(code));
        assert_eq!(ledger.sku(&sku_id("A")), a_before);
        assert_eq!(status(&ledger, "o1"), None);
    }

    let answer = ledger
        .reserve(at(1), request("o1", "kuaishou", &[("A", 3), ("B", 2)]))
        .expect("reserve");
    let Some(fact) = &answer.fact else {
        panic!("a reservation has a fact");
    };
    assert_eq!(fact.stocks(), [stock(&ledger, "A"), stock(&ledger, "B")]);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 3, 0, 7]);
    assert_eq!(quantities(&ledger, "B"), [2, 0, 2, 0, 0]);

    ledger.cancel(at(2), &order_id("o1")).expect("cancel");
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 0, 10]);
    assert_eq!(quantities(&ledger, "B"), [2, 0, 0, 0, 2]);

    ledger
        .reserve(at(3), request("o2", "kuaishou", &[("B", 1), ("A", 5)]))
        .expect("reserve");
    assert_eq!(ledger.expire_due(at(3 + DEFAULT_LOCK_TTL_MS)).len(), 1);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 0, 10]);
    assert_eq!(quantities(&ledger, "B"), [2, 0, 0, 0, 2]);
    assert_stock_identity(&ledger);
}

#[test]
fn put_sku_refuses_a_total_below_what_is_committed() {
    // Goal: `put_sku` never lets `total` fall below reserved + locked + sold, and a refused
    // update changes nothing (not even the settings it carried, nor the version). Method:
    // commit 7 of 10 units, try totals and reservations that do not fit, then one that just
    // fits; try to create a SKU with more reserved than total.
    let ledger = Ledger::new(LedgerConfig::default());
    let update = SkuUpdate {
        total: Some(10),
        reserved: Some(2),
        ..SkuUpdate::default()
    };
    let fact = ledger
        .put_sku(at(0), &sku_id("A"), update)
        .expect("put_sku");
    assert!(matches!(fact, Fact::SkuPut { .. }));
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 3)]))
        .expect("reserve");
    ledger
        .sell(at(0), request("o2", "douyin", &[("A", 2)]))
        .expect("sell");
    let before = ledger.sku(&sku_id("A"));

    let refused = [
        SkuUpdate {
            total: Some(6),
            name: Some("renamed".to_owned()),
            ..SkuUpdate::default()
        },
        SkuUpdate {
            reserved: Some(6),
            lock_ttl_ms: Some(Some(1)),
            ..SkuUpdate::default()
        },
        SkuUpdate {
            total: Some(8),
            reserved: Some(4),
            ..SkuUpdate::default()
        },
    ];
    for update in refused {
        let result = ledger.put_sku(at(1), &sku_id("A"), update);
        assert!(
            matches!(result, Err(LedgerError::InvalidStock { .. })),
            "{result:?}"
        );
        assert_eq!(ledger.sku(&sku_id("A")), before);
    }

    ledger
        .put_sku(at(2), &sku_id("A"), total_update(7))
        .expect("a total equal to what is committed");
    assert_eq!(quantities(&ledger, "A"), [7, 2, 3, 2, 0]);

    let update = SkuUpdate {
        total: Some(1),
        reserved: Some(2),
        ..SkuUpdate::default()
    };
    let result = ledger.put_sku(at(3), &sku_id("N"), update);
    assert_eq!(result.map_err(|error| error.code()), Err("invalid_stock"));
    assert_eq!(ledger.sku(&sku_id("N")), None);
    assert_eq!(ledger.counts().skus, 1);
}

#[test]
fn forget_finished_waits_for_the_idempotency_window() {
    // Goal: finished orders are forgotten once the idempotency window has passed since their
    // last change, and never before; locked orders are never forgotten. Method: finish orders
    // at different times, call `forget_finished` just before and at each deadline, and check
    // which orders remain and that a forgotten id can be used again.
    let window_ms = 60 * MINUTE_MS;
    let refund_window_ms = 10 * window_ms;
    let ledger = Ledger::new(LedgerConfig {
        idempotency_window: Duration::from_millis(window_ms),
        refund_window: Duration::from_millis(refund_window_ms),
        ..LedgerConfig::default()
    });
    ledger
        .put_sku(at(0), &sku_id("A"), total_update(100))
        .expect("put_sku");
    let place = |order: &str| {
        ledger
            .reserve(at(0), request(order, "douyin", &[("A", 1)]))
            .expect("reserve");
    };
    place("confirmed");
    ledger
        .confirm(at(0), &order_id("confirmed"))
        .expect("confirm");
    ledger
        .sell(at(0), request("sold", "douyin", &[("A", 1)]))
        .expect("sell");
    place("cancelled");
    ledger
        .cancel(at(MINUTE_MS), &order_id("cancelled"))
        .expect("cancel");
    place("refunded");
    ledger
        .confirm(at(0), &order_id("refunded"))
        .expect("confirm");
    ledger
        .refund(at(30 * MINUTE_MS), &order_id("refunded"))
        .expect("refund");
    place("locked");

    assert_eq!(ledger.forget_finished(at(window_ms - 1)), 0);
    assert_eq!(ledger.counts().orders, 5);
    // Sold orders stay for the refund window; settled ones go after the idempotency window.
    assert_eq!(ledger.forget_finished(at(window_ms)), 0);
    assert_eq!(status(&ledger, "confirmed"), Some(OrderStatus::Sold));
    assert_eq!(status(&ledger, "sold"), Some(OrderStatus::Sold));
    assert_eq!(status(&ledger, "cancelled"), Some(OrderStatus::Cancelled));
    assert_eq!(ledger.forget_finished(at(window_ms + MINUTE_MS)), 1);
    assert_eq!(status(&ledger, "cancelled"), None);
    assert_eq!(ledger.forget_finished(at(window_ms + 30 * MINUTE_MS)), 1);
    assert_eq!(status(&ledger, "refunded"), None);
    assert_eq!(ledger.forget_finished(at(refund_window_ms - 1)), 0);
    assert_eq!(ledger.forget_finished(at(refund_window_ms)), 2);
    assert_eq!(status(&ledger, "confirmed"), None);
    assert_eq!(status(&ledger, "sold"), None);
    assert_eq!(ledger.forget_finished(at(10 * refund_window_ms)), 0);
    assert_eq!(status(&ledger, "locked"), Some(OrderStatus::Locked));
    assert_eq!(ledger.counts().orders, 1);
    // Forgetting an order does not touch stock.
    assert_eq!(quantities(&ledger, "A"), [100, 0, 1, 2, 97]);

    // A forgotten id is free: the same id with other content is a new order, not a conflict.
    let answer = ledger
        .reserve(
            at(10 * window_ms),
            request("cancelled", "taobao", &[("A", 5)]),
        )
        .expect("reserve");
    assert!(!answer.replayed);
}

#[test]
fn a_sold_order_stays_refundable_for_the_refund_window() {
    // Goal: refunds come days after the sale (7-day returns): a sold order outlives the
    // idempotency window, is refunded then, and a paid order sent again meanwhile is a retry,
    // not a second sale; after the refund window it is forgotten.
    // Method: a one-hour idempotency window and a seven-day refund window; sell two orders,
    // forget at day 3, then refund one and re-send the other paid; forget at day 8.
    let hour_ms = 60 * MINUTE_MS;
    let ledger = Ledger::new(LedgerConfig {
        idempotency_window: Duration::from_millis(hour_ms),
        refund_window: Duration::from_millis(7 * 24 * hour_ms),
        ..LedgerConfig::default()
    });
    ledger
        .put_sku(at(0), &sku_id("A"), total_update(10))
        .expect("put_sku");
    for order in ["p1", "p2"] {
        ledger
            .sell(at(0), request(order, "douyin", &[("A", 2)]))
            .expect("sell");
    }
    assert_eq!(ledger.forget_finished(at(3 * 24 * hour_ms)), 0);
    let refunded = ledger
        .refund(at(3 * 24 * hour_ms), &order_id("p1"))
        .expect("a refund on day 3");
    assert_eq!(refunded.order.status, OrderStatus::Refunded);
    let again = ledger
        .sell(at(3 * 24 * hour_ms), request("p2", "douyin", &[("A", 2)]))
        .expect("the same paid order again");
    assert!(again.replayed);
    assert_eq!(again.fact, None);
    assert_eq!(quantities(&ledger, "A"), [10, 0, 0, 2, 8]);
    // The refund settled p1: it goes an idempotency window later; p2 at the refund window.
    assert_eq!(ledger.forget_finished(at(3 * 24 * hour_ms + hour_ms)), 1);
    assert_eq!(ledger.forget_finished(at(7 * 24 * hour_ms - 1)), 0);
    assert_eq!(ledger.forget_finished(at(7 * 24 * hour_ms)), 1);
    assert_eq!(ledger.counts().orders, 0);
    assert_eq!(
        ledger.refund(at(8 * 24 * hour_ms), &order_id("p2")),
        Err(LedgerError::OrderNotFound {
            order_id: order_id("p2")
        })
    );
}

#[test]
fn forgetting_a_large_backlog_releases_the_stripe_between_batches() {
    // Goal: a day after a big show millions of orders fall due at once; forgetting them takes
    // each stripe for at most FORGET_BATCH_MAX orders at a time. Method: cancel more orders
    // than one batch holds on every stripe, forget them all in one call; each batch is
    // counted, and the totals match.
    let ledger = ledger_with_skus(&[("A", 1_000_000)]);
    let count = ORDER_STRIPES_COUNT * FORGET_BATCH_MAX * 2;
    for index in 0..count {
        let id = format!("o{index}");
        ledger
            .reserve(at(0), request(&id, "douyin", &[("A", 1)]))
            .expect("reserve");
        ledger.cancel(at(0), &order_id(&id)).expect("cancel");
    }
    let mut stripe = ledger.orders[0].0.lock();
    let queued = stripe.finished.len();
    let (forgotten, more) = ledger.forget_due_in(&mut stripe, at(DAY_MS));
    assert_eq!(forgotten, FORGET_BATCH_MAX as u64);
    assert!(more);
    assert_eq!(stripe.finished.len(), queued - FORGET_BATCH_MAX);
    drop(stripe);
    assert_eq!(
        ledger.forget_finished(at(DAY_MS)) + FORGET_BATCH_MAX as u64,
        count as u64
    );
    assert_eq!(ledger.counts().orders, 0);
}

#[test]
fn refused_transitions_change_nothing() {
    // Goal: operations that do not follow from an order's status are refused with
    // `invalid_transition` (or `order_not_found`), except cancelling an expired order, which
    // answers the order as it is. Method: take an order to each status, try every operation
    // that does not apply, and check the error and that nothing changed.
    let ledger = ledger_with_skus(&[("A", 10)]);
    ledger
        .sell(at(0), request("sold", "douyin", &[("A", 1)]))
        .expect("sell");
    ledger
        .reserve(at(2), request("locked", "douyin", &[("A", 1)]))
        .expect("reserve");
    ledger
        .reserve(at(0), request("cancelled", "douyin", &[("A", 1)]))
        .expect("reserve");
    ledger
        .cancel(at(0), &order_id("cancelled"))
        .expect("cancel");
    ledger
        .sell(at(0), request("refunded", "douyin", &[("A", 1)]))
        .expect("sell");
    ledger.refund(at(0), &order_id("refunded")).expect("refund");
    ledger
        .reserve(at(1), request("expired", "douyin", &[("A", 1)]))
        .expect("reserve");
    ledger.expire_due(at(1 + DEFAULT_LOCK_TTL_MS));
    assert_eq!(status(&ledger, "locked"), Some(OrderStatus::Locked));
    let skus_before = ledger.skus();

    let cases: [(&str, &str, OrderStatus, &str); 6] = [
        ("cancel", "sold", OrderStatus::Sold, "cancelled"),
        ("refund", "locked", OrderStatus::Locked, "refunded"),
        ("confirm", "cancelled", OrderStatus::Cancelled, "confirmed"),
        ("refund", "cancelled", OrderStatus::Cancelled, "refunded"),
        ("cancel", "refunded", OrderStatus::Refunded, "cancelled"),
        ("refund", "expired", OrderStatus::Expired, "refunded"),
    ];
    let later = at(2 + DEFAULT_LOCK_TTL_MS);
    for (operation, order, status, action) in cases {
        let result = match operation {
            "confirm" => ledger.confirm(later, &order_id(order)),
            "cancel" => ledger.cancel(later, &order_id(order)),
            _ => ledger.refund(later, &order_id(order)),
        };
        assert_eq!(
            result,
            Err(LedgerError::InvalidTransition {
                order_id: order_id(order),
                status,
                action,
            })
        );
    }
    assert_eq!(
        ledger.confirm(later, &order_id("unknown")),
        Err(LedgerError::OrderNotFound {
            order_id: order_id("unknown")
        })
    );

    let answer = ledger
        .cancel(later, &order_id("expired"))
        .expect("cancelling an expired order is not an error");
    assert_eq!(answer.fact, None);
    assert!(!answer.replayed);
    assert_eq!(answer.order.status, OrderStatus::Expired);
    assert_eq!(ledger.skus(), skus_before);
}

#[test]
fn facts_of_a_life_cycle_replay_to_the_same_ledger() {
    // Goal: the facts of every kind rebuild the ledger, and replay refuses a fact that does not
    // follow. Method: run every operation once, collect the facts, apply them to a fresh
    // ledger and compare; then apply one payment a second time.
    let ledger = Ledger::new(LedgerConfig::default());
    let mut facts = Vec::new();
    let update = SkuUpdate {
        total: Some(10),
        reserved: Some(1),
        lock_ttl_ms: Some(Some(MINUTE_MS)),
        quotas: Some(vec![(platform("douyin"), 6)]),
        name: Some("Lipstick".to_owned()),
    };
    facts.push(
        ledger
            .put_sku(at(0), &sku_id("A"), update)
            .expect("put_sku"),
    );
    facts.push(
        ledger
            .put_sku(at(0), &sku_id("B"), total_update(5))
            .expect("put_sku"),
    );
    facts.push(ledger.restock(at(1), &sku_id("B"), 5).expect("restock"));
    let mut answers = vec![
        ledger.reserve(at(2), request("r1", "douyin", &[("A", 2), ("B", 3)])),
        ledger.sell(at(2), request("s1", "kuaishou", &[("B", 1)])),
        ledger.reserve(at(2), request("r2", "douyin", &[("A", 1)])),
        ledger.reserve(at(2), request("r3", "douyin", &[("A", 1)])),
    ];
    facts.push(ledger.halt(at(3), &sku_id("A")).expect("halt"));
    answers.push(ledger.confirm(at(4), &order_id("r1")));
    answers.push(ledger.cancel(at(4), &order_id("r2")));
    facts.push(ledger.resume(at(5), &sku_id("A")).expect("resume"));
    answers.push(ledger.refund(at(6), &order_id("s1")));
    for answer in answers {
        facts.extend(answer.expect("the operation succeeds").fact);
    }
    facts.extend(ledger.expire_due(at(2 + MINUTE_MS)));
    let retake = ledger
        .confirm(at(3 + MINUTE_MS), &order_id("r3"))
        .expect("a retake");
    assert!(matches!(
        retake.fact,
        Some(Fact::OrderConfirmed { retaken: true, .. })
    ));
    facts.extend(retake.fact);

    // Put the facts back in the order they happened; the sort is stable, so facts of one
    // instant keep the order they were made in.
    facts.sort_by_key(Fact::at);
    assert_replay_equal(
        &ledger,
        LedgerConfig::default(),
        &facts,
        &["r1", "r2", "r3", "s1"],
    );

    let replayed = Ledger::new(LedgerConfig::default());
    for fact in &facts {
        replayed.apply(fact).expect("apply");
    }
    let payment = facts
        .iter()
        .find(|fact| matches!(fact, Fact::OrderConfirmed { retaken: false, .. }))
        .expect("a payment");
    let before = replayed.skus();
    assert!(matches!(
        replayed.apply(payment),
        Err(ReplayError::BadTransition {
            status: OrderStatus::Sold,
            ..
        })
    ));
    assert_eq!(replayed.skus(), before);
}

// Behaviour at the edges of DESIGN's rules, each pinned by a test.

#[test]
fn retried_sell_after_refund_gets_the_first_answer() {
    // Goal: a retried `sell` is answered as the first one was, even after a refund.
    // Method: sell, refund, send the identical sell again; nothing may change.
    let ledger = ledger_with_skus(&[("A", 10)]);
    let sold = request("o1", "douyin", &[("A", 2)]);
    ledger.sell(at(0), sold.clone()).expect("sell");
    ledger.refund(at(1), &order_id("o1")).expect("refund");
    let before = ledger.skus();

    let answer = ledger.sell(at(2), sold).expect("a retry is answered");
    assert!(answer.replayed);
    assert_eq!(answer.fact, None);
    assert_eq!(answer.order.status, OrderStatus::Sold);
    assert_eq!(ledger.skus(), before);
    let answer = ledger
        .confirm(at(3), &order_id("o1"))
        .expect("a retried payment is answered");
    assert!(answer.replayed);
    assert_eq!(status(&ledger, "o1"), Some(OrderStatus::Refunded));
}

#[test]
fn replay_accepts_an_order_id_used_again_after_it_was_forgotten() {
    // Goal: forgetting leaves no fact, yet the facts still rebuild the ledger when a client
    // reuses an order id after the idempotency window.
    // Method: reserve and cancel an order, forget it, reserve the same id again, then replay
    // every fact into a fresh ledger and compare.
    let ledger = Ledger::new(LedgerConfig::default());
    let mut facts = vec![
        ledger
            .put_sku(at(0), &sku_id("A"), total_update(10))
            .expect("put_sku"),
    ];
    let first = ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 1)]))
        .expect("reserve");
    facts.extend(first.fact);
    let cancelled = ledger.cancel(at(0), &order_id("o1")).expect("cancel");
    facts.extend(cancelled.fact);
    let day_ms = 24 * 60 * MINUTE_MS;
    assert_eq!(ledger.forget_finished(at(day_ms)), 1);
    let again = ledger
        .reserve(at(day_ms), request("o1", "douyin", &[("A", 2)]))
        .expect("reserve");
    facts.extend(again.fact);

    let replayed = Ledger::new(LedgerConfig::default());
    for fact in &facts {
        replayed.apply(fact).expect("every fact replays");
    }
    assert_eq!(replayed.skus(), ledger.skus());
    assert_eq!(
        replayed.order(&order_id("o1")),
        ledger.order(&order_id("o1"))
    );
}

#[test]
fn a_lock_past_its_expiry_is_expired_before_a_late_payment_or_cancel() {
    // Goal: locks expire exactly at `expires_at`, even before the sweeper (every 100 ms) comes
    // by: a payment after that retakes the units (or fails with lock_expired), a cancel finds
    // the order expired, and the journal shows the expiry first. A new order may still be
    // refused those units until the sweep, at most one sweep interval.
    // Method: reserve three, then act one minute after `expires_at` without a sweep.
    let ledger = ledger_with_skus(&[("A", 2)]);
    for order in ["paid", "dropped"] {
        ledger
            .reserve(at(0), request(order, "douyin", &[("A", 1)]))
            .expect("reserve");
    }
    let late = at(DEFAULT_LOCK_TTL_MS + MINUTE_MS);
    assert_eq!(
        ledger
            .reserve(late, request("newcomer", "douyin", &[("A", 1)]))
            .map_err(|error| error.code()),
        Err("insufficient_stock")
    );

    let answer = ledger.confirm(late, &order_id("paid")).expect("confirm");
    assert!(matches!(
        answer.fact,
        Some(Fact::OrderConfirmed { retaken: true, .. })
    ));
    let answer = ledger.cancel(late, &order_id("dropped")).expect("cancel");
    assert_eq!(answer.order.status, OrderStatus::Expired);
    assert_eq!(quantities(&ledger, "A"), [2, 0, 0, 1, 1]);
    assert_eq!(ledger.counts().orders_locked, 0);
    // Exactly at `expires_at` the lock is gone too.
    ledger
        .reserve(late, request("edge", "douyin", &[("A", 1)]))
        .expect("reserve");
    let edge = at(DEFAULT_LOCK_TTL_MS + MINUTE_MS + DEFAULT_LOCK_TTL_MS);
    let answer = ledger.cancel(edge, &order_id("edge")).expect("cancel");
    assert_eq!(answer.order.status, OrderStatus::Expired);
}

#[test]
fn next_expiry_skips_locks_already_released() {
    // Goal: `next_expiry` names only locks still pending.
    // Method: reserve, cancel, ask for the next expiry.
    let ledger = ledger_with_skus(&[("A", 2)]);
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 1)]))
        .expect("reserve");
    ledger
        .reserve(at(1), request("o2", "douyin", &[("A", 1)]))
        .expect("reserve");
    ledger.cancel(at(1), &order_id("o1")).expect("cancel");

    assert_eq!(ledger.next_expiry(), Some(at(1 + DEFAULT_LOCK_TTL_MS)));
    ledger.cancel(at(2), &order_id("o2")).expect("cancel");
    assert_eq!(ledger.next_expiry(), None);
    assert_eq!(ledger.expire_due(at(1 + DEFAULT_LOCK_TTL_MS)), []);
}

#[test]
fn put_sku_refuses_figures_over_the_stock_limit() {
    // Goal: `put_sku` guards `STOCK_QTY_MAX` itself, so no sum of figures can overflow.
    // Method: put a SKU with `total` over the limit, then `reserved = u64::MAX` on a SKU
    // with a unit locked; both are `invalid_stock` and change nothing.
    let ledger = ledger_with_skus(&[("A", 1)]);
    let update = SkuUpdate {
        total: Some(STOCK_QTY_MAX + 1),
        ..SkuUpdate::default()
    };
    assert_eq!(
        ledger
            .put_sku(at(0), &sku_id("B"), update)
            .map_err(|error| error.code()),
        Err("invalid_stock")
    );
    assert_eq!(ledger.sku(&sku_id("B")), None);
    ledger
        .reserve(at(0), request("o1", "douyin", &[("A", 1)]))
        .expect("reserve");
    let before = ledger.skus();
    let update = SkuUpdate {
        reserved: Some(u64::MAX),
        ..SkuUpdate::default()
    };
    assert_eq!(
        ledger
            .put_sku(at(1), &sku_id("A"), update)
            .map_err(|error| error.code()),
        Err("invalid_stock")
    );
    assert_eq!(ledger.skus(), before);
}

// Model test: random operation sequences against a `HashMap` model.

/// SKU ids by index; `D` does not exist until a `put_sku` creates it.
const MODEL_SKUS: [&str; 4] = ["A", "B", "C", "D"];
/// Platform ids by index, in the ledger's sort order.
const MODEL_PLATFORMS: [&str; 3] = ["douyin", "kuaishou", "taobao"];
/// Few order ids, so that retries, conflicts and reuse after forgetting happen often.
const MODEL_ORDERS_COUNT: usize = 6;
const MODEL_ROOM: &str = "room-1";
/// Shorter than the default TTL, so that `forget_finished` acts within a sequence.
const MODEL_IDEMPOTENCY_WINDOW_MS: u64 = 10 * MINUTE_MS;

/// Longer than the idempotency window, as a refund window is.
const MODEL_REFUND_WINDOW_MS: u64 = 30 * MINUTE_MS;

fn model_config() -> LedgerConfig {
    LedgerConfig {
        lock_ttl: Duration::from_millis(DEFAULT_LOCK_TTL_MS),
        idempotency_window: Duration::from_millis(MODEL_IDEMPOTENCY_WINDOW_MS),
        refund_window: Duration::from_millis(MODEL_REFUND_WINDOW_MS),
    }
}

fn model_sku_id(sku: usize) -> SkuId {
    sku_id(MODEL_SKUS[sku])
}

fn model_platform(index: usize) -> Platform {
    platform(MODEL_PLATFORMS[index])
}

fn model_order_id(order: usize) -> OrderId {
    order_id(&format!("order-{order}"))
}

fn model_room(room: bool) -> Option<RoomId> {
    room.then(|| RoomId::new(MODEL_ROOM).expect("a valid room"))
}

#[derive(Clone, Debug)]
enum Operation {
    PutSku {
        sku: usize,
        total: Option<u64>,
        reserved: Option<u64>,
        lock_ttl_ms: Option<Option<u64>>,
        quotas: Option<Vec<(usize, u64)>>,
    },
    Restock {
        sku: usize,
        qty: u64,
    },
    Halt {
        sku: usize,
    },
    Resume {
        sku: usize,
    },
    /// `content` is `None` for the order's canonical content, so that retries are frequent.
    Reserve {
        order: usize,
        content: Option<OrderContent>,
    },
    Sell {
        order: usize,
        content: Option<OrderContent>,
    },
    Confirm {
        order: usize,
    },
    Cancel {
        order: usize,
    },
    Refund {
        order: usize,
    },
    Advance {
        duration_ms: u64,
    },
    ExpireDue,
    ForgetFinished,
    /// Puts the model's room with these SKUs listed (dropping the others).
    PutRoom {
        skus: Vec<usize>,
    },
}

/// What an order asks for, apart from its id.
#[derive(Clone, Debug)]
struct OrderContent {
    platform: usize,
    room: bool,
    lines: Vec<(usize, u32)>,
}

/// Keeps the first line of each SKU: an order names a SKU once.
fn unique_lines(mut lines: Vec<(usize, u32)>) -> Vec<(usize, u32)> {
    let mut seen = [false; MODEL_SKUS.len()];
    lines.retain(|(sku, _)| !std::mem::replace(&mut seen[*sku], true));
    lines
}

fn content_strategy() -> impl Strategy<Value = OrderContent> {
    // `D` is rarer on lines: it does not exist until some `put_sku` creates it.
    let sku = prop_oneof![9 => 0..MODEL_SKUS.len() - 1, 1 => Just(MODEL_SKUS.len() - 1)];
    (
        0..MODEL_PLATFORMS.len(),
        prop::bool::weighted(0.2),
        prop::collection::vec((sku, 1..=4u32), 1..=3),
    )
        .prop_map(|(platform, room, lines)| OrderContent {
            platform,
            room,
            lines: unique_lines(lines),
        })
}

fn operation_strategy() -> impl Strategy<Value = Operation> {
    let sku = || 0..MODEL_SKUS.len();
    let order = || 0..MODEL_ORDERS_COUNT;
    let platform = || 0..MODEL_PLATFORMS.len();
    let lock_ttl_ms = prop_oneof![
        3 => Just(None),
        1 => Just(Some(None)),
        1 => Just(Some(Some(0))),
        1 => Just(Some(Some(MINUTE_MS))),
        1 => Just(Some(Some(3 * MINUTE_MS))),
    ];
    let quotas = prop::option::weighted(0.3, prop::collection::vec((platform(), 0..=10u64), 0..=3));
    let put_sku = (
        sku(),
        prop::option::of(0..=24u64),
        prop::option::of(0..=6u64),
        lock_ttl_ms,
        quotas,
    )
        .prop_map(
            |(sku, total, reserved, lock_ttl_ms, quotas)| Operation::PutSku {
                sku,
                total,
                reserved,
                lock_ttl_ms,
                quotas,
            },
        );
    let restock_qty = prop_oneof![9 => 0..=8u64, 1 => Just(STOCK_QTY_MAX)];
    // Whole minutes and the exact window, so that deadlines are met to the millisecond.
    let duration_ms = prop_oneof![
        4 => 0..=4 * MINUTE_MS,
        2 => Just(MINUTE_MS),
        1 => Just(MODEL_IDEMPOTENCY_WINDOW_MS),
        1 => Just(16 * MINUTE_MS),
    ];
    prop_oneof![
        2 => put_sku,
        1 => (sku(), restock_qty).prop_map(|(sku, qty)| Operation::Restock { sku, qty }),
        1 => sku().prop_map(|sku| Operation::Halt { sku }),
        2 => sku().prop_map(|sku| Operation::Resume { sku }),
        6 => (order(), prop::option::weighted(0.25, content_strategy()))
            .prop_map(|(order, content)| Operation::Reserve { order, content }),
        2 => (order(), prop::option::weighted(0.25, content_strategy()))
            .prop_map(|(order, content)| Operation::Sell { order, content }),
        4 => order().prop_map(|order| Operation::Confirm { order }),
        2 => order().prop_map(|order| Operation::Cancel { order }),
        2 => order().prop_map(|order| Operation::Refund { order }),
        3 => duration_ms.prop_map(|duration_ms| Operation::Advance { duration_ms }),
        2 => Just(Operation::ExpireDue),
        1 => Just(Operation::ForgetFinished),
        1 => prop::collection::vec(sku(), 0..=3).prop_map(|mut skus| {
            skus.sort_unstable();
            skus.dedup();
            Operation::PutRoom { skus }
        }),
    ]
}

/// The SKUs every sequence starts with: one plain, one with reserved units and a quota, one
/// with its own TTL and a quota. `D` is left to be created by the sequence.
fn model_setup() -> Vec<Operation> {
    vec![
        Operation::PutSku {
            sku: 0,
            total: Some(12),
            reserved: None,
            lock_ttl_ms: None,
            quotas: None,
        },
        Operation::PutSku {
            sku: 1,
            total: Some(8),
            reserved: Some(1),
            lock_ttl_ms: None,
            quotas: Some(vec![(0, 5)]),
        },
        Operation::PutSku {
            sku: 2,
            total: Some(5),
            reserved: None,
            lock_ttl_ms: Some(Some(MINUTE_MS)),
            quotas: Some(vec![(1, 3)]),
        },
    ]
}

#[derive(Clone, Debug, Default)]
struct ModelSku {
    total: u64,
    reserved: u64,
    locked: u64,
    sold: u64,
    halted: bool,
    lock_ttl_ms: Option<u64>,
    /// Sorted by platform, the smallest quota kept when one is given twice.
    quotas: Vec<(usize, u64)>,
    /// `(locked, sold)` per platform, for every platform that ever took this SKU.
    tallies: BTreeMap<usize, (u64, u64)>,
    version: u64,
    updated_at: u64,
}

impl ModelSku {
    fn available(&self) -> u64 {
        self.total - self.reserved - self.locked - self.sold
    }

    fn quota(&self, platform: usize) -> Option<u64> {
        self.quotas
            .iter()
            .find(|(quota_platform, _)| *quota_platform == platform)
            .map(|(_, quota)| *quota)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelMovement {
    Lock,
    Unlock,
    LockToSold,
    Sell,
    Refund,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelAction {
    Confirm,
    Cancel,
    Refund,
}

#[derive(Clone, Debug)]
struct ModelOrder {
    platform: usize,
    room: bool,
    lines: Vec<(usize, u32)>,
    status: OrderStatus,
    /// Created by `sell` rather than `reserve`: a retried creation answers `sold`.
    sold_at_creation: bool,
    created_at: u64,
    expires_at: u64,
    updated_at: u64,
    /// Per line, the generation of the room listing that counted the order when it last
    /// took its units, if the room listed that SKU then.
    counted: Vec<Option<u64>>,
}

/// What the model expects an order operation to answer; `fact` is [`fact_label`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expected {
    status: OrderStatus,
    fact: Option<&'static str>,
    replayed: bool,
}

/// A fact's kind, with retaken confirmations told apart.
fn fact_label(fact: &Fact) -> &'static str {
    match fact {
        Fact::OrderConfirmed { retaken: true, .. } => "order_retaken",
        fact => fact.kind(),
    }
}

/// The ledger as a few maps and the rules of DESIGN, written as plainly as possible.
#[derive(Default)]
struct Model {
    skus: HashMap<usize, ModelSku>,
    orders: HashMap<usize, ModelOrder>,
    /// Milliseconds after `START_MS`.
    now: u64,
    /// The room's listings, SKU to the generation of its tally; `None` before the room.
    room: Option<BTreeMap<usize, u64>>,
    /// Numbers each listing as it is (re)created.
    generations_count: u64,
    /// Units of sold orders forgotten since, by (SKU, generation of the listing counting them).
    forgotten_sales: BTreeMap<(usize, u64), u64>,
}

impl Model {
    fn put_sku(
        &mut self,
        sku: usize,
        total: Option<u64>,
        reserved: Option<u64>,
        lock_ttl_ms: Option<Option<u64>>,
        quotas: Option<&[(usize, u64)]>,
    ) -> Result<(), &'static str> {
        let mut next = self.skus.get(&sku).cloned().unwrap_or_default();
        next.total = total.unwrap_or(next.total);
        next.reserved = reserved.unwrap_or(next.reserved);
        if next.total < next.reserved + next.locked + next.sold {
            return Err("invalid_stock");
        }
        next.lock_ttl_ms = lock_ttl_ms.unwrap_or(next.lock_ttl_ms);
        if let Some(quotas) = quotas {
            let mut quotas = quotas.to_vec();
            quotas.sort_unstable();
            quotas.dedup_by_key(|(platform, _)| *platform);
            next.quotas = quotas;
        }
        next.version += 1;
        next.updated_at = self.now;
        self.skus.insert(sku, next);
        Ok(())
    }

    fn restock(&mut self, sku: usize, qty: u64) -> Result<(), &'static str> {
        let now = self.now;
        let entry = self.skus.get_mut(&sku).ok_or("sku_not_found")?;
        if STOCK_QTY_MAX < entry.total + qty {
            return Err("invalid_stock");
        }
        entry.total += qty;
        entry.version += 1;
        entry.updated_at = now;
        Ok(())
    }

    fn set_halted(&mut self, sku: usize, halted: bool) -> Result<(), &'static str> {
        let now = self.now;
        let entry = self.skus.get_mut(&sku).ok_or("sku_not_found")?;
        entry.halted = halted;
        entry.version += 1;
        entry.updated_at = now;
        Ok(())
    }

    /// The refusal of the first line that cannot be taken, checked line by line in the
    /// order's line order: unknown SKU, halted, too few available, over quota.
    fn check_take(&self, platform: usize, lines: &[(usize, u32)]) -> Result<(), &'static str> {
        for (sku, qty) in lines {
            let qty = u64::from(*qty);
            let entry = self.skus.get(sku).ok_or("sku_not_found")?;
            if entry.halted {
                return Err("halted");
            }
            if entry.available() < qty {
                return Err("insufficient_stock");
            }
            if let Some(quota) = entry.quota(platform) {
                let (locked, sold) = entry.tallies.get(&platform).copied().unwrap_or_default();
                if quota < locked + sold + qty {
                    return Err("platform_quota_exceeded");
                }
            }
        }
        Ok(())
    }

    fn move_lines(&mut self, platform: usize, lines: &[(usize, u32)], movement: ModelMovement) {
        for (sku, qty) in lines {
            let qty = u64::from(*qty);
            let entry = self.skus.get_mut(sku).expect("checked before moving");
            let tally = entry.tallies.entry(platform).or_default();
            match movement {
                ModelMovement::Lock => {
                    entry.locked += qty;
                    tally.0 += qty;
                }
                ModelMovement::Unlock => {
                    entry.locked -= qty;
                    tally.0 -= qty;
                }
                ModelMovement::LockToSold => {
                    entry.locked -= qty;
                    tally.0 -= qty;
                    entry.sold += qty;
                    tally.1 += qty;
                }
                ModelMovement::Sell => {
                    entry.sold += qty;
                    tally.1 += qty;
                }
                ModelMovement::Refund => {
                    entry.sold -= qty;
                    tally.1 -= qty;
                }
            }
            entry.version += 1;
            entry.updated_at = self.now;
        }
    }

    fn same_content(order: &ModelOrder, content: &OrderContent) -> bool {
        let sorted = |lines: &[(usize, u32)]| {
            let mut lines = lines.to_vec();
            lines.sort_unstable();
            lines
        };
        order.platform == content.platform
            && order.room == content.room
            && sorted(&order.lines) == sorted(&content.lines)
    }

    /// Which listing generation counts each line of an order naming the room (or not) that
    /// takes its units now.
    fn counting(&self, room: bool, lines: &[(usize, u32)]) -> Vec<Option<u64>> {
        lines
            .iter()
            .map(|(sku, _)| {
                let listings = self.room.as_ref().filter(|_| room)?;
                listings.get(sku).copied()
            })
            .collect()
    }

    /// Lists `skus` in the room: a SKU listed already keeps its tally, a new one gets a new
    /// generation.
    fn put_room(&mut self, skus: &[usize]) -> Result<(), &'static str> {
        if skus.iter().any(|sku| !self.skus.contains_key(sku)) {
            return Err("sku_not_found");
        }
        let previous = self.room.take().unwrap_or_default();
        let mut listings = BTreeMap::new();
        for sku in skus {
            let generation = match previous.get(sku) {
                Some(generation) => *generation,
                None => {
                    self.generations_count += 1;
                    self.generations_count
                }
            };
            listings.insert(*sku, generation);
        }
        self.room = Some(listings);
        Ok(())
    }

    /// What the room's listing of `sku` consumed: the units of live orders it counted, and
    /// of the sales it counted that were forgotten since.
    fn consumed(&self, sku: usize) -> Option<u64> {
        let generation = *self.room.as_ref()?.get(&sku)?;
        let live = |order: &&ModelOrder| {
            order.room && matches!(order.status, OrderStatus::Locked | OrderStatus::Sold)
        };
        let forgotten = self.forgotten_sales.get(&(sku, generation)).copied();
        let live_units: u64 = self
            .orders
            .values()
            .filter(live)
            .flat_map(|order| order.lines.iter().zip(&order.counted))
            .filter(|((line_sku, _), counted)| *line_sku == sku && **counted == Some(generation))
            .map(|((_, qty), _)| u64::from(*qty))
            .sum();
        Some(live_units + forgotten.unwrap_or(0))
    }

    fn reserve(&mut self, order: usize, content: &OrderContent) -> Result<Expected, &'static str> {
        let (platform, room, lines) = (content.platform, content.room, content.lines.as_slice());
        if let Some(existing) = self.orders.get(&order) {
            if !Self::same_content(existing, content) {
                return Err("order_conflict");
            }
            let status = if existing.sold_at_creation {
                OrderStatus::Sold
            } else {
                OrderStatus::Locked
            };
            return Ok(Expected {
                status,
                fact: None,
                replayed: true,
            });
        }
        self.check_take(platform, lines)?;
        let lock_ttl_ms = lines
            .iter()
            .filter_map(|(sku, _)| self.skus[sku].lock_ttl_ms)
            .min()
            .unwrap_or(DEFAULT_LOCK_TTL_MS);
        self.move_lines(platform, lines, ModelMovement::Lock);
        self.orders.insert(
            order,
            ModelOrder {
                platform,
                room,
                lines: lines.to_vec(),
                status: OrderStatus::Locked,
                sold_at_creation: false,
                created_at: self.now,
                expires_at: self.now + lock_ttl_ms,
                updated_at: self.now,
                counted: self.counting(room, lines),
            },
        );
        Ok(Expected {
            status: OrderStatus::Locked,
            fact: Some("order_reserved"),
            replayed: false,
        })
    }

    fn sell(&mut self, order: usize, content: &OrderContent) -> Result<Expected, &'static str> {
        let (platform, room, lines) = (content.platform, content.room, content.lines.as_slice());
        if let Some(existing) = self.orders.get(&order) {
            if !Self::same_content(existing, content) {
                return Err("order_conflict");
            }
            if existing.sold_at_creation {
                return Ok(Expected {
                    status: OrderStatus::Sold,
                    fact: None,
                    replayed: true,
                });
            }
            return self.transition(order, ModelAction::Confirm);
        }
        self.check_take(platform, lines)?;
        self.move_lines(platform, lines, ModelMovement::Sell);
        self.orders.insert(
            order,
            ModelOrder {
                platform,
                room,
                lines: lines.to_vec(),
                status: OrderStatus::Sold,
                sold_at_creation: true,
                created_at: self.now,
                expires_at: self.now,
                updated_at: self.now,
                counted: self.counting(room, lines),
            },
        );
        Ok(Expected {
            status: OrderStatus::Sold,
            fact: Some("order_sold"),
            replayed: false,
        })
    }

    fn transition(&mut self, order: usize, action: ModelAction) -> Result<Expected, &'static str> {
        use OrderStatus::{Cancelled, Expired, Locked, Refunded, Sold};
        let mut existing = self.orders.get(&order).ok_or("order_not_found")?.clone();
        let due = existing.status == Locked && existing.expires_at <= self.now;
        if due && matches!(action, ModelAction::Confirm | ModelAction::Cancel) {
            // A lock past its expiry expires before the action, sweeper or not.
            self.move_lines(existing.platform, &existing.lines, ModelMovement::Unlock);
            let entry = self.orders.get_mut(&order).expect("looked up above");
            entry.status = Expired;
            entry.updated_at = self.now;
            existing = entry.clone();
        }
        let replayed = |status| {
            Ok(Expected {
                status,
                fact: None,
                replayed: true,
            })
        };
        let (movement, status, fact) = match (action, existing.status) {
            (ModelAction::Confirm, Locked) => (ModelMovement::LockToSold, Sold, "order_confirmed"),
            (ModelAction::Confirm, Expired) => {
                self.check_take(existing.platform, &existing.lines)
                    .map_err(|_| "lock_expired")?;
                (ModelMovement::Sell, Sold, "order_retaken")
            }
            (ModelAction::Cancel, Locked) => (ModelMovement::Unlock, Cancelled, "order_cancelled"),
            (ModelAction::Refund, Sold) => (ModelMovement::Refund, Refunded, "order_refunded"),
            (ModelAction::Confirm, Sold | Refunded) => return replayed(Sold),
            (ModelAction::Cancel, Cancelled) | (ModelAction::Refund, Refunded) => {
                return replayed(existing.status);
            }
            (ModelAction::Cancel, Expired) => {
                return Ok(Expected {
                    status: Expired,
                    fact: None,
                    replayed: false,
                });
            }
            _ => return Err("invalid_transition"),
        };
        self.move_lines(existing.platform, &existing.lines, movement);
        let counted = self.counting(existing.room, &existing.lines);
        let entry = self.orders.get_mut(&order).expect("looked up above");
        if movement == ModelMovement::Sell {
            // A payment after expiry takes the units again: today's listing counts them.
            entry.counted = counted;
        }
        entry.status = status;
        entry.updated_at = self.now;
        Ok(Expected {
            status,
            fact: Some(fact),
            replayed: false,
        })
    }

    /// Expires every due lock; returns the orders, sorted.
    fn expire_due(&mut self) -> Vec<usize> {
        let mut due: Vec<usize> = self
            .orders
            .iter()
            .filter(|(_, order)| {
                order.status == OrderStatus::Locked && order.expires_at <= self.now
            })
            .map(|(order, _)| *order)
            .collect();
        due.sort_unstable();
        for order in &due {
            let existing = self.orders[order].clone();
            self.move_lines(existing.platform, &existing.lines, ModelMovement::Unlock);
            let entry = self.orders.get_mut(order).expect("listed above");
            entry.status = OrderStatus::Expired;
            entry.updated_at = self.now;
        }
        due
    }

    fn forget_finished(&mut self) -> u64 {
        let before = self.orders.len();
        let now = self.now;
        let forgotten_sales = &mut self.forgotten_sales;
        self.orders.retain(|_, order| {
            let window_ms = match order.status {
                OrderStatus::Locked => return true,
                OrderStatus::Sold => MODEL_REFUND_WINDOW_MS,
                _ => MODEL_IDEMPOTENCY_WINDOW_MS,
            };
            let kept = now < order.updated_at + window_ms;
            if !kept && order.status == OrderStatus::Sold && order.room {
                // A sale stays in the show's consumption after the ledger forgets the order.
                for ((sku, qty), counted) in order.lines.iter().zip(&order.counted) {
                    if let Some(generation) = counted {
                        *forgotten_sales.entry((*sku, *generation)).or_default() += u64::from(*qty);
                    }
                }
            }
            kept
        });
        (before - self.orders.len()) as u64
    }

    fn sku_view(&self, sku: usize) -> Option<SkuView> {
        let entry = self.skus.get(&sku)?;
        let platforms = (0..MODEL_PLATFORMS.len())
            .filter_map(|platform| {
                let quota = entry.quota(platform);
                let (locked, sold) = match entry.tallies.get(&platform) {
                    Some(tally) => *tally,
                    None if quota.is_some() => (0, 0),
                    None => return None,
                };
                Some(PlatformCount {
                    platform: model_platform(platform),
                    locked,
                    sold,
                    quota,
                })
            })
            .collect();
        Some(SkuView {
            stock: Stock {
                sku: model_sku_id(sku),
                total: entry.total,
                reserved: entry.reserved,
                locked: entry.locked,
                sold: entry.sold,
                available: entry.available(),
                halted: entry.halted,
                version: entry.version,
            },
            settings: SkuSettings {
                name: String::new(),
                lock_ttl_ms: entry.lock_ttl_ms,
                quotas: entry
                    .quotas
                    .iter()
                    .map(|(platform, quota)| (model_platform(*platform), *quota))
                    .collect(),
            },
            platforms,
            updated_at: at(entry.updated_at),
        })
    }

    fn order_view(&self, order: usize) -> Option<OrderView> {
        let entry = self.orders.get(&order)?;
        Some(OrderView {
            order: std::sync::Arc::new(OrderRequest {
                order_id: model_order_id(order),
                platform: model_platform(entry.platform),
                room: model_room(entry.room),
                lines: model_lines(&entry.lines),
            }),
            status: entry.status,
            created_at: at(entry.created_at),
            expires_at: at(entry.expires_at),
            updated_at: at(entry.updated_at),
        })
    }
}

fn model_lines(lines: &[(usize, u32)]) -> Lines {
    Lines::new(lines.iter().map(|(sku, qty)| Line {
        sku: model_sku_id(*sku),
        qty: Qty::new(i64::from(*qty)).expect("a valid quantity"),
    }))
    .expect("unique lines")
}

fn model_request(order: usize, content: &OrderContent) -> OrderRequest {
    OrderRequest {
        order_id: model_order_id(order),
        platform: model_platform(content.platform),
        room: model_room(content.room),
        lines: model_lines(&content.lines),
    }
}

/// What the ledger did, in order, for the replay at the end: its facts, and the points where
/// it forgot finished orders (which yield no fact, but change what a later fact may do).
#[derive(Debug)]
enum Logged {
    Fact(Fact),
    Forgotten {
        now: Timestamp,
        forgotten_count: u64,
    },
}

/// Checks a SKU operation's result against the model's.
fn check_sku_operation(
    ledger: &Ledger,
    actual: Result<Fact, LedgerError>,
    expected: Result<(), &'static str>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        actual.as_ref().map(|_| ()).map_err(LedgerError::code),
        expected
    );
    if let Ok(fact) = actual {
        for stock in fact.stocks() {
            let current = ledger.sku(&stock.sku).map(|view| view.stock);
            prop_assert_eq!(Some(stock), current.as_ref());
        }
    }
    Ok(())
}

/// Checks an order operation's answer against the model's, and logs its fact.
fn check_order_operation(
    ledger: &Ledger,
    order: usize,
    actual: Result<Answer, LedgerError>,
    expected: Result<Expected, &'static str>,
) -> Result<(), TestCaseError> {
    let summary = actual
        .as_ref()
        .map(|answer| Expected {
            status: answer.order.status,
            fact: answer.fact.as_ref().map(fact_label),
            replayed: answer.replayed,
        })
        .map_err(LedgerError::code);
    prop_assert_eq!(summary, expected);
    let Ok(answer) = actual else {
        return Ok(());
    };
    if !answer.replayed {
        let current = ledger.order(&model_order_id(order));
        prop_assert_eq!(Some(&answer.order), current.as_ref());
    }
    if let Some(fact) = answer.fact {
        prop_assert_eq!(fact.order_id(), Some(&model_order_id(order)));
        for stock in fact.stocks() {
            let current = ledger.sku(&stock.sku).map(|view| view.stock);
            prop_assert_eq!(Some(stock), current.as_ref());
        }
    }
    Ok(())
}

/// Runs one operation on the ledger and on the model and compares what they answer.
fn run_operation(
    ledger: &Ledger,
    model: &mut Model,
    log: &mut Vec<Logged>,
    canonical: &[OrderContent],
    operation: &Operation,
) -> Result<(), TestCaseError> {
    let now = at(model.now);
    match operation {
        Operation::PutSku {
            sku,
            total,
            reserved,
            lock_ttl_ms,
            quotas,
        } => {
            let update = SkuUpdate {
                name: None,
                total: *total,
                reserved: *reserved,
                lock_ttl_ms: *lock_ttl_ms,
                quotas: quotas.as_ref().map(|quotas| {
                    quotas
                        .iter()
                        .map(|(platform, quota)| (model_platform(*platform), *quota))
                        .collect()
                }),
            };
            let actual = ledger.put_sku(now, &model_sku_id(*sku), update);
            let expected = model.put_sku(*sku, *total, *reserved, *lock_ttl_ms, quotas.as_deref());
            check_sku_operation(ledger, actual, expected)
        }
        Operation::Restock { sku, qty } => {
            let actual = ledger.restock(now, &model_sku_id(*sku), *qty);
            let expected = model.restock(*sku, *qty);
            check_sku_operation(ledger, actual, expected)
        }
        Operation::Halt { sku } => {
            let actual = ledger.halt(now, &model_sku_id(*sku));
            let expected = model.set_halted(*sku, true);
            check_sku_operation(ledger, actual, expected)
        }
        Operation::Resume { sku } => {
            let actual = ledger.resume(now, &model_sku_id(*sku));
            let expected = model.set_halted(*sku, false);
            check_sku_operation(ledger, actual, expected)
        }
        Operation::Reserve { order, content } => {
            let content = content.as_ref().unwrap_or(&canonical[*order]);
            let actual = ledger.reserve(now, model_request(*order, content));
            let expected = model.reserve(*order, content);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Sell { order, content } => {
            let content = content.as_ref().unwrap_or(&canonical[*order]);
            let actual = ledger.sell(now, model_request(*order, content));
            let expected = model.sell(*order, content);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Confirm { order } => {
            let actual = ledger.confirm(now, &model_order_id(*order));
            let expected = model.transition(*order, ModelAction::Confirm);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Cancel { order } => {
            let actual = ledger.cancel(now, &model_order_id(*order));
            let expected = model.transition(*order, ModelAction::Cancel);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Refund { order } => {
            let actual = ledger.refund(now, &model_order_id(*order));
            let expected = model.transition(*order, ModelAction::Refund);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Advance { duration_ms } => {
            model.now += duration_ms;
            Ok(())
        }
        Operation::ExpireDue => {
            let facts = ledger.expire_due(now);
            let mut expired: Vec<OrderId> = Vec::new();
            for fact in facts {
                prop_assert_eq!(fact.kind(), "order_expired");
                prop_assert_eq!(fact.at(), now);
                expired.extend(fact.order_id().cloned());
            }
            expired.sort();
            let mut expected: Vec<OrderId> =
                model.expire_due().into_iter().map(model_order_id).collect();
            expected.sort();
            prop_assert_eq!(expired, expected);
            Ok(())
        }
        Operation::PutRoom { skus } => {
            let room = Room {
                id: RoomId::new(MODEL_ROOM).expect("a valid room"),
                name: "model".to_owned(),
                starts_at: at(0),
                ends_at: at(24 * 60 * MINUTE_MS),
                listings: skus
                    .iter()
                    .map(|sku| Listing {
                        sku: model_sku_id(*sku),
                        forecast: 10,
                        plan: Vec::new(),
                        shape: crate::ledger::PlanShape::Given,
                        policy: Policy::default(),
                    })
                    .collect(),
            };
            let actual = ledger.put_room(now, room);
            let expected = model.put_room(skus);
            prop_assert_eq!(actual.map(drop).map_err(|error| error.code()), expected);
            Ok(())
        }
        Operation::ForgetFinished => {
            let forgotten_count = ledger.forget_finished(now);
            prop_assert_eq!(forgotten_count, model.forget_finished());
            log.push(Logged::Forgotten {
                now,
                forgotten_count,
            });
            Ok(())
        }
    }
}

/// Checks every SKU and order of the ledger against the model, and the stock identity.
fn check_state(ledger: &Ledger, model: &Model) -> Result<(), TestCaseError> {
    for view in ledger.skus() {
        let stock = &view.stock;
        let committed = stock.reserved + stock.locked + stock.sold;
        prop_assert!(committed <= stock.total, "overcommitted: {:?}", stock);
        prop_assert_eq!(stock.available, stock.total - committed);
    }
    for sku in 0..MODEL_SKUS.len() {
        prop_assert_eq!(ledger.sku(&model_sku_id(sku)), model.sku_view(sku));
    }
    for order in 0..MODEL_ORDERS_COUNT {
        prop_assert_eq!(
            ledger.order(&model_order_id(order)),
            model.order_view(order)
        );
    }
    prop_assert_eq!(ledger.counts(), walked_counts(ledger));
    // Each listing consumed exactly the live units of the orders it counted.
    let room = RoomId::new(MODEL_ROOM).expect("a valid room");
    for (sku, name) in MODEL_SKUS.iter().enumerate() {
        let actual = ledger
            .listing(&room, &model_sku_id(sku))
            .map(|state| state.tally.consumed);
        prop_assert_eq!(actual, model.consumed(sku), "consumed of {}", name);
    }
    Ok(())
}

/// The ledger's counts found the slow way, by looking at every SKU and order.
fn walked_counts(ledger: &Ledger) -> LedgerCounts {
    let mut counts = LedgerCounts {
        skus: ledger.skus().len() as u64,
        ..LedgerCounts::default()
    };
    for stripe in ledger.orders.iter() {
        stripe.0.lock().for_each(|entry| {
            counts.orders += 1;
            if entry.status == OrderStatus::Locked {
                counts.orders_locked += 1;
            }
        });
    }
    counts
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

fn run_against_model(
    canonical: &[OrderContent],
    operations: &[Operation],
) -> Result<(), TestCaseError> {
    let ledger = Ledger::new(model_config());
    let recorder = std::sync::Arc::new(Recorder::default());
    ledger.attach(recorder.clone());
    let mut model = Model::default();
    let mut log = Vec::new();
    for operation in model_setup().iter().chain(operations) {
        run_operation(&ledger, &mut model, &mut log, canonical, operation)?;
        // Every fact the ledger recorded, as the journal would get them.
        log.extend(recorder.facts.lock().drain(..).map(Logged::Fact));
        check_state(&ledger, &model)?;
    }

    let replayed = Ledger::new(model_config());
    for logged in &log {
        match logged {
            Logged::Fact(fact) => prop_assert_eq!(replayed.apply(fact), Ok(()), "{:?}", fact),
            Logged::Forgotten {
                now,
                forgotten_count,
            } => prop_assert_eq!(replayed.forget_finished(*now), *forgotten_count),
        }
    }
    prop_assert_eq!(replayed.skus(), ledger.skus());
    for order in 0..MODEL_ORDERS_COUNT {
        let order_id = model_order_id(order);
        prop_assert_eq!(replayed.order(&order_id), ledger.order(&order_id));
    }
    prop_assert_eq!(replayed.counts(), ledger.counts());
    prop_assert_eq!(replayed.counts(), walked_counts(&replayed));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operations_match_the_model_and_replay(
        canonical in prop::collection::vec(content_strategy(), MODEL_ORDERS_COUNT),
        operations in prop::collection::vec(operation_strategy(), 1..=60),
    ) {
        // Goal: every operation answers what DESIGN's rules say, the stock identity holds after
        // every step, and the facts rebuild the ledger. Method: run random sequences of every
        // operation over 4 SKUs (one created mid-sequence), 3 platforms (two capped on some
        // SKUs) and 6 order ids (each with a usual content, so that most repeats are retries
        // and some conflicts), on the ledger and on a `HashMap` model; compare each answer
        // (`Ok` or the error code), every SKU and every order after each step; finally apply
        // the logged facts, and `forget_finished` where it was called, to a fresh ledger and
        // compare it with the first.
        run_against_model(&canonical, &operations)?;
    }
}

// Concurrency.

/// Runs `work`, aborting the whole test binary if it has not finished within `limit`: a
/// deadlock fails loudly instead of hanging the run.
fn with_watchdog<T>(limit: Duration, work: impl FnOnce() -> T) -> T {
    let (done_sender, done_receiver) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = done_receiver.recv_timeout(limit) {
            eprintln!("No progress after {limit:?}: the ledger is deadlocked.");
            std::process::abort();
        }
    });
    let result = work();
    done_sender.send(()).expect("the watchdog waits");
    watchdog.join().expect("the watchdog ends");
    result
}

/// A small deterministic generator: each thread's choices repeat from run to run, while the
/// interleaving does not.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

const STRESS_THREADS_COUNT: usize = 8;
const STRESS_ORDERS_PER_THREAD: usize = 600;
const STRESS_WATCHDOG: Duration = Duration::from_secs(120);

/// An order one stress thread placed, and the status it left the order in (`None` when the
/// reservation was refused for want of stock).
struct Placed {
    order_id: OrderId,
    platform: Platform,
    lines: Lines,
    status: Option<OrderStatus>,
}

/// Places one order and takes it on a random path: confirm, confirm then refund, cancel, or
/// leave it locked. Sometimes retries the reservation. Returns what it did.
fn place_and_follow(
    ledger: &Ledger,
    random: &mut XorShift,
    now: Timestamp,
    request: OrderRequest,
) -> Placed {
    let order_id = request.order_id.clone();
    let platform = request.platform.clone();
    let lines = request.lines.clone();
    let placed = |status| Placed {
        order_id: order_id.clone(),
        platform: platform.clone(),
        lines: lines.clone(),
        status,
    };
    match ledger.reserve(now, request.clone()) {
        Ok(answer) => assert!(!answer.replayed),
        Err(LedgerError::InsufficientStock { .. }) => return placed(None),
        Err(error) => panic!("reserve {order_id}: {error}"),
    }
    if random.below(8) == 0 {
        let answer = ledger.reserve(now, request).expect("a retried reserve");
        assert!(answer.replayed && answer.fact.is_none());
    }
    let status = match random.below(8) {
        0..=2 => {
            ledger.confirm(now, &order_id).expect("confirm");
            OrderStatus::Sold
        }
        3 | 4 => {
            ledger.confirm(now, &order_id).expect("confirm");
            ledger.refund(now, &order_id).expect("refund");
            OrderStatus::Refunded
        }
        5 | 6 => {
            ledger.cancel(now, &order_id).expect("cancel");
            OrderStatus::Cancelled
        }
        _ => OrderStatus::Locked,
    };
    placed(Some(status))
}

/// Checks the ledger against every order the stress threads placed: each order's status,
/// and each SKU's (and platform's) locked and sold against the units of the orders in those
/// statuses. Returns the number of orders per status.
fn check_stress_outcome(ledger: &Ledger, placed: &[Placed]) -> HashMap<Option<OrderStatus>, u64> {
    let mut status_counts: HashMap<Option<OrderStatus>, u64> = HashMap::new();
    // `(sku, platform)` → `(locked, sold)`.
    let mut held: HashMap<(SkuId, Platform), (u64, u64)> = HashMap::new();
    for order in placed {
        assert_eq!(
            ledger.order(&order.order_id).map(|view| view.status),
            order.status,
            "order {}",
            order.order_id
        );
        *status_counts.entry(order.status).or_default() += 1;
        for line in &order.lines {
            let entry = held
                .entry((line.sku.clone(), order.platform.clone()))
                .or_default();
            match order.status {
                Some(OrderStatus::Locked) => entry.0 += line.qty.get(),
                Some(OrderStatus::Sold) => entry.1 += line.qty.get(),
                _ => {}
            }
        }
    }
    for view in ledger.skus() {
        let mut locked = 0;
        let mut sold = 0;
        for count in &view.platforms {
            let expected = held
                .get(&(view.stock.sku.clone(), count.platform.clone()))
                .copied()
                .unwrap_or_default();
            assert_eq!((count.locked, count.sold), expected, "{count:?}");
            locked += expected.0;
            sold += expected.1;
        }
        assert_eq!(
            (view.stock.locked, view.stock.sold),
            (locked, sold),
            "{view:?}"
        );
    }
    assert_stock_identity(ledger);
    status_counts
}

#[test]
fn eight_threads_on_one_hot_sku_never_oversell() {
    // Goal: under contention on one SKU no unit is taken twice and every unit is accounted
    // for. Method: 8 threads place their own orders of 1 to 3 units on a SKU of 1,000 and
    // confirm, refund, cancel, retry or leave each, until well past selling out, checking the
    // SKU's identity as they go; then every order's status is read back and the units of
    // locked and sold orders are compared with the SKU's and each platform's locked and sold.
    let ledger = ledger_with_skus(&[("HOT", 1000)]);
    let hot = sku_id("HOT");
    let placed: Vec<Placed> = with_watchdog(STRESS_WATCHDOG, || {
        thread::scope(|scope| {
            let workers: Vec<_> = (0..STRESS_THREADS_COUNT)
                .map(|thread_index| {
                    let (ledger, hot) = (&ledger, &hot);
                    scope.spawn(move || {
                        let mut random = XorShift::new(thread_index as u64 + 1);
                        let platform_name = MODEL_PLATFORMS[thread_index % 2];
                        let mut placed = Vec::new();
                        for order_index in 0..STRESS_ORDERS_PER_THREAD {
                            let qty = 1 + random.below(3) as i64;
                            let order = format!("t{thread_index}-{order_index}");
                            let request = request(&order, platform_name, &[("HOT", qty)]);
                            let now = at(order_index as u64);
                            placed.push(place_and_follow(ledger, &mut random, now, request));
                            let stock = ledger.sku(hot).expect("the sku exists").stock;
                            assert!(stock.locked + stock.sold <= 1000, "{stock:?}");
                            assert_eq!(
                                stock.available,
                                stock.total - stock.locked - stock.sold,
                                "{stock:?}"
                            );
                        }
                        placed
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("a worker thread"))
                .collect()
        })
    });

    let status_counts = check_stress_outcome(&ledger, &placed);
    let stock = stock(&ledger, "HOT");
    assert!(stock.locked + stock.sold <= 1000, "{stock:?}");
    // The SKU sold out: later orders found no stock.
    assert!(status_counts.contains_key(&None), "{status_counts:?}");
    assert!(status_counts.contains_key(&Some(OrderStatus::Sold)));
}

#[test]
fn eight_threads_of_multi_line_orders_never_deadlock_or_split() {
    // Goal: multi-line orders taking the same SKUs in different line orders neither deadlock
    // (stripes are taken in index order whatever the line order) nor leave an order half
    // taken. Method: 8 threads, each with its own permutation of 3 SKUs of different sizes,
    // place 3-line orders under a watchdog until the smallest SKU runs out; then check every
    // order's status and that each SKU's locked and sold are exactly the units of the locked
    // and sold orders, which fails if any refused order left a line behind.
    const PERMUTATIONS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let skus = ["M1", "M2", "M3"];
    let ledger = ledger_with_skus(&[("M1", 900), ("M2", 500), ("M3", 1200)]);
    let placed: Vec<Placed> = with_watchdog(STRESS_WATCHDOG, || {
        thread::scope(|scope| {
            let workers: Vec<_> = (0..STRESS_THREADS_COUNT)
                .map(|thread_index| {
                    let ledger = &ledger;
                    scope.spawn(move || {
                        let mut random = XorShift::new(100 + thread_index as u64);
                        let platform_name = MODEL_PLATFORMS[thread_index % 3];
                        let permutation = PERMUTATIONS[thread_index % PERMUTATIONS.len()];
                        let mut placed = Vec::new();
                        for order_index in 0..STRESS_ORDERS_PER_THREAD {
                            let items: Vec<(&str, i64)> = permutation
                                .iter()
                                .map(|sku| (skus[*sku], 1 + random.below(3) as i64))
                                .collect();
                            let order = format!("m{thread_index}-{order_index}");
                            let request = request(&order, platform_name, &items);
                            let now = at(order_index as u64);
                            placed.push(place_and_follow(ledger, &mut random, now, request));
                        }
                        placed
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("a worker thread"))
                .collect()
        })
    });

    let status_counts = check_stress_outcome(&ledger, &placed);
    // M2 ran out, so orders were refused while M1 and M3 still had units to give.
    assert!(status_counts.contains_key(&None), "{status_counts:?}");
    assert!(0 < stock(&ledger, "M1").available);
    assert!(0 < stock(&ledger, "M3").available);
}

#[test]
fn a_restock_with_an_id_is_applied_once_even_after_replay() {
    // Goal: a retried restock (after a timeout or a 503) adds its units once, and the
    // memory of it survives replay.
    // Method: restock twice with one id, once with another quantity; replay the facts into a
    // fresh ledger and retry there.
    let ledger = Ledger::new(LedgerConfig::default());
    let mut facts = vec![
        ledger
            .put_sku(at(0), &sku_id("A"), total_update(10))
            .expect("put_sku"),
    ];
    let id = RestockId::new("truck-7").expect("valid id");
    let first = ledger
        .restock_once(at(1), &sku_id("A"), 5, id.clone())
        .expect("restock");
    facts.extend(first);
    assert_eq!(
        ledger
            .restock_once(at(2), &sku_id("A"), 5, id.clone())
            .expect("a retry is answered"),
        None
    );
    assert_eq!(
        ledger
            .restock_once(at(3), &sku_id("A"), 6, id.clone())
            .map_err(|error| error.code()),
        Err("restock_conflict")
    );
    assert_eq!(quantities(&ledger, "A")[0], 15);

    let replayed = Ledger::new(LedgerConfig::default());
    for fact in &facts {
        replayed.apply(fact).expect("replays");
    }
    assert_eq!(
        replayed
            .restock_once(at(4), &sku_id("A"), 5, id)
            .expect("a retry is answered"),
        None
    );
    assert_eq!(quantities(&replayed, "A")[0], 15);
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

#[test]
fn room_orders_count_toward_their_listing_and_releases_count_back() {
    // Goal: consumed = locked + sold by orders naming the room: reserve and sell add, a
    // payment moves nothing, cancel, expiry and refund give back; other rooms' orders and
    // orders naming no room do not count; the series records the value per bucket.
    let ledger = ledger_with_skus(&[("A", 100), ("B", 100)]);
    let mut facts = Vec::new();
    facts.push(
        ledger
            .put_room(at(0), room("r1", &[("A", 50)]))
            .expect("put_room"),
    );
    let mut run = |answer: Result<Answer, LedgerError>| {
        let answer = answer.expect("the operation succeeds");
        facts.extend(answer.fact);
    };
    run(ledger.reserve(at(1_000), in_room("o1", "r1", &[("A", 3), ("B", 2)])));
    run(ledger.sell(at(2_000), in_room("o2", "r1", &[("A", 4)])));
    run(ledger.reserve(at(3_000), in_room("o3", "r2", &[("A", 5)])));
    run(ledger.reserve(at(3_000), request("o4", "douyin", &[("A", 6)])));
    assert_eq!(consumed(&ledger, "r1", "A"), 7);
    run(ledger.confirm(at(11_000), &order_id("o1")));
    assert_eq!(consumed(&ledger, "r1", "A"), 7);
    run(ledger.refund(at(12_000), &order_id("o2")));
    assert_eq!(consumed(&ledger, "r1", "A"), 3);
    run(ledger.reserve(at(13_000), in_room("o5", "r1", &[("A", 10)])));
    run(ledger.cancel(at(14_000), &order_id("o5")));
    run(ledger.reserve(at(15_000), in_room("o6", "r1", &[("A", 1)])));
    facts.extend(ledger.expire_due(at(15_000 + DEFAULT_LOCK_TTL_MS)));
    assert_eq!(consumed(&ledger, "r1", "A"), 3);

    let state = ledger.room(&room_id("r1")).expect("the room exists");
    let series = &state.listings[0].tally.series;
    assert_eq!(series.bucket_ms, SERIES_BUCKET_MS);
    // Buckets of 5 s: 7 after 2 s, 3 after the refund at 12 s, 3 after the cancel at 14 s.
    assert_eq!(series.points[..4], [7, 7, 3, 4]);
    assert_eq!(
        series.at_bucket(series.bucket(at(15_000 + DEFAULT_LOCK_TTL_MS))),
        3
    );

    let replayed = Ledger::new(LedgerConfig::default());
    for fact in ledger_sku_facts(&ledger) {
        replayed.apply(&fact).expect("sku facts replay");
    }
    for fact in &facts {
        replayed.apply(fact).expect("every fact replays");
    }
    assert_eq!(replayed.room(&room_id("r1")), ledger.room(&room_id("r1")));
}

#[test]
fn a_listing_gives_back_only_what_it_counted() {
    // Goal: a listing's consumption never goes down for an order it did not count: one placed
    // before the room listed the SKU, or before the listing was dropped and added again.
    // Method: the review's sequence: O1 (10 × LIP, room R2) before R2 lists LIP, then R2
    // lists it and O2 (5) counts; cancelling O1 leaves 5. Then drop and re-add the listing,
    // refund O2 (sold before the new tally) and see 0 stay 0 while a new O3 counts; replay
    // and a snapshot image rebuild the same tallies.
    let ledger = ledger_with_skus(&[("LIP", 100), ("B", 100)]);
    let recorder = std::sync::Arc::new(Recorder::default());
    ledger.attach(recorder.clone());
    ledger
        .put_room(at(0), room("R2", &[("B", 10)]))
        .expect("put_room");
    ledger
        .reserve(at(1_000), in_room("O1", "R2", &[("LIP", 10)]))
        .expect("O1");
    ledger
        .put_room(at(2_000), room("R2", &[("B", 10), ("LIP", 50)]))
        .expect("put_room");
    ledger
        .sell(at(3_000), in_room("O2", "R2", &[("LIP", 5)]))
        .expect("O2");
    assert_eq!(consumed(&ledger, "R2", "LIP"), 5);
    ledger
        .cancel(at(4_000), &order_id("O1"))
        .expect("cancel O1");
    assert_eq!(consumed(&ledger, "R2", "LIP"), 5);
    assert_eq!(quantities(&ledger, "LIP"), [100, 0, 0, 5, 95]);

    ledger
        .put_room(at(5_000), room("R2", &[("B", 10)]))
        .expect("drop LIP");
    ledger
        .put_room(at(6_000), room("R2", &[("B", 10), ("LIP", 50)]))
        .expect("list LIP again");
    ledger
        .reserve(at(7_000), in_room("O3", "R2", &[("LIP", 2)]))
        .expect("O3");
    ledger
        .refund(at(8_000), &order_id("O2"))
        .expect("refund O2");
    assert_eq!(consumed(&ledger, "R2", "LIP"), 2);

    let replayed = Ledger::new(LedgerConfig::default());
    for fact in ledger_sku_facts(&ledger) {
        replayed.apply(&fact).expect("sku facts replay");
    }
    for fact in recorder.facts.lock().iter() {
        if !matches!(fact, Fact::SkuPut { .. }) {
            replayed.apply(fact).expect("every fact replays");
        }
    }
    assert_eq!(replayed.room(&room_id("R2")), ledger.room(&room_id("R2")));
    let (image, ()) = ledger.export(|| ());
    let imported = Ledger::import(LedgerConfig::default(), image).expect("imports");
    imported
        .cancel(at(9_000), &order_id("O3"))
        .expect("cancel O3");
    assert_eq!(consumed(&imported, "R2", "LIP"), 0);
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

#[test]
fn a_halted_listing_refuses_orders_naming_its_room_only() {
    // Goal: halting a listing refuses new orders for it in that room with `halted`, leaves
    // other rooms, orders without a room and payments alone, and resuming lifts it.
    let ledger = ledger_with_skus(&[("A", 100)]);
    ledger
        .put_room(at(0), room("r1", &[("A", 50)]))
        .expect("put_room");
    ledger
        .reserve(at(1), in_room("o1", "r1", &[("A", 1)]))
        .expect("reserve");
    ledger
        .halt_listing(at(2), &room_id("r1"), &sku_id("A"), true, None)
        .expect("halt");
    let refused = ledger.reserve(at(3), in_room("o2", "r1", &[("A", 1)]));
    assert!(
        matches!(refused, Err(LedgerError::ListingHalted { .. })),
        "{refused:?}"
    );
    assert_eq!(refused.unwrap_err().code(), "halted");
    ledger
        .reserve(at(3), in_room("o3", "r2", &[("A", 1)]))
        .expect("another room");
    ledger
        .reserve(at(3), request("o4", "douyin", &[("A", 1)]))
        .expect("no room");
    ledger
        .confirm(at(4), &order_id("o1"))
        .expect("a payment goes through");
    assert_eq!(
        ledger.halt_listing(at(5), &room_id("r9"), &sku_id("A"), false, None),
        Err(LedgerError::RoomNotFound {
            room: room_id("r9")
        })
    );
    assert!(matches!(
        ledger.halt_listing(at(5), &room_id("r1"), &sku_id("B"), false, None),
        Err(LedgerError::ListingNotFound { .. })
    ));
    ledger
        .resume_listing(at(6), &room_id("r1"), &sku_id("A"), None)
        .expect("resume");
    ledger
        .reserve(at(7), in_room("o2", "r1", &[("A", 1)]))
        .expect("resumed");
    assert_eq!(consumed(&ledger, "r1", "A"), 2);
}

#[test]
fn rooms_need_existing_skus_and_a_valid_schedule_and_survive_a_snapshot() {
    // Goal: a room listing an unknown SKU or ending before it starts is refused and changes
    // nothing; a re-put keeps what a staying listing consumed and drops a removed one; an
    // export/import round trip keeps rooms and tallies.
    let ledger = ledger_with_skus(&[("A", 100), ("B", 100)]);
    assert!(matches!(
        ledger.put_room(at(0), room("r1", &[("A", 10), ("X", 10)])),
        Err(LedgerError::SkuNotFound { .. })
    ));
    let mut backwards = room("r1", &[("A", 10)]);
    backwards.ends_at = backwards.starts_at;
    assert!(matches!(
        ledger.put_room(at(0), backwards),
        Err(LedgerError::InvalidRoom { .. })
    ));
    assert!(ledger.rooms().is_empty());
    ledger
        .put_room(at(0), room("r1", &[("A", 10), ("B", 10)]))
        .expect("put_room");
    ledger
        .reserve(at(1), in_room("o1", "r1", &[("A", 2), ("B", 3)]))
        .expect("reserve");
    ledger
        .put_room(at(2), room("r1", &[("A", 20)]))
        .expect("re-put");
    assert_eq!(consumed(&ledger, "r1", "A"), 2);
    let state = ledger.room(&room_id("r1")).expect("the room");
    assert_eq!(state.listings.len(), 1);
    assert_eq!(state.listings[0].listing.forecast, 20);

    let (image, ()) = ledger.export(|| ());
    let imported = Ledger::import(LedgerConfig::default(), image).expect("import");
    assert_eq!(imported.room(&room_id("r1")), ledger.room(&room_id("r1")));
    assert_eq!(imported.rooms(), ledger.rooms());
}

#[test]
fn the_consumption_curve_takes_late_stamps_keeps_presales_apart_and_survives_a_new_schedule() {
    // Goal: a change stamped before one already recorded holds for every later bucket; what
    // was taken before the show is its baseline; stretching the show (new bucket size) keeps
    // the curve, resampled; moving the start restarts it from what is consumed now.
    let show = room("r1", &[("A", 100)]);
    let mut series = Series::for_room(&show);
    series.record(at(0).saturating_add(Duration::from_millis(0)), 0);
    series.record(at(12_000), 10);
    series.record(at(3_000), 13);
    assert_eq!(series.points, [13, 13, 13]);

    let mut presold = Series::for_room(&Room {
        starts_at: at(60_000),
        ..show.clone()
    });
    presold.record(at(0), 500);
    assert_eq!(presold.before_start, 500);
    presold.record(at(68_000), 520);
    assert_eq!(presold.interpolate(at(60_000), at(68_000), 520), 500);
    // Halfway between the start of the bucket (500) and now (520).
    assert_eq!(presold.interpolate(at(66_500), at(68_000), 520), 510);

    let ledger = ledger_with_skus(&[("A", 1_000)]);
    ledger.put_room(at(0), show.clone()).expect("put_room");
    ledger
        .sell(at(10 * MINUTE_MS), in_room("o1", "r1", &[("A", 450)]))
        .expect("sell");
    let before = ledger
        .listing(&room_id("r1"), &sku_id("A"))
        .expect("listing");
    let stretched = Room {
        ends_at: at(6 * 60 * MINUTE_MS),
        ..show.clone()
    };
    ledger
        .put_room(at(100 * MINUTE_MS), stretched)
        .expect("re-put");
    let after = ledger
        .listing(&room_id("r1"), &sku_id("A"))
        .expect("listing");
    assert!(before.tally.series.bucket_ms < after.tally.series.bucket_ms);
    let minute_5 = at(5 * MINUTE_MS);
    let minute_11 = at(11 * MINUTE_MS);
    assert_eq!(
        after
            .tally
            .series
            .at_bucket(after.tally.series.bucket(minute_5)),
        0
    );
    assert_eq!(
        after
            .tally
            .series
            .at_bucket(after.tally.series.bucket(minute_11)),
        450
    );

    let moved = Room {
        starts_at: at(120 * MINUTE_MS),
        ends_at: at(240 * MINUTE_MS),
        ..show
    };
    ledger.put_room(at(100 * MINUTE_MS), moved).expect("moved");
    let after = ledger
        .listing(&room_id("r1"), &sku_id("A"))
        .expect("listing");
    assert_eq!(after.tally.series.before_start, 450);
    assert_eq!(after.tally.consumed, 450);
}

#[test]
fn a_snapshot_whose_tallies_do_not_match_its_rooms_is_refused() {
    // Goal: import checks both ways: every listing has its tally on the room's schedule,
    // and every tally belongs to a listing.
    let ledger = ledger_with_skus(&[("A", 100), ("B", 100)]);
    ledger
        .put_room(at(0), room("r1", &[("A", 10)]))
        .expect("put_room");
    let (image, ()) = ledger.export(|| ());
    let mut orphan = image.clone();
    orphan.rooms.clear();
    assert!(matches!(
        Ledger::import(LedgerConfig::default(), orphan),
        Err(ReplayError::Refused { .. })
    ));
    let mut untallied = image.clone();
    for sku in &mut untallied.skus {
        sku.listings.clear();
    }
    assert!(matches!(
        Ledger::import(LedgerConfig::default(), untallied),
        Err(ReplayError::Refused { .. })
    ));
    let mut skewed = image;
    for sku in &mut skewed.skus {
        for tally in &mut sku.listings {
            tally.series.bucket_ms += 1;
        }
    }
    assert!(matches!(
        Ledger::import(LedgerConfig::default(), skewed),
        Err(ReplayError::Refused { .. })
    ));
}

#[test]
fn a_snapshot_taken_while_orders_flow_plus_the_facts_after_its_cut_is_the_ledger() {
    // Goal: a snapshot no longer stops the ledger, yet it is still exactly the ledger at its
    // cut: SKUs and orders changed, created or finished on other threads while their stripes
    // wait to be copied are taken as they were at the cut.
    // Method: two threads place, pay, cancel and refund orders in a room as fast as they can
    // while the main thread takes snapshots; each snapshot, imported, plus every fact after
    // its cut, must equal the ledger at the end.
    let ledger = std::sync::Arc::new(ledger_with_skus(&[
        ("A", 1_000_000),
        ("B", 1_000_000),
        ("C", 10),
        ("D", 10),
    ]));
    ledger
        .put_room(
            at(0),
            room("r1", &[("A", 100_000), ("B", 100_000), ("D", 10)]),
        )
        .expect("put_room");
    let recorder = std::sync::Arc::new(Recorder::default());
    ledger.attach(recorder.clone());
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let ledger = ledger.clone();
            let running = running.clone();
            thread::spawn(move || {
                let mut index = 0u64;
                while running.load(std::sync::atomic::Ordering::Acquire) || index < 2_000 {
                    let id = format!("w{worker}-{index}");
                    let items: &[(&str, i64)] = if index.is_multiple_of(3) {
                        &[("A", 1), ("B", 2)]
                    } else {
                        &[("A", 1)]
                    };
                    let now = at(index);
                    ledger
                        .reserve(now, in_room(&id, "r1", items))
                        .expect("reserve");
                    match index % 4 {
                        0 => drop(ledger.cancel(now, &order_id(&id))),
                        1 | 2 => {
                            ledger.confirm(now, &order_id(&id)).expect("confirm");
                            if index % 8 == 1 {
                                ledger.refund(now, &order_id(&id)).expect("refund");
                            }
                        }
                        _ => {}
                    }
                    index += 1;
                }
            })
        })
        .collect();
    // A third thread changes the SKUs themselves: creates new ones, restocks, halts and
    // resumes, halts listings and changes forecasts, so SKUs too are changed between a cut
    // and the copy of their stripe.
    let operator = {
        let ledger = ledger.clone();
        let running = running.clone();
        thread::spawn(move || {
            let mut index = 0u64;
            while running.load(std::sync::atomic::Ordering::Acquire) || index < 500 {
                let now = at(index);
                let created = sku_id(&format!("N{index}"));
                ledger
                    .put_sku(now, &created, total_update(index + 1))
                    .expect("put_sku");
                ledger.restock(now, &sku_id("A"), 1).expect("restock");
                match index % 4 {
                    0 => drop(ledger.halt(now, &sku_id("C")).expect("halt")),
                    1 => drop(ledger.resume(now, &sku_id("C")).expect("resume")),
                    2 => drop(
                        ledger
                            .halt_listing(now, &room_id("r1"), &sku_id("D"), true, None)
                            .expect("halt_listing"),
                    ),
                    _ => drop(
                        ledger
                            .resume_listing(now, &room_id("r1"), &sku_id("D"), None)
                            .expect("resume_listing"),
                    ),
                }
                ledger
                    .set_forecast(now, &room_id("r1"), &sku_id("A"), 100_000 + index)
                    .expect("set_forecast");
                index += 1;
            }
        })
    };
    let mut snapshots = Vec::new();
    while snapshots.len() < 20 {
        snapshots.push(ledger.export(|| recorder.facts.lock().len()));
    }
    running.store(false, std::sync::atomic::Ordering::Release);
    for worker in workers {
        worker.join().expect("worker");
    }
    operator.join().expect("operator");
    let facts = recorder.facts.lock().clone();
    let (end, _) = ledger.export(|| ());
    for (image, cut) in snapshots {
        // Exactly the SKUs created before the cut: replaying a creation over a SKU the image
        // should not have held would hide it.
        let created_before_cut = facts[..cut]
            .iter()
            .filter(|fact| matches!(fact, Fact::SkuPut { stock, .. } if stock.sku.as_str().starts_with('N')))
            .count();
        let held = image
            .skus
            .iter()
            .filter(|sku| sku.stock.sku.as_str().starts_with('N'))
            .count();
        assert_eq!(held, created_before_cut, "SKUs created by fact {cut}");
        let replayed = Ledger::import(LedgerConfig::default(), image).expect("imports");
        for fact in &facts[cut..] {
            replayed.apply(fact).expect("a fact after the cut applies");
        }
        let (image, _) = replayed.export(|| ());
        assert_eq!(image, end, "snapshot at fact {cut}");
    }
}

#[test]
fn refused_orders_naming_a_room_are_lost_demand_and_change_no_stock() {
    // Goal: an order naming a room refused for want of stock or for a halt counts every
    // line's units on that room's listings, per platform and why, once flushed into a fact;
    // it changes no stock. A quota refusal, an order naming no room, a SKU the room does not
    // list count nothing. Replay and a snapshot keep the counts, and the lost series says
    // when. Method: a room listing A (5 units) and B; refusals of each kind, two flushes,
    // then replay of every fact and an export/import round trip.
    let recorder = Arc::new(Recorder::default());
    let ledger = Ledger::new(LedgerConfig::default());
    ledger.attach(recorder.clone());
    ledger
        .put_sku(at(0), &sku_id("A"), total_update(5))
        .expect("A");
    let quota = SkuUpdate {
        total: Some(100),
        quotas: Some(vec![(platform("kuaishou"), 1)]),
        ..SkuUpdate::default()
    };
    ledger.put_sku(at(0), &sku_id("B"), quota).expect("B");
    ledger
        .put_sku(at(0), &sku_id("C"), total_update(0))
        .expect("C");
    ledger
        .put_room(at(0), room("r1", &[("A", 10), ("B", 10)]))
        .expect("room");
    ledger
        .sell(at(1_000), in_room("o1", "r1", &[("A", 5)]))
        .expect("the stock");
    assert_eq!(ledger.flush_lost(at(1_100)), None, "nothing refused yet");
    let before = ledger.skus();
    let refused = [
        // Sold out: 2 + 3 units of A lost on douyin, B's line on the same order too.
        in_room("o2", "r1", &[("A", 2)]),
        in_room("o3", "r1", &[("A", 3), ("B", 4)]),
        // Another platform.
        OrderRequest {
            platform: platform("kuaishou"),
            ..in_room("o4", "r1", &[("A", 1)])
        },
        // No room, a room that does not list C: nothing.
        request("o5", "douyin", &[("A", 7)]),
        in_room("o6", "r1", &[("C", 9)]),
    ];
    for order in refused {
        assert!(ledger.reserve(at(2_000), order).is_err());
    }
    // A quota refusal is not a lost sale of the show.
    ledger
        .reserve(
            at(2_000),
            OrderRequest {
                platform: platform("kuaishou"),
                ..in_room("o7", "r1", &[("B", 1)])
            },
        )
        .expect("within the quota");
    let over_quota = OrderRequest {
        platform: platform("kuaishou"),
        ..in_room("o8", "r1", &[("B", 1)])
    };
    assert!(matches!(
        ledger.reserve(at(2_000), over_quota),
        Err(LedgerError::PlatformQuotaExceeded { .. })
    ));
    let changed_b = ledger.skus();
    assert_eq!(
        before
            .iter()
            .filter(|view| view.stock.sku != sku_id("B"))
            .collect::<Vec<_>>(),
        changed_b
            .iter()
            .filter(|view| view.stock.sku != sku_id("B"))
            .collect::<Vec<_>>(),
        "refusals move no stock"
    );
    let lost_of = |ledger: &Ledger, sku: &str| {
        ledger
            .listing(&room_id("r1"), &sku_id(sku))
            .expect("listed")
            .tally
            .lost
    };
    assert!(
        lost_of(&ledger, "A").is_empty(),
        "counted only once flushed"
    );
    let fact = ledger.flush_lost(at(2_100)).expect("a fact");
    assert!(matches!(&fact, Fact::LostDemand { entries, .. } if entries.len() == 2));
    let a = lost_of(&ledger, "A");
    assert_eq!((a.insufficient_stock(), a.halted(), a.total()), (6, 0, 6));
    let douyin = a
        .platforms
        .iter()
        .find(|entry| entry.platform == platform("douyin"))
        .expect("douyin");
    assert_eq!(douyin.insufficient_stock, 5);
    assert_eq!(lost_of(&ledger, "B").insufficient_stock(), 4);

    // A halted listing: what its orders ask is lost too, as halted.
    ledger
        .halt_listing(at(3_000), &room_id("r1"), &sku_id("B"), false, None)
        .expect("halt");
    assert!(
        ledger
            .sell(at(3_500), in_room("o9", "r1", &[("B", 8)]))
            .is_err()
    );
    ledger.flush_lost(at(4 * MINUTE_MS)).expect("a fact");
    let b = lost_of(&ledger, "B");
    assert_eq!((b.insufficient_stock(), b.halted()), (4, 8));
    let series = ledger
        .listing(&room_id("r1"), &sku_id("B"))
        .expect("listed")
        .tally
        .lost_series;
    assert_eq!(series.at_bucket(series.bucket(at(2_100))), 4);
    assert_eq!(series.at_bucket(series.bucket(at(4 * MINUTE_MS))), 12);

    let facts = recorder.facts.lock().clone();
    let replayed = Ledger::new(LedgerConfig::default());
    for fact in &facts {
        assert_eq!(replayed.apply(fact), Ok(()), "replaying {fact:?}");
    }
    assert_eq!(replayed.room(&room_id("r1")), ledger.room(&room_id("r1")));
    let (image, ()) = ledger.export(|| ());
    let imported = Ledger::import(LedgerConfig::default(), image).expect("import");
    assert_eq!(imported.room(&room_id("r1")), ledger.room(&room_id("r1")));
}

#[test]
fn a_room_set_up_for_the_next_show_counts_that_show_afresh() {
    // Goal: a room put again with another start is another show: its listing forgets what
    // the last show lost, paid, gave back, when it sold out and its lifted halts (a halt in
    // force stays), and records its own sell-out. Two halts in a row are one halt, which one
    // resume lifts. Method: show 1 sells A out and loses 3; an operator halts A and the
    // engine halts it again, then it is resumed; the room moves to two hours later.
    let ledger = ledger_with_skus(&[("A", 5)]);
    ledger
        .put_room(at(0), room("r1", &[("A", 10)]))
        .expect("room");
    ledger
        .sell(at(1_000), in_room("o1", "r1", &[("A", 5)]))
        .expect("sold out");
    assert!(
        ledger
            .sell(at(2_000), in_room("o2", "r1", &[("A", 3)]))
            .is_err()
    );
    ledger.flush_lost(at(2_100)).expect("lost");
    ledger
        .halt_listing(at(3_000), &room_id("r1"), &sku_id("A"), false, Some("小王"))
        .expect("halt");
    ledger
        .halt_listing(at(3_500), &room_id("r1"), &sku_id("A"), true, None)
        .expect("halted again");
    ledger
        .resume_listing(at(4_000), &room_id("r1"), &sku_id("A"), Some("小李"))
        .expect("resume");
    let tally = |ledger: &Ledger| {
        ledger
            .listing(&room_id("r1"), &sku_id("A"))
            .expect("listed")
            .tally
    };
    let first = tally(&ledger);
    assert_eq!(first.halts.len(), 1, "{:?}", first.halts);
    assert_eq!(first.halts[0].by.as_deref(), Some("小王"));
    assert_eq!(first.halts[0].resumed_by.as_deref(), Some("小李"));
    assert_eq!((first.lost.total(), first.outcomes.sold), (3, 5));
    assert_eq!(first.sold_out_at, Some(at(1_000)));

    let mut next = room("r1", &[("A", 10)]);
    next.starts_at = at(120 * MINUTE_MS);
    next.ends_at = at(180 * MINUTE_MS);
    ledger
        .put_room(at(60 * MINUTE_MS), next)
        .expect("the next show");
    let fresh = tally(&ledger);
    assert_eq!((fresh.lost.total(), fresh.outcomes.sold), (0, 0));
    assert_eq!(fresh.sold_out_at, None);
    assert!(fresh.halts.is_empty());
    assert_eq!(
        fresh.consumed, 5,
        "what was taken stays, as before the show"
    );
    ledger
        .put_sku(at(121 * MINUTE_MS), &sku_id("A"), total_update(6))
        .expect("one more");
    ledger
        .sell(at(122 * MINUTE_MS), in_room("o3", "r1", &[("A", 1)]))
        .expect("sold out again");
    assert_eq!(tally(&ledger).sold_out_at, Some(at(122 * MINUTE_MS)));
}
