//! Exclusive allocation's arithmetic: splitting units by shares, fitting allotments into
//! the pool, and the checks an order from a platform meets.
//!
//! A platform with a share may hold (locked + sold) at most its allotment. What an allotment
//! leaves unsold is that platform's alone; units no allotment holds are `unallotted` and go
//! to platforms without a share. Orders and releases move only consumption, so allotments
//! change only when the pool does (a settings change, a restock) or by a move.

use super::Ledger;
use super::error::LedgerError;
use super::fact::{AllotmentMove, Fact};
use super::sku::SkuEntry;
use super::types::{Allocation, Exclusive, Platform, SkuId};
use crate::clock::Timestamp;

/// Splits `units` by `shares` (thousandths), largest remainder first, ties by platform:
/// deterministic, and never more than `units` in all.
pub(super) fn split(units: u64, shares: &[(Platform, u32)]) -> Vec<(Platform, u64)> {
    let total_share: u64 = shares.iter().map(|(_, share)| u64::from(*share)).sum();
    let share_of = |share: u32| u128::from(units) * u128::from(share);
    let mut parts: Vec<(Platform, u64, u128)> = shares
        .iter()
        .map(|(platform, share)| {
            let exact = share_of(*share);
            (platform.clone(), (exact / 1000) as u64, exact % 1000)
        })
        .collect();
    let given: u64 = parts.iter().map(|(_, units, _)| *units).sum();
    // What the shares cover, rounded down, less what the floors gave.
    let owed = (u128::from(units) * u128::from(total_share) / 1000) as u64;
    let mut left = owed.saturating_sub(given);
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|a, b| {
        parts[*b]
            .2
            .cmp(&parts[*a].2)
            .then(parts[*a].0.cmp(&parts[*b].0))
    });
    for index in order {
        if left == 0 {
            break;
        }
        parts[index].1 += 1;
        left -= 1;
    }
    parts
        .into_iter()
        .map(|(platform, units, _)| (platform, units))
        .collect()
}

impl SkuEntry {
    /// Locked + sold by `platform`.
    pub(super) fn consumed_by(&self, platform: &Platform) -> u64 {
        self.tally(platform)
            .map_or(0, |tally| tally.locked + tally.sold)
    }

    /// What each allotted platform may still take, and the units no allotment holds.
    pub(super) fn unsold_allotments(&self, exclusive: &Exclusive) -> (u64, u64) {
        let unsold: u64 = exclusive
            .allotted
            .iter()
            .map(|(platform, allotted)| allotted.saturating_sub(self.consumed_by(platform)))
            .sum();
        let available = self.quantities.available().unwrap_or(0);
        (unsold, available.saturating_sub(unsold))
    }

    /// Refuses a take by `platform` that its allotment (or, without a share, the unallotted
    /// units) cannot cover.
    pub(super) fn check_allotment(
        &self,
        sku: &SkuId,
        platform: &Platform,
        qty: u64,
    ) -> Result<(), LedgerError> {
        let Allocation::Exclusive(exclusive) = &self.settings.allocation else {
            return Ok(());
        };
        let left = match exclusive.allotted.iter().find(|(name, _)| name == platform) {
            Some((_, allotted)) => allotted.saturating_sub(self.consumed_by(platform)),
            None => self.unsold_allotments(exclusive).1,
        };
        if left < qty {
            return Err(LedgerError::AllotmentExhausted {
                sku: sku.clone(),
                platform: platform.clone(),
                left,
                requested: qty,
            });
        }
        Ok(())
    }

    /// Makes the allotments of `exclusive` fit the pool now: a new split of what is available
    /// when the shares changed (`previous` is the allocation before), else the same
    /// allotments, shrunk when the pool shrank (from the most unsold first) or grown by the
    /// shares of what the pool `grew` by.
    pub(super) fn fit_allotments(
        &self,
        exclusive: &mut Exclusive,
        previous: &Allocation,
        grew: u64,
    ) {
        let same_shares =
            matches!(previous, Allocation::Exclusive(before) if before.shares == exclusive.shares);
        match previous {
            Allocation::Exclusive(before) if same_shares => {
                exclusive.allotted = before.allotted.clone();
                self.shrink_to_pool(exclusive);
                self.give(exclusive, grew);
            }
            _ => {
                exclusive.allotted = exclusive
                    .shares
                    .iter()
                    .map(|(platform, _)| (platform.clone(), self.consumed_by(platform)))
                    .collect();
                self.give(exclusive, self.quantities.available().unwrap_or(0));
            }
        }
    }

    /// Takes back unsold allotted units, the most unsold first, until the allotments' unsold
    /// units fit into `available`.
    fn shrink_to_pool(&self, exclusive: &mut Exclusive) {
        let (unsold, _) = self.unsold_allotments(exclusive);
        let available = self.quantities.available().unwrap_or(0);
        let mut excess = unsold.saturating_sub(available);
        while 0 < excess {
            let most = exclusive
                .allotted
                .iter_mut()
                .map(|(platform, allotted)| {
                    let unsold = allotted.saturating_sub(self.consumed_by(platform));
                    (unsold, allotted)
                })
                .max_by_key(|(unsold, _)| *unsold);
            let Some((unsold, allotted)) = most.filter(|(unsold, _)| 0 < *unsold) else {
                break;
            };
            let taken = unsold.min(excess);
            *allotted -= taken;
            excess -= taken;
        }
    }

    /// Splits `units` (at most the unallotted ones) between the platforms with a share, by
    /// the shares: what the shares do not cover stays unallotted.
    pub(super) fn give(&self, exclusive: &mut Exclusive, units: u64) {
        let (_, unallotted) = self.unsold_allotments(exclusive);
        for (platform, more) in split(units.min(unallotted), &exclusive.shares) {
            if let Some((_, allotted)) = exclusive
                .allotted
                .iter_mut()
                .find(|(name, _)| *name == platform)
            {
                *allotted = allotted.saturating_add(more);
            }
        }
    }
}

impl SkuEntry {
    /// Replay of an `Allotted` fact: the allotments it records.
    pub(super) fn set_allotted(&mut self, allotted: Vec<(Platform, u64)>) {
        if let Allocation::Exclusive(exclusive) = &mut self.settings.allocation {
            exclusive.allotted = allotted;
        }
    }
}

impl Ledger {
    /// After a restock of `qty` units of an exclusive SKU: the new units split by the
    /// shares, recorded as an `Allotted` fact right after the restock's (a crash between the
    /// two leaves the units unallotted, never promised twice).
    pub(super) fn allot_restocked(
        &self,
        entry: &mut SkuEntry,
        sku: &SkuId,
        qty: u64,
        now: Timestamp,
    ) {
        let Allocation::Exclusive(exclusive) = &entry.settings.allocation else {
            return;
        };
        let mut grown = exclusive.clone();
        entry.give(&mut grown, qty);
        if grown.allotted == exclusive.allotted {
            return;
        }
        let allotted = grown.allotted.clone();
        entry.settings.allocation = Allocation::Exclusive(grown);
        self.record(&Fact::Allotted {
            at: now,
            sku: sku.clone(),
            allotted,
            moved: None,
        });
    }

    /// Moves `qty` unsold units of an exclusive SKU from `from`'s allotment to `to`'s, never
    /// leaving `from` fewer unsold units than the floor.
    pub fn move_allotment(
        &self,
        now: Timestamp,
        sku: &SkuId,
        moved: AllotmentMove,
    ) -> Result<Fact, LedgerError> {
        self.on_sku(sku, |entry| {
            let allotted = entry.moved_allotments(sku, &moved)?;
            entry.set_allotted(allotted.clone());
            let fact = Fact::Allotted {
                at: now,
                sku: sku.clone(),
                allotted,
                moved: Some(moved),
            };
            self.record(&fact);
            Ok(fact)
        })
    }
}

impl SkuEntry {
    /// The allotments after `moved`, or why it cannot be made.
    fn moved_allotments(
        &self,
        sku: &SkuId,
        moved: &AllotmentMove,
    ) -> Result<Vec<(Platform, u64)>, LedgerError> {
        let invalid = |reason: String| LedgerError::InvalidStock {
            sku: sku.clone(),
            reason,
        };
        let Allocation::Exclusive(exclusive) = &self.settings.allocation else {
            return Err(invalid("its allocation is not exclusive".to_owned()));
        };
        let allotted_to = |platform: &Platform| {
            exclusive
                .allotted
                .iter()
                .find(|(name, _)| name == platform)
                .map(|(_, allotted)| *allotted)
        };
        let (Some(from), Some(_)) = (allotted_to(&moved.from), allotted_to(&moved.to)) else {
            return Err(invalid(format!(
                "{} and {} must both have a share",
                moved.from, moved.to
            )));
        };
        let unsold = from.saturating_sub(self.consumed_by(&moved.from));
        let movable = unsold.saturating_sub(exclusive.floor);
        if moved.from == moved.to || moved.qty == 0 || movable < moved.qty {
            return Err(invalid(format!(
                "{} can give {movable} units ({unsold} unsold, floor {}), {} asked",
                moved.from, exclusive.floor, moved.qty
            )));
        }
        Ok(exclusive
            .allotted
            .iter()
            .map(|(platform, allotted)| {
                let allotted = if *platform == moved.from {
                    allotted - moved.qty
                } else if *platform == moved.to {
                    allotted + moved.qty
                } else {
                    *allotted
                };
                (platform.clone(), allotted)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn platform(name: &str) -> Platform {
        Platform::new(name).expect("a platform")
    }

    #[test]
    fn a_split_gives_the_remainder_to_the_largest_fractions() {
        let shares = vec![
            (platform("a"), 333),
            (platform("b"), 333),
            (platform("c"), 334),
        ];
        let parts = split(10, &shares);
        assert_eq!(parts.iter().map(|(_, units)| units).sum::<u64>(), 10);
        assert_eq!(parts[2].1, 4, "{parts:?}");
        let half = vec![(platform("a"), 500)];
        assert_eq!(split(7, &half), vec![(platform("a"), 3)]);
    }

    proptest! {
        #[test]
        fn a_split_never_gives_more_than_the_shares_cover(
            units in 0u64..10_000_000_000,
            shares in proptest::collection::vec(0u32..=1000, 0..5),
        ) {
            let mut left = 1000u32;
            let shares: Vec<(Platform, u32)> = shares
                .into_iter()
                .enumerate()
                .map(|(index, share)| {
                    let share = share.min(left);
                    left -= share;
                    (platform(&format!("p{index}")), share)
                })
                .collect();
            let parts = split(units, &shares);
            let given: u64 = parts.iter().map(|(_, units)| *units).sum();
            let covered: u64 = shares.iter().map(|(_, share)| u64::from(*share)).sum();
            prop_assert!(given <= units);
            prop_assert!(given <= (u128::from(units) * u128::from(covered) / 1000) as u64);
            for ((_, part), (_, share)) in parts.iter().zip(&shares) {
                let exact = u128::from(units) * u128::from(*share) / 1000;
                prop_assert!(u128::from(*part) <= exact + 1);
            }
        }
    }
}
