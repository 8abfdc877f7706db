//! Exclusive allocation: no platform takes a unit another platform holds, and what the
//! allotments leave unsold never exceeds `available`, whatever the orders, releases,
//! restocks, changes of the pool and moves; the facts rebuild the same allotments.

use super::*;

const PLATFORMS: [&str; 3] = ["douyin", "kuaishou", "wechat"];

fn exclusive(shares: &[(&str, u32)], floor: u64) -> SkuUpdate {
    SkuUpdate {
        allocation: Some(Allocation::Exclusive(Exclusive {
            shares: shares
                .iter()
                .map(|(name, share)| (platform(name), *share))
                .collect(),
            floor,
            allotted: Vec::new(),
            rebalance_every_s: 0,
        })),
        ..SkuUpdate::default()
    }
}

fn allotments(ledger: &Ledger) -> Exclusive {
    match ledger
        .sku(&sku_id("A"))
        .expect("the SKU")
        .settings
        .allocation
    {
        Allocation::Exclusive(exclusive) => exclusive,
        other => panic!("not exclusive: {other:?}"),
    }
}

/// Every allotment covers what its platform took, and the unsold rest fits the pool.
fn assert_allotments_hold(ledger: &Ledger) {
    let view = ledger.sku(&sku_id("A")).expect("the SKU");
    let Allocation::Exclusive(exclusive) = &view.settings.allocation else {
        return;
    };
    let consumed = |name: &Platform| {
        view.platforms
            .iter()
            .find(|count| &count.platform == name)
            .map_or(0, |count| count.locked + count.sold)
    };
    let mut unsold = 0;
    for (name, allotted) in &exclusive.allotted {
        assert!(
            consumed(name) <= *allotted,
            "{name} took more than {allotted}: {view:?}"
        );
        unsold += allotted - consumed(name);
    }
    assert!(
        unsold <= view.stock.available,
        "{unsold} unsold allotted, {view:?}"
    );
}

#[test]
fn a_platform_sells_its_allotment_and_not_another_platforms() {
    // Goal: 60/40 shares split 100 units 60/40; douyin cannot take kuaishou's units; a
    // platform without a share takes only unallotted units; a restock is split; a move
    // shifts unsold units, never below the floor.
    let ledger = ledger_with_skus(&[("A", 100)]);
    ledger
        .put_sku(
            at(0),
            &sku_id("A"),
            exclusive(&[("douyin", 600), ("kuaishou", 400)], 5),
        )
        .expect("exclusive");
    assert_eq!(
        allotments(&ledger).allotted,
        vec![(platform("douyin"), 60), (platform("kuaishou"), 40)]
    );
    ledger
        .sell(at(1), request("d1", "douyin", &[("A", 60)]))
        .expect("douyin sells its 60");
    let refused = ledger.sell(at(1), request("d2", "douyin", &[("A", 1)]));
    assert_eq!(
        refused.map(drop).map_err(|error| error.code()),
        Err("allotment_exhausted")
    );
    let refused = ledger.sell(at(1), request("w1", "wechat", &[("A", 1)]));
    assert_eq!(
        refused.map(drop).map_err(|error| error.code()),
        Err("allotment_exhausted")
    );
    ledger.restock(at(2), &sku_id("A"), 10).expect("restock");
    assert_eq!(
        allotments(&ledger).allotted,
        vec![(platform("douyin"), 66), (platform("kuaishou"), 44)]
    );
    let moved = AllotmentMove {
        from: platform("kuaishou"),
        to: platform("douyin"),
        qty: 40,
        reason: "douyin ahead of plan".to_owned(),
    };
    let too_many = ledger.move_allotment(at(3), &sku_id("A"), moved.clone());
    assert!(
        too_many.is_err(),
        "44 unsold less a floor of 5 leaves 39 to move"
    );
    ledger
        .move_allotment(at(3), &sku_id("A"), AllotmentMove { qty: 39, ..moved })
        .expect("a move within the floor");
    assert_eq!(
        allotments(&ledger).allotted,
        vec![(platform("douyin"), 105), (platform("kuaishou"), 5)]
    );
    assert_allotments_hold(&ledger);

    // Shares covering only part of the pool: the rest stays for the platforms without one,
    // through restocks and settings changes alike.
    let part = ledger_with_skus(&[("A", 1000)]);
    part.put_sku(at(0), &sku_id("A"), exclusive(&[("douyin", 600)], 0))
        .expect("exclusive");
    part.restock(at(1), &sku_id("A"), 100).expect("restock");
    let renamed = SkuUpdate {
        name: Some("renamed".to_owned()),
        ..SkuUpdate::default()
    };
    part.put_sku(at(2), &sku_id("A"), renamed).expect("rename");
    let grown = SkuUpdate {
        total: Some(1200),
        ..SkuUpdate::default()
    };
    part.put_sku(at(3), &sku_id("A"), grown).expect("more");
    let allotted = |ledger: &Ledger| allotments(ledger).allotted;
    assert_eq!(
        allotted(&part),
        vec![(platform("douyin"), 720)],
        "60 % of 1,200"
    );
}

#[derive(Clone, Debug)]
enum Step {
    Take {
        platform: usize,
        qty: u64,
        pay: bool,
    },
    Release {
        index: usize,
    },
    Restock {
        qty: u64,
    },
    Total {
        total: u64,
    },
    Move {
        from: usize,
        to: usize,
        qty: u64,
    },
    Shares {
        first: u32,
        second: u32,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..3usize, 1..20u64, any::<bool>())
            .prop_map(|(platform, qty, pay)| Step::Take { platform, qty, pay }),
        2 => (0..64usize).prop_map(|index| Step::Release { index }),
        1 => (1..50u64).prop_map(|qty| Step::Restock { qty }),
        1 => (0..200u64).prop_map(|total| Step::Total { total }),
        1 => (0..2usize, 0..2usize, 1..30u64).prop_map(|(from, to, qty)| Step::Move { from, to, qty }),
        1 => (0..=1000u32, 0..=1000u32).prop_map(|(first, second)| Step::Shares {
            first,
            second: second.min(1000 - first),
        }),
    ]
}

proptest! {
    /// At every step the allotments cover what each platform took and leave unsold no more
    /// than `available`; replaying the facts gives the same SKU, allotments included.
    #[test]
    fn allotments_never_promise_a_unit_twice(steps in proptest::collection::vec(step(), 1..60)) {
        let ledger = ledger_with_skus(&[("A", 100)]);
        let recorder = std::sync::Arc::new(Recorder::default());
        let mut facts = ledger_sku_facts(&ledger);
        ledger.attach(recorder.clone());
        ledger
            .put_sku(at(0), &sku_id("A"), exclusive(&[("douyin", 500), ("kuaishou", 300)], 2))
            .expect("exclusive");
        let mut placed: Vec<String> = Vec::new();
        for (index, step) in steps.into_iter().enumerate() {
            let now = at(1 + index as u64);
            match step {
                Step::Take { platform, qty, pay } => {
                    let id = format!("o{index}");
                    let order = request(&id, PLATFORMS[platform], &[("A", qty as i64)]);
                    let taken = if pay { ledger.sell(now, order) } else { ledger.reserve(now, order) };
                    if taken.is_ok() {
                        placed.push(id);
                    }
                }
                Step::Release { index } => {
                    if let Some(id) = placed.get(index % placed.len().max(1)) {
                        let _ = ledger.cancel(now, &order_id(id));
                        let _ = ledger.refund(now, &order_id(id));
                    }
                }
                Step::Restock { qty } => {
                    ledger.restock(now, &sku_id("A"), qty).expect("restock");
                }
                Step::Total { total } => {
                    let _ = ledger.put_sku(now, &sku_id("A"), total_update(total));
                }
                Step::Move { from, to, qty } => {
                    let moved = AllotmentMove {
                        from: platform(PLATFORMS[from]),
                        to: platform(PLATFORMS[to]),
                        qty,
                        reason: "test".to_owned(),
                    };
                    let _ = ledger.move_allotment(now, &sku_id("A"), moved);
                }
                Step::Shares { first, second } => {
                    let shares = [("douyin", first), ("kuaishou", second)];
                    ledger.put_sku(now, &sku_id("A"), exclusive(&shares, 2)).expect("shares");
                }
            }
            assert_allotments_hold(&ledger);
        }
        facts.extend(recorder.facts.lock().iter().cloned());
        let replayed = Ledger::new(LedgerConfig::default());
        for fact in &facts {
            prop_assert_eq!(replayed.apply(fact), Ok(()));
        }
        prop_assert_eq!(replayed.skus(), ledger.skus());
    }
}
