//! Replay and snapshots: facts applied to an empty ledger, or a snapshot plus the facts after
//! its cut, rebuild the ledger; a snapshot that does not add up is refused.

use super::*;

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
        listings: Some(vec![(
            platform("douyin"),
            crate::ledger::ListingId::new("3598-dy").expect("a listing id"),
        )]),
        allocation: Some(crate::ledger::Allocation::Shared { buffer: 3 }),
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

#[test]
fn what_platforms_acknowledged_replays_and_survives_a_snapshot() {
    // Goal: each SKU keeps the newest acknowledgement per platform listing, from live calls,
    // replayed facts and snapshots alike; an older version, an unknown SKU and a listing
    // the SKU no longer names change nothing, and renaming a listing forgets its mark.
    // Method: acknowledge in and out of order, replay the facts into a fresh ledger, export
    // and import an image, compare; then rename the listing.
    let ledger = Ledger::new(LedgerConfig::default());
    let listing = |id: &str| crate::ledger::ListingId::new(id).expect("a listing id");
    let update = SkuUpdate {
        total: Some(100),
        listings: Some(vec![(platform("douyin"), listing("dy-1"))]),
        ..SkuUpdate::default()
    };
    let mut facts = vec![
        ledger
            .put_sku(at(0), &sku_id("A"), update)
            .expect("put_sku"),
    ];
    let ack = |sku: &str, id: &str, version: u64, quantity: u64| crate::ledger::ListingAck {
        sku: sku_id(sku),
        listing: listing(id),
        version,
        quantity,
        consumed: 2,
    };
    let douyin = platform("douyin");
    facts.push(ledger.note_synced(at(1), &douyin, vec![ack("A", "dy-1", 5, 70)]));
    facts.push(ledger.note_synced(
        at(2),
        &douyin,
        vec![
            ack("A", "dy-1", 3, 90),
            ack("Z", "dy-9", 9, 1),
            ack("A", "dy-2", 9, 1),
        ],
    ));
    let kept = ledger.synced(&sku_id("A"));
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].version, kept[0].quantity, kept[0].at),
        (5, 70, at(1))
    );

    let replayed = Ledger::new(LedgerConfig::default());
    for fact in &facts {
        replayed.apply(fact).expect("every fact replays");
    }
    assert_eq!(replayed.synced(&sku_id("A")), kept);
    let (image, ()) = ledger.export(|| ());
    let imported = Ledger::import(LedgerConfig::default(), image).expect("import");
    assert_eq!(imported.synced(&sku_id("A")), kept);

    let renamed = SkuUpdate {
        listings: Some(vec![(platform("douyin"), listing("dy-2"))]),
        ..SkuUpdate::default()
    };
    let rename = ledger
        .put_sku(at(3), &sku_id("A"), renamed)
        .expect("put_sku");
    assert_eq!(ledger.synced(&sku_id("A")), Vec::new());
    // Replay forgets them at the same place.
    replayed.apply(&rename).expect("the rename replays");
    assert_eq!(replayed.synced(&sku_id("A")), Vec::new());
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
fn a_follower_forgets_what_its_leader_forgot_where_the_leader_did_whatever_its_own_windows() {
    // Goal: forgetting is decided once, by the ledger that makes the facts, and recorded with
    // the cut-offs it used: a ledger following the facts (a standby, a replay) forgets the
    // same orders at the same point, even set to other windows, and ends with the same
    // orders and counts. An id reused between the forgetting and its fact (placed on a
    // stripe already swept) is not forgotten by the follower either.
    // Method: a leader with the default windows takes 40 orders (cancelled, sold, locked),
    // forgets a day later, while o0 is placed again before the forgetting's fact reaches
    // the journal; a follower set to one-year windows applies the facts in journal order.
    let leader = Ledger::new(LedgerConfig::default());
    let recorder = std::sync::Arc::new(Recorder::default());
    leader.attach(recorder.clone());
    leader
        .put_sku(at(0), &sku_id("A"), total_update(1_000))
        .expect("put_sku");
    for index in 0..40 {
        let id = format!("o{index}");
        match index % 3 {
            0 => {
                leader
                    .reserve(at(0), request(&id, "douyin", &[("A", 1)]))
                    .expect("reserve");
                leader.cancel(at(1), &order_id(&id)).expect("cancel");
            }
            1 => {
                leader
                    .sell(at(0), request(&id, "douyin", &[("A", 1)]))
                    .expect("sell");
            }
            _ => {
                leader
                    .reserve(at(0), request(&id, "douyin", &[("A", 1)]))
                    .expect("reserve");
            }
        }
    }
    let day_ms = 24 * 60 * MINUTE_MS;
    let settled = leader.counts().orders;
    let forgotten = leader.forget_finished(at(day_ms + 1));
    let mut facts = recorder.facts.lock().drain(..).collect::<Vec<_>>();
    let forget_fact = facts.pop().expect("the forgetting's fact");
    assert_eq!(forget_fact.kind(), "orders_forgotten");
    // o0 again, journaled before the forgetting's fact, as a request racing the sweep is.
    leader
        .reserve(at(day_ms + 2), request("o0", "douyin", &[("A", 3)]))
        .expect("reserve again");
    facts.extend(recorder.facts.lock().drain(..));
    facts.push(forget_fact);
    assert_eq!(
        forgotten, 14,
        "the cancelled orders, not the sold or locked ones"
    );
    let follower = Ledger::new(LedgerConfig {
        idempotency_window: std::time::Duration::from_secs(365 * 86_400),
        refund_window: std::time::Duration::from_secs(365 * 86_400),
        ..LedgerConfig::default()
    });
    for fact in &facts {
        follower.apply(fact).expect("every fact applies");
    }
    assert_eq!(follower.counts(), leader.counts());
    assert_eq!(leader.counts().orders, settled - forgotten + 1);
    for index in 0..40 {
        let id = order_id(&format!("o{index}"));
        assert_eq!(follower.order(&id), leader.order(&id), "{id}");
    }
    assert!(leader.order(&order_id("o3")).is_none(), "forgotten");
    assert_eq!(follower.skus(), leader.skus());
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
