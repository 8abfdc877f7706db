//! The property test: random operation sequences on the ledger and on a `HashMap` model,
//! compared after every step, then their facts replayed into a fresh ledger.

use super::*;

// Model test: random operation sequences against a `HashMap` model.

/// SKU ids by index; `D` does not exist until a `put_sku` creates it.
const MODEL_SKUS: [&str; 4] = ["A", "B", "C", "D"];
/// Platform ids by index, in the ledger's sort order.
pub(super) const MODEL_PLATFORMS: [&str; 3] = ["douyin", "kuaishou", "taobao"];
/// Few order ids, so that retries, conflicts and reuse after forgetting happen often.
const MODEL_ORDERS_COUNT: usize = 6;
const MODEL_ROOM: &str = "room-1";
/// Shorter than the default TTL, so that `forget_finished` acts within a sequence.
const MODEL_IDEMPOTENCY_WINDOW_MS: u64 = 10 * MINUTE_MS;

/// Longer than the idempotency window, as a refund window is.
const MODEL_REFUND_WINDOW_MS: u64 = 30 * MINUTE_MS;

fn model_config() -> LedgerConfig {
    LedgerConfig {
        lock_ttl: Duration::from_millis(DEFAULT_LOCK_TTL_MS),
        idempotency_window: Duration::from_millis(MODEL_IDEMPOTENCY_WINDOW_MS),
        refund_window: Duration::from_millis(MODEL_REFUND_WINDOW_MS),
    }
}

fn model_sku_id(sku: usize) -> SkuId {
    sku_id(MODEL_SKUS[sku])
}

fn model_platform(index: usize) -> Platform {
    platform(MODEL_PLATFORMS[index])
}

fn model_order_id(order: usize) -> OrderId {
    order_id(&format!("order-{order}"))
}

fn model_room(room: bool) -> Option<RoomId> {
    room.then(|| RoomId::new(MODEL_ROOM).expect("a valid room"))
}

#[derive(Clone, Debug)]
enum Operation {
    PutSku {
        sku: usize,
        total: Option<u64>,
        reserved: Option<u64>,
        lock_ttl_ms: Option<Option<u64>>,
        quotas: Option<Vec<(usize, u64)>>,
    },
    Restock {
        sku: usize,
        qty: u64,
    },
    Halt {
        sku: usize,
    },
    Resume {
        sku: usize,
    },
    /// `content` is `None` for the order's canonical content, so that retries are frequent.
    Reserve {
        order: usize,
        content: Option<OrderContent>,
    },
    Sell {
        order: usize,
        content: Option<OrderContent>,
    },
    Confirm {
        order: usize,
    },
    Cancel {
        order: usize,
    },
    Refund {
        order: usize,
    },
    Advance {
        duration_ms: u64,
    },
    ExpireDue,
    ForgetFinished,
    /// Puts the model's room with these SKUs listed (dropping the others).
    PutRoom {
        skus: Vec<usize>,
    },
}

/// What an order asks for, apart from its id.
#[derive(Clone, Debug)]
struct OrderContent {
    platform: usize,
    room: bool,
    lines: Vec<(usize, u32)>,
}

/// Keeps the first line of each SKU: an order names a SKU once.
fn unique_lines(mut lines: Vec<(usize, u32)>) -> Vec<(usize, u32)> {
    let mut seen = [false; MODEL_SKUS.len()];
    lines.retain(|(sku, _)| !std::mem::replace(&mut seen[*sku], true));
    lines
}

fn content_strategy() -> impl Strategy<Value = OrderContent> {
    // `D` is rarer on lines: it does not exist until some `put_sku` creates it.
    let sku = prop_oneof![9 => 0..MODEL_SKUS.len() - 1, 1 => Just(MODEL_SKUS.len() - 1)];
    (
        0..MODEL_PLATFORMS.len(),
        prop::bool::weighted(0.2),
        prop::collection::vec((sku, 1..=4u32), 1..=3),
    )
        .prop_map(|(platform, room, lines)| OrderContent {
            platform,
            room,
            lines: unique_lines(lines),
        })
}

fn operation_strategy() -> impl Strategy<Value = Operation> {
    let sku = || 0..MODEL_SKUS.len();
    let order = || 0..MODEL_ORDERS_COUNT;
    let platform = || 0..MODEL_PLATFORMS.len();
    let lock_ttl_ms = prop_oneof![
        3 => Just(None),
        1 => Just(Some(None)),
        1 => Just(Some(Some(0))),
        1 => Just(Some(Some(MINUTE_MS))),
        1 => Just(Some(Some(3 * MINUTE_MS))),
    ];
    let quotas = prop::option::weighted(0.3, prop::collection::vec((platform(), 0..=10u64), 0..=3));
    let put_sku = (
        sku(),
        prop::option::of(0..=24u64),
        prop::option::of(0..=6u64),
        lock_ttl_ms,
        quotas,
    )
        .prop_map(
            |(sku, total, reserved, lock_ttl_ms, quotas)| Operation::PutSku {
                sku,
                total,
                reserved,
                lock_ttl_ms,
                quotas,
            },
        );
    let restock_qty = prop_oneof![9 => 0..=8u64, 1 => Just(STOCK_QTY_MAX)];
    // Whole minutes and the exact window, so that deadlines are met to the millisecond.
    let duration_ms = prop_oneof![
        4 => 0..=4 * MINUTE_MS,
        2 => Just(MINUTE_MS),
        1 => Just(MODEL_IDEMPOTENCY_WINDOW_MS),
        1 => Just(16 * MINUTE_MS),
    ];
    prop_oneof![
        2 => put_sku,
        1 => (sku(), restock_qty).prop_map(|(sku, qty)| Operation::Restock { sku, qty }),
        1 => sku().prop_map(|sku| Operation::Halt { sku }),
        2 => sku().prop_map(|sku| Operation::Resume { sku }),
        6 => (order(), prop::option::weighted(0.25, content_strategy()))
            .prop_map(|(order, content)| Operation::Reserve { order, content }),
        2 => (order(), prop::option::weighted(0.25, content_strategy()))
            .prop_map(|(order, content)| Operation::Sell { order, content }),
        4 => order().prop_map(|order| Operation::Confirm { order }),
        2 => order().prop_map(|order| Operation::Cancel { order }),
        2 => order().prop_map(|order| Operation::Refund { order }),
        3 => duration_ms.prop_map(|duration_ms| Operation::Advance { duration_ms }),
        2 => Just(Operation::ExpireDue),
        1 => Just(Operation::ForgetFinished),
        1 => prop::collection::vec(sku(), 0..=3).prop_map(|mut skus| {
            skus.sort_unstable();
            skus.dedup();
            Operation::PutRoom { skus }
        }),
    ]
}

/// The SKUs every sequence starts with: one plain, one with reserved units and a quota, one
/// with its own TTL and a quota. `D` is left to be created by the sequence.
fn model_setup() -> Vec<Operation> {
    vec![
        Operation::PutSku {
            sku: 0,
            total: Some(12),
            reserved: None,
            lock_ttl_ms: None,
            quotas: None,
        },
        Operation::PutSku {
            sku: 1,
            total: Some(8),
            reserved: Some(1),
            lock_ttl_ms: None,
            quotas: Some(vec![(0, 5)]),
        },
        Operation::PutSku {
            sku: 2,
            total: Some(5),
            reserved: None,
            lock_ttl_ms: Some(Some(MINUTE_MS)),
            quotas: Some(vec![(1, 3)]),
        },
    ]
}

#[derive(Clone, Debug, Default)]
struct ModelSku {
    total: u64,
    reserved: u64,
    locked: u64,
    sold: u64,
    halted: bool,
    lock_ttl_ms: Option<u64>,
    /// Sorted by platform, the smallest quota kept when one is given twice.
    quotas: Vec<(usize, u64)>,
    /// `(locked, sold)` per platform, for every platform that ever took this SKU.
    tallies: BTreeMap<usize, (u64, u64)>,
    version: u64,
    updated_at: u64,
}

impl ModelSku {
    fn available(&self) -> u64 {
        self.total - self.reserved - self.locked - self.sold
    }

    fn quota(&self, platform: usize) -> Option<u64> {
        self.quotas
            .iter()
            .find(|(quota_platform, _)| *quota_platform == platform)
            .map(|(_, quota)| *quota)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelMovement {
    Lock,
    Unlock,
    LockToSold,
    Sell,
    Refund,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelAction {
    Confirm,
    Cancel,
    Refund,
}

#[derive(Clone, Debug)]
struct ModelOrder {
    platform: usize,
    room: bool,
    lines: Vec<(usize, u32)>,
    status: OrderStatus,
    /// Created by `sell` rather than `reserve`: a retried creation answers `sold`.
    sold_at_creation: bool,
    created_at: u64,
    expires_at: u64,
    updated_at: u64,
    /// Per line, the generation of the room listing that counted the order when it last
    /// took its units, if the room listed that SKU then.
    counted: Vec<Option<u64>>,
}

/// What the model expects an order operation to answer; `fact` is [`fact_label`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expected {
    status: OrderStatus,
    fact: Option<&'static str>,
    replayed: bool,
}

/// A fact's kind, with retaken confirmations told apart.
fn fact_label(fact: &Fact) -> &'static str {
    match fact {
        Fact::OrderConfirmed { retaken: true, .. } => "order_retaken",
        fact => fact.kind(),
    }
}

/// The ledger as a few maps and the rules of DESIGN, written as plainly as possible.
#[derive(Default)]
struct Model {
    skus: HashMap<usize, ModelSku>,
    orders: HashMap<usize, ModelOrder>,
    /// Milliseconds after `START_MS`.
    now: u64,
    /// The room's listings, SKU to the generation of its tally; `None` before the room.
    room: Option<BTreeMap<usize, u64>>,
    /// Numbers each listing as it is (re)created.
    generations_count: u64,
    /// Units of sold orders forgotten since, by (SKU, generation of the listing counting them).
    forgotten_sales: BTreeMap<(usize, u64), u64>,
}

impl Model {
    fn put_sku(
        &mut self,
        sku: usize,
        total: Option<u64>,
        reserved: Option<u64>,
        lock_ttl_ms: Option<Option<u64>>,
        quotas: Option<&[(usize, u64)]>,
    ) -> Result<(), &'static str> {
        let mut next = self.skus.get(&sku).cloned().unwrap_or_default();
        next.total = total.unwrap_or(next.total);
        next.reserved = reserved.unwrap_or(next.reserved);
        if next.total < next.reserved + next.locked + next.sold {
            return Err("invalid_stock");
        }
        next.lock_ttl_ms = lock_ttl_ms.unwrap_or(next.lock_ttl_ms);
        if let Some(quotas) = quotas {
            let mut quotas = quotas.to_vec();
            quotas.sort_unstable();
            quotas.dedup_by_key(|(platform, _)| *platform);
            next.quotas = quotas;
        }
        next.version += 1;
        next.updated_at = self.now;
        self.skus.insert(sku, next);
        Ok(())
    }

    fn restock(&mut self, sku: usize, qty: u64) -> Result<(), &'static str> {
        let now = self.now;
        let entry = self.skus.get_mut(&sku).ok_or("sku_not_found")?;
        if STOCK_QTY_MAX < entry.total + qty {
            return Err("invalid_stock");
        }
        entry.total += qty;
        entry.version += 1;
        entry.updated_at = now;
        Ok(())
    }

    fn set_halted(&mut self, sku: usize, halted: bool) -> Result<(), &'static str> {
        let now = self.now;
        let entry = self.skus.get_mut(&sku).ok_or("sku_not_found")?;
        entry.halted = halted;
        entry.version += 1;
        entry.updated_at = now;
        Ok(())
    }

    /// The refusal of the first line that cannot be taken, checked line by line in the
    /// order's line order: unknown SKU, halted, too few available, over quota.
    fn check_take(&self, platform: usize, lines: &[(usize, u32)]) -> Result<(), &'static str> {
        for (sku, qty) in lines {
            let qty = u64::from(*qty);
            let entry = self.skus.get(sku).ok_or("sku_not_found")?;
            if entry.halted {
                return Err("halted");
            }
            if entry.available() < qty {
                return Err("insufficient_stock");
            }
            if let Some(quota) = entry.quota(platform) {
                let (locked, sold) = entry.tallies.get(&platform).copied().unwrap_or_default();
                if quota < locked + sold + qty {
                    return Err("platform_quota_exceeded");
                }
            }
        }
        Ok(())
    }

    fn move_lines(&mut self, platform: usize, lines: &[(usize, u32)], movement: ModelMovement) {
        for (sku, qty) in lines {
            let qty = u64::from(*qty);
            let entry = self.skus.get_mut(sku).expect("checked before moving");
            let tally = entry.tallies.entry(platform).or_default();
            match movement {
                ModelMovement::Lock => {
                    entry.locked += qty;
                    tally.0 += qty;
                }
                ModelMovement::Unlock => {
                    entry.locked -= qty;
                    tally.0 -= qty;
                }
                ModelMovement::LockToSold => {
                    entry.locked -= qty;
                    tally.0 -= qty;
                    entry.sold += qty;
                    tally.1 += qty;
                }
                ModelMovement::Sell => {
                    entry.sold += qty;
                    tally.1 += qty;
                }
                ModelMovement::Refund => {
                    entry.sold -= qty;
                    tally.1 -= qty;
                }
            }
            entry.version += 1;
            entry.updated_at = self.now;
        }
    }

    fn same_content(order: &ModelOrder, content: &OrderContent) -> bool {
        let sorted = |lines: &[(usize, u32)]| {
            let mut lines = lines.to_vec();
            lines.sort_unstable();
            lines
        };
        order.platform == content.platform
            && order.room == content.room
            && sorted(&order.lines) == sorted(&content.lines)
    }

    /// Which listing generation counts each line of an order naming the room (or not) that
    /// takes its units now.
    fn counting(&self, room: bool, lines: &[(usize, u32)]) -> Vec<Option<u64>> {
        lines
            .iter()
            .map(|(sku, _)| {
                let listings = self.room.as_ref().filter(|_| room)?;
                listings.get(sku).copied()
            })
            .collect()
    }

    /// Lists `skus` in the room: a SKU listed already keeps its tally, a new one gets a new
    /// generation.
    fn put_room(&mut self, skus: &[usize]) -> Result<(), &'static str> {
        if skus.iter().any(|sku| !self.skus.contains_key(sku)) {
            return Err("sku_not_found");
        }
        let previous = self.room.take().unwrap_or_default();
        let mut listings = BTreeMap::new();
        for sku in skus {
            let generation = match previous.get(sku) {
                Some(generation) => *generation,
                None => {
                    self.generations_count += 1;
                    self.generations_count
                }
            };
            listings.insert(*sku, generation);
        }
        self.room = Some(listings);
        Ok(())
    }

    /// What the room's listing of `sku` consumed: the units of live orders it counted, and
    /// of the sales it counted that were forgotten since.
    fn consumed(&self, sku: usize) -> Option<u64> {
        let generation = *self.room.as_ref()?.get(&sku)?;
        let live = |order: &&ModelOrder| {
            order.room && matches!(order.status, OrderStatus::Locked | OrderStatus::Sold)
        };
        let forgotten = self.forgotten_sales.get(&(sku, generation)).copied();
        let live_units: u64 = self
            .orders
            .values()
            .filter(live)
            .flat_map(|order| order.lines.iter().zip(&order.counted))
            .filter(|((line_sku, _), counted)| *line_sku == sku && **counted == Some(generation))
            .map(|((_, qty), _)| u64::from(*qty))
            .sum();
        Some(live_units + forgotten.unwrap_or(0))
    }

    fn reserve(&mut self, order: usize, content: &OrderContent) -> Result<Expected, &'static str> {
        let (platform, room, lines) = (content.platform, content.room, content.lines.as_slice());
        if let Some(existing) = self.orders.get(&order) {
            if !Self::same_content(existing, content) {
                return Err("order_conflict");
            }
            let status = if existing.sold_at_creation {
                OrderStatus::Sold
            } else {
                OrderStatus::Locked
            };
            return Ok(Expected {
                status,
                fact: None,
                replayed: true,
            });
        }
        self.check_take(platform, lines)?;
        let lock_ttl_ms = lines
            .iter()
            .filter_map(|(sku, _)| self.skus[sku].lock_ttl_ms)
            .min()
            .unwrap_or(DEFAULT_LOCK_TTL_MS);
        self.move_lines(platform, lines, ModelMovement::Lock);
        self.orders.insert(
            order,
            ModelOrder {
                platform,
                room,
                lines: lines.to_vec(),
                status: OrderStatus::Locked,
                sold_at_creation: false,
                created_at: self.now,
                expires_at: self.now + lock_ttl_ms,
                updated_at: self.now,
                counted: self.counting(room, lines),
            },
        );
        Ok(Expected {
            status: OrderStatus::Locked,
            fact: Some("order_reserved"),
            replayed: false,
        })
    }

    fn sell(&mut self, order: usize, content: &OrderContent) -> Result<Expected, &'static str> {
        let (platform, room, lines) = (content.platform, content.room, content.lines.as_slice());
        if let Some(existing) = self.orders.get(&order) {
            if !Self::same_content(existing, content) {
                return Err("order_conflict");
            }
            if existing.sold_at_creation {
                return Ok(Expected {
                    status: OrderStatus::Sold,
                    fact: None,
                    replayed: true,
                });
            }
            return self.transition(order, ModelAction::Confirm);
        }
        self.check_take(platform, lines)?;
        self.move_lines(platform, lines, ModelMovement::Sell);
        self.orders.insert(
            order,
            ModelOrder {
                platform,
                room,
                lines: lines.to_vec(),
                status: OrderStatus::Sold,
                sold_at_creation: true,
                created_at: self.now,
                expires_at: self.now,
                updated_at: self.now,
                counted: self.counting(room, lines),
            },
        );
        Ok(Expected {
            status: OrderStatus::Sold,
            fact: Some("order_sold"),
            replayed: false,
        })
    }

    fn transition(&mut self, order: usize, action: ModelAction) -> Result<Expected, &'static str> {
        use OrderStatus::{Cancelled, Expired, Locked, Refunded, Sold};
        let mut existing = self.orders.get(&order).ok_or("order_not_found")?.clone();
        let due = existing.status == Locked && existing.expires_at <= self.now;
        if due && matches!(action, ModelAction::Confirm | ModelAction::Cancel) {
            // A lock past its expiry expires before the action, sweeper or not.
            self.move_lines(existing.platform, &existing.lines, ModelMovement::Unlock);
            let entry = self.orders.get_mut(&order).expect("looked up above");
            entry.status = Expired;
            entry.updated_at = self.now;
            existing = entry.clone();
        }
        let replayed = |status| {
            Ok(Expected {
                status,
                fact: None,
                replayed: true,
            })
        };
        let (movement, status, fact) = match (action, existing.status) {
            (ModelAction::Confirm, Locked) => (ModelMovement::LockToSold, Sold, "order_confirmed"),
            (ModelAction::Confirm, Expired) => {
                self.check_take(existing.platform, &existing.lines)
                    .map_err(|_| "lock_expired")?;
                (ModelMovement::Sell, Sold, "order_retaken")
            }
            (ModelAction::Cancel, Locked) => (ModelMovement::Unlock, Cancelled, "order_cancelled"),
            (ModelAction::Refund, Sold) => (ModelMovement::Refund, Refunded, "order_refunded"),
            (ModelAction::Confirm, Sold | Refunded) => return replayed(Sold),
            (ModelAction::Cancel, Cancelled) | (ModelAction::Refund, Refunded) => {
                return replayed(existing.status);
            }
            (ModelAction::Cancel, Expired) => {
                return Ok(Expected {
                    status: Expired,
                    fact: None,
                    replayed: false,
                });
            }
            _ => return Err("invalid_transition"),
        };
        self.move_lines(existing.platform, &existing.lines, movement);
        let counted = self.counting(existing.room, &existing.lines);
        let entry = self.orders.get_mut(&order).expect("looked up above");
        if movement == ModelMovement::Sell {
            // A payment after expiry takes the units again: today's listing counts them.
            entry.counted = counted;
        }
        entry.status = status;
        entry.updated_at = self.now;
        Ok(Expected {
            status,
            fact: Some(fact),
            replayed: false,
        })
    }

    /// Expires every due lock; returns the orders, sorted.
    fn expire_due(&mut self) -> Vec<usize> {
        let mut due: Vec<usize> = self
            .orders
            .iter()
            .filter(|(_, order)| {
                order.status == OrderStatus::Locked && order.expires_at <= self.now
            })
            .map(|(order, _)| *order)
            .collect();
        due.sort_unstable();
        for order in &due {
            let existing = self.orders[order].clone();
            self.move_lines(existing.platform, &existing.lines, ModelMovement::Unlock);
            let entry = self.orders.get_mut(order).expect("listed above");
            entry.status = OrderStatus::Expired;
            entry.updated_at = self.now;
        }
        due
    }

    fn forget_finished(&mut self) -> u64 {
        let before = self.orders.len();
        let now = self.now;
        let forgotten_sales = &mut self.forgotten_sales;
        self.orders.retain(|_, order| {
            let window_ms = match order.status {
                OrderStatus::Locked => return true,
                OrderStatus::Sold => MODEL_REFUND_WINDOW_MS,
                _ => MODEL_IDEMPOTENCY_WINDOW_MS,
            };
            let kept = now < order.updated_at + window_ms;
            if !kept && order.status == OrderStatus::Sold && order.room {
                // A sale stays in the show's consumption after the ledger forgets the order.
                for ((sku, qty), counted) in order.lines.iter().zip(&order.counted) {
                    if let Some(generation) = counted {
                        *forgotten_sales.entry((*sku, *generation)).or_default() += u64::from(*qty);
                    }
                }
            }
            kept
        });
        (before - self.orders.len()) as u64
    }

    fn sku_view(&self, sku: usize) -> Option<SkuView> {
        let entry = self.skus.get(&sku)?;
        let platforms = (0..MODEL_PLATFORMS.len())
            .filter_map(|platform| {
                let quota = entry.quota(platform);
                let (locked, sold) = match entry.tallies.get(&platform) {
                    Some(tally) => *tally,
                    None if quota.is_some() => (0, 0),
                    None => return None,
                };
                Some(PlatformCount {
                    platform: model_platform(platform),
                    locked,
                    sold,
                    quota,
                    listing: None,
                })
            })
            .collect();
        Some(SkuView {
            stock: Stock {
                sku: model_sku_id(sku),
                total: entry.total,
                reserved: entry.reserved,
                locked: entry.locked,
                sold: entry.sold,
                available: entry.available(),
                halted: entry.halted,
                version: entry.version,
            },
            settings: SkuSettings {
                name: String::new(),
                lock_ttl_ms: entry.lock_ttl_ms,
                quotas: entry
                    .quotas
                    .iter()
                    .map(|(platform, quota)| (model_platform(*platform), *quota))
                    .collect(),
                listings: Vec::new(),
                allocation: crate::ledger::Allocation::default(),
            },
            platforms,
            updated_at: at(entry.updated_at),
        })
    }

    fn order_view(&self, order: usize) -> Option<OrderView> {
        let entry = self.orders.get(&order)?;
        Some(OrderView {
            order: std::sync::Arc::new(OrderRequest {
                order_id: model_order_id(order),
                platform: model_platform(entry.platform),
                room: model_room(entry.room),
                lines: model_lines(&entry.lines),
            }),
            status: entry.status,
            created_at: at(entry.created_at),
            expires_at: at(entry.expires_at),
            updated_at: at(entry.updated_at),
        })
    }
}

fn model_lines(lines: &[(usize, u32)]) -> Lines {
    Lines::new(lines.iter().map(|(sku, qty)| Line {
        sku: model_sku_id(*sku),
        qty: Qty::new(i64::from(*qty)).expect("a valid quantity"),
    }))
    .expect("unique lines")
}

fn model_request(order: usize, content: &OrderContent) -> OrderRequest {
    OrderRequest {
        order_id: model_order_id(order),
        platform: model_platform(content.platform),
        room: model_room(content.room),
        lines: model_lines(&content.lines),
    }
}

/// Checks a SKU operation's result against the model's.
fn check_sku_operation(
    ledger: &Ledger,
    actual: Result<Fact, LedgerError>,
    expected: Result<(), &'static str>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        actual.as_ref().map(|_| ()).map_err(LedgerError::code),
        expected
    );
    if let Ok(fact) = actual {
        for stock in fact.stocks() {
            let current = ledger.sku(&stock.sku).map(|view| view.stock);
            prop_assert_eq!(Some(stock), current.as_ref());
        }
    }
    Ok(())
}

/// Checks an order operation's answer against the model's, and logs its fact.
fn check_order_operation(
    ledger: &Ledger,
    order: usize,
    actual: Result<Answer, LedgerError>,
    expected: Result<Expected, &'static str>,
) -> Result<(), TestCaseError> {
    let summary = actual
        .as_ref()
        .map(|answer| Expected {
            status: answer.order.status,
            fact: answer.fact.as_ref().map(fact_label),
            replayed: answer.replayed,
        })
        .map_err(LedgerError::code);
    prop_assert_eq!(summary, expected);
    let Ok(answer) = actual else {
        return Ok(());
    };
    if !answer.replayed {
        let current = ledger.order(&model_order_id(order));
        prop_assert_eq!(Some(&answer.order), current.as_ref());
    }
    if let Some(fact) = answer.fact {
        prop_assert_eq!(fact.order_id(), Some(&model_order_id(order)));
        for stock in fact.stocks() {
            let current = ledger.sku(&stock.sku).map(|view| view.stock);
            prop_assert_eq!(Some(stock), current.as_ref());
        }
    }
    Ok(())
}

/// Runs one operation on the ledger and on the model and compares what they answer.
fn run_operation(
    ledger: &Ledger,
    model: &mut Model,
    canonical: &[OrderContent],
    operation: &Operation,
) -> Result<(), TestCaseError> {
    let now = at(model.now);
    match operation {
        Operation::PutSku {
            sku,
            total,
            reserved,
            lock_ttl_ms,
            quotas,
        } => {
            let update = SkuUpdate {
                name: None,
                total: *total,
                reserved: *reserved,
                lock_ttl_ms: *lock_ttl_ms,
                quotas: quotas.as_ref().map(|quotas| {
                    quotas
                        .iter()
                        .map(|(platform, quota)| (model_platform(*platform), *quota))
                        .collect()
                }),
                ..SkuUpdate::default()
            };
            let actual = ledger.put_sku(now, &model_sku_id(*sku), update);
            let expected = model.put_sku(*sku, *total, *reserved, *lock_ttl_ms, quotas.as_deref());
            check_sku_operation(ledger, actual, expected)
        }
        Operation::Restock { sku, qty } => {
            let actual = ledger.restock(now, &model_sku_id(*sku), *qty);
            let expected = model.restock(*sku, *qty);
            check_sku_operation(ledger, actual, expected)
        }
        Operation::Halt { sku } => {
            let actual = ledger.halt(now, &model_sku_id(*sku));
            let expected = model.set_halted(*sku, true);
            check_sku_operation(ledger, actual, expected)
        }
        Operation::Resume { sku } => {
            let actual = ledger.resume(now, &model_sku_id(*sku));
            let expected = model.set_halted(*sku, false);
            check_sku_operation(ledger, actual, expected)
        }
        Operation::Reserve { order, content } => {
            let content = content.as_ref().unwrap_or(&canonical[*order]);
            let actual = ledger.reserve(now, model_request(*order, content));
            let expected = model.reserve(*order, content);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Sell { order, content } => {
            let content = content.as_ref().unwrap_or(&canonical[*order]);
            let actual = ledger.sell(now, model_request(*order, content));
            let expected = model.sell(*order, content);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Confirm { order } => {
            let actual = ledger.confirm(now, &model_order_id(*order));
            let expected = model.transition(*order, ModelAction::Confirm);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Cancel { order } => {
            let actual = ledger.cancel(now, &model_order_id(*order));
            let expected = model.transition(*order, ModelAction::Cancel);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Refund { order } => {
            let actual = ledger.refund(now, &model_order_id(*order));
            let expected = model.transition(*order, ModelAction::Refund);
            check_order_operation(ledger, *order, actual, expected)
        }
        Operation::Advance { duration_ms } => {
            model.now += duration_ms;
            Ok(())
        }
        Operation::ExpireDue => {
            let facts = ledger.expire_due(now);
            let mut expired: Vec<OrderId> = Vec::new();
            for fact in facts {
                prop_assert_eq!(fact.kind(), "order_expired");
                prop_assert_eq!(fact.at(), now);
                expired.extend(fact.order_id().cloned());
            }
            expired.sort();
            let mut expected: Vec<OrderId> =
                model.expire_due().into_iter().map(model_order_id).collect();
            expected.sort();
            prop_assert_eq!(expired, expected);
            Ok(())
        }
        Operation::PutRoom { skus } => {
            let room = Room {
                id: RoomId::new(MODEL_ROOM).expect("a valid room"),
                name: "model".to_owned(),
                starts_at: at(0),
                ends_at: at(24 * 60 * MINUTE_MS),
                listings: skus
                    .iter()
                    .map(|sku| Listing {
                        sku: model_sku_id(*sku),
                        forecast: 10,
                        plan: Vec::new(),
                        shape: crate::ledger::PlanShape::Given,
                        policy: Policy::default(),
                    })
                    .collect(),
            };
            let actual = ledger.put_room(now, room);
            let expected = model.put_room(skus);
            prop_assert_eq!(actual.map(drop).map_err(|error| error.code()), expected);
            Ok(())
        }
        Operation::ForgetFinished => {
            // Forgetting is a fact too (when it forgot any): the replay forgets where it did.
            let forgotten_count = ledger.forget_finished(now);
            prop_assert_eq!(forgotten_count, model.forget_finished());
            Ok(())
        }
    }
}

/// Checks every SKU and order of the ledger against the model, and the stock identity.
fn check_state(ledger: &Ledger, model: &Model) -> Result<(), TestCaseError> {
    for view in ledger.skus() {
        let stock = &view.stock;
        let committed = stock.reserved + stock.locked + stock.sold;
        prop_assert!(committed <= stock.total, "overcommitted: {:?}", stock);
        prop_assert_eq!(stock.available, stock.total - committed);
    }
    for sku in 0..MODEL_SKUS.len() {
        prop_assert_eq!(ledger.sku(&model_sku_id(sku)), model.sku_view(sku));
    }
    for order in 0..MODEL_ORDERS_COUNT {
        prop_assert_eq!(
            ledger.order(&model_order_id(order)),
            model.order_view(order)
        );
    }
    prop_assert_eq!(ledger.counts(), walked_counts(ledger));
    // Each listing consumed exactly the live units of the orders it counted.
    let room = RoomId::new(MODEL_ROOM).expect("a valid room");
    for (sku, name) in MODEL_SKUS.iter().enumerate() {
        let actual = ledger
            .listing(&room, &model_sku_id(sku))
            .map(|state| state.tally.consumed);
        prop_assert_eq!(actual, model.consumed(sku), "consumed of {}", name);
    }
    Ok(())
}

/// The ledger's counts found the slow way, by looking at every SKU and order.
fn walked_counts(ledger: &Ledger) -> LedgerCounts {
    let mut counts = LedgerCounts {
        skus: ledger.skus().len() as u64,
        ..LedgerCounts::default()
    };
    for stripe in ledger.orders.iter() {
        stripe.0.lock().for_each(|entry| {
            counts.orders += 1;
            if entry.status == OrderStatus::Locked {
                counts.orders_locked += 1;
            }
        });
    }
    counts
}

fn run_against_model(
    canonical: &[OrderContent],
    operations: &[Operation],
) -> Result<(), TestCaseError> {
    let ledger = Ledger::new(model_config());
    let recorder = std::sync::Arc::new(Recorder::default());
    ledger.attach(recorder.clone());
    let mut model = Model::default();
    let mut log = Vec::new();
    for operation in model_setup().iter().chain(operations) {
        run_operation(&ledger, &mut model, canonical, operation)?;
        // Every fact the ledger recorded, as the journal would get them.
        log.extend(recorder.facts.lock().drain(..));
        check_state(&ledger, &model)?;
    }

    let replayed = Ledger::new(model_config());
    for fact in &log {
        prop_assert_eq!(replayed.apply(fact), Ok(()), "{:?}", fact);
    }
    prop_assert_eq!(replayed.skus(), ledger.skus());
    for order in 0..MODEL_ORDERS_COUNT {
        let order_id = model_order_id(order);
        prop_assert_eq!(replayed.order(&order_id), ledger.order(&order_id));
    }
    prop_assert_eq!(replayed.counts(), ledger.counts());
    prop_assert_eq!(replayed.counts(), walked_counts(&replayed));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_operations_match_the_model_and_replay(
        canonical in prop::collection::vec(content_strategy(), MODEL_ORDERS_COUNT),
        operations in prop::collection::vec(operation_strategy(), 1..=60),
    ) {
        // Goal: every operation answers what DESIGN's rules say, the stock identity holds after
        // every step, and the facts rebuild the ledger. Method: run random sequences of every
        // operation over 4 SKUs (one created mid-sequence), 3 platforms (two capped on some
        // SKUs) and 6 order ids (each with a usual content, so that most repeats are retries
        // and some conflicts), on the ledger and on a `HashMap` model; compare each answer
        // (`Ok` or the error code), every SKU and every order after each step; finally apply
        // the logged facts (forgetting among them) to a fresh ledger and
        // compare it with the first.
        run_against_model(&canonical, &operations)?;
    }
}
