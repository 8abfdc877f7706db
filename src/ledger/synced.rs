//! What each platform last acknowledged of its listing of a SKU, kept in the SKU's entry.
//!
//! Channel sync journals a `ListingsSynced` fact when a platform acknowledges updates, so
//! a restart, a snapshot and every node of a cluster know what each listing was last told,
//! and the next update's `delta` is measured from it. Nothing here moves stock.

use super::Ledger;
use super::fact::Fact;
use super::sku::SkuEntry;
use super::stripe::SkuKey;
use super::types::{ListingAck, Platform, SkuId, SyncMark};
use crate::clock::Timestamp;

impl SkuEntry {
    /// Keeps `ack` unless the listing is no longer this SKU's, or a newer version was kept.
    pub(super) fn mark_synced(&mut self, platform: &Platform, ack: &ListingAck, at: Timestamp) {
        if self.platform_listing(platform) != Some(&ack.listing) {
            return;
        }
        let mark = SyncMark {
            platform: platform.clone(),
            listing: ack.listing.clone(),
            version: ack.version,
            quantity: ack.quantity,
            consumed: ack.consumed,
            at,
        };
        match self
            .synced
            .iter_mut()
            .find(|kept| &kept.platform == platform)
        {
            Some(kept) if kept.listing != ack.listing || kept.version <= ack.version => {
                *kept = mark;
            }
            Some(_) => {}
            None => self.synced.push(mark),
        }
    }

    /// Forgets the marks of listings the SKU no longer names.
    pub(super) fn forget_unnamed_marks(&mut self) {
        let listings = &self.settings.listings;
        self.synced.retain(|mark| {
            listings
                .iter()
                .any(|(platform, listing)| platform == &mark.platform && listing == &mark.listing)
        });
    }
}

impl Ledger {
    /// Records that `platform` acknowledged `acks`: each SKU keeps the newest version per
    /// listing. Acknowledgements for unknown SKUs or listings renamed since are dropped.
    pub fn note_synced(&self, now: Timestamp, platform: &Platform, acks: Vec<ListingAck>) -> Fact {
        let keys: Vec<SkuKey<'_>> = acks.iter().map(|ack| self.sku_key(&ack.sku)).collect();
        let mut skus = self.lock_skus(&keys);
        for (ack, key) in acks.iter().zip(&keys) {
            if let Some(entry) = skus.entry_mut(key) {
                entry.mark_synced(platform, ack, now);
            }
        }
        let fact = Fact::ListingsSynced {
            at: now,
            platform: platform.clone(),
            acks,
        };
        // Recorded while the SKUs are held, so a snapshot's cut sees both or neither.
        self.record(&fact);
        drop(skus);
        fact
    }

    /// What each platform last acknowledged of its listing of `sku`.
    pub fn synced(&self, sku: &SkuId) -> Vec<SyncMark> {
        let key = self.sku_key(sku);
        let table = self.skus[key.stripe].0.lock();
        table
            .find(&key)
            .map(|slot| slot.synced.clone())
            .unwrap_or_default()
    }

    /// Replay of a `ListingsSynced` fact.
    pub(super) fn replay_synced(&self, at: Timestamp, platform: &Platform, acks: &[ListingAck]) {
        for ack in acks {
            self.replay_on_sku(&ack.sku, |entry| entry.mark_synced(platform, ack, at));
        }
    }
}
