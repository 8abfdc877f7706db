//! The lock stripes: SKU tables behind `parking_lot` mutexes, the keys that pick a stripe and
//! a slot from one hash, and the guards of the stripes one operation holds.

use hashbrown::HashTable;
use parking_lot::MutexGuard;
use smallvec::SmallVec;

use super::sku::{SkuEntry, SkuSlot};
use super::types::SkuId;

/// Pads a stripe to its own cache lines so two cores locking neighbouring stripes do not
/// fight over one line.
#[repr(align(128))]
pub(super) struct Padded<T>(pub(super) T);

/// The SKUs of one stripe.
pub(super) type SkuTable = HashTable<SkuSlot>;

/// Which stripe a hash belongs to. Bits 40 and up: the table inside the stripe indexes
/// buckets with the low bits and tags them with the top seven, so the stripe takes bits
/// neither uses, and the keys of one stripe still spread over all of its buckets.
pub(super) fn stripe_of(hash: u64, stripes_count: usize) -> usize {
    ((hash >> 40) as usize) & (stripes_count - 1)
}

/// A SKU id with its hash and stripe, computed once per operation.
#[derive(Clone, Copy)]
pub(super) struct SkuKey<'a> {
    pub(super) sku: &'a SkuId,
    pub(super) hash: u64,
    pub(super) stripe: usize,
}

pub(super) fn find<'t>(table: &'t SkuTable, key: &SkuKey<'_>) -> Option<&'t SkuEntry> {
    table
        .find(key.hash, |slot| slot.sku == *key.sku)
        .map(|slot| &slot.entry)
}

pub(super) fn find_mut<'t>(table: &'t mut SkuTable, key: &SkuKey<'_>) -> Option<&'t mut SkuEntry> {
    table
        .find_mut(key.hash, |slot| slot.sku == *key.sku)
        .map(|slot| &mut slot.entry)
}

/// The SKU stripes one operation holds, taken in ascending index order.
pub(super) struct SkuGuards<'a> {
    pub(super) guards: SmallVec<[(usize, MutexGuard<'a, SkuTable>); 2]>,
}

impl SkuGuards<'_> {
    pub(super) fn entry(&self, key: &SkuKey<'_>) -> Option<&SkuEntry> {
        self.guards
            .iter()
            .find(|(index, _)| *index == key.stripe)
            .and_then(|(_, table)| find(table, key))
    }

    pub(super) fn entry_mut(&mut self, key: &SkuKey<'_>) -> Option<&mut SkuEntry> {
        self.guards
            .iter_mut()
            .find(|(index, _)| *index == key.stripe)
            .and_then(|(_, table)| find_mut(table, key))
    }
}
