//! The rules one at a time, with figures computed by hand, and the engine over a real
//! ledger with a manual clock: a three-hour show runs in milliseconds.

use std::sync::Arc;

use super::*;
use crate::clock::Timestamp;
use crate::ledger::{
    Ledger, LedgerConfig, Line, Lines, Listing, OrderId, OrderRequest, PlanPoint, Platform, Policy,
    Qty, Room, RoomId, Series, SkuId, SkuUpdate,
};

const T0: u64 = 1_800_000_000_000;
const MINUTE: u64 = 60_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

/// A three-hour show from `T0` listing sku `A` with a forecast of 1,000.
fn show(policy: Policy) -> Room {
    Room {
        id: RoomId::new("r1").expect("room id"),
        name: "show".to_owned(),
        starts_at: at(0),
        ends_at: at(180 * MINUTE),
        listings: vec![Listing {
            sku: SkuId::new("A").expect("sku id"),
            forecast: 1000,
            plan: Vec::new(),
            shape: crate::ledger::PlanShape::Given,
            policy,
        }],
    }
}

/// The series after consumption reached each `(ms into the show, consumed)`.
fn series(room: &Room, steps: &[(u64, u64)]) -> Series {
    let mut series = Series::for_room(room);
    for (ms, consumed) in steps {
        series.record(at(*ms), *consumed);
    }
    series
}

/// Evaluates listing A of `room` at `now_ms` with `consumed` (reached at `now_ms` unless the
/// series says otherwise) and `available`.
fn judge(
    room: &Room,
    series: &Series,
    consumed: u64,
    available: u64,
    now_ms: u64,
    previous: Option<LevelState>,
) -> Evaluation {
    evaluate(
        &Inputs {
            room,
            listing: &room.listings[0],
            consumed,
            available,
            series,
            lost_recent: 0,
            now: at(now_ms),
        },
        previous,
    )
}

fn simple(room: &Room, consumed: u64, available: u64, now_ms: u64) -> Evaluation {
    let series = series(room, &[(now_ms, consumed)]);
    judge(room, &series, consumed, available, now_ms, None)
}

fn rules_of(evaluation: &Evaluation) -> Vec<&'static str> {
    evaluation
        .reasons
        .iter()
        .map(|reason| reason.rule)
        .collect()
}

#[test]
fn shares_of_the_forecast_give_yellow_orange_and_red() {
    // Goal: 80 %, 100 % and 120 % of the forecast consumed give yellow, orange and red, one
    // unit below each gives the level under it; nothing available is red whatever the share.
    let room = show(Policy::default());
    let plenty = 100_000;
    let minute_90 = 90 * MINUTE;
    assert_eq!(simple(&room, 799, plenty, minute_90).level, Level::Green);
    let yellow = simple(&room, 800, plenty, minute_90);
    assert_eq!(yellow.level, Level::Yellow);
    assert_eq!(yellow.reasons[0].rule, "consumed_share");
    assert_eq!(yellow.reasons[0].threshold, 0.8);
    assert_eq!(simple(&room, 999, plenty, minute_90).level, Level::Yellow);
    assert_eq!(simple(&room, 1000, plenty, minute_90).level, Level::Orange);
    assert_eq!(simple(&room, 1199, plenty, minute_90).level, Level::Orange);
    let red = simple(&room, 1200, plenty, minute_90);
    assert_eq!(red.level, Level::Red);
    assert_eq!(red.hint, Some(Hint::StopSelling));
    assert_eq!(
        simple(&room, 1000, plenty, minute_90).hint,
        Some(Hint::SlowThePace)
    );
    let sold_out = simple(&room, 850, 0, minute_90);
    assert_eq!(sold_out.level, Level::Red);
    assert_eq!(
        rules_of(&sold_out),
        ["sold_out", "consumed_share", "coverage"]
    );
}

#[test]
fn too_little_stock_for_the_demand_still_to_come_is_yellow_and_lead_time_raises_the_cover() {
    // Goal: at 90 of 180 minutes with a linear plan, 500 units are still to come; yellow
    // below 1.2 × 500 = 600 available. A 90-minute lead time (half the show) makes the
    // factor 1.2 × 1.5 = 1.8, so 601 available is yellow too (below 900).
    let room = show(Policy::default());
    let minute_90 = 90 * MINUTE;
    let short = simple(&room, 300, 599, minute_90);
    assert_eq!(short.level, Level::Yellow);
    assert_eq!(rules_of(&short), ["coverage"]);
    assert!((short.reasons[0].threshold - 600.0).abs() < 1e-6);
    assert_eq!(simple(&room, 300, 601, minute_90).level, Level::Green);

    let slow_supply = show(Policy {
        lead_time_ms: 90 * MINUTE,
        ..Policy::default()
    });
    let evaluation = simple(&slow_supply, 300, 601, minute_90);
    assert!((evaluation.thresholds.coverage - 1.8).abs() < 1e-9);
    assert_eq!(evaluation.level, Level::Yellow);
    assert_eq!(
        simple(&slow_supply, 300, 901, minute_90).level,
        Level::Green
    );
}

#[test]
fn selling_far_ahead_of_plan_early_tightens_the_thresholds_for_the_rest_of_the_show() {
    // Goal: 40 % of the forecast within the first 30 minutes multiplies the shares by 0.85
    // (yellow at 68 %), also after the 30 minutes; 39 % does not.
    let room = show(Policy::default());
    let plenty = 100_000;
    let ahead = series(&room, &[(20 * MINUTE, 400), (40 * MINUTE, 700)]);
    let evaluation = judge(&room, &ahead, 700, plenty, 40 * MINUTE, None);
    assert_eq!(evaluation.thresholds.adjustment, Adjustment::Tightened);
    assert!((evaluation.thresholds.yellow - 0.68).abs() < 1e-9);
    assert_eq!(evaluation.level, Level::Yellow);
    assert!(rules_of(&evaluation).contains(&"tightened"));

    let on_plan = series(&room, &[(20 * MINUTE, 390), (40 * MINUTE, 700)]);
    let evaluation = judge(&room, &on_plan, 700, plenty, 40 * MINUTE, None);
    assert_eq!(evaluation.thresholds.adjustment, Adjustment::None);
    assert_eq!(evaluation.level, Level::Green);
}

#[test]
fn selling_far_behind_plan_after_an_hour_relaxes_the_thresholds_and_asks_for_interaction() {
    // Goal: under 10 % after 60 minutes divides the coverage by 1.15. At 61 minutes the
    // demand still to come is 1000 × 119/180 = 661.1; relaxed, 700 available cover
    // 1.2 / 1.15 × 661.1 = 689.9; at 59 minutes, unrelaxed, 700 is short of 806.7.
    let room = show(Policy::default());
    let relaxed = simple(&room, 90, 700, 61 * MINUTE);
    assert_eq!(relaxed.thresholds.adjustment, Adjustment::Relaxed);
    assert!((relaxed.thresholds.yellow - 0.92).abs() < 1e-9);
    assert_eq!(relaxed.level, Level::Green);
    assert_eq!(relaxed.hint, Some(Hint::AddInteraction));
    let before_the_hour = simple(&room, 90, 700, 59 * MINUTE);
    assert_eq!(before_the_hour.thresholds.adjustment, Adjustment::None);
    assert_eq!(before_the_hour.level, Level::Yellow);
    assert_eq!(
        simple(&room, 100, 700, 61 * MINUTE).thresholds.adjustment,
        Adjustment::None
    );
}

#[test]
fn a_level_goes_down_only_past_the_margin_and_after_the_dwell_time() {
    // Goal: orange (100 %) does not drop at 98 % (within the 5 % margin), drops at 94 % only
    // once 30 s passed at orange, and then to yellow.
    let room = show(Policy::default());
    let plenty = 100_000;
    let orange_since = LevelState {
        level: Level::Orange,
        since: at(90 * MINUTE),
    };
    let within_margin = simple_with(&room, 980, plenty, 90 * MINUTE + 60_000, orange_since);
    assert_eq!(within_margin.raw_level, Level::Yellow);
    assert_eq!(within_margin.level, Level::Orange);
    assert!(rules_of(&within_margin).contains(&"hysteresis"));
    let too_soon = simple_with(&room, 940, plenty, 90 * MINUTE + 10_000, orange_since);
    assert_eq!(too_soon.level, Level::Orange);
    assert!(rules_of(&too_soon).contains(&"dwell"));
    let later = simple_with(&room, 940, plenty, 90 * MINUTE + 30_000, orange_since);
    assert_eq!(later.level, Level::Yellow);
}

fn simple_with(
    room: &Room,
    consumed: u64,
    available: u64,
    now_ms: u64,
    previous: LevelState,
) -> Evaluation {
    let series = series(room, &[(now_ms, consumed)]);
    judge(room, &series, consumed, available, now_ms, Some(previous))
}

#[test]
fn oscillating_cancels_around_a_threshold_do_not_flap() {
    // Goal: consumption bouncing between 1,001 and 985 every 5 s (orders and cancels around
    // the orange threshold) for ten minutes makes exactly one transition, up to orange.
    let room = show(Policy::default());
    let mut state: Option<LevelState> = None;
    let mut transitions = Vec::new();
    for step in 0..120u64 {
        let now = 90 * MINUTE + step * 5_000;
        let consumed = if step % 2 == 0 { 1001 } else { 985 };
        let evaluation = simple_with_option(&room, consumed, 100_000, now, state);
        if state.map(|state| state.level) != Some(evaluation.level) {
            transitions.push(evaluation.level);
            state = Some(LevelState {
                level: evaluation.level,
                since: at(now),
            });
        }
    }
    assert_eq!(transitions, [Level::Orange]);
}

fn simple_with_option(
    room: &Room,
    consumed: u64,
    available: u64,
    now_ms: u64,
    previous: Option<LevelState>,
) -> Evaluation {
    let series = series(room, &[(now_ms, consumed)]);
    judge(room, &series, consumed, available, now_ms, previous)
}

#[test]
fn velocity_sell_out_and_restock_suggestion_match_figures_computed_by_hand() {
    // Goal: 100 consumed by 10:00 and 160 by 12:00 is 60 units in the 2-minute window: 30 a
    // minute. 300 available run out in 10 minutes (at 22:00). The 168 minutes left sell
    // 30 × 168 = 5,040; with the 1.2 cover that is 6,048, minus the 300 available: 5,748.
    let room = show(Policy::default());
    let history = series(
        &room,
        &[(10 * MINUTE - 1_000, 100), (12 * MINUTE - 1_000, 160)],
    );
    let evaluation = judge(&room, &history, 160, 300, 12 * MINUTE, None);
    let forecast = evaluation.forecast;
    assert!(
        (forecast.velocity_per_min - 30.0).abs() < 1e-9,
        "{forecast:?}"
    );
    assert_eq!(forecast.sellout_at, Some(at(22 * MINUTE)));
    assert!((forecast.demand_to_end - 5040.0).abs() < 1e-6);
    assert_eq!(forecast.suggested_restock, 5748);
    assert!(forecast.restock_arrives_in_time);
    assert!((forecast.plan_share - 12.0 / 180.0).abs() < 1e-9);

    let slow_supply = show(Policy {
        lead_time_ms: 170 * MINUTE,
        ..Policy::default()
    });
    let evaluation = judge(&slow_supply, &history, 160, 300, 12 * MINUTE, None);
    assert!(!evaluation.forecast.restock_arrives_in_time);
    // Nothing sold in the window: no velocity, no sell-out time.
    let quiet = judge(&room, &history, 160, 300, 20 * MINUTE, None);
    assert_eq!(quiet.forecast.velocity_per_min, 0.0);
    assert_eq!(quiet.forecast.sellout_at, None);
}

#[test]
fn a_plan_curve_is_followed_point_to_point_and_flat_after_its_last_point() {
    // Goal: plan points (60 min, 50 %) and (120 min, 90 %): 25 % at 30 minutes, 70 % at 90,
    // 90 % from 120 on; no plan is linear.
    let mut room = show(Policy::default());
    room.listings[0].plan = vec![
        PlanPoint {
            elapsed_ms: 60 * MINUTE,
            share: 500,
        },
        PlanPoint {
            elapsed_ms: 120 * MINUTE,
            share: 900,
        },
    ];
    let listing = &room.listings[0];
    assert!((plan_share(&room, listing, 30 * MINUTE) - 0.25).abs() < 1e-9);
    assert!((plan_share(&room, listing, 90 * MINUTE) - 0.70).abs() < 1e-9);
    assert!((plan_share(&room, listing, 150 * MINUTE) - 0.90).abs() < 1e-9);
    let linear = show(Policy::default());
    assert!((plan_share(&linear, &linear.listings[0], 45 * MINUTE) - 0.25).abs() < 1e-9);
}

fn order(id: &str, room: &RoomId, qty: i64) -> OrderRequest {
    OrderRequest {
        order_id: OrderId::new(id).expect("order id"),
        platform: Platform::new("douyin").expect("platform"),
        room: Some(room.clone()),
        lines: Lines::new([Line {
            sku: SkuId::new("A").expect("sku"),
            qty: Qty::new(qty).expect("qty"),
        }])
        .expect("lines"),
    }
}

/// A ledger holding 100,000 units of sku `A`, and an auto-halt show listing it (not yet put).
fn stocked_ledger() -> (Arc<Ledger>, SkuId, Room) {
    let ledger = Arc::new(Ledger::new(LedgerConfig::default()));
    let sku = SkuId::new("A").expect("sku");
    ledger
        .put_sku(
            at(0),
            &sku,
            SkuUpdate {
                total: Some(100_000),
                ..SkuUpdate::default()
            },
        )
        .expect("sku");
    let room = show(Policy {
        auto_halt: true,
        ..Policy::default()
    });
    (ledger, sku, room)
}

#[test]
fn the_engine_reports_each_transition_once_and_auto_halts_at_red_until_resumed() {
    // Goal: orders through a real ledger move the listing green → yellow → orange → red, the
    // engine reports each change once with its reasons, halts the auto-halt listing at red,
    // and the ledger then refuses orders for it in that room until it is resumed.
    let (ledger, sku, room) = stocked_ledger();
    let room_id = room.id.clone();
    let durable = follow(&ledger);
    let put = ledger.put_room(at(0), room).expect("room");
    let engine = Engine::new(ledger.clone(), durable, at(0), 1);
    let mut levels = Vec::new();
    let mut record = |events: Vec<RoomEvent>| {
        for event in events {
            if let RoomEvent::Level { alert, .. } = event {
                assert!(!alert.reasons.is_empty());
                levels.push(alert.to);
            }
        }
    };
    record(engine.observe([&put], at(0)));
    let mut now = 90 * MINUTE;
    for (index, qty) in [300, 500, 200, 150, 50].into_iter().enumerate() {
        now += 1_000;
        let answer = ledger
            .sell(at(now), order(&format!("o{index}"), &room_id, qty))
            .expect("sell");
        record(engine.observe(answer.fact.as_ref(), at(now)));
        record(engine.tick(at(now)));
    }
    assert_eq!(levels, [Level::Yellow, Level::Orange, Level::Red]);
    let state = ledger.listing(&room_id, &sku).expect("listing");
    assert!(state.tally.halted);
    let refused = ledger.sell(at(now + 1), order("late", &room_id, 1));
    assert_eq!(
        refused.map(|_| ()).map_err(|error| error.code()),
        Err("halted")
    );
    ledger
        .resume_listing(at(now + 2), &room_id, &sku, None)
        .expect("resume");
    ledger
        .sell(at(now + 3), order("after", &room_id, 1))
        .expect("resumed");
    let view = engine.room_view(&room_id, at(now + 4)).expect("view");
    assert_eq!(view.listings[0].level, Level::Red);
    assert_eq!(view.listings[0].consumed, 1201);
}

#[test]
fn a_listing_gone_red_on_a_standby_is_halted_when_it_takes_over() {
    // Goal: a standby's engine decides red silently (it halts nothing: only the leader
    // changes the ledger); if the leader died between the red batch and its halt, the node
    // that takes over halts the listing itself, once, and the ledger refuses its orders.
    let (ledger, sku, room) = stocked_ledger();
    let room_id = room.id.clone();
    let durable = follow(&ledger);
    let put = ledger.put_room(at(0), room).expect("room");
    let engine = Engine::new(ledger.clone(), durable, at(0), 1);
    engine.set_halts(false);
    engine.observe([&put], at(0));
    let now = 90 * MINUTE;
    let answer = ledger
        .sell(at(now), order("o1", &room_id, 1300))
        .expect("sell");
    engine.observe(answer.fact.as_ref(), at(now));
    engine.tick(at(now + 1_000));
    let view = engine.room_view(&room_id, at(now + 1_000)).expect("view");
    assert_eq!(view.listings[0].level, Level::Red);
    let listing = ledger.listing(&room_id, &sku).expect("listing");
    assert!(!listing.tally.halted, "a standby halts nothing");
    engine.set_halts(true);
    assert_eq!(engine.halt_red(at(now + 2_000)), 1);
    assert!(
        ledger
            .listing(&room_id, &sku)
            .expect("listing")
            .tally
            .halted
    );
    assert_eq!(engine.halt_red(at(now + 3_000)), 0, "halted once");
    let refused = ledger.sell(at(now + 4_000), order("late", &room_id, 1));
    assert_eq!(
        refused.map(|_| ()).map_err(|error| error.code()),
        Err("halted")
    );
}

#[test]
fn units_taken_before_the_show_are_not_sales_velocity() {
    // Goal: 500 units presold before the start, 20 sold in the first minute: velocity is
    // 20 a minute, not 520.
    let room = show(Policy::default());
    let mut presold = Series::for_room(&room);
    presold.record(Timestamp::from_millis(T0 - MINUTE), 500);
    presold.record(at(MINUTE - 1_000), 520);
    let evaluation = judge(&room, &presold, 520, 10_000, MINUTE, None);
    assert!(
        (evaluation.forecast.velocity_per_min - 20.0).abs() < 1e-9,
        "{:?}",
        evaluation.forecast
    );
}

#[test]
fn a_restarted_engine_decides_levels_silently_and_picks_up_rooms_it_missed() {
    // Goal: an engine started over a ledger whose listing is already red raises no alert
    // and halts nothing; rooms put while the engine was not watching are taken in by
    // `reload`, and their next change is reported.
    let (ledger, sku, room) = stocked_ledger();
    let room_id = room.id.clone();
    let durable = follow(&ledger);
    let engine = Engine::new(ledger.clone(), durable.clone(), at(0), 1);
    ledger.put_room(at(0), room).expect("room");
    ledger
        .sell(at(90 * MINUTE), order("o1", &room_id, 1300))
        .expect("sell");
    assert!(
        engine.tick(at(90 * MINUTE)).is_empty(),
        "the room is not watched yet"
    );
    engine.reload(at(90 * MINUTE));
    let restarted = Engine::new(ledger.clone(), durable, at(90 * MINUTE), 1);
    for engine in [&engine, &restarted] {
        let events = engine.tick(at(90 * MINUTE + 1_000));
        assert!(
            !events
                .iter()
                .any(|event| matches!(event, RoomEvent::Level { .. })),
            "{events:?}"
        );
    }
    assert!(
        !ledger
            .listing(&room_id, &sku)
            .expect("listing")
            .tally
            .halted
    );
    let answer = ledger
        .sell(at(90 * MINUTE + 2_000), order("o2", &room_id, 1))
        .expect("sell");
    let events = engine.observe(answer.fact.as_ref(), at(90 * MINUTE + 2_000));
    assert!(
        events
            .iter()
            .any(|event| matches!(event, RoomEvent::Stock { .. }))
    );
}

/// The durable state of a ledger without a journal: it follows the ledger fact by fact.
fn follow(ledger: &Ledger) -> Arc<crate::ledger::DurableState> {
    let durable = Arc::new(crate::ledger::DurableState::from_ledger(ledger));
    ledger.attach(durable.clone());
    durable
}

/// Facts as a journal would hand them to its listener: appended by the ledger, made
/// durable in batches by [`Recorder::batch`].
#[derive(Default)]
struct Recorder {
    pending: parking_lot::Mutex<Vec<crate::ledger::Fact>>,
}

impl crate::ledger::FactSink for Recorder {
    fn append(&self, fact: &crate::ledger::Fact) {
        self.pending.lock().push(fact.clone());
    }
}

impl Recorder {
    fn batch(&self) -> Vec<crate::ledger::Fact> {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// What an engine queued, as text: the same messages print the same.
fn taken(engine: &Engine) -> Vec<String> {
    engine
        .take()
        .iter()
        .map(|message| format!("{message:?}"))
        .collect()
}

#[test]
fn engines_fed_the_same_batches_say_the_same_and_one_restored_from_an_image_goes_on_alike() {
    // Goal: the engine decides from the durable facts alone, so engines fed the same
    // batches (time passing included) queue the same messages under the same numbers, raise
    // the same alert ids, and announce an acknowledgement once; an engine restored from
    // another's image (through its bytes) goes on exactly where that one is. What a cluster's
    // nodes rely on to number room and alert topics alike.
    // Method: a show sells 300, 500, 200, 150 and 50 units a second apart, with a tick after
    // each; the first alert is acknowledged (twice) as soon as it is seen. Engine `a` leads
    // (it auto-halts), `b` follows; after the third sale `a`'s image starts engine `c`,
    // which is then fed every batch from the first.
    let (ledger, _, room) = stocked_ledger();
    let room_id = room.id.clone();
    let recorder = Arc::new(Recorder::default());
    ledger.attach(recorder.clone());
    let engine = |halts: bool| {
        let durable = Arc::new(crate::ledger::DurableState::from_ledger(&ledger));
        let engine = Engine::new(ledger.clone(), durable, at(0), 1);
        engine.set_halts(halts);
        engine
    };
    let (a, b, c) = (engine(true), engine(false), engine(false));
    let mut batches: Vec<(u64, Vec<crate::ledger::Fact>)> = Vec::new();
    let mut next = 1;
    let mut feed = |batches: &mut Vec<(u64, Vec<crate::ledger::Fact>)>, facts| {
        batches.push((next, facts));
        let (first, facts) = batches.last().expect("pushed");
        next += facts.len() as u64;
        a.durable(*first, facts);
        b.durable(*first, facts);
    };
    ledger.put_room(at(0), room).expect("room");
    feed(&mut batches, recorder.batch());
    let (mut said_a, mut said_b) = (taken(&a), taken(&b));
    let mut acknowledged = None;
    let mut image = None;
    let mut now = 90 * MINUTE;
    for (index, qty) in [300, 500, 200, 150, 50].into_iter().enumerate() {
        now += 1_000;
        ledger
            .sell(at(now), order(&format!("o{index}"), &room_id, qty))
            .expect("sell");
        ledger.tick(at(now + 500));
        feed(&mut batches, recorder.batch());
        let (now_a, now_b) = (taken(&a), taken(&b));
        if acknowledged.is_none()
            && let Some(id) = now_a
                .iter()
                .find(|message| message.contains("Alerts, seq") && message.contains("Alert(Alert"))
                .and_then(|message| message.split("id: ").nth(1))
                .and_then(|rest| rest.split(',').next())
                .and_then(|id| id.parse::<u64>().ok())
        {
            ledger.acknowledge_alert(at(now + 600), id, "ops");
            ledger.acknowledge_alert(at(now + 700), id, "ops");
            acknowledged = Some(id);
        }
        said_a.extend(now_a);
        said_b.extend(now_b);
        if index == 2 {
            image = Some((
                said_a.len(),
                super::image::decode(&super::image::encode(&a.image())).expect("decodes"),
            ));
        }
    }
    feed(&mut batches, recorder.batch());
    said_a.extend(taken(&a));
    said_b.extend(taken(&b));
    assert_eq!(said_a, said_b);
    let acknowledgements: Vec<&String> = said_a
        .iter()
        .filter(|message| {
            message.contains("Channel::Alerts") || message.contains("channel: Alerts")
        })
        .filter(|message| message.contains("Acknowledged"))
        .collect();
    assert_eq!(acknowledgements.len(), 1, "{said_a:#?}");
    let alerts = said_a
        .iter()
        .filter(|message| {
            message.starts_with("Message { channel: Alerts") && message.contains("Alert(Alert")
        })
        .count();
    assert_eq!(alerts, 3, "green → yellow → orange → red: {said_a:#?}");
    let (from, image) = image.expect("image taken");
    assert!(acknowledged.is_some());
    c.restore(image);
    for (first, facts) in &batches {
        c.durable(*first, facts);
    }
    assert_eq!(taken(&c), said_a[from..]);
}

#[test]
fn an_engine_image_that_does_not_decode_is_refused_plainly() {
    // Goal: a shared snapshot's engine image is outside input: cut short, garbage, or of
    // another version, it is an error, never a panic or a half-read state.
    let (ledger, _, room) = stocked_ledger();
    let durable = follow(&ledger);
    ledger.put_room(at(0), room).expect("room");
    let engine = Engine::new(ledger.clone(), durable, at(0), 1);
    let bytes = super::image::encode(&engine.image());
    assert!(super::image::decode(&bytes).is_ok());
    for cut in 0..bytes.len() {
        assert!(super::image::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    assert!(super::image::decode(b"\xff\xff\xff\xff").is_err());
}

#[test]
fn an_engine_image_kept_before_reasons_had_chinese_words_reads_with_the_english_ones() {
    // Goal: a shared snapshot written before reasons carried Chinese words still restores
    // its recent alerts, their reasons in English in both places, and a new image keeps both.
    // Method: an image with one alert; its reasons' last field (the Chinese words) taken out
    // of the encoded record, as the earlier format wrote it; decoded, then both round trips.
    let reason = Reason::new(
        "consumed_share",
        Level::Yellow,
        (0.8, 0.8),
        (
            "已消耗预估的 80%，达到预警线 80%".to_owned(),
            "80 % of the forecast consumed, yellow at 80 %".to_owned(),
        ),
    );
    let alert = Alert {
        id: 7,
        room: "r1".to_owned(),
        sku: "A".to_owned(),
        from: Level::Green,
        to: Level::Yellow,
        at: crate::clock::Rfc3339(at(60)),
        reasons: vec![reason.clone()],
        hot: false,
        consumed: 80,
        forecast: 100,
        available: 20,
    };
    let image = super::image::EngineImage {
        recent: std::collections::VecDeque::from([std::sync::Arc::new(alert)]),
        ..Default::default()
    };
    let bytes = super::image::encode(&image);
    let restored = super::image::decode(&bytes).expect("decodes");
    assert_eq!(restored.recent[0].reasons, vec![reason.clone()]);

    let mut record: serde_json::Value = rmp_serde::from_slice(&bytes).expect("a record");
    for alert in record[6].as_array_mut().expect("recent alerts") {
        for reason in alert[6].as_array_mut().expect("reasons") {
            let fields = reason.as_array_mut().expect("a reason");
            assert_eq!(fields.len(), 6);
            fields.pop();
        }
    }
    let earlier = rmp_serde::to_vec(&record).expect("encodes");
    let restored = super::image::decode(&earlier).expect("an earlier image decodes");
    let words = &restored.recent[0].reasons[0];
    assert_eq!(words.en, reason.en);
    assert_eq!(words.zh_cn, reason.en);
}

/// The show of [`show`] with listing A planned by `shape`.
fn shaped(shape: crate::ledger::PlanShape) -> Room {
    let mut room = show(Policy::default());
    let show_ms = room.show_ms();
    room.listings[0].plan = shape.profile(show_ms).unwrap_or_default();
    room.listings[0].shape = shape;
    room
}

#[test]
fn a_listing_selling_to_its_shaped_plan_is_neither_ahead_nor_behind() {
    // Goal: the rules compare against the listing's own plan. A front-loaded product selling
    // to its front-loaded plan stays green; the same sales against a straight line are far
    // ahead of plan (tightened) and short of cover (yellow). A slow starter behind a straight
    // line is relaxed (add interaction); against its own plan it is not.
    // Figures by hand: a three-hour show, forecast 1,000, 1,200 on hand.
    // Front-loaded (50 % by 36 min): 30 min in, the plan expects 500 × 30 / 36 = 416.7; the
    // listing consumed 417, 783 left. Its pace against a straight line (16.7 % by then) is
    // 2.5, so it tightens only at 0.4 × 2.5 = 100 %; the demand to come is 583.3, covered
    // 1.2 × 583.3 = 700 ≤ 783: green. On a straight line: 41.7 % ≥ 40 % tightens (× 0.85),
    // the coverage becomes 1.2 / 0.85 = 1.412, and 1.412 × 833.3 = 1,176 > 783: yellow.
    // Slow start (10 % by 54 min, 30 % by 99 min): 60 min in, the plan expects 12.7 %;
    // 95 consumed. On a straight line 9.5 % < 10 % relaxes; on its plan the pace is
    // 0.127 / 0.333 = 0.38, so it relaxes only under 3.8 %: not relaxed.
    use crate::ledger::PlanShape;
    let minute_30 = 30 * MINUTE;
    let front = shaped(PlanShape::FrontLoaded);
    let on_plan = simple(&front, 417, 783, minute_30);
    assert_eq!(on_plan.level, Level::Green, "{:?}", on_plan.reasons);
    assert_eq!(on_plan.thresholds.adjustment, Adjustment::None);
    assert!((on_plan.thresholds.tighten_share - 1.0).abs() < 1e-3);
    assert!((on_plan.forecast.plan_share - 0.416_67).abs() < 1e-4);
    let linear = simple(&show(Policy::default()), 417, 783, minute_30);
    assert_eq!(linear.level, Level::Yellow);
    assert_eq!(linear.thresholds.adjustment, Adjustment::Tightened);
    assert_eq!(rules_of(&linear), ["coverage", "tightened"]);
    assert!((linear.reasons[0].threshold - 1_176.47).abs() < 0.1);

    let minute_60 = 60 * MINUTE;
    let slow = shaped(PlanShape::SlowStart);
    let behind_a_line = simple(&show(Policy::default()), 95, 1_105, minute_60);
    assert_eq!(behind_a_line.thresholds.adjustment, Adjustment::Relaxed);
    assert_eq!(behind_a_line.hint, Some(Hint::AddInteraction));
    let on_its_plan = simple(&slow, 95, 1_105, minute_60);
    assert_eq!(on_its_plan.thresholds.adjustment, Adjustment::None);
    assert_eq!(on_its_plan.hint, None);
    assert!((on_its_plan.thresholds.relax_share - 0.038).abs() < 1e-3);
}

#[test]
fn a_plan_that_expects_nothing_yet_does_not_tighten_on_nothing() {
    // Goal: a plan with nothing expected by the tightening deadline (0 % at one hour, as a
    // history of slow starts can give) does not tighten a listing that sold nothing; a
    // tenth of a straight line's pace is the least the rule assumes, so it tightens from
    // 0.4 × 0.1 = 4 % sold by then (5 % does).
    let mut room = show(Policy::default());
    room.listings[0].plan = vec![
        PlanPoint {
            elapsed_ms: 60 * MINUTE,
            share: 0,
        },
        PlanPoint {
            elapsed_ms: 180 * MINUTE,
            share: 1000,
        },
    ];
    let idle = simple(&room, 0, 1_200, 1);
    assert_eq!(idle.thresholds.adjustment, Adjustment::None);
    assert!((idle.thresholds.tighten_share - 0.04).abs() < 1e-9);
    let early = simple(&room, 50, 1_150, 30 * MINUTE);
    assert_eq!(early.thresholds.adjustment, Adjustment::Tightened);
}
