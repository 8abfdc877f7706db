//! Threads: one hot SKU and multi-line orders from eight threads never oversell, deadlock or
//! split an order; room edits racing orders lose nothing.

use super::model::MODEL_PLATFORMS;
use super::*;

#[test]
fn concurrent_forecast_edits_and_room_changes_lose_nothing() {
    // Goal: a forecast edit is one read-modify-write under the room lock, so two operators
    // editing two listings both keep their changes, and an edit never undoes a room change
    // that added a listing.
    // Method: two threads each set their own listing's forecast 1..=300 while a third puts
    // the room again with a new listing C; then C is listed with its tally. Then the two
    // editors alone again: both forecasts end at 300.
    let ledger = std::sync::Arc::new(ledger_with_skus(&[("A", 10), ("B", 10), ("C", 10)]));
    let room = |skus: &[&str]| Room {
        id: RoomId::new("r1").expect("room id"),
        name: "show".to_owned(),
        starts_at: at(0),
        ends_at: at(180 * MINUTE_MS),
        listings: skus
            .iter()
            .map(|sku| Listing {
                sku: sku_id(sku),
                forecast: 1,
                plan: Vec::new(),
                shape: crate::ledger::PlanShape::Given,
                policy: Policy::default(),
            })
            .collect(),
    };
    ledger.put_room(at(0), room(&["A", "B"])).expect("put_room");
    let room_id = RoomId::new("r1").expect("room id");
    let edit_both = |ledger: &std::sync::Arc<Ledger>| -> Vec<thread::JoinHandle<()>> {
        ["A", "B"]
            .into_iter()
            .map(|sku| {
                let ledger = ledger.clone();
                let room_id = room_id.clone();
                thread::spawn(move || {
                    for forecast in 1..=300 {
                        ledger
                            .set_forecast(at(1), &room_id, &sku_id(sku), forecast)
                            .expect("set_forecast");
                    }
                })
            })
            .collect()
    };
    let editors = edit_both(&ledger);
    ledger
        .put_room(at(1), room(&["A", "B", "C"]))
        .expect("put_room");
    for editor in editors {
        editor.join().expect("editor");
    }
    let spec = ledger.rooms_get(&room_id).expect("room");
    assert!(
        spec.listing(&sku_id("C")).is_some(),
        "the added listing stays"
    );
    assert!(ledger.listing(&room_id, &sku_id("C")).is_some());

    for editor in edit_both(&ledger) {
        editor.join().expect("editor");
    }
    let spec = ledger.rooms_get(&room_id).expect("room");
    let forecast = |sku: &str| spec.listing(&sku_id(sku)).map(|listing| listing.forecast);
    assert_eq!(forecast("A"), Some(300));
    assert_eq!(forecast("B"), Some(300));
    assert_eq!(forecast("C"), Some(1));
}

// Concurrency.

/// Runs `work`, aborting the whole test binary if it has not finished within `limit`: a
/// deadlock fails loudly instead of hanging the run.
fn with_watchdog<T>(limit: Duration, work: impl FnOnce() -> T) -> T {
    let (done_sender, done_receiver) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = done_receiver.recv_timeout(limit) {
            eprintln!("No progress after {limit:?}: the ledger is deadlocked.");
            std::process::abort();
        }
    });
    let result = work();
    done_sender.send(()).expect("the watchdog waits");
    watchdog.join().expect("the watchdog ends");
    result
}

/// A small deterministic generator: each thread's choices repeat from run to run, while the
/// interleaving does not.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

const STRESS_THREADS_COUNT: usize = 8;
const STRESS_ORDERS_PER_THREAD: usize = 600;
const STRESS_WATCHDOG: Duration = Duration::from_secs(120);

/// An order one stress thread placed, and the status it left the order in (`None` when the
/// reservation was refused for want of stock).
struct Placed {
    order_id: OrderId,
    platform: Platform,
    lines: Lines,
    status: Option<OrderStatus>,
}

/// Places one order and takes it on a random path: confirm, confirm then refund, cancel, or
/// leave it locked. Sometimes retries the reservation. Returns what it did.
fn place_and_follow(
    ledger: &Ledger,
    random: &mut XorShift,
    now: Timestamp,
    request: OrderRequest,
) -> Placed {
    let order_id = request.order_id.clone();
    let platform = request.platform.clone();
    let lines = request.lines.clone();
    let placed = |status| Placed {
        order_id: order_id.clone(),
        platform: platform.clone(),
        lines: lines.clone(),
        status,
    };
    match ledger.reserve(now, request.clone()) {
        Ok(answer) => assert!(!answer.replayed),
        Err(LedgerError::InsufficientStock { .. }) => return placed(None),
        Err(error) => panic!("reserve {order_id}: {error}"),
    }
    if random.below(8) == 0 {
        let answer = ledger.reserve(now, request).expect("a retried reserve");
        assert!(answer.replayed && answer.fact.is_none());
    }
    let status = match random.below(8) {
        0..=2 => {
            ledger.confirm(now, &order_id).expect("confirm");
            OrderStatus::Sold
        }
        3 | 4 => {
            ledger.confirm(now, &order_id).expect("confirm");
            ledger.refund(now, &order_id).expect("refund");
            OrderStatus::Refunded
        }
        5 | 6 => {
            ledger.cancel(now, &order_id).expect("cancel");
            OrderStatus::Cancelled
        }
        _ => OrderStatus::Locked,
    };
    placed(Some(status))
}

/// Checks the ledger against every order the stress threads placed: each order's status,
/// and each SKU's (and platform's) locked and sold against the units of the orders in those
/// statuses. Returns the number of orders per status.
fn check_stress_outcome(ledger: &Ledger, placed: &[Placed]) -> HashMap<Option<OrderStatus>, u64> {
    let mut status_counts: HashMap<Option<OrderStatus>, u64> = HashMap::new();
    // `(sku, platform)` → `(locked, sold)`.
    let mut held: HashMap<(SkuId, Platform), (u64, u64)> = HashMap::new();
    for order in placed {
        assert_eq!(
            ledger.order(&order.order_id).map(|view| view.status),
            order.status,
            "order {}",
            order.order_id
        );
        *status_counts.entry(order.status).or_default() += 1;
        for line in &order.lines {
            let entry = held
                .entry((line.sku.clone(), order.platform.clone()))
                .or_default();
            match order.status {
                Some(OrderStatus::Locked) => entry.0 += line.qty.get(),
                Some(OrderStatus::Sold) => entry.1 += line.qty.get(),
                _ => {}
            }
        }
    }
    for view in ledger.skus() {
        let mut locked = 0;
        let mut sold = 0;
        for count in &view.platforms {
            let expected = held
                .get(&(view.stock.sku.clone(), count.platform.clone()))
                .copied()
                .unwrap_or_default();
            assert_eq!((count.locked, count.sold), expected, "{count:?}");
            locked += expected.0;
            sold += expected.1;
        }
        assert_eq!(
            (view.stock.locked, view.stock.sold),
            (locked, sold),
            "{view:?}"
        );
    }
    assert_stock_identity(ledger);
    status_counts
}

#[test]
fn eight_threads_on_one_hot_sku_never_oversell() {
    // Goal: under contention on one SKU no unit is taken twice and every unit is accounted
    // for. Method: 8 threads place their own orders of 1 to 3 units on a SKU of 1,000 and
    // confirm, refund, cancel, retry or leave each, until well past selling out, checking the
    // SKU's identity as they go; then every order's status is read back and the units of
    // locked and sold orders are compared with the SKU's and each platform's locked and sold.
    let ledger = ledger_with_skus(&[("HOT", 1000)]);
    let hot = sku_id("HOT");
    let placed: Vec<Placed> = with_watchdog(STRESS_WATCHDOG, || {
        thread::scope(|scope| {
            let workers: Vec<_> = (0..STRESS_THREADS_COUNT)
                .map(|thread_index| {
                    let (ledger, hot) = (&ledger, &hot);
                    scope.spawn(move || {
                        let mut random = XorShift::new(thread_index as u64 + 1);
                        let platform_name = MODEL_PLATFORMS[thread_index % 2];
                        let mut placed = Vec::new();
                        for order_index in 0..STRESS_ORDERS_PER_THREAD {
                            let qty = 1 + random.below(3) as i64;
                            let order = format!("t{thread_index}-{order_index}");
                            let request = request(&order, platform_name, &[("HOT", qty)]);
                            let now = at(order_index as u64);
                            placed.push(place_and_follow(ledger, &mut random, now, request));
                            let stock = ledger.sku(hot).expect("the sku exists").stock;
                            assert!(stock.locked + stock.sold <= 1000, "{stock:?}");
                            assert_eq!(
                                stock.available,
                                stock.total - stock.locked - stock.sold,
                                "{stock:?}"
                            );
                        }
                        placed
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("a worker thread"))
                .collect()
        })
    });

    let status_counts = check_stress_outcome(&ledger, &placed);
    let stock = stock(&ledger, "HOT");
    assert!(stock.locked + stock.sold <= 1000, "{stock:?}");
    // The SKU sold out: later orders found no stock.
    assert!(status_counts.contains_key(&None), "{status_counts:?}");
    assert!(status_counts.contains_key(&Some(OrderStatus::Sold)));
}

#[test]
fn eight_threads_of_multi_line_orders_never_deadlock_or_split() {
    // Goal: multi-line orders taking the same SKUs in different line orders neither deadlock
    // (stripes are taken in index order whatever the line order) nor leave an order half
    // taken. Method: 8 threads, each with its own permutation of 3 SKUs of different sizes,
    // place 3-line orders under a watchdog until the smallest SKU runs out; then check every
    // order's status and that each SKU's locked and sold are exactly the units of the locked
    // and sold orders, which fails if any refused order left a line behind.
    const PERMUTATIONS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let skus = ["M1", "M2", "M3"];
    let ledger = ledger_with_skus(&[("M1", 900), ("M2", 500), ("M3", 1200)]);
    let placed: Vec<Placed> = with_watchdog(STRESS_WATCHDOG, || {
        thread::scope(|scope| {
            let workers: Vec<_> = (0..STRESS_THREADS_COUNT)
                .map(|thread_index| {
                    let ledger = &ledger;
                    scope.spawn(move || {
                        let mut random = XorShift::new(100 + thread_index as u64);
                        let platform_name = MODEL_PLATFORMS[thread_index % 3];
                        let permutation = PERMUTATIONS[thread_index % PERMUTATIONS.len()];
                        let mut placed = Vec::new();
                        for order_index in 0..STRESS_ORDERS_PER_THREAD {
                            let items: Vec<(&str, i64)> = permutation
                                .iter()
                                .map(|sku| (skus[*sku], 1 + random.below(3) as i64))
                                .collect();
                            let order = format!("m{thread_index}-{order_index}");
                            let request = request(&order, platform_name, &items);
                            let now = at(order_index as u64);
                            placed.push(place_and_follow(ledger, &mut random, now, request));
                        }
                        placed
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("a worker thread"))
                .collect()
        })
    });

    let status_counts = check_stress_outcome(&ledger, &placed);
    // M2 ran out, so orders were refused while M1 and M3 still had units to give.
    assert!(status_counts.contains_key(&None), "{status_counts:?}");
    assert!(0 < stock(&ledger, "M1").available);
    assert!(0 < stock(&ledger, "M3").available);
}
