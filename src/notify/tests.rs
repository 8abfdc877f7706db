//! The dispatcher with a clock in hand: routing, grouping, rate limits with their summary,
//! acknowledgement, resolution and escalation; and the webhook signature.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::{NotifyConfig, ReceiverConfig, RouteConfig};
use super::dispatch::{Dispatcher, Notice};
use crate::alert::AlertState;
use crate::alert::Level;
use crate::clock::Timestamp;

const T0: u64 = 1_800_000_000_000;

fn at(seconds: u64) -> Timestamp {
    Timestamp::from_millis(T0 + seconds * 1000)
}

fn receiver(name: &str, per_minute: u32) -> ReceiverConfig {
    ReceiverConfig {
        name: name.to_owned(),
        url: format!("http://127.0.0.1:9/{name}"),
        format: super::Format::Json,
        secret: "a secret of sixteen bytes".to_owned(),
        headers: BTreeMap::new(),
        per_minute,
        per_hour: 0,
        template_id: String::new(),
        sign_name: String::new(),
        phones: Vec::new(),
    }
}

/// Console-only yellow; webhook for every orange and red; SMS and phone for hot reds; the
/// phone for escalations.
fn config() -> NotifyConfig {
    NotifyConfig {
        receivers: vec![
            receiver("hook", 0),
            receiver("sms", 1),
            receiver("phone", 0),
        ],
        routes: vec![
            RouteConfig {
                levels: vec![Level::Orange, Level::Red],
                receivers: vec!["hook".to_owned()],
                ..RouteConfig::default()
            },
            RouteConfig {
                levels: vec![Level::Red],
                hot: Some(true),
                receivers: vec!["hook".to_owned(), "sms".to_owned(), "phone".to_owned()],
                ..RouteConfig::default()
            },
        ],
        escalation: vec!["phone".to_owned()],
        ..NotifyConfig::default()
    }
}

fn notice(id: u64, sku: &str, from: Level, to: Level, hot: bool) -> Notice {
    Notice {
        id,
        room: "r1".to_owned(),
        sku: sku.to_owned(),
        from,
        to,
        hot,
        at: at(0),
        body: Arc::new(serde_json::json!({"id": id})),
    }
}

fn dispatcher() -> Dispatcher {
    let config = config();
    config.validate().expect("a valid configuration");
    Dispatcher::new(Arc::new(config), BTreeMap::new(), 1, at(0))
}

/// (receiver, alerts, held back, escalation) of what is due at `now`.
fn due(dispatcher: &mut Dispatcher, now: Timestamp) -> Vec<(String, Vec<u64>, u64, bool)> {
    let mut messages: Vec<_> = dispatcher
        .due(now)
        .0
        .into_iter()
        .map(|message| {
            (
                message.receiver,
                message.alerts,
                message.held_back,
                message.escalation,
            )
        })
        .collect();
    messages.sort();
    messages
}

#[test]
fn a_hot_red_reaches_every_channel_and_a_normal_yellow_only_the_console() {
    // Goal: routing by level and the hot flag, each receiver once.
    let dispatcher = dispatcher();
    assert!(
        dispatcher
            .route(&notice(1, "A", Level::Green, Level::Yellow, false))
            .is_empty()
    );
    assert_eq!(
        dispatcher.route(&notice(2, "A", Level::Yellow, Level::Red, false)),
        ["hook"]
    );
    assert_eq!(
        dispatcher.route(&notice(3, "A", Level::Orange, Level::Red, true)),
        ["hook", "sms", "phone"]
    );
}

#[test]
fn alerts_within_the_window_go_out_together_once() {
    // Goal: two alerts 2 s apart reach the webhook as one message after the 5 s window, and
    // nothing is sent twice.
    let mut dispatcher = dispatcher();
    dispatcher.add(notice(1, "A", Level::Yellow, Level::Orange, false), at(0));
    dispatcher.add(notice(2, "B", Level::Yellow, Level::Orange, false), at(2));
    assert!(due(&mut dispatcher, at(4)).is_empty());
    assert_eq!(
        due(&mut dispatcher, at(5)),
        [("hook".to_owned(), vec![1, 2], 0, false)]
    );
    assert!(due(&mut dispatcher, at(60)).is_empty());
}

#[test]
fn a_rate_limit_holds_alerts_back_and_the_next_message_counts_them() {
    // Goal: SMS at most one a minute: a second hot red 10 s after the first waits until the
    // minute is over and then goes out saying it was held back; none is lost.
    let mut dispatcher = dispatcher();
    dispatcher.add(notice(1, "A", Level::Orange, Level::Red, true), at(0));
    let first = due(&mut dispatcher, at(5));
    assert!(
        first.contains(&("sms".to_owned(), vec![1], 0, false)),
        "{first:?}"
    );
    dispatcher.add(notice(2, "B", Level::Orange, Level::Red, true), at(10));
    dispatcher.add(notice(3, "C", Level::Orange, Level::Red, true), at(20));
    let held = due(&mut dispatcher, at(30));
    assert!(held.iter().all(|message| message.0 != "sms"), "{held:?}");
    let released = due(&mut dispatcher, at(65));
    assert!(
        released.contains(&("sms".to_owned(), vec![2, 3], 2, false)),
        "{released:?}"
    );
}

#[test]
fn an_unacknowledged_red_escalates_and_repeats_until_acknowledged_or_resolved() {
    // Goal: a red not acknowledged within 120 s goes to the phone as an escalation, again
    // every 120 s; acknowledging stops it; a later level change resolves the alert.
    let mut dispatcher = dispatcher();
    dispatcher.add(notice(1, "A", Level::Orange, Level::Red, false), at(0));
    assert_eq!(
        due(&mut dispatcher, at(5)),
        [("hook".to_owned(), vec![1], 0, false)]
    );
    assert!(due(&mut dispatcher, at(119)).is_empty());
    dispatcher.due(at(120));
    assert_eq!(
        due(&mut dispatcher, at(125)),
        [("phone".to_owned(), vec![1], 0, true)]
    );
    dispatcher.due(at(240));
    assert_eq!(
        due(&mut dispatcher, at(245)),
        [("phone".to_owned(), vec![1], 0, true)]
    );
    assert_eq!(dispatcher.record(1).expect("alert").escalations, 2);
    assert_eq!(dispatcher.acknowledge(1, "ops", at(250)), Some(true));
    assert_eq!(dispatcher.acknowledge(1, "other", at(251)), Some(false));
    let record = dispatcher.record(1).expect("alert");
    assert_eq!(record.state, AlertState::Acknowledged);
    assert_eq!(record.acknowledged_by.as_deref(), Some("ops"));
    dispatcher.due(at(400));
    assert!(due(&mut dispatcher, at(500)).is_empty());

    dispatcher.add(notice(2, "A", Level::Red, Level::Orange, false), at(600));
    assert_eq!(
        dispatcher.record(1).expect("alert").state,
        AlertState::Resolved
    );
    assert_eq!(dispatcher.record(2).expect("alert").state, AlertState::Open);
    assert!(dispatcher.acknowledge(99, "ops", at(600)).is_none());
}

#[test]
fn a_node_that_takes_over_escalates_the_step_now_due_under_the_key_the_last_leader_used() {
    // Goal: the escalation schedule is the alert's own (its time, plus 120 s, plus 120 s a
    // step), so a node that stood by (it recorded the alert from the log but sent nothing)
    // and takes over sends the step now due, counted as the leader counted, under the same
    // idempotency key the leader sent that step with: a gateway drops it as a repeat, and a
    // tiered escalation does not start over.
    let mut leader = dispatcher();
    let mut standby = dispatcher();
    for dispatcher in [&mut leader, &mut standby] {
        dispatcher.add(notice(1, "A", Level::Orange, Level::Red, false), at(0));
    }
    let mut sent = Vec::new();
    for now in [5, 120, 125, 240, 245, 360, 365] {
        for message in leader.due(at(now)).0 {
            if message.escalation {
                sent.push(message.idempotency_key());
            }
        }
    }
    assert_eq!(
        sent,
        [
            "stockpulse-phone-a1.1",
            "stockpulse-phone-a1.2",
            "stockpulse-phone-a1.3"
        ]
    );
    // The leader dies; the standby takes over at 370 s and ticks.
    let mut resent = Vec::new();
    for now in [370, 375] {
        for message in standby.due(at(now)).0 {
            if message.escalation {
                resent.push(message.idempotency_key());
            }
        }
    }
    assert_eq!(resent, ["stockpulse-phone-a1.3"]);
    let record = standby.record(1).expect("alert");
    assert_eq!(record.escalations, 3);
    assert_eq!(record.next_escalation, Some(at(480)));
    assert_eq!(
        leader.record(1).expect("alert").next_escalation,
        record.next_escalation
    );
}

#[test]
fn an_escalation_waiting_in_its_group_is_dropped_by_an_acknowledgement_or_a_resolution() {
    // Goal: once acknowledged (or resolved by a later change) an alert pages nobody, even
    // when its escalation was already gathered into a group.
    for resolve in [false, true] {
        let mut dispatcher = dispatcher();
        dispatcher.add(notice(1, "A", Level::Orange, Level::Red, false), at(0));
        due(&mut dispatcher, at(5));
        dispatcher.due(at(120));
        if resolve {
            dispatcher.add(notice(2, "A", Level::Red, Level::Green, false), at(121));
        } else {
            dispatcher.acknowledge(1, "ops", at(121));
        }
        let after = due(&mut dispatcher, at(125));
        assert!(after.iter().all(|message| !message.3), "{after:?}");
        assert!(
            after.iter().all(|message| message.0 != "phone"),
            "{after:?}"
        );
    }
}

#[test]
fn finished_records_are_pruned_but_the_newest_stays() {
    // Goal: resolved alerts whose deliveries are over leave memory after the retention;
    // open ones and the newest stay.
    let mut dispatcher = dispatcher();
    dispatcher.add(notice(1, "A", Level::Yellow, Level::Orange, false), at(0));
    dispatcher.add(notice(2, "A", Level::Orange, Level::Yellow, false), at(1));
    dispatcher.add(notice(3, "B", Level::Yellow, Level::Orange, false), at(2));
    due(&mut dispatcher, at(10));
    let pruned = dispatcher.prune(at(100), |_| true);
    assert_eq!(pruned, [1]);
    assert!(dispatcher.record(2).is_some() && dispatcher.record(3).is_some());
    assert_eq!(dispatcher.prune(at(100), |_| false), Vec::<u64>::new());
}

#[test]
fn owed_messages_survive_a_restart() {
    // Goal: an alert still waiting in its group when the process stops is owed again by a
    // dispatcher rebuilt from the kept records.
    let mut dispatcher = dispatcher();
    dispatcher.add(notice(1, "A", Level::Yellow, Level::Orange, false), at(0));
    let kept = dispatcher.alerts.clone();
    let mut restarted = Dispatcher::new(Arc::new(config()), kept, 1, at(3));
    assert_eq!(
        due(&mut restarted, at(8)),
        [("hook".to_owned(), vec![1], 0, false)]
    );
    assert_eq!(restarted.next_alert_id(), 2);
}

#[test]
fn the_signature_is_hmac_sha256_over_timestamp_and_body() {
    // Goal: the signature matches one computed independently, with Python's standard
    // library: hmac.new(b"key", b"1700000000.{}", hashlib.sha256).hexdigest().
    assert_eq!(
        super::signature("key", 1_700_000_000, "{}"),
        "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
    );
}

#[test]
fn a_store_of_another_format_is_refused_and_one_without_a_version_is_the_first() {
    // Goal: the notifier's records carry their layout's version, as the journal's do: a new
    // store records it, a store written before versions reads as version 1 and gets it, and
    // a store of another version is refused, naming both, rather than read wrong.
    use super::store::{FORMAT_VERSION, Store, StoreError};
    let directory = tempfile::tempdir().expect("a directory");
    let path = directory.path().join("notify.redb");
    drop(Store::open(&path).expect("a new store"));
    drop(Store::open(&path).expect("the same store again"));
    {
        let database = redb::Database::create(&path).expect("the database");
        let write = database.begin_write().expect("a write");
        {
            let mut meta = write
                .open_table(redb::TableDefinition::<&str, u32>::new("meta"))
                .expect("meta");
            meta.remove("format")
                .expect("no version, as before versions");
        }
        write.commit().expect("committed");
    }
    drop(Store::open(&path).expect("a store without a version is version 1"));
    {
        let database = redb::Database::create(&path).expect("the database");
        let write = database.begin_write().expect("a write");
        {
            let mut meta = write
                .open_table(redb::TableDefinition::<&str, u32>::new("meta"))
                .expect("meta");
            meta.insert("format", FORMAT_VERSION + 1)
                .expect("another version");
        }
        write.commit().expect("committed");
    }
    match Store::open(&path) {
        Err(StoreError::Format { found }) => assert_eq!(found, FORMAT_VERSION + 1),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a store of another format was read"),
    }
}

#[test]
fn an_alert_raised_again_under_its_id_keeps_what_was_recorded_of_it() {
    // Goal (A3): a node that starts again from a shared snapshot raises again, with the same
    // ids, the alerts after the snapshot; what it recorded of them (the acknowledgement,
    // the receivers already served) stands, rather than the alert reading open and owed
    // again.
    let mut dispatcher = dispatcher();
    assert_eq!(
        dispatcher.add(notice(1, "A", Level::Orange, Level::Red, true), at(0)),
        vec![1]
    );
    assert_eq!(due(&mut dispatcher, at(5)).len(), 3, "hook, sms and phone");
    assert_eq!(dispatcher.acknowledge(1, "ops", at(5)), Some(true));
    assert!(
        dispatcher
            .add(notice(1, "A", Level::Orange, Level::Red, true), at(6))
            .is_empty()
    );
    let record = dispatcher.record(1).expect("the alert");
    assert_eq!(record.state, AlertState::Acknowledged);
    assert_eq!(record.acknowledged_by.as_deref(), Some("ops"));
    assert!(record.owed.is_empty(), "{:?}", record.owed);
    assert!(due(&mut dispatcher, at(400)).is_empty());
}
