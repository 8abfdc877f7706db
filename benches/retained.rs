//! What a remembered order costs in memory: the resident set of a ledger before and after it
//! takes two million paid orders (one line each, ids like a platform's, a room named), which
//! it keeps for the refund window. Prints bytes per order.
//!
//! Run with `cargo bench --bench retained`.

use stockpulse::clock::Timestamp;
use stockpulse::ledger::{
    Ledger, LedgerConfig, Lines, OrderId, OrderRequest, Platform, Qty, RoomId, STOCK_QTY_MAX,
    SkuId, SkuUpdate,
};

/// The server's allocator, so the figure is the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ORDERS_COUNT: u64 = 2_000_000;
const SKUS_COUNT: u64 = 200;

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmRSS")
        * 1024
}

fn main() {
    let ledger = Ledger::new(LedgerConfig::default());
    let now = Timestamp::from_millis(1_700_000_000_000);
    let skus: Vec<SkuId> = (0..SKUS_COUNT)
        .map(|index| SkuId::new(&format!("SKU-2026-{index:05}")).expect("valid"))
        .collect();
    for sku in &skus {
        let update = SkuUpdate {
            total: Some(STOCK_QTY_MAX),
            ..SkuUpdate::default()
        };
        ledger.put_sku(now, sku, update).expect("put_sku");
    }
    let platform = Platform::new("douyin").expect("valid");
    let room = RoomId::new("晚八点专场").expect("valid");
    let before = resident_bytes();
    for index in 0..ORDERS_COUNT {
        let order = OrderRequest {
            order_id: OrderId::new(&format!("DY{:019}", 4_000_000_000_000_000_000 + index))
                .expect("valid"),
            platform: platform.clone(),
            room: Some(room.clone()),
            lines: Lines::one(
                skus[(index % SKUS_COUNT) as usize].clone(),
                Qty::new(1).expect("valid"),
            ),
        };
        ledger.sell(now, order).expect("sell");
    }
    let after = resident_bytes();
    let per_order = (after - before) as f64 / ORDERS_COUNT as f64;
    println!(
        "{ORDERS_COUNT} sold orders retained: {:.0} MiB, {per_order:.0} bytes per order",
        (after - before) as f64 / (1024.0 * 1024.0)
    );
}
