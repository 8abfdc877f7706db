//! `--demo`: a simulated live show that keeps the ledger moving, so a person can watch stock
//! change through the API with nothing else running.
//!
//! Every 30 seconds the "host" pitches one SKU; orders for it burst for a few seconds and then
//! fade back to a trickle across the other SKUs. Most orders are paid a few seconds later,
//! some are cancelled, the rest run out their 20-second locks. A SKU close to selling out is
//! restocked. The random choices come from a seed that is logged, so a run can be repeated.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::ledger::{Ledger, Lines, OrderId, OrderRequest, Platform, Qty, SkuId, SkuUpdate};

/// The line-up: id, name, units on hand.
const SKUS: [(&str, &str, u64); 6] = [
    ("LIP-01", "丝绒口红 Velvet lipstick #01", 600),
    ("EYE-02", "四色眼影 Eyeshadow quad", 400),
    ("MASK-03", "补水面膜 Hydrating mask ×10", 1500),
    ("SERUM-04", "精华液 Repair serum 30 ml", 300),
    ("TEA-05", "桂花乌龙 Osmanthus oolong 250 g", 800),
    ("SCARF-06", "真丝围巾 Silk scarf", 120),
];
const PLATFORMS: [&str; 3] = ["douyin", "kuaishou", "taobao"];
/// How often the simulation places orders.
const TICK: Duration = Duration::from_millis(250);
/// Time between two pitches of the host.
const PITCH_INTERVAL_TICKS: u64 = 120;
/// How long demo locks last: short, so expiries are seen.
const DEMO_LOCK_TTL_MS: u64 = 20_000;
/// Most orders waiting for their payment or cancellation at once.
const PENDING_MAX: usize = 10_000;

enum Next {
    Pay,
    Cancel,
}

/// Runs the demo until `cancel` fires.
pub(crate) async fn run(
    ledger: Arc<Ledger>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
    seed: u64,
) {
    tracing::info!(seed, "Demo show starting.");
    let mut rng = fastrand::Rng::with_seed(seed);
    let skus: Vec<SkuId> = SKUS
        .iter()
        .filter_map(|(id, name, total)| {
            let sku = SkuId::new(id).ok()?;
            let update = SkuUpdate {
                name: Some((*name).to_owned()),
                total: Some(*total),
                lock_ttl_ms: Some(Some(DEMO_LOCK_TTL_MS)),
                ..SkuUpdate::default()
            };
            match ledger.put_sku(clock.now(), &sku, update) {
                Ok(_) => Some(sku),
                Err(error) => {
                    tracing::warn!(%sku, %error, "Demo SKU not created.");
                    None
                }
            }
        })
        .collect();
    if skus.is_empty() {
        return;
    }
    let mut pending: VecDeque<(Timestamp, OrderId, Next)> = VecDeque::new();
    let mut ticker = tokio::time::interval(TICK);
    let mut tick_count: u64 = 0;
    let mut pitched = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = clock.now();
        let phase = tick_count % PITCH_INTERVAL_TICKS;
        if phase == 0 {
            pitched = rng.usize(..skus.len());
            tracing::info!(sku = %skus[pitched], "Demo host: \"3, 2, 1, go!\"");
        }
        // A burst right after the pitch, fading over about ten seconds.
        let burst = 40u64.saturating_sub(phase) / 4;
        let order_count = rng.u64(0..3) + rng.u64(0..=burst);
        for _ in 0..order_count {
            let sku = if rng.u8(0..10) < 7 {
                pitched
            } else {
                rng.usize(..skus.len())
            };
            place(&ledger, now, &mut rng, &skus[sku], tick_count, &mut pending);
        }
        settle(&ledger, now, &mut pending);
        if phase == PITCH_INTERVAL_TICKS / 2 {
            restock_low(&ledger, now, &skus);
        }
        tick_count += 1;
    }
}

fn place(
    ledger: &Ledger,
    now: Timestamp,
    rng: &mut fastrand::Rng,
    sku: &SkuId,
    tick_count: u64,
    pending: &mut VecDeque<(Timestamp, OrderId, Next)>,
) {
    let serial = rng.u32(..);
    let (Ok(order_id), Ok(platform), Ok(qty)) = (
        OrderId::new(&format!("demo-{tick_count}-{serial:08x}")),
        Platform::new(PLATFORMS[rng.usize(..PLATFORMS.len())]),
        Qty::new(rng.i64(1..=3)),
    ) else {
        return;
    };
    let request = OrderRequest {
        order_id: order_id.clone(),
        platform,
        room: None,
        lines: Lines::one(sku.clone(), qty),
    };
    if ledger.reserve(now, request).is_err() || PENDING_MAX <= pending.len() {
        return;
    }
    // Three in four pay within a few seconds, one in ten cancels, the rest let the lock run out.
    let roll = rng.u8(0..100);
    let next = if roll < 75 {
        Some(Next::Pay)
    } else if roll < 85 {
        Some(Next::Cancel)
    } else {
        None
    };
    if let Some(next) = next {
        let at = now.saturating_add(Duration::from_millis(rng.u64(1_000..8_000)));
        pending.push_back((at, order_id, next));
    }
}

fn settle(ledger: &Ledger, now: Timestamp, pending: &mut VecDeque<(Timestamp, OrderId, Next)>) {
    let mut later = VecDeque::new();
    while let Some((at, order_id, next)) = pending.pop_front() {
        if now < at {
            later.push_back((at, order_id, next));
            continue;
        }
        let _ = match next {
            Next::Pay => ledger.confirm(now, &order_id),
            Next::Cancel => ledger.cancel(now, &order_id),
        };
    }
    *pending = later;
}

fn restock_low(ledger: &Ledger, now: Timestamp, skus: &[SkuId]) {
    for (sku, (_, _, total)) in skus.iter().zip(SKUS) {
        let Some(view) = ledger.sku(sku) else {
            continue;
        };
        if view.stock.available * 10 < total {
            let qty = total / 2;
            if ledger.restock(now, sku, qty).is_ok() {
                tracing::info!(%sku, qty, "Demo restock arrived.");
            }
        }
    }
}
