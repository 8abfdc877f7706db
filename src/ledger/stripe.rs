//! The lock stripes: SKU tables behind `parking_lot` mutexes, the keys that pick a stripe and
//! a slot from one hash, and the guards of the stripes one operation holds.

use std::collections::HashMap;

use hashbrown::HashTable;
use parking_lot::MutexGuard;
use smallvec::SmallVec;

use super::sku::{SkuEntry, SkuSlot};
use super::types::SkuId;
use super::values::SkuImage;

/// Pads a stripe to its own cache lines so two cores locking neighbouring stripes do not
/// fight over one line.
#[repr(align(128))]
pub(super) struct Padded<T>(pub(super) T);

/// The SKUs of one stripe, and how those a snapshot has not copied yet were at its cut.
#[derive(Default)]
pub(super) struct SkuTable {
    slots: HashTable<SkuSlot>,
    /// The generation of the newest snapshot that copied this stripe.
    copied_generation: u32,
    /// SKUs changed after the cut of a snapshot that has not copied this stripe yet, as they
    /// were at the cut; `None` for a SKU created after it. Copy on write, as for orders.
    before_cut: HashMap<SkuId, Option<SkuImage>>,
}

impl SkuTable {
    pub(super) fn iter(&self) -> impl Iterator<Item = &SkuSlot> {
        self.slots.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn find(&self, key: &SkuKey<'_>) -> Option<&SkuEntry> {
        self.slots
            .find(key.hash, |slot| slot.sku == *key.sku)
            .map(|slot| &slot.entry)
    }

    /// The SKU to change, under snapshot `generation` (read with this stripe held): the first
    /// change after a cut this stripe was not copied for keeps the SKU as it was.
    pub(super) fn find_mut(&mut self, key: &SkuKey<'_>, generation: u32) -> Option<&mut SkuEntry> {
        let slot = self.slots.find_mut(key.hash, |slot| slot.sku == *key.sku)?;
        if self.copied_generation < generation && !self.before_cut.contains_key(key.sku) {
            let image = slot.entry.image(&slot.sku);
            self.before_cut.insert(key.sku.clone(), Some(image));
        }
        Some(&mut slot.entry)
    }

    /// Adds a SKU the table does not hold, under snapshot `generation`.
    pub(super) fn insert(&mut self, slot: SkuSlot, generation: u32) {
        if self.copied_generation < generation && !self.before_cut.contains_key(&slot.sku) {
            self.before_cut.insert(slot.sku.clone(), None);
        }
        self.slots.insert_unique(slot.hash, slot, |slot| slot.hash);
    }

    /// Takes a SKU out again (a creation that failed in the same critical section).
    pub(super) fn remove(&mut self, key: &SkuKey<'_>) {
        if let Ok(occupied) = self.slots.find_entry(key.hash, |slot| slot.sku == *key.sku) {
            occupied.remove();
        }
    }

    /// Copies this stripe for snapshot `generation`: every SKU as it was at the cut.
    pub(super) fn copy(&mut self, generation: u32, out: &mut Vec<SkuImage>) {
        let before_cut = std::mem::take(&mut self.before_cut);
        self.copied_generation = generation;
        for slot in self.slots.iter() {
            if !before_cut.contains_key(&slot.sku) {
                out.push(slot.entry.image(&slot.sku));
            }
        }
        out.extend(before_cut.into_values().flatten());
    }
}

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

/// The SKU stripes one operation holds, taken in ascending index order, and the snapshot
/// generation read while holding them.
pub(super) struct SkuGuards<'a> {
    pub(super) guards: SmallVec<[(usize, MutexGuard<'a, SkuTable>); 2]>,
    pub(super) generation: u32,
}

impl SkuGuards<'_> {
    pub(super) fn entry(&self, key: &SkuKey<'_>) -> Option<&SkuEntry> {
        self.guards
            .iter()
            .find(|(index, _)| *index == key.stripe)
            .and_then(|(_, table)| table.find(key))
    }

    pub(super) fn entry_mut(&mut self, key: &SkuKey<'_>) -> Option<&mut SkuEntry> {
        let generation = self.generation;
        self.guards
            .iter_mut()
            .find(|(index, _)| *index == key.stripe)
            .and_then(|(_, table)| table.find_mut(key, generation))
    }
}
