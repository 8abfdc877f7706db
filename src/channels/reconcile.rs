//! Reconciliation (对账): a platform's orders of a window matched against the ledger's.
//!
//! The platform sold what it lists; the ledger took what it holds. Five kinds of mismatch:
//! `missing` (the platform sold an order the ledger refused or never saw: an oversell),
//! `released` (the platform sold it, the ledger gave its units back: an oversell too),
//! `quantity` (the lines differ), `other_platform` (the ledger has the id from another
//! platform), `held` (the platform cancelled an order the ledger still holds: units stuck)
//! and `phantom` (the ledger holds an order of this platform, placed in the window, that the
//! platform does not list). The matching is pure; the API reads the orders and parses the
//! platform's export.

use std::collections::{BTreeMap, BTreeSet};

use crate::ledger::{OrderId, OrderStatus, OrderView, Platform, SkuId};

/// One order as the platform's export says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformOrder {
    pub order_id: OrderId,
    pub lines: BTreeMap<SkuId, u64>,
    /// Whether the platform counts it as sold (paid, shipped, done) rather than cancelled or
    /// refunded.
    pub sold: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IncidentKind {
    Missing,
    Released,
    Quantity,
    OtherPlatform,
    Held,
    Phantom,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Missing => "missing",
            IncidentKind::Released => "released",
            IncidentKind::Quantity => "quantity",
            IncidentKind::OtherPlatform => "other_platform",
            IncidentKind::Held => "held",
            IncidentKind::Phantom => "phantom",
        }
    }

    /// Whether the platform sold units the ledger does not hold for it.
    pub fn oversold(self) -> bool {
        matches!(self, IncidentKind::Missing | IncidentKind::Released)
    }
}

/// One mismatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub kind: IncidentKind,
    pub order_id: OrderId,
    /// The units in question.
    pub units: u64,
    pub platform_lines: BTreeMap<SkuId, u64>,
    pub ledger_lines: BTreeMap<SkuId, u64>,
    pub ledger_status: Option<OrderStatus>,
}

/// What a reconciliation found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub checked: usize,
    pub matched: usize,
    pub incidents: Vec<Incident>,
    /// Units the platform sold that the ledger does not hold (`missing`, `released`).
    pub oversold_units: u64,
}

fn ledger_lines(view: &OrderView) -> BTreeMap<SkuId, u64> {
    view.lines
        .iter()
        .map(|line| (line.sku.clone(), line.qty.get()))
        .collect()
}

fn holds(status: OrderStatus) -> bool {
    matches!(status, OrderStatus::Locked | OrderStatus::Sold)
}

/// Matches `orders` (the platform's) against the ledger: `find` reads one order, `window`
/// is every order of the platform the ledger has from the same window.
pub fn reconcile(
    platform: &Platform,
    orders: &[PlatformOrder],
    find: impl Fn(&OrderId) -> Option<OrderView>,
    window: &[OrderView],
) -> Reconciliation {
    let mut found = Reconciliation::default();
    for order in orders {
        found.checked += 1;
        let ledger = find(&order.order_id);
        match judge(platform, order, ledger.as_ref()) {
            None => found.matched += 1,
            Some(incident) => found.incidents.push(incident),
        }
    }
    let listed: BTreeSet<&OrderId> = orders.iter().map(|order| &order.order_id).collect();
    for view in window.iter().filter(|view| holds(view.status)) {
        if !listed.contains(&view.order_id) {
            let lines = ledger_lines(view);
            found.incidents.push(Incident {
                kind: IncidentKind::Phantom,
                order_id: view.order_id.clone(),
                units: lines.values().sum(),
                platform_lines: BTreeMap::new(),
                ledger_lines: lines,
                ledger_status: Some(view.status),
            });
        }
    }
    found.oversold_units = found
        .incidents
        .iter()
        .filter(|incident| incident.kind.oversold())
        .map(|incident| incident.units)
        .sum();
    found
}

/// The incident one platform order makes, if any.
fn judge(
    platform: &Platform,
    order: &PlatformOrder,
    ledger: Option<&OrderView>,
) -> Option<Incident> {
    let units: u64 = order.lines.values().sum();
    let incident = |kind, units, ledger: Option<&OrderView>| Incident {
        kind,
        order_id: order.order_id.clone(),
        units,
        platform_lines: order.lines.clone(),
        ledger_lines: ledger.map(ledger_lines).unwrap_or_default(),
        ledger_status: ledger.map(|view| view.status),
    };
    let Some(view) = ledger else {
        return order
            .sold
            .then(|| incident(IncidentKind::Missing, units, None));
    };
    if &view.platform != platform {
        return Some(incident(IncidentKind::OtherPlatform, units, Some(view)));
    }
    match (order.sold, holds(view.status)) {
        (true, false) => return Some(incident(IncidentKind::Released, units, Some(view))),
        (false, true) => {
            let held = ledger_lines(view).values().sum();
            return Some(incident(IncidentKind::Held, held, Some(view)));
        }
        (false, false) => return None,
        (true, true) => {}
    }
    let theirs = ledger_lines(view);
    if theirs == order.lines {
        return None;
    }
    let skus: BTreeSet<&SkuId> = theirs.keys().chain(order.lines.keys()).collect();
    let differ: u64 = skus
        .into_iter()
        .map(|sku| {
            let platform_qty = order.lines.get(sku).copied().unwrap_or(0);
            let ledger_qty = theirs.get(sku).copied().unwrap_or(0);
            platform_qty.abs_diff(ledger_qty)
        })
        .sum();
    Some(incident(IncidentKind::Quantity, differ, Some(view)))
}
