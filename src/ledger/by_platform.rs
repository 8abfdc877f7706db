//! A platform's orders placed in a time window, as reconciliation with the platform reads
//! them. It walks every order stripe, one at a time: for an occasional check, never on the
//! order path.

use super::Ledger;
use super::types::{OrderView, Platform};
use crate::clock::Timestamp;

/// The most orders one read returns: a show's orders of one platform, not the whole book.
pub(super) const PLATFORM_ORDERS_MAX: usize = 200_000;

impl Ledger {
    /// `platform`'s orders placed in `[from, to)`, at most `PLATFORM_ORDERS_MAX` (the flag
    /// says whether some were left out).
    pub fn orders_of(
        &self,
        platform: &Platform,
        from: Timestamp,
        to: Timestamp,
    ) -> (Vec<OrderView>, bool) {
        let mut found = Vec::new();
        let mut cut = false;
        for stripe in self.orders.iter() {
            let stripe = stripe.0.lock();
            stripe.for_each(|entry| {
                let placed = entry.created_at;
                if &entry.order.platform == platform && from <= placed && placed < to {
                    if found.len() < PLATFORM_ORDERS_MAX {
                        found.push(entry.view(entry.status));
                    } else {
                        cut = true;
                    }
                }
            });
        }
        (found, cut)
    }
}
