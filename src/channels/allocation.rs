//! What each platform listing of a SKU should show: pure arithmetic over the SKU's durable
//! state and its allocation.

use crate::ledger::Allocation;

/// What the rule needs to know of one SKU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    pub available: u64,
    /// Halted for itself, or in a room that lists it.
    pub halted: bool,
    /// Exclusive only: the available units no allotment holds.
    pub unallotted: u64,
}

/// What the rule needs to know of one platform's use of the SKU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlatformUse {
    /// Locked + sold by this platform.
    pub consumed: u64,
    pub quota: Option<u64>,
    /// Exclusive only: what the platform may hold in all, when it has a share.
    pub allotted: Option<u64>,
}

/// The number a platform's listing should show, never more than its quota's headroom. A
/// halted SKU shows 0 everywhere. `Shared`: what the platform could still take, capped by
/// `available - buffer`. `Exclusive`: what its allotment leaves unsold (a platform without a
/// share: the unallotted units).
pub fn shows(allocation: &Allocation, pool: &Pool, platform: PlatformUse) -> u64 {
    if pool.halted {
        return 0;
    }
    let headroom = platform
        .quota
        .map_or(u64::MAX, |quota| quota.saturating_sub(platform.consumed));
    let pooled = match allocation {
        Allocation::Shared { buffer } => pool.available.saturating_sub(*buffer),
        Allocation::Exclusive(_) => match platform.allotted {
            Some(allotted) => allotted.saturating_sub(platform.consumed),
            None => pool.unallotted,
        },
    };
    pooled.min(pool.available).min(headroom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_shared_listing_shows_the_pool_less_the_buffer_within_its_quota() {
        let shared = Allocation::Shared { buffer: 5 };
        let pool = Pool {
            available: 100,
            halted: false,
            unallotted: 0,
        };
        let free = PlatformUse::default();
        assert_eq!(shows(&shared, &pool, free), 95);
        let capped = PlatformUse {
            consumed: 30,
            quota: Some(40),
            allotted: None,
        };
        assert_eq!(shows(&shared, &pool, capped), 10);
        let halted = Pool {
            halted: true,
            ..pool
        };
        assert_eq!(shows(&shared, &halted, free), 0);
        let scarce = Pool {
            available: 3,
            halted: false,
            unallotted: 0,
        };
        assert_eq!(shows(&shared, &scarce, free), 0);
    }

    proptest! {
        /// A shared listing never shows more than the pool less the buffer, nor more than its
        /// quota leaves.
        #[test]
        fn a_shared_listing_never_shows_more_than_the_pool_or_its_quota_allows(
            available in 0u64..1_000_000, buffer in 0u64..1_000, consumed in 0u64..1_000_000,
            quota in proptest::option::of(0u64..1_000_000), halted in any::<bool>(),
        ) {
            let shown = shows(
                &Allocation::Shared { buffer },
                &Pool { available, halted, unallotted: 0 },
                PlatformUse { consumed, quota, allotted: None },
            );
            prop_assert!(shown <= available.saturating_sub(buffer));
            if let Some(quota) = quota {
                prop_assert!(shown <= quota.saturating_sub(consumed));
            }
            if halted {
                prop_assert_eq!(shown, 0);
            }
        }
    }
}
