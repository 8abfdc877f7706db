//! `--demo`: a compressed live show, so the dashboards move with nothing else running.
//!
//! The server's clock runs 36 times faster (see `clock::ScaledClock`), so the three-hour show
//! of room `demo` passes in five minutes. Six listings follow a script: the host pitches a
//! product and its orders burst for a few minutes, then fade; most are paid (a few of those
//! refunded later), some cancelled, some left to expire; one product sells out and is
//! restocked; one sells far ahead of plan early (tightened thresholds), goes red and is halted
//! automatically, and the operator resumes it once its unpaid locks expired; one sells far
//! behind plan (the host is asked for more interaction). Every level is reached and left.
//! When the show ends it leaves its history, so `--demo` again on the same data directory
//! plans the next show from it, and its review is at `/report?room=demo`. Random choices come
//! from a seed that is logged, so a run can be repeated.
//!
//! Channels too: every product is listed on two stand-in platforms the demo serves itself
//! (`stand_in`), most buyers on Douyin; the two hot products split their pool exclusively
//! (Douyin 40 %, Kuaishou 40 %, the rest for Taobao), so the live rebalancer moves units to
//! Douyin as it sells ahead; the Kuaishou stand-in goes down for a quarter of an hour of the
//! show, and its listings wait and then catch up.

pub(crate) mod stand_in;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::ledger::{
    Ledger, Lines, Listing, OrderId, OrderRequest, Platform, Policy, Qty, RestockId, Room, RoomId,
    SkuId, SkuUpdate,
};

/// How much faster than real time the demo's clock runs: three hours in five minutes.
pub const DEMO_SPEEDUP: u32 = 36;
/// The room the demo runs.
pub(crate) const DEMO_ROOM: &str = "demo";
/// How often the simulation places orders, in show time: every 250 ms of real time.
const TICK: Duration = Duration::from_secs(9);
const SHOW: Duration = Duration::from_secs(3 * 3600);
const MINUTE_MS: u64 = 60_000;
const PLATFORMS: [&str; 3] = ["douyin", "kuaishou", "taobao"];
/// How buyers split between the platforms.
const PLATFORM_WEIGHTS: [f64; 3] = [0.6, 0.25, 0.15];
/// Minutes of the show during which the Kuaishou stand-in is down.
const STAND_IN_DOWN_MINUTES: std::ops::Range<u64> = 60..75;

/// A product's listings on the stand-in platforms, and how its pool is split: the hot ones
/// exclusively, the rest shared with a small buffer.
fn channel_settings(
    script: &Script,
) -> (
    Vec<(Platform, crate::ledger::ListingId)>,
    crate::ledger::Allocation,
) {
    let listings = stand_in::PLATFORMS
        .iter()
        .filter_map(|platform| {
            let code = if *platform == "douyin" { "DY" } else { "KS" };
            let id = format!("{}-{code}", script.sku);
            Some((
                Platform::new(platform).ok()?,
                crate::ledger::ListingId::new(&id).ok()?,
            ))
        })
        .collect();
    let allocation = if script.hot {
        let share = |name: &str, thousandths| Some((Platform::new(name).ok()?, thousandths));
        crate::ledger::Allocation::Exclusive(crate::ledger::Exclusive {
            shares: [share("douyin", 400), share("kuaishou", 400)]
                .into_iter()
                .flatten()
                .collect(),
            floor: 10,
            allotted: Vec::new(),
            rebalance_every_s: 600,
        })
    } else {
        crate::ledger::Allocation::Shared { buffer: 2 }
    };
    (listings, allocation)
}
/// Most orders waiting for their payment or cancellation at once.
const PENDING_MAX: usize = 20_000;

/// One product of the line-up and its script.
struct Script {
    sku: &'static str,
    name: &'static str,
    stock: u64,
    forecast: u64,
    /// Orders a tick between pitches.
    trickle: f64,
    /// Minutes into the show when the host pitches it, and the orders a tick at the peak.
    pitches: &'static [(u64, f64)],
    /// Shares of orders paid and cancelled; the rest are left to expire.
    paid: f64,
    cancelled: f64,
    auto_halt: bool,
    hot: bool,
}

const LINE_UP: [Script; 6] = [
    Script {
        sku: "LIP-01",
        name: "丝绒口红 Velvet lipstick #01",
        stock: 650,
        forecast: 500,
        trickle: 0.35,
        pitches: &[(5, 3.0), (70, 4.0), (125, 5.0), (160, 4.0)],
        paid: 0.85,
        cancelled: 0.1,
        auto_halt: false,
        hot: true,
    },
    Script {
        sku: "EYE-02",
        name: "四色眼影 Eyeshadow quad",
        stock: 600,
        forecast: 200,
        trickle: 0.1,
        pitches: &[(12, 9.0)],
        paid: 0.35,
        cancelled: 0.05,
        auto_halt: true,
        hot: false,
    },
    Script {
        sku: "MASK-03",
        name: "补水面膜 Hydrating mask ×10",
        stock: 1500,
        forecast: 800,
        trickle: 0.1,
        pitches: &[(140, 6.0)],
        paid: 0.8,
        cancelled: 0.1,
        auto_halt: false,
        hot: false,
    },
    Script {
        sku: "SERUM-04",
        name: "精华液 Repair serum 30 ml",
        stock: 140,
        forecast: 150,
        trickle: 0.1,
        pitches: &[(55, 5.0)],
        paid: 0.9,
        cancelled: 0.05,
        auto_halt: false,
        hot: true,
    },
    Script {
        sku: "TEA-05",
        name: "桂花乌龙 Osmanthus oolong 250 g",
        stock: 900,
        forecast: 300,
        trickle: 0.25,
        pitches: &[(90, 5.0), (150, 3.0)],
        paid: 0.75,
        cancelled: 0.1,
        auto_halt: false,
        hot: false,
    },
    Script {
        sku: "SCARF-06",
        name: "真丝围巾 Silk scarf",
        stock: 130,
        forecast: 100,
        trickle: 0.05,
        pitches: &[(105, 3.0), (170, 3.0)],
        paid: 0.85,
        cancelled: 0.1,
        auto_halt: false,
        hot: false,
    },
];

/// How long a pitch's burst lasts, in minutes: strongest at once, then fading.
const BURST_MINUTES: u64 = 6;
/// The restock of the product that sells out: minutes after its pitch, and how many.
const RESTOCK_AFTER_MINUTES: u64 = 25;
const RESTOCK_QTY: u64 = 200;
/// How long the operator takes to resume an auto-halted listing.
const RESUME_AFTER: Duration = Duration::from_secs(20 * 60);

enum Next {
    Pay,
    Cancel,
    Refund,
}

/// Share of paid orders refunded later in the show.
const REFUNDED_SHARE: f64 = 0.03;

/// The show in progress.
pub(crate) struct Demo {
    rng: fastrand::Rng,
    room: RoomId,
    skus: Vec<SkuId>,
    starts_at: Timestamp,
    pending: VecDeque<(Timestamp, OrderId, Next)>,
    serial: u64,
    restocked: bool,
    halted_since: Vec<Option<Timestamp>>,
}

impl Demo {
    /// Creates the line-up and the room, the show starting at `now`.
    pub(crate) fn setup(ledger: &Ledger, now: Timestamp, seed: u64) -> Option<Demo> {
        let mut skus = Vec::new();
        let mut listings = Vec::new();
        for script in &LINE_UP {
            let sku = SkuId::new(script.sku).ok()?;
            let (listings_named, allocation) = channel_settings(script);
            // On a data directory an earlier demo used, the SKU keeps what it sold and gets
            // its script's stock on top.
            let committed = ledger
                .sku(&sku)
                .map_or(0, |view| view.stock.total - view.stock.available);
            let update = SkuUpdate {
                name: Some(script.name.to_owned()),
                total: Some(committed + script.stock),
                listings: Some(listings_named),
                allocation: Some(allocation),
                ..SkuUpdate::default()
            };
            if let Err(error) = ledger.put_sku(now, &sku, update) {
                tracing::warn!(%sku, %error, "Demo SKU not created.");
                return None;
            }
            // Plans follow how each product sold in the earlier demos, when there were any.
            let history = ledger.shows(&sku).unwrap_or_default();
            let (plan, shape) = crate::ledger::history_plan(&history, 5, SHOW.as_millis() as u64);
            listings.push(Listing {
                sku: sku.clone(),
                forecast: script.forecast,
                plan,
                shape,
                policy: Policy {
                    auto_halt: script.auto_halt,
                    hot: script.hot,
                    ..Policy::default()
                },
            });
            skus.push(sku);
        }
        let room = RoomId::new(DEMO_ROOM).ok()?;
        let spec = Room {
            id: room.clone(),
            name: "晚八点美妆专场 Evening beauty show".to_owned(),
            starts_at: now,
            ends_at: now.saturating_add(SHOW),
            listings,
        };
        if let Err(error) = ledger.put_room(now, spec) {
            tracing::warn!(%error, "Demo room not created.");
            return None;
        }
        Some(Demo {
            rng: fastrand::Rng::with_seed(seed),
            room,
            halted_since: vec![None; skus.len()],
            skus,
            starts_at: now,
            pending: VecDeque::new(),
            serial: 0,
            restocked: false,
        })
    }

    /// Where a buyer buys: most on Douyin.
    fn platform(&mut self) -> &'static str {
        let draw = self.rng.f64();
        let mut sum = 0.0;
        for (platform, weight) in PLATFORMS.iter().zip(PLATFORM_WEIGHTS) {
            sum += weight;
            if draw < sum {
                return platform;
            }
        }
        PLATFORMS[0]
    }

    /// Whether the show is over.
    pub(crate) fn over(&self, now: Timestamp) -> bool {
        SHOW <= now.saturating_since(self.starts_at)
    }

    /// One tick of the show at `now`: new orders, payments and cancellations due, and what
    /// the operator does.
    pub(crate) fn step(&mut self, ledger: &Ledger, now: Timestamp) {
        let minute = now.saturating_since(self.starts_at).as_millis() as u64 / MINUTE_MS;
        for (index, script) in LINE_UP.iter().enumerate() {
            let burst = script
                .pitches
                .iter()
                .filter(|(at, _)| *at <= minute && minute < at + BURST_MINUTES)
                .map(|(at, peak)| peak * (1.0 - (minute - at) as f64 / BURST_MINUTES as f64))
                .fold(0.0, f64::max);
            let rate = script.trickle + burst;
            let mut orders = rate.floor() as u64;
            if self.rng.f64() < rate.fract() {
                orders += 1;
            }
            for _ in 0..orders {
                self.place(ledger, now, index);
            }
        }
        self.settle(ledger, now);
        self.operate(ledger, now, minute);
    }

    fn place(&mut self, ledger: &Ledger, now: Timestamp, index: usize) {
        let script = &LINE_UP[index];
        self.serial += 1;
        let (Ok(order_id), Ok(platform), Ok(qty)) = (
            OrderId::new(&format!("demo-{}-{}", now.as_millis(), self.serial)),
            Platform::new(self.platform()),
            Qty::new(self.rng.i64(1..=3)),
        ) else {
            return;
        };
        let request = OrderRequest {
            order_id: order_id.clone(),
            platform,
            room: Some(self.room.clone()),
            lines: Lines::one(self.skus[index].clone(), qty),
        };
        if ledger.reserve(now, request).is_err() || PENDING_MAX <= self.pending.len() {
            return;
        }
        let roll = self.rng.f64();
        let next = if roll < script.paid {
            Some(Next::Pay)
        } else if roll < script.paid + script.cancelled {
            Some(Next::Cancel)
        } else {
            None
        };
        if let Some(next) = next {
            let delay = Duration::from_secs(self.rng.u64(20..240));
            self.pending
                .push_back((now.saturating_add(delay), order_id, next));
        }
    }

    fn settle(&mut self, ledger: &Ledger, now: Timestamp) {
        let mut later = VecDeque::new();
        while let Some((at, order_id, next)) = self.pending.pop_front() {
            if now < at {
                later.push_back((at, order_id, next));
                continue;
            }
            let _ = match next {
                Next::Pay => {
                    let paid = ledger.confirm(now, &order_id);
                    // A few buyers return what they bought, some minutes later.
                    if paid.is_ok() && self.rng.f64() < REFUNDED_SHARE {
                        let delay = Duration::from_secs(self.rng.u64(300..1800));
                        later.push_back((now.saturating_add(delay), order_id, Next::Refund));
                    }
                    paid
                }
                Next::Cancel => ledger.cancel(now, &order_id),
                Next::Refund => ledger.refund(now, &order_id),
            };
        }
        self.pending = later;
    }

    /// The operator: restocks the product that sold out, and resumes an auto-halted listing
    /// once its unpaid locks had time to expire.
    fn operate(&mut self, ledger: &Ledger, now: Timestamp, minute: u64) {
        let sold_out = LINE_UP
            .iter()
            .position(|script| script.sku == "SERUM-04")
            .and_then(|index| Some((index, LINE_UP[index].pitches.first()?.0)));
        if let Some((index, pitched)) = sold_out
            && !self.restocked
            && pitched + RESTOCK_AFTER_MINUTES <= minute
        {
            self.restocked = true;
            if let Ok(restock_id) = RestockId::new("demo-truck-1")
                && ledger
                    .restock_once(now, &self.skus[index], RESTOCK_QTY, restock_id)
                    .is_ok()
            {
                tracing::info!(sku = %self.skus[index], qty = RESTOCK_QTY, "Demo restock arrived.");
            }
        }
        for index in 0..self.skus.len() {
            let halted = ledger
                .listing(&self.room, &self.skus[index])
                .is_some_and(|state| state.tally.halted);
            match (halted, self.halted_since[index]) {
                (true, None) => self.halted_since[index] = Some(now),
                (true, Some(since)) if RESUME_AFTER <= now.saturating_since(since) => {
                    if ledger
                        .resume_listing(now, &self.room, &self.skus[index], Some("运营-小李"))
                        .is_ok()
                    {
                        tracing::info!(sku = %self.skus[index], "Demo operator resumed the listing.");
                    }
                    self.halted_since[index] = None;
                }
                (false, _) => self.halted_since[index] = None,
                _ => {}
            }
        }
    }
}

/// Runs the demo until the show is over or `cancel` fires.
pub(crate) async fn run(
    ledger: Arc<Ledger>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
    seed: u64,
    stand_in_listener: Option<std::net::TcpListener>,
) {
    let stand_in = stand_in_listener.map(|listener| {
        let stand_in = Arc::new(stand_in::StandIn::default());
        tracing::info!(
            address = ?listener.local_addr().ok(),
            "Demo: stand-in platforms (douyin, kuaishou) receive the listings' stock: a stand-in, not a platform."
        );
        tokio::spawn(stand_in::serve(stand_in.clone(), listener, cancel.clone()));
        stand_in
    });
    tracing::info!(
        seed,
        room = DEMO_ROOM,
        "Demo show starting: three hours in five minutes."
    );
    let Some(mut demo) = Demo::setup(&ledger, clock.now(), seed) else {
        return;
    };
    let real_tick = TICK / DEMO_SPEEDUP;
    let mut ticker = tokio::time::interval(real_tick);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = clock.now();
        if demo.over(now) {
            tracing::info!(
                "Demo show over; its report is at /report?room=demo, and --demo again on the same data directory plans the next show from this one."
            );
            return;
        }
        demo.step(&ledger, now);
        if let Some(stand_in) = &stand_in {
            let minute = now.saturating_since(demo.starts_at).as_millis() as u64 / MINUTE_MS;
            let down = STAND_IN_DOWN_MINUTES
                .contains(&minute)
                .then_some("kuaishou");
            stand_in.fail(down);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Engine, Level, RoomEvent};
    use crate::ledger::LedgerConfig;

    #[test]
    fn the_demo_show_reaches_and_leaves_every_level() {
        // Goal: over the whole compressed show, each of yellow, orange and red is entered by
        // some listing and later left; the auto-halt listing is halted and resumed.
        // Method: the demo and the alert engine over a real ledger, the clock moved by hand
        // one tick at a time (three hours in a few hundred milliseconds).
        for seed in [1, 7, 42] {
            show_with(seed);
        }
    }

    fn show_with(seed: u64) {
        let ledger = Arc::new(Ledger::new(LedgerConfig::default()));
        // Without a journal, a change counts as durable once applied.
        let durable = Arc::new(crate::ledger::DurableState::from_ledger(&ledger));
        ledger.attach(durable.clone());
        let start = Timestamp::from_millis(1_800_000_000_000);
        let mut demo = Demo::setup(&ledger, start, seed).expect("the demo starts");
        let engine = Engine::new(ledger.clone(), durable, start, 1);
        let mut entered = std::collections::BTreeSet::new();
        let mut left = std::collections::BTreeSet::new();
        let mut halts = 0;
        let mut now = start;
        while !demo.over(now) {
            now = now.saturating_add(TICK);
            demo.step(&ledger, now);
            let expired = ledger.expire_due(now);
            let mut events = engine.observe(expired.iter(), now);
            events.extend(engine.tick(now));
            for event in events {
                if let RoomEvent::Level { alert, .. } = event {
                    entered.insert(alert.to);
                    if alert.to < alert.from {
                        left.insert(alert.from);
                    }
                    if alert.to == Level::Red {
                        halts += 1;
                    }
                }
            }
        }
        for level in [Level::Yellow, Level::Orange, Level::Red] {
            assert!(
                entered.contains(&level),
                "seed {seed}: {level:?} never reached"
            );
            assert!(left.contains(&level), "seed {seed}: {level:?} never left");
        }
        assert!(0 < halts);
        assert!(demo.halted_since.iter().all(Option::is_none));
        // The show leaves its history, and the next demo on the same ledger plans by it.
        ledger.flush_lost(now);
        let ended = ledger.end_shows(now);
        assert!(
            matches!(ended.as_slice(), [crate::ledger::Fact::ShowEnded { records, .. }] if records.len() == LINE_UP.len()),
            "seed {seed}: {ended:?}"
        );
        let later = now.saturating_add(Duration::from_secs(3600));
        Demo::setup(&ledger, later, seed).expect("a second demo starts on the same ledger");
        let room = ledger
            .room(&RoomId::new(DEMO_ROOM).expect("room id"))
            .expect("the demo room");
        for listing in &room.listings {
            assert_eq!(
                listing.listing.shape,
                crate::ledger::PlanShape::History { shows: 1 },
                "seed {seed}: {}",
                listing.listing.sku
            );
            assert_eq!(listing.stock.available, listing_stock(&listing.listing.sku));
        }
    }

    /// The stock a listing's script puts on hand.
    fn listing_stock(sku: &SkuId) -> u64 {
        LINE_UP
            .iter()
            .find(|script| script.sku == sku.as_str())
            .map_or(0, |script| script.stock)
    }
}
