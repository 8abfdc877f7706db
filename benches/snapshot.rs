//! The pause a snapshot makes: a ledger remembering five million paid orders is copied (the
//! in-memory part of a snapshot, `Ledger::export`) while another thread places and cancels
//! orders as fast as it can; prints how long the copy took and how long orders waited during
//! it (percentiles, the longest, how many over 5 ms), next to the same orders without a
//! snapshot, twice, so the machine's own stalls show beside the snapshot's; and the longest
//! the copy held any lock, the pause it can impose on an order. With `SNAPSHOT_SPIN=1` a
//! thread that only spins takes the snapshot's place: the stalls of two busy threads on two
//! cores, without the snapshot's locks or memory. With `SNAPSHOT_PROBE=1` the ordering
//! thread only reads the clock in a loop: the stalls of a thread that takes no lock and
//! allocates nothing.
//!
//! Run with `cargo bench --bench snapshot`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hdrhistogram::Histogram;
use stockpulse::clock::Timestamp;
use stockpulse::ledger::{
    Ledger, LedgerConfig, Lines, OrderId, OrderRequest, Platform, Qty, STOCK_QTY_MAX, SkuId,
    SkuUpdate,
};
use tokio::time::Instant;

/// The server's allocator, so the copy allocates as the server's does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ORDERS_COUNT: u64 = 5_000_000;
const SKUS_COUNT: u64 = 1_000;

fn order(index: u64, sku: &SkuId, platform: &Platform) -> OrderRequest {
    OrderRequest {
        order_id: OrderId::new(&format!("DY{:019}", 4_000_000_000_000_000_000 + index))
            .expect("valid"),
        platform: platform.clone(),
        room: None,
        lines: Lines::one(sku.clone(), Qty::new(1).expect("valid")),
    }
}

/// Places and cancels orders until `stop`, recording each operation's time in microseconds.
fn place_until(ledger: &Ledger, stop: &AtomicBool, first: u64, skus: &[SkuId]) -> Histogram<u64> {
    let mut waits = Histogram::<u64>::new(3).expect("histogram");
    let platform = Platform::new("kuaishou").expect("valid");
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut index = first;
    if std::env::var_os("SNAPSHOT_PROBE").is_some() {
        let mut last = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let micros = u64::try_from((now - last).as_micros()).unwrap_or(u64::MAX);
            waits.record(micros.max(1)).expect("in range");
            last = now;
        }
        return waits;
    }
    while !stop.load(Ordering::Acquire) {
        let request = order(index, &skus[(index % SKUS_COUNT) as usize], &platform);
        let started = Instant::now();
        let id = request.order_id.clone();
        ledger.reserve(now, request).expect("reserve");
        ledger.cancel(now, &id).expect("cancel");
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        waits.record(micros.max(1)).expect("in range");
        index += 1;
        if index.is_multiple_of(10_000) {
            // Cancelled orders are forgotten at once here (no idempotency window), so the
            // ledger's memory stays as it is and only the snapshot allocates.
            ledger.forget_finished(now);
        }
    }
    waits
}

fn main() {
    let ledger = Arc::new(Ledger::new(LedgerConfig {
        idempotency_window: std::time::Duration::ZERO,
        ..LedgerConfig::default()
    }));
    let now = Timestamp::from_millis(1_700_000_000_000);
    let skus: Arc<Vec<SkuId>> = Arc::new(
        (0..SKUS_COUNT)
            .map(|index| SkuId::new(&format!("SKU-{index:05}")).expect("valid"))
            .collect(),
    );
    for sku in skus.iter() {
        let update = SkuUpdate {
            total: Some(STOCK_QTY_MAX),
            ..SkuUpdate::default()
        };
        ledger.put_sku(now, sku, update).expect("put_sku");
    }
    let platform = Platform::new("douyin").expect("valid");
    for index in 0..ORDERS_COUNT {
        let request = order(index, &skus[(index % SKUS_COUNT) as usize], &platform);
        ledger.sell(now, request).expect("sell");
    }
    // A first snapshot, unmeasured: a server takes them all the time, so the measured one
    // finds its memory warm.
    drop(ledger.export(|| ()));
    for (label, snapshot) in [
        ("without a snapshot", false),
        ("during a snapshot", true),
        ("without a snapshot", false),
        ("during a snapshot", true),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let placing = {
            let (ledger, stop, skus) = (ledger.clone(), stop.clone(), skus.clone());
            let first = 10_000_000 + 10_000_000 * u64::from(snapshot);
            std::thread::spawn(move || place_until(&ledger, &stop, first, &skus))
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        let started = Instant::now();
        let image = if snapshot {
            let ledger = ledger.clone();
            let copying = std::thread::spawn(move || {
                // The control: a thread that only spins, so the second core is as busy as
                // during a snapshot, without its locks or its memory.
                if std::env::var_os("SNAPSHOT_SPIN").is_some() {
                    let started = Instant::now();
                    let mut spins = 0u64;
                    while started.elapsed() < std::time::Duration::from_secs(6) {
                        spins = std::hint::black_box(spins + 1);
                    }
                    return stockpulse::ledger::LedgerImage::default();
                }
                ledger.export(|| ()).0
            });
            Some(copying.join().expect("the copy"))
        } else {
            std::thread::sleep(std::time::Duration::from_secs(3));
            None
        };
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Release);
        let waits = placing.join().expect("the placing thread");
        let copied = image.map_or(0, |image| image.orders.len());
        let over_5_ms = waits.count_between(5_001, u64::MAX);
        let hold = if snapshot && std::env::var_os("SNAPSHOT_SPIN").is_none() {
            format!(
                ", the longest lock hold {} µs",
                ledger.last_export_longest_hold().as_micros()
            )
        } else {
            String::new()
        };
        println!(
            "{label}: {copied} orders copied in {:.0} ms{hold}; {} orders placed meanwhile: wait p99.9 {} µs, p99.99 {} µs, longest {} µs, {over_5_ms} over 5 ms",
            elapsed.as_secs_f64() * 1000.0,
            waits.len(),
            waits.value_at_quantile(0.999),
            waits.value_at_quantile(0.9999),
            waits.max()
        );
    }
}
