//! Hub tests on a real ledger, its durable state and the alert engine, without sessions:
//! what a joining session is given and what is queued for it.

use std::sync::Arc;

use super::*;
use crate::clock::{ManualClock, Timestamp};
use crate::ledger::{DurableState, Ledger, LedgerConfig, SkuUpdate};

fn at(millis: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + millis)
}

/// A hub over a ledger with SKU A, whose durable state follows the ledger fact by fact.
fn hub(queue_bytes_max: usize) -> (Arc<Ledger>, Hub) {
    let ledger = Arc::new(Ledger::new(LedgerConfig::default()));
    let durable = Arc::new(DurableState::from_ledger(&ledger));
    ledger.attach(durable.clone());
    let update = SkuUpdate {
        total: Some(1_000),
        ..SkuUpdate::default()
    };
    ledger
        .put_sku(at(0), &SkuId::new("A").expect("id"), update)
        .expect("put_sku");
    let engine = Arc::new(Engine::new(ledger.clone(), durable.clone(), at(0), 1));
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(at(0)));
    let hub = Hub::new(durable, engine, clock, queue_bytes_max, None);
    (ledger, hub)
}

/// Restocks A `count` times and publishes the facts as one durable round.
fn restock(ledger: &Ledger, hub: &Hub, first_sequence: u64, count: u64) {
    let sku = SkuId::new("A").expect("id");
    let facts: Vec<_> = (0..count)
        .map(|_| ledger.restock(at(1), &sku, 1).expect("restock"))
        .collect();
    hub.publish(&[DurableBatch {
        first_sequence,
        facts: facts.into(),
    }]);
}

#[test]
fn after_a_global_resync_a_client_resuming_from_before_it_is_resynced_on_every_topic() {
    // Goal: when the hub fell behind the journal it drops every topic's history; a client
    // resuming from the sequence it saw before must be resynced, on alert topics too, not
    // told it is up to date. Method: an alerts topic moves to seq 1; a global resync; a
    // session joining with `since` 1 gets a resync snapshot.
    let (_, hub) = hub(1024 * 1024);
    let (link, _frames) = hub.connect(Codec::Json);
    assert!(matches!(
        hub.join(&link, &Topic::Alerts, Join::Fresh),
        Joined::Snapshot(_)
    ));
    hub.alert_state(crate::notify::StateChange {
        id: 1,
        room: "r1".to_owned(),
        state: crate::notify::AlertState::Acknowledged,
        acknowledged_by: Some("ops".to_owned()),
        at: crate::clock::Rfc3339(at(2)),
    });
    hub.resync_everyone();
    let (late, _late_frames) = hub.connect(Codec::Json);
    match hub.join(&late, &Topic::Alerts, Join::Since(1)) {
        Joined::Snapshot(snapshot) => assert_eq!(snapshot.seq, 2),
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
    let (ledger, hub) = hub(4096);
    let (link, mut frames) = hub.connect(Codec::Json);
    let sku = Topic::Sku(SkuId::new("A").expect("id"));
    assert!(matches!(
        hub.join(&link, &sku, Join::Fresh),
        Joined::Snapshot(_)
    ));
    restock(&ledger, &hub, 2, 20);
    restock(&ledger, &hub, 22, 20);
    restock(&ledger, &hub, 42, 1);
    let first = frames.try_recv().expect("the first round fits");
    assert_eq!(first.messages, 20);
    assert!(
        frames.try_recv().is_err(),
        "a change was queued after a dropped one"
    );
    assert_eq!(link.take_resync(), Some(Resync::Slow));
}

#[test]
fn levels_that_moved_in_facts_the_hub_missed_raise_their_alerts() {
    // Goal: when the hub falls behind the journal and misses facts, a listing whose level
    // moved in them still raises its alert (and auto-halts), not silently takes the level.
    // Method: a room is put and an order turns its listing red, none of it published; the
    // hub resyncs everyone; a red alert comes out and the listing is halted.
    let (ledger, hub) = hub(1024 * 1024);
    let room = crate::ledger::Room {
        id: RoomId::new("r1").expect("id"),
        name: "show".to_owned(),
        starts_at: at(0),
        ends_at: at(3 * 3_600_000),
        listings: vec![crate::ledger::Listing {
            sku: SkuId::new("A").expect("id"),
            forecast: 10,
            plan: Vec::new(),
            policy: crate::ledger::Policy {
                auto_halt: true,
                ..crate::ledger::Policy::default()
            },
        }],
    };
    ledger.put_room(at(0), room).expect("put_room");
    hub.resync_everyone();
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
    let alerts = hub.resync_everyone();
    assert!(
        alerts
            .iter()
            .any(|alert| alert.to == crate::alert::Level::Red),
        "{alerts:?}"
    );
    let listing = ledger
        .listing(
            &RoomId::new("r1").expect("id"),
            &SkuId::new("A").expect("id"),
        )
        .expect("listing");
    assert!(listing.tally.halted);
}

#[test]
fn resuming_a_topic_that_did_not_exist_yet_gets_a_snapshot() {
    // Goal: a client that resumes a topic this run never had (its `since` is from another
    // run, sent without the epoch) gets a snapshot, not silence. Method: join a fresh topic
    // with `since` 0, the sequence a new topic starts at: a resync snapshot comes.
    let (_, hub) = hub(1024 * 1024);
    let (link, _frames) = hub.connect(Codec::Json);
    let sku = Topic::Sku(SkuId::new("A").expect("id"));
    assert!(matches!(
        hub.join(&link, &sku, Join::Since(0)),
        Joined::Snapshot(_)
    ));
}
