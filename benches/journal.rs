//! Start-up replay: how long `journal::open` takes to rebuild the ledger from one million
//! facts with no snapshot, the worst case a crash leaves behind between two snapshots.
//!
//! Run with `cargo bench --bench journal`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stockpulse::clock::Timestamp;
use stockpulse::journal::{JournalConfig, SyncPolicy, open};
use stockpulse::ledger::{
    LedgerConfig, Lines, OrderId, OrderRequest, Platform, Qty, STOCK_QTY_MAX, SkuId, SkuUpdate,
};

/// The server's allocator, so replay allocates as the server does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Facts in the journal: half reservations, half payments of them.
const FACTS_COUNT: u64 = 1_000_000;
const SKUS_COUNT: u64 = 1_000;

fn config(directory: &std::path::Path) -> JournalConfig {
    JournalConfig {
        directory: directory.to_owned(),
        sync: SyncPolicy::Never,
        segment_bytes: 64 * 1024 * 1024,
        repair: false,
        fsync: std::sync::Arc::new(stockpulse::journal::OsFsync),
        queue_facts_max: stockpulse::journal::QUEUE_FACTS_MAX_DEFAULT,
    }
}

/// A journal of [`FACTS_COUNT`] facts (and a thousand SKUs), written once.
fn write_journal(directory: &std::path::Path) {
    let (ledger, journal, _) = open(&config(directory), LedgerConfig::default()).expect("opens");
    let now = Timestamp::from_millis(1_700_000_000_000);
    let platform = Platform::new("douyin").expect("valid");
    let skus: Vec<SkuId> = (0..SKUS_COUNT)
        .map(|index| SkuId::new(&format!("sku-{index}")).expect("valid"))
        .collect();
    for sku in &skus {
        let update = SkuUpdate {
            total: Some(STOCK_QTY_MAX),
            ..SkuUpdate::default()
        };
        ledger.put_sku(now, sku, update).expect("put_sku");
    }
    for index in 0..(FACTS_COUNT - SKUS_COUNT) / 2 {
        let order_id = OrderId::new(&format!("order-{index}")).expect("valid");
        let request = OrderRequest {
            order_id: order_id.clone(),
            platform: platform.clone(),
            room: None,
            lines: Lines::one(
                skus[(index % SKUS_COUNT) as usize].clone(),
                Qty::new(1).expect("valid"),
            ),
        };
        ledger.reserve(now, request).expect("reserve");
        ledger.confirm(now, &order_id).expect("confirm");
    }
    journal.close();
}

fn replay(c: &mut Criterion) {
    let directory = tempfile::tempdir().expect("temporary directory");
    write_journal(directory.path());
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(FACTS_COUNT));
    group.bench_function("1m_facts", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let (ledger, journal, recovery) =
                    open(&config(directory.path()), LedgerConfig::default()).expect("opens");
                assert!(FACTS_COUNT - SKUS_COUNT <= recovery.replayed_count);
                elapsed += recovery.elapsed;
                journal.close();
                drop(ledger);
            }
            elapsed
        });
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
