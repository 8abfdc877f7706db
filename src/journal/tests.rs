//! Journal tests: records round-trip, recovery rebuilds the ledger, snapshots plus the tail
//! equal a full replay, and damage is cut off at the tail and refused before it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::clock::Timestamp;
use crate::ledger::{Lines, OrderId, OrderRequest, Platform, Qty, SkuId, SkuUpdate};

fn config(directory: &Path) -> JournalConfig {
    JournalConfig {
        directory: directory.to_owned(),
        sync: SyncPolicy::Always,
        segment_bytes: 16 * 1024,
        repair: false,
        fsync: Arc::new(OsFsync),
        queue_facts_max: QUEUE_FACTS_MAX_DEFAULT,
    }
}

fn at(millis: u64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + millis)
}

fn sku(id: &str) -> SkuId {
    SkuId::new(id).expect("valid sku")
}

fn order(id: &str, sku_id: &str, qty: i64) -> OrderRequest {
    OrderRequest {
        order_id: OrderId::new(id).expect("valid id"),
        platform: Platform::new("douyin").expect("valid platform"),
        room: None,
        lines: Lines::one(sku(sku_id), Qty::new(qty).expect("valid qty")),
    }
}

/// Runs a little of every operation against `ledger`, `count` orders' worth.
fn drive(ledger: &Ledger, count: u64, offset: u64) {
    for name in ["A", "B", "C"] {
        let update = SkuUpdate {
            total: Some(10_000),
            ..SkuUpdate::default()
        };
        ledger
            .put_sku(at(offset), &sku(name), update)
            .expect("put_sku");
        ledger.resume(at(offset), &sku(name)).expect("resume");
    }
    let room = crate::ledger::Room {
        id: show(),
        name: "show".to_owned(),
        starts_at: at(0),
        ends_at: at(3 * 3_600_000),
        listings: ["A", "B"]
            .into_iter()
            .map(|name| crate::ledger::Listing {
                sku: sku(name),
                forecast: 500,
                plan: vec![crate::ledger::PlanPoint {
                    elapsed_ms: 3_600_000,
                    share: 600,
                }],
                shape: crate::ledger::PlanShape::Given,
                policy: crate::ledger::Policy {
                    auto_halt: true,
                    ..crate::ledger::Policy::default()
                },
            })
            .collect(),
    };
    ledger.put_room(at(offset), room).expect("put_room");
    ledger
        .resume_listing(at(offset), &show(), &sku("A"), None)
        .expect("resume listing");
    ledger.restock(at(offset), &sku("A"), 5).expect("restock");
    let restock_id = crate::ledger::RestockId::new(&format!("r-{offset}")).expect("valid id");
    ledger
        .restock_once(at(offset), &sku("B"), 7, restock_id)
        .expect("restock");
    for index in offset..offset + count {
        let sku_id = ["A", "B", "C"][(index % 3) as usize];
        let id = format!("o-{index}");
        let now = at(index);
        let mut request = order(&id, sku_id, 1 + (index % 4) as i64);
        if index % 2 == 0 {
            request.room = Some(show());
        }
        ledger.reserve(now, request).expect("reserve");
        let order_id = OrderId::new(&id).expect("valid id");
        match index % 5 {
            0 | 1 => {
                ledger.confirm(now, &order_id).expect("confirm");
            }
            2 => {
                ledger.cancel(now, &order_id).expect("cancel");
            }
            3 => {
                ledger.confirm(now, &order_id).expect("confirm");
                ledger.refund(now, &order_id).expect("refund");
            }
            _ => {}
        }
    }
    ledger.halt(at(offset + count), &sku("C")).expect("halt");
    let end = at(offset + count);
    ledger
        .halt_listing(end, &show(), &sku("A"), true, None)
        .expect("halt listing");
    ledger
        .halt_listing(end, &show(), &sku("B"), false, None)
        .expect("halt listing");
    ledger
        .resume_listing(end, &show(), &sku("B"), None)
        .expect("resume listing");
}

fn show() -> crate::ledger::RoomId {
    crate::ledger::RoomId::new("show").expect("valid room")
}

fn assert_same(left: &Ledger, right: &Ledger) {
    let (left_image, ()) = left.export(|| ());
    let (right_image, ()) = right.export(|| ());
    assert_eq!(left_image, right_image);
}

fn reopen(directory: &Path) -> (Arc<Ledger>, Journal, Recovery) {
    open(&config(directory), LedgerConfig::default()).expect("the journal opens")
}

#[test]
fn a_restart_replays_every_fact() {
    // Goal: what was acknowledged before a close is there after a reopen, across segments.
    // Method: drive a journaled ledger over several small segments, close, reopen, compare.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, recovery) = reopen(directory.path());
    assert_eq!(recovery.replayed_count, 0);
    drive(&ledger, 600, 0);
    // Forgetting is a fact: after a restart the same orders are forgotten.
    let before = ledger.counts().orders;
    let forgotten = ledger.forget_finished(at(16 * 24 * 60 * 60 * 1_000));
    assert!(
        0 < forgotten && forgotten < before,
        "{forgotten} of {before}"
    );
    journal.close();
    let segments = segment::list(directory.path(), "segment-", ".log").expect("listing");
    let sizes: Vec<u64> = segments
        .iter()
        .map(|(_, path)| std::fs::metadata(path).expect("metadata").len())
        .collect();
    assert!(2 < segments.len(), "small segments roll: {sizes:?}");

    let (replayed, journal, recovery) = reopen(directory.path());
    assert!(600 < recovery.replayed_count);
    assert!(recovery.cut.is_empty(), "{:?}", recovery.cut);
    assert_same(&ledger, &replayed);
    // The journal goes on numbering where it stopped, in a new segment.
    drive(&replayed, 10, 1_000);
    journal.close();
    let (again, journal, _) = reopen(directory.path());
    assert_same(&replayed, &again);
    journal.close();
}

#[test]
fn a_snapshot_bounds_replay_and_prunes_segments() {
    // Goal: start-up from a snapshot plus the journal after it equals the ledger, and the
    // segments wholly before the snapshot are gone.
    // Method: drive, snapshot, drive more, close, reopen.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    drive(&ledger, 500, 0);
    let sequence = journal.snapshot(&ledger).expect("snapshot");
    assert_eq!(sequence, journal.submitted());
    drive(&ledger, 50, 10_000);
    journal.close();
    let first_segment = segment::list(directory.path(), "segment-", ".log").expect("listing")[0].0;
    assert!(1 < first_segment, "old segments pruned");

    let (replayed, journal, recovery) = reopen(directory.path());
    assert_eq!(recovery.snapshot_sequence, Some(sequence));
    assert!(recovery.replayed_count < 300, "{}", recovery.replayed_count);
    assert_same(&ledger, &replayed);
    journal.close();
}

/// The last segment's path and the offsets of its records.
fn last_segment(directory: &Path) -> (std::path::PathBuf, Vec<u64>) {
    let (index, path) = segment::list(directory, "segment-", ".log")
        .expect("listing")
        .pop()
        .expect("a segment");
    let scan = segment::scan(&path, index).expect("scan");
    (
        path,
        scan.records.iter().map(|(_, offset, _)| *offset).collect(),
    )
}

/// Places `count` more orders of SKU A one at a time, each waiting until it is durable, so
/// each is written after everything before it was synced.
fn settle(ledger: &Ledger, journal: &Journal, count: u64) {
    for index in 0..count {
        let id = format!("settled-{}-{index}", journal.submitted());
        ledger.reserve(at(0), order(&id, "A", 1)).expect("reserve");
        while journal.durable() < journal.submitted() {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn damage(path: &Path, offset: u64, change: impl FnOnce(&mut Vec<u8>, usize)) {
    let mut bytes = std::fs::read(path).expect("read segment");
    change(&mut bytes, offset as usize);
    std::fs::write(path, bytes).expect("write segment");
}

#[test]
fn a_torn_or_flipped_last_record_is_cut_off() {
    // Goal: a crash mid-write loses only the damaged record, and start-up goes on.
    // Method: write 20 orders, then truncate the last record mid-way; reopen; then flip a
    // byte in the (new) last record; reopen again.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    drive(&ledger, 20, 0);
    let total = journal.submitted();
    journal.close();

    let (path, offsets) = last_segment(directory.path());
    let last = *offsets.last().expect("records");
    damage(&path, last, |bytes, offset| bytes.truncate(offset + 11));
    let (_, journal, recovery) = reopen(directory.path());
    assert_eq!(recovery.cut.len(), 1, "{:?}", recovery.cut);
    assert_eq!(journal.submitted(), total - 1);
    journal.close();

    let (path, offsets) = last_segment(directory.path());
    let last = *offsets.last().expect("records");
    damage(&path, last, |bytes, offset| bytes[offset + 12] ^= 0x40);
    let (_, journal, recovery) = reopen(directory.path());
    assert_eq!(recovery.cut.len(), 1, "{:?}", recovery.cut);
    assert_eq!(journal.submitted(), total - 2);
    journal.close();
}

#[test]
fn corruption_before_the_tail_stops_start_up_unless_repaired() {
    // Goal: damage in the middle of the journal is never silently skipped.
    // Method: flip a byte in an early record; start-up names the file and offset; with
    // repair it starts, cut at that record.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    drive(&ledger, 20, 0);
    settle(&ledger, &journal, 3);
    journal.close();
    let (path, offsets) = last_segment(directory.path());
    let victim = offsets[5];
    damage(&path, victim, |bytes, offset| bytes[offset + 12] ^= 0x40);

    let error = open(&config(directory.path()), LedgerConfig::default())
        .err()
        .expect("start-up refuses");
    let message = error.to_string();
    assert!(message.contains(&format!("at byte {victim}")), "{message}");
    assert!(message.contains("segment-"), "{message}");

    let repaired = JournalConfig {
        repair: true,
        ..config(directory.path())
    };
    let (_, journal, recovery) = open(&repaired, LedgerConfig::default()).expect("repair opens");
    assert_eq!(journal.submitted(), 5);
    assert!(!recovery.cut.is_empty());
    journal.close();
}

#[test]
fn a_second_process_cannot_open_the_same_journal() {
    // Goal: two servers on one data directory would interleave segments; the second one is
    // refused until the first closes.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_, journal, _) = reopen(directory.path());
    let error = open(&config(directory.path()), LedgerConfig::default())
        .err()
        .expect("the directory is taken");
    assert!(error.to_string().contains("another process"), "{error}");
    journal.close();
    let (_, journal, _) = reopen(directory.path());
    journal.close();
}

#[test]
fn interval_and_never_policies_still_recover_after_a_clean_close() {
    // Goal: the weaker sync policies lose nothing on a clean close.
    for sync in [
        SyncPolicy::Interval(Duration::from_millis(5)),
        SyncPolicy::Never,
    ] {
        let directory = tempfile::tempdir().expect("temporary directory");
        let journal_config = JournalConfig {
            sync,
            ..config(directory.path())
        };
        let (ledger, journal, _) = open(&journal_config, LedgerConfig::default()).expect("opens");
        drive(&ledger, 50, 0);
        journal.close();
        let (replayed, journal, _) = reopen(directory.path());
        assert_same(&ledger, &replayed);
        journal.close();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_plus_tail_equals_full_replay(count in 1u64..120, cut in 0u64..120) {
        // Goal: wherever the snapshot falls, snapshot + tail rebuilds what a full replay does.
        // Method: two journals get the same operations; one takes a snapshot after `cut` of
        // them. Both reopen to the same ledger, equal to the original.
        let with_snapshot = tempfile::tempdir().expect("temporary directory");
        let without = tempfile::tempdir().expect("temporary directory");
        let (ledger, journal, _) = reopen(with_snapshot.path());
        let (twin, twin_journal, _) = reopen(without.path());
        let cut = cut.min(count);
        drive(&ledger, cut, 0);
        drive(&twin, cut, 0);
        journal.snapshot(&ledger).expect("snapshot");
        drive(&ledger, count - cut, 100_000);
        drive(&twin, count - cut, 100_000);
        journal.close();
        twin_journal.close();
        let (from_snapshot, journal, _) = reopen(with_snapshot.path());
        let (from_journal, twin_journal, _) = reopen(without.path());
        let (left, ()) = from_snapshot.export(|| ());
        let (right, ()) = from_journal.export(|| ());
        let (original, ()) = ledger.export(|| ());
        prop_assert_eq!(&left, &right);
        prop_assert_eq!(&left, &original);
        journal.close();
        twin_journal.close();
    }
}

#[test]
fn repair_of_an_early_segment_sets_the_later_ones_aside() {
    // Goal: `--repair` on damage before the last segment starts, keeps what precedes the
    // damage, and keeps (renamed) what follows it instead of failing half-way.
    // Method: many small segments; flip a byte in the first; open without and with repair.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    drive(&ledger, 400, 0);
    journal.close();
    let segments = segment::list(directory.path(), "segment-", ".log").expect("listing");
    assert!(2 < segments.len());
    let (first_index, first_path) = segments[0].clone();
    let offsets: Vec<u64> = segment::scan(&first_path, first_index)
        .expect("scan")
        .records
        .iter()
        .map(|(_, offset, _)| *offset)
        .collect();
    damage(&first_path, offsets[3], |bytes, offset| {
        bytes[offset + 12] ^= 0x40
    });
    assert!(open(&config(directory.path()), LedgerConfig::default()).is_err());

    let repaired = JournalConfig {
        repair: true,
        ..config(directory.path())
    };
    let (_, journal, _) = open(&repaired, LedgerConfig::default()).expect("repair opens");
    assert_eq!(journal.submitted(), 3);
    journal.close();
    let aside = std::fs::read_dir(directory.path())
        .expect("listing")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().to_string_lossy().ends_with(".log.cut"))
        })
        .count();
    assert_eq!(aside, segments.len() - 1);
    // The repaired journal opens cleanly from now on.
    let (_, journal, recovery) = reopen(directory.path());
    assert!(recovery.cut.is_empty(), "{:?}", recovery.cut);
    journal.close();
}

#[test]
fn a_corrupt_length_before_valid_records_is_corruption_not_a_torn_tail() {
    // Goal: damage followed by valid records is never silently cut as a torn tail.
    // Method: make one record's length point past the end of the file, with records after it.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    drive(&ledger, 20, 0);
    settle(&ledger, &journal, 12);
    journal.close();
    let (path, offsets) = last_segment(directory.path());
    let victim = offsets[offsets.len() - 10];
    damage(&path, victim, |bytes, offset| {
        bytes[offset..offset + 4].copy_from_slice(&(segment::RECORD_BYTES_MAX).to_le_bytes());
    });
    let error = open(&config(directory.path()), LedgerConfig::default())
        .err()
        .expect("start-up refuses");
    assert!(
        error.to_string().contains(&format!("at byte {victim}")),
        "{error}"
    );
}

#[test]
fn readers_see_every_fact_once_durable_and_in_order() {
    // Goal: the push side gets each fact exactly once, in journal order, and never before
    // it is durable.
    // Method: subscribe, drive the ledger, then read every batch: sequences run on without a
    // gap, and each batch was durable when it was received.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    let mut batches = journal.subscribe();
    drive(&ledger, 100, 0);
    let submitted = journal.submitted();
    let mut next = 1;
    while next <= submitted {
        let batch = batches.blocking_recv().expect("a batch");
        assert_eq!(batch.first_sequence, next);
        next += batch.facts.len() as u64;
        assert!(next - 1 <= journal.durable());
    }
    assert_eq!(next, submitted + 1);
    journal.close();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_record_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // Goal: journal bytes are outside input; decoding garbage is an error, never a panic.
        let _ = record::decode_fact(&bytes, &|_| None);
        let _ = record::decode_image(&bytes);
    }

    #[test]
    fn arbitrary_segment_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        first_sequence in any::<u64>(),
    ) {
        // Goal: scanning a segment of garbage after a valid header reports damage, never
        // panics, whatever the header's first sequence says.
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = segment::segment_path(directory.path(), 1);
        let mut bytes = segment::segment_header(1, first_sequence).to_vec();
        bytes.extend_from_slice(&body);
        std::fs::write(&path, bytes).expect("write");
        let _ = segment::scan(&path, 1);
    }
}

/// Syncs like the operating system, except that the first sync at `point` fails, as a disk
/// reporting EIO does.
#[derive(Debug)]
struct FailingSync {
    point: SyncPoint,
    failed: std::sync::atomic::AtomicBool,
}

impl FailingSync {
    fn at(point: SyncPoint) -> Arc<FailingSync> {
        Arc::new(FailingSync {
            point,
            failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn has_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn fail_once(&self, point: SyncPoint) -> std::io::Result<()> {
        if point == self.point && !self.failed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(std::io::Error::other("injected EIO"));
        }
        Ok(())
    }
}

impl Fsync for FailingSync {
    fn sync_file(&self, file: &std::fs::File, point: SyncPoint) -> std::io::Result<()> {
        self.fail_once(point)?;
        file.sync_data()
    }

    fn sync_directory(&self, directory: &Path) -> std::io::Result<()> {
        self.fail_once(SyncPoint::Directory)?;
        segment::sync_directory(directory)
    }
}

/// Places orders one at a time until the injected sync failure happened, each waiting for
/// durability as an acknowledgement does; returns how many were acknowledged.
fn place_until_failed(ledger: &Ledger, journal: &Journal, failing: &FailingSync) -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    ledger
        .put_sku(
            at(0),
            &sku("A"),
            SkuUpdate {
                total: Some(1_000_000),
                ..SkuUpdate::default()
            },
        )
        .expect("put_sku");
    let mut acknowledged = 0;
    for index in 0..10_000 {
        ledger
            .reserve(at(index), order(&format!("o-{index}"), "A", 1))
            .expect("reserve");
        if !runtime.block_on(journal.wait_durable(Duration::from_millis(300))) {
            break;
        }
        acknowledged += 1;
        assert!(!failing.has_failed() || !journal.healthy());
    }
    assert!(failing.has_failed(), "the segment never rolled");
    acknowledged
}

#[test]
fn a_failed_sync_when_a_segment_rolls_poisons_the_journal() {
    // Goal: a sync that fails while a full segment is closed is not retried (the kernel may
    // have dropped the pages and would report the retry clean): nothing more is acknowledged
    // until a restart, and the restart finds everything that was acknowledged.
    // Method: an injected sync that fails at the first roll; place orders, each waiting for
    // durability, until one is not acknowledged; the journal must then be unhealthy with its
    // durable watermark frozen, and a reopen must hold every acknowledged order.
    for point in [SyncPoint::Roll, SyncPoint::Directory] {
        let directory = tempfile::tempdir().expect("temporary directory");
        let failing = FailingSync::at(point);
        let journal_config = JournalConfig {
            fsync: failing.clone(),
            ..config(directory.path())
        };
        let (ledger, journal, _) = open(&journal_config, LedgerConfig::default()).expect("opens");
        let acknowledged = place_until_failed(&ledger, &journal, &failing);
        assert!(!journal.healthy(), "{point:?}: a failed sync poisons");
        let durable = journal.durable();
        ledger
            .reserve(at(99_999), order("after", "A", 1))
            .expect("the ledger itself still takes it");
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(
            journal.durable(),
            durable,
            "{point:?}: nothing more is acknowledged"
        );
        assert!(!journal.healthy(), "{point:?}: and it stays poisoned");
        journal.close();
        drop(ledger);
        let (replayed, journal, _) = reopen(directory.path());
        for index in 0..acknowledged {
            assert!(
                replayed
                    .order(&OrderId::new(&format!("o-{index}")).expect("id"))
                    .is_some(),
                "{point:?}: acknowledged order o-{index} survives the restart"
            );
        }
        journal.close();
    }
}

#[test]
fn a_failed_snapshot_sync_poisons_the_journal() {
    // Goal: a snapshot whose file or directory sync fails leaves the journal poisoned, like
    // every other failed sync, and deletes nothing it would have made redundant.
    // Method: an injected failure at the snapshot's sync; the snapshot errs, the journal is
    // unhealthy, and a reopen replays every fact from the segments.
    let directory = tempfile::tempdir().expect("temporary directory");
    let journal_config = JournalConfig {
        fsync: FailingSync::at(SyncPoint::Snapshot),
        ..config(directory.path())
    };
    let (ledger, journal, _) = open(&journal_config, LedgerConfig::default()).expect("opens");
    drive(&ledger, 50, 0);
    while journal.durable() < journal.submitted() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(journal.snapshot(&ledger).is_err());
    assert!(!journal.healthy());
    journal.close();
    let (replayed, journal, recovery) = reopen(directory.path());
    assert_eq!(recovery.snapshot_sequence, None);
    assert_same(&ledger, &replayed);
    journal.close();
}

#[test]
fn damage_in_writes_never_synced_is_a_torn_tail_even_with_records_after_it() {
    // Goal: after a power cut, the pages of writes that were never synced may reach the disk
    // in any order: a hole with an intact record after it, both never synced, is a torn tail
    // (nothing in it was promised under the policy), not corruption that stops start-up.
    // Method: a journal written without syncs (`never`), then record 5 of its segment zeroed
    // with the records after it intact; start-up cuts the journal at record 5.
    let directory = tempfile::tempdir().expect("temporary directory");
    let never = JournalConfig {
        sync: SyncPolicy::Never,
        ..config(directory.path())
    };
    let (ledger, journal, _) = open(&never, LedgerConfig::default()).expect("opens");
    drive(&ledger, 20, 0);
    journal.close();
    let (path, offsets) = last_segment(directory.path());
    let (first, _) = segment::list(directory.path(), "segment-", ".log")
        .expect("listing")
        .pop()
        .map(|(index, path)| {
            (
                segment::scan(&path, index).expect("scan").records[0].0,
                path,
            )
        })
        .expect("a segment");
    damage(&path, offsets[5], |bytes, offset| {
        let end = offsets[6] as usize;
        bytes[offset..end].fill(0);
    });
    let (_, journal, recovery) = reopen(directory.path());
    assert_eq!(journal.submitted(), first + 4, "{:?}", recovery.cut);
    assert_eq!(recovery.cut.len(), 1, "{:?}", recovery.cut);
    journal.close();
}

#[test]
fn damage_in_a_segment_the_snapshot_covers_does_not_stop_start_up() {
    // Goal: a segment whose records are all in the newest snapshot (a crash came between the
    // snapshot and the pruning) is not needed: damage in it does not stop start-up.
    // Method: fill several small segments, keep a copy of the first, snapshot (which prunes
    // it), put the copy back with a flipped byte, and reopen: the ledger is whole.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    drive(&ledger, 200, 0);
    while journal.durable() < journal.submitted() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let segments = segment::list(directory.path(), "segment-", ".log").expect("listing");
    assert!(3 <= segments.len(), "{} segments", segments.len());
    let (first_index, first_path) = segments[0].clone();
    let kept = std::fs::read(&first_path).expect("read");
    journal.snapshot(&ledger).expect("snapshot");
    assert!(
        !first_path.exists(),
        "the snapshot pruned the first segment"
    );
    std::fs::write(&first_path, kept).expect("restore");
    let offsets = segment::scan(&first_path, first_index)
        .expect("scan")
        .records
        .iter()
        .map(|(_, offset, _)| *offset)
        .collect::<Vec<_>>();
    damage(&first_path, offsets[2], |bytes, offset| {
        bytes[offset + 12] ^= 0x40
    });
    journal.close();
    let (replayed, journal, _) = reopen(directory.path());
    assert_same(&ledger, &replayed);
    journal.close();
}

#[test]
fn a_segment_full_of_garbage_is_judged_in_linear_time() {
    // Goal: telling a torn tail from corruption looks for a valid record after the damage at
    // every byte; garbage must not cost a checksum per byte (a record may be a megabyte).
    // Method: a segment whose records end in 4 MiB of bytes that each look like the start of
    // a megabyte record; the scan finishes and finds no later record. The bound is the
    // plausibility check, which this input defeats only if the scan is quadratic, which would
    // take minutes here.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    drive(&ledger, 5, 0);
    journal.close();
    let (index, path) = segment::list(directory.path(), "segment-", ".log")
        .expect("listing")
        .pop()
        .expect("a segment");
    let end = segment::scan(&path, index).expect("scan").end;
    damage(&path, end, |bytes, offset| {
        let garbage = 4 * 1024 * 1024;
        bytes.resize(bytes.len().max(offset + garbage), 0);
        for chunk in bytes[offset..offset + garbage].chunks_mut(4) {
            chunk.copy_from_slice(&(segment::RECORD_BYTES_MAX - 1).to_le_bytes()[..chunk.len()]);
        }
    });
    let (_, journal, recovery) = reopen(directory.path());
    assert_eq!(recovery.cut.len(), 1, "{:?}", recovery.cut);
    journal.close();
}

#[test]
fn files_left_by_an_interrupted_snapshot_are_removed_at_start_up() {
    // Goal: a crash while a snapshot was being written leaves its temporary file, which the
    // next start removes rather than keeping it for ever. Method: put a stray
    // `snapshot-….tmp` (and a segment being prepared) in the directory; open; both are gone.
    let directory = tempfile::tempdir().expect("temporary directory");
    let (ledger, journal, _) = reopen(directory.path());
    drive(&ledger, 5, 0);
    journal.close();
    let stray = directory.path().join("snapshot-00000000000000000042.tmp");
    let prepared = directory.path().join("segment-next-1.prep");
    std::fs::write(&stray, b"half a snapshot").expect("write");
    std::fs::write(&prepared, b"zeros").expect("write");
    let (_, journal, _) = reopen(directory.path());
    assert!(!stray.exists());
    assert!(!prepared.exists());
    journal.close();
}

/// Syncs like the operating system once opened; until then every sync waits, as on a disk
/// that has become very slow.
#[derive(Debug, Default)]
struct Gate {
    open: parking_lot::Mutex<bool>,
    opened: parking_lot::Condvar,
}

impl Gate {
    fn set(&self, open: bool) {
        *self.open.lock() = open;
        self.opened.notify_all();
    }
}

impl Fsync for Gate {
    fn sync_file(&self, file: &std::fs::File, _point: SyncPoint) -> std::io::Result<()> {
        let mut open = self.open.lock();
        while !*open {
            self.opened.wait(&mut open);
        }
        drop(open);
        file.sync_data()
    }

    fn sync_directory(&self, directory: &Path) -> std::io::Result<()> {
        segment::sync_directory(directory)
    }
}

#[test]
fn a_disk_too_slow_for_the_load_backlogs_the_journal_until_it_catches_up() {
    // Goal: with a disk that is slow but not failing, facts must not pile up in memory
    // without bound: past the queue's limit the journal says it is backlogged (and the API
    // refuses writes), and once the disk catches up it is not.
    // Method: a queue limit of 100 facts and a sync that waits; place 150 orders; backlogged;
    // let the sync through; the backlog drains and every order is durable.
    let directory = tempfile::tempdir().expect("temporary directory");
    let gate = Arc::new(Gate::default());
    let journal_config = JournalConfig {
        fsync: gate.clone(),
        queue_facts_max: 100,
        ..config(directory.path())
    };
    let (ledger, journal, _) = open(&journal_config, LedgerConfig::default()).expect("opens");
    gate.set(true);
    settle_sku(&ledger, &journal);
    gate.set(false);
    for index in 0..150 {
        ledger
            .reserve(at(index), order(&format!("o{index}"), "A", 1))
            .expect("reserve");
    }
    assert!(journal.backlogged());
    assert!(journal.healthy(), "slow is not failing");
    gate.set(true);
    while journal.durable() < journal.submitted() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!journal.backlogged());
    journal.close();
}

/// Creates SKU A and waits until it is durable.
fn settle_sku(ledger: &Ledger, journal: &Journal) {
    let update = SkuUpdate {
        total: Some(1_000_000),
        ..SkuUpdate::default()
    };
    ledger.put_sku(at(0), &sku("A"), update).expect("put_sku");
    while journal.durable() < journal.submitted() {
        std::thread::sleep(Duration::from_millis(1));
    }
}
