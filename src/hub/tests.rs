//! Hub tests on a real ledger, its durable state and the alert engine, without sessions:
//! what a joining session is given and what is queued for it.

use std::sync::Arc;

use super::*;
use crate::clock::{ManualClock, Timestamp};
use crate::ledger::{DurableState, Ledger, LedgerConfig, SkuUpdate};

fn at(millis: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + millis)
}

/// The journal's part for these tests: facts wait here until [`Feed::commit`] makes them
/// durable (the engine takes them in, as the journal's writer would have it do).
struct Feed {
    pending: parking_lot::Mutex<Vec<crate::ledger::Fact>>,
    next: std::sync::atomic::AtomicU64,
    engine: std::sync::OnceLock<Arc<Engine>>,
}

impl crate::ledger::FactSink for Feed {
    fn append(&self, fact: &crate::ledger::Fact) {
        self.pending.lock().push(fact.clone());
    }
}

impl Feed {
    /// What was appended since the last call, made durable as one batch.
    fn commit(&self) -> DurableBatch {
        let facts = std::mem::take(&mut *self.pending.lock());
        let first_sequence = self.next.fetch_add(facts.len() as u64, Ordering::Relaxed);
        self.engine
            .get()
            .expect("engine")
            .durable(first_sequence, &facts);
        DurableBatch {
            first_sequence,
            facts: facts.into(),
        }
    }
}

/// A hub over a ledger with SKU A, whose facts become durable at each [`Feed::commit`].
fn hub(queue_bytes_max: usize) -> (Arc<Ledger>, Hub, Arc<Feed>) {
    let ledger = Arc::new(Ledger::new(LedgerConfig::default()));
    let durable = Arc::new(DurableState::from_ledger(&ledger));
    let feed = Arc::new(Feed {
        pending: parking_lot::Mutex::new(Vec::new()),
        next: std::sync::atomic::AtomicU64::new(1),
        engine: std::sync::OnceLock::new(),
    });
    ledger.attach(feed.clone());
    let engine = Arc::new(Engine::new(ledger.clone(), durable.clone(), at(0), 1));
    let _ = feed.engine.set(engine.clone());
    let update = SkuUpdate {
        total: Some(1_000),
        ..SkuUpdate::default()
    };
    ledger
        .put_sku(at(0), &SkuId::new("A").expect("id"), update)
        .expect("put_sku");
    feed.commit();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(at(0)));
    let hub = Hub::new(durable, engine, clock, queue_bytes_max, None);
    (ledger, hub, feed)
}

/// Restocks A `count` times and publishes the facts as one durable round.
fn restock(ledger: &Ledger, hub: &Hub, feed: &Feed, count: u64) {
    let sku = SkuId::new("A").expect("id");
    for _ in 0..count {
        ledger.restock(at(1), &sku, 1).expect("restock");
    }
    hub.publish(&[feed.commit()]);
}

/// Room r1 listing A with a forecast of 10, auto-halting at red, made durable.
fn room(ledger: &Ledger, hub: &Hub, feed: &Feed) {
    let room = crate::ledger::Room {
        id: RoomId::new("r1").expect("id"),
        name: "show".to_owned(),
        starts_at: at(0),
        ends_at: at(3 * 3_600_000),
        listings: vec![crate::ledger::Listing {
            sku: SkuId::new("A").expect("id"),
            forecast: 10,
            plan: Vec::new(),
            shape: crate::ledger::PlanShape::Given,
            policy: crate::ledger::Policy {
                auto_halt: true,
                ..crate::ledger::Policy::default()
            },
        }],
    };
    ledger.put_room(at(0), room).expect("put_room");
    hub.publish(&[feed.commit()]);
}

/// Sells 13 of A in room r1: far past its forecast of 10, red.
fn sell_out(ledger: &Ledger) {
    let order = crate::ledger::OrderRequest {
        order_id: crate::ledger::OrderId::new("big").expect("id"),
        platform: crate::ledger::Platform::new("douyin").expect("platform"),
        room: Some(RoomId::new("r1").expect("id")),
        lines: crate::ledger::Lines::one(
            SkuId::new("A").expect("id"),
            crate::ledger::Qty::new(13).expect("qty"),
        ),
    };
    ledger.sell(at(1), order).expect("sell");
}

#[test]
fn after_a_global_resync_sku_topics_resync_and_alert_topics_resume() {
    // Goal: when the hub fell behind the journal it missed stock changes, so a client
    // resuming a SKU topic from before must be resynced, not told it is up to date; the
    // alert engine missed nothing (it takes every batch in as it becomes durable), so an
    // alerts topic keeps its numbers and a client that saw the latest is up to date.
    // Method: a listing turns red in a batch the hub never published; the hub resyncs
    // everyone; a late session resumes the alerts topic at its sequence (up to date) and
    // the SKU topic at a version before the gap (resync).
    let (ledger, hub, feed) = hub(1024 * 1024);
    room(&ledger, &hub, &feed);
    let (link, _frames) = hub.connect(Codec::Json);
    let sku = Topic::Sku(SkuId::new("A").expect("id"));
    let before = match hub.join(&link, &sku, Join::Fresh) {
        Joined::Snapshot(snapshot) => snapshot.seq,
        _ => panic!("no snapshot"),
    };
    sell_out(&ledger);
    let missed = feed.commit();
    drop(missed);
    let alerts = hub.resync_everyone();
    assert!(
        alerts
            .iter()
            .any(|body| matches!(body, Body::Alert(alert) if alert.to == crate::alert::Level::Red)),
        "{alerts:?}"
    );
    let (late, _late_frames) = hub.connect(Codec::Json);
    let alerts_seq = match hub.join(&late, &Topic::Alerts, Join::Fresh) {
        Joined::Snapshot(snapshot) => snapshot.seq,
        _ => panic!("no snapshot"),
    };
    assert!(0 < alerts_seq);
    let (again, _again_frames) = hub.connect(Codec::Json);
    assert!(matches!(
        hub.join(&again, &Topic::Alerts, Join::Since(alerts_seq)),
        Joined::Streaming
    ));
    match hub.join(&again, &sku, Join::Since(before)) {
        Joined::Snapshot(snapshot) => assert!(before < snapshot.seq),
        _ => panic!("a client from before the gap was not resynced"),
    }
}

#[test]
fn once_a_change_is_dropped_nothing_more_is_queued_until_the_resync() {
    // Goal: after a change did not fit a session's queue, a later smaller change must not be
    // queued before the resync: the client would see a gap and reconnect. Method: a queue of
    // 4 KiB that the session does not read; a round of 20 changes fits, the next round of 20
    // does not, and the single change after it would, but is not queued; the session is
    // marked for a resync for its slowness.
    let (ledger, hub, feed) = hub(4096);
    let (link, mut frames) = hub.connect(Codec::Json);
    let sku = Topic::Sku(SkuId::new("A").expect("id"));
    assert!(matches!(
        hub.join(&link, &sku, Join::Fresh),
        Joined::Snapshot(_)
    ));
    restock(&ledger, &hub, &feed, 20);
    restock(&ledger, &hub, &feed, 20);
    restock(&ledger, &hub, &feed, 1);
    let first = frames.try_recv().expect("the first round fits");
    assert_eq!(first.messages, 20);
    assert!(
        frames.try_recv().is_err(),
        "a change was queued after a dropped one"
    );
    assert_eq!(link.take_resync(), Some(Resync::Slow));
}

#[test]
fn a_red_level_raises_its_alert_and_halts_before_the_hub_publishes() {
    // Goal: the alert engine decides on each batch as it becomes durable, not when the hub
    // gets round to it: a listing that turns red is halted, and its alert waits for the
    // hub, numbered. Method: a room is put and an order turns its listing red; the batch is
    // made durable but not published: the listing is halted already; the next round hands
    // the red alert to the notifier.
    let (ledger, hub, feed) = hub(1024 * 1024);
    room(&ledger, &hub, &feed);
    sell_out(&ledger);
    let batch = feed.commit();
    let listing = ledger
        .listing(
            &RoomId::new("r1").expect("id"),
            &SkuId::new("A").expect("id"),
        )
        .expect("listing");
    assert!(listing.tally.halted);
    let alerts = hub.publish(&[batch]);
    assert!(
        alerts
            .iter()
            .any(|body| matches!(body, Body::Alert(alert) if alert.to == crate::alert::Level::Red)),
        "{alerts:?}"
    );
}

#[test]
fn resuming_a_topic_that_did_not_exist_yet_gets_a_snapshot() {
    // Goal: a client that resumes a topic this run never had (its `since` is from another
    // run, sent without the epoch) gets a snapshot, not silence. Method: join a fresh topic
    // with `since` 0, the sequence a new topic starts at: a resync snapshot comes.
    let (_, hub, _) = hub(1024 * 1024);
    let (link, _frames) = hub.connect(Codec::Json);
    let sku = Topic::Sku(SkuId::new("A").expect("id"));
    assert!(matches!(
        hub.join(&link, &sku, Join::Since(0)),
        Joined::Snapshot(_)
    ));
}
