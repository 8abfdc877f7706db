//! The order life cycle step by step: reserve, pay, cancel, expire, refund, restock, halt,
//! quotas, idempotent retries, forgetting, and the edges of the design's rules.

use super::*;

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
            listing: None,
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
                listing: None,
            },
            PlatformCount {
                platform: platform("kuaishou"),
                locked: 10,
                sold: 0,
                quota: None,
                listing: None,
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
    let config = LedgerConfig::default();
    let cutoffs =
        crate::ledger::Forget::at(at(DAY_MS), config.idempotency_window, config.refund_window);
    let (forgotten, more) = ledger.forget_due_in(&mut stripe, cutoffs);
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
