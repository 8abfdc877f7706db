//! Benchmarks of the ledger's hot paths, in process: placing and paying an order (reserve then
//! confirm) spread over 10,000 SKUs and on one hot SKU from two threads, placing alone, and
//! sweeping 10,000 expired locks. One element is one order (one reserve+confirm pair, one
//! reserve) or one expired lock.
//!
//! Run with `cargo bench --bench ledger`.
//!
//! Requests are built outside the timed region; the time covers the ledger calls and dropping
//! their answers. The ledger runs in its steady state, as in a server that has been up a
//! while: after every [`CHUNK_ORDERS_MAX`] orders (outside the timed region) the orders are
//! finished and forgotten, so their memory is reused instead of growing without bound, and
//! the time measures the operations rather than the first touch of fresh pages.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "a benchmark measures wall time with `std::time::Instant`, which the server bans"
)]

/// The server's allocator, so the benchmarks allocate as the server does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use stockpulse::clock::Timestamp;
use stockpulse::ledger::{
    Ledger, LedgerConfig, Lines, OrderId, OrderRequest, Platform, Qty, STOCK_QTY_MAX, SkuId,
    SkuUpdate,
};

/// SKUs of the uniform benchmarks: a large catalogue, so that most orders touch a cold entry.
const UNIFORM_SKUS_COUNT: u64 = 10_000;
/// Orders placed between two recycling passes: as many as a big live room places in a minute
/// or two, so the order tables hold a realistic number of live orders.
const CHUNK_ORDERS_MAX: u64 = 100_000;
/// Locks swept by one `expire_due`.
const EXPIRED_LOCKS_COUNT: u64 = 10_000;
/// Worker threads of the hot-SKU benchmark: the machine has 2 cores.
const HOT_THREADS_COUNT: usize = 2;

/// A fixed instant: the benchmarks never let a lock expire except on purpose.
const NOW: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A ledger and the means to place unique orders on it.
struct Fixture {
    ledger: Ledger,
    skus: Vec<SkuId>,
    platform: Platform,
    /// Orders built so far; also the next order id.
    orders_count: u64,
    /// Orders placed since the last recycling pass.
    chunk_orders_count: u64,
}

impl Fixture {
    /// A ledger with `skus_count` SKUs, each with more units than any run can take, and
    /// idempotency and refund windows of zero, so recycling can forget finished orders at once.
    fn new(skus_count: u64) -> Self {
        let config = LedgerConfig {
            idempotency_window: Duration::ZERO,
            refund_window: Duration::ZERO,
            ..LedgerConfig::default()
        };
        let ledger = Ledger::new(config);
        let skus: Vec<SkuId> = (0..skus_count)
            .map(|index| SkuId::new(&format!("sku-{index}")).expect("a valid sku id"))
            .collect();
        for sku in &skus {
            let update = SkuUpdate {
                total: Some(STOCK_QTY_MAX),
                ..SkuUpdate::default()
            };
            ledger.put_sku(NOW, sku, update).expect("put_sku");
        }
        Fixture {
            ledger,
            skus,
            platform: Platform::new("douyin").expect("a valid platform"),
            orders_count: 0,
            chunk_orders_count: 0,
        }
    }

    /// Finishes every order still locked (cancelling it) and forgets every finished order.
    fn recycle(&mut self) {
        let expiry = NOW.saturating_add(self.ledger.config().lock_ttl);
        self.ledger.expire_due(expiry);
        self.ledger.forget_finished(expiry);
        self.chunk_orders_count = 0;
    }

    /// `count` orders of one unit with fresh ids, on SKUs scattered over the catalogue.
    fn requests(&mut self, count: u64) -> Vec<OrderRequest> {
        let skus_count = self.skus.len() as u64;
        let qty = Qty::new(1).expect("a valid quantity");
        let first = self.orders_count;
        self.orders_count += count;
        self.chunk_orders_count += count;
        (first..first + count)
            .map(|index| {
                // A multiplicative hash, so that consecutive orders do not walk the catalogue.
                let sku_index = (index.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % skus_count;
                OrderRequest {
                    order_id: OrderId::new(&format!("order-{index}")).expect("a valid order id"),
                    platform: self.platform.clone(),
                    room: None,
                    lines: Lines::one(self.skus[sku_index as usize].clone(), qty),
                }
            })
            .collect()
    }

    /// Runs `iterations` orders through `routine` in chunks, recycling between chunks and
    /// building each chunk's requests outside the time `routine` reports.
    fn run_timed(
        &mut self,
        iterations: u64,
        mut routine: impl FnMut(&Ledger, Vec<OrderRequest>) -> Duration,
    ) -> Duration {
        let mut elapsed = Duration::ZERO;
        let mut remaining = iterations;
        while 0 < remaining {
            if self.chunk_orders_count == CHUNK_ORDERS_MAX {
                self.recycle();
            }
            let chunk = remaining.min(CHUNK_ORDERS_MAX - self.chunk_orders_count);
            let requests = self.requests(chunk);
            elapsed += routine(&self.ledger, requests);
            remaining -= chunk;
        }
        elapsed
    }
}

fn reserve_and_confirm(ledger: &Ledger, requests: Vec<OrderRequest>) {
    for request in requests {
        let order_id = request.order_id.clone();
        black_box(ledger.reserve(NOW, request).expect("reserve"));
        black_box(ledger.confirm(NOW, &order_id).expect("confirm"));
    }
}

fn reserve_confirm(c: &mut Criterion) {
    let mut group = c.benchmark_group("reserve_confirm");
    group.throughput(Throughput::Elements(1));

    let mut uniform = Fixture::new(UNIFORM_SKUS_COUNT);
    group.bench_function("uniform_10k_skus", |b| {
        b.iter_custom(|iterations| {
            uniform.run_timed(iterations, |ledger, requests| {
                let start = Instant::now();
                reserve_and_confirm(ledger, requests);
                start.elapsed()
            })
        });
    });
    drop(uniform);

    let mut hot = Fixture::new(1);
    group.bench_function("hot_sku_2_threads", |b| {
        b.iter_custom(|iterations| {
            hot.run_timed(iterations, |ledger, mut requests| {
                // Split the chunk between the threads, and time from the moment all of them
                // are ready to the moment the last one is done.
                let share = requests.len().div_ceil(HOT_THREADS_COUNT);
                let mut shares = Vec::with_capacity(HOT_THREADS_COUNT);
                while !requests.is_empty() {
                    let rest = requests.split_off(share.min(requests.len()));
                    shares.push(std::mem::replace(&mut requests, rest));
                }
                let barrier = Barrier::new(shares.len() + 1);
                let start = thread::scope(|scope| {
                    for share in shares {
                        let barrier = &barrier;
                        scope.spawn(move || {
                            barrier.wait();
                            reserve_and_confirm(ledger, share);
                        });
                    }
                    barrier.wait();
                    Instant::now()
                });
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn reserve(c: &mut Criterion) {
    let mut group = c.benchmark_group("reserve");
    group.throughput(Throughput::Elements(1));
    let mut uniform = Fixture::new(UNIFORM_SKUS_COUNT);
    group.bench_function("uniform_10k_skus", |b| {
        b.iter_custom(|iterations| {
            uniform.run_timed(iterations, |ledger, requests| {
                let start = Instant::now();
                for request in requests {
                    black_box(ledger.reserve(NOW, request).expect("reserve"));
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

/// A ledger holding [`EXPIRED_LOCKS_COUNT`] locks, one per SKU, all due at `NOW` + the TTL.
fn ledger_with_due_locks() -> Ledger {
    let mut fixture = Fixture::new(EXPIRED_LOCKS_COUNT);
    for request in fixture.requests(EXPIRED_LOCKS_COUNT) {
        fixture.ledger.reserve(NOW, request).expect("reserve");
    }
    fixture.ledger
}

fn expire_due(c: &mut Criterion) {
    let mut group = c.benchmark_group("expire_due");
    group.throughput(Throughput::Elements(EXPIRED_LOCKS_COUNT));
    let due = NOW.saturating_add(LedgerConfig::default().lock_ttl);
    group.bench_function("10k_expired_locks", |b| {
        b.iter_batched(
            ledger_with_due_locks,
            |ledger| {
                let facts = ledger.expire_due(due);
                assert_eq!(facts.len() as u64, EXPIRED_LOCKS_COUNT);
                // Returned, so that dropping the ledger and the facts is not timed.
                (ledger, facts)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, reserve_confirm, reserve, expire_due);
criterion_main!(benches);
