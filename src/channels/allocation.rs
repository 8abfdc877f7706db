//! What each platform listing of a SKU should show: pure arithmetic over the SKU's durable
//! state and its allocation.

use crate::ledger::Allocation;

/// What the rule needs to know of one SKU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool {
    pub available: u64,
    /// Halted for itself, or in a room that lists it.
    pub halted: bool,
}

/// What the rule needs to know of one platform's use of the SKU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlatformUse {
    /// Locked + sold by this platform.
    pub consumed: u64,
    pub quota: Option<u64>,
}

/// The number a platform's listing should show. A halted SKU shows 0 everywhere. `Shared`:
/// what the platform could still take, its quota's headroom capped by `available - buffer`.
pub fn shows(allocation: &Allocation, pool: &Pool, platform: PlatformUse) -> u64 {
    if pool.halted {
        return 0;
    }
    match allocation {
        Allocation::Shared { buffer } => {
            let headroom = platform
                .quota
                .map_or(u64::MAX, |quota| quota.saturating_sub(platform.consumed));
            pool.available.saturating_sub(*buffer).min(headroom)
        }
    }
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
        };
        let free = PlatformUse::default();
        assert_eq!(shows(&shared, &pool, free), 95);
        let capped = PlatformUse {
            consumed: 30,
            quota: Some(40),
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
                &Pool { available, halted },
                PlatformUse { consumed, quota },
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
