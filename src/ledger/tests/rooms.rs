//! Rooms: listings' consumption and curves, halts, lost demand, a room set up for the next
//! show, and what snapshots keep of them.

use super::*;

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
