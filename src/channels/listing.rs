//! One platform listing's sync state, and the updates sent to it: plain values the book
//! keeps and the outbox sends.

use crate::clock::Timestamp;
use crate::ledger::{ListingAck, ListingId, Platform, SkuId};

/// Why a listing's number changed: the `reason` of an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Sale,
    Release,
    Restock,
    Rebalance,
    Halt,
    Resume,
    Resync,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Sale => "sale",
            Reason::Release => "release",
            Reason::Restock => "restock",
            Reason::Rebalance => "rebalance",
            Reason::Halt => "halt",
            Reason::Resume => "resume",
            Reason::Resync => "resync",
        }
    }
}

/// What a listing last acknowledged, by our account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acknowledged {
    pub version: u64,
    pub quantity: u64,
    /// The platform's consumption of the SKU when it was acknowledged: what the platform
    /// sold since comes off its listing on the platform's side, not by an update of ours.
    pub(super) consumed: u64,
    pub at: Timestamp,
}

/// The sync state of one platform listing.
#[derive(Clone, Debug)]
pub struct ListingSync {
    pub platform: Platform,
    pub listing: ListingId,
    pub sku: SkuId,
    /// What it should show now, since the fact at log sequence `version`.
    pub target: u64,
    pub version: u64,
    pub reason: Reason,
    pub acknowledged: Option<Acknowledged>,
    /// The platform's own number, when its receiver reported one with its last answer.
    pub reported: Option<u64>,
    /// Attempts failed in a row, and the last failure.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Since when the listing has had a target its platform has not acknowledged.
    pub unsynced_since: Option<Timestamp>,
    /// An update whose outcome is unknown (no answer, or a 5xx): it may have been applied,
    /// so it is sent again as it is (same key, same delta) until the platform answers, and
    /// only then is a newer number measured from its acknowledgement.
    pub in_doubt: Option<Update>,
    /// When an update of the listing last went out (the machine's monotonic clock: pacing
    /// is real time).
    pub sent_at: Option<tokio::time::Instant>,
}

impl ListingSync {
    /// A listing just named: nothing sent or acknowledged yet.
    pub(super) fn new(platform: Platform, listing: ListingId, sku: SkuId) -> ListingSync {
        ListingSync {
            platform,
            listing,
            sku,
            target: 0,
            version: 0,
            reason: Reason::Resync,
            acknowledged: None,
            reported: None,
            failures: 0,
            last_error: None,
            unsynced_since: None,
            in_doubt: None,
            sent_at: None,
        }
    }

    /// What the listing shows by our account: the last acknowledged number less what its
    /// platform took since (`None` before anything was acknowledged).
    pub fn shown(&self, consumed_now: u64) -> Option<u64> {
        let acknowledged = self.acknowledged?;
        let taken = consumed_now.saturating_sub(acknowledged.consumed);
        let returned = acknowledged.consumed.saturating_sub(consumed_now);
        Some(
            acknowledged
                .quantity
                .saturating_sub(taken)
                .saturating_add(returned),
        )
    }
}

/// One update to send: what a listing should show, from the book at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub platform: Platform,
    pub sku: SkuId,
    pub listing: ListingId,
    pub quantity: u64,
    /// `quantity` less what the listing shows by our account; `None` when nothing was
    /// acknowledged yet.
    pub delta: Option<i64>,
    /// The version of the acknowledgement `delta` is measured from.
    pub acknowledged_version: Option<u64>,
    pub version: u64,
    pub reason: Reason,
    /// The platform's consumption when the update was made (what an acknowledgement keeps).
    pub(super) consumed: u64,
}

impl Update {
    /// What a platform's acknowledgement of this update keeps, when it set the listing to
    /// `quantity` (the update's, or less).
    pub fn ack_applied(&self, quantity: u64) -> ListingAck {
        ListingAck {
            sku: self.sku.clone(),
            listing: self.listing.clone(),
            version: self.version,
            quantity,
            consumed: self.consumed,
        }
    }

    /// The idempotency key: made from the listing and the log, so the same on every retry
    /// and on every node.
    pub fn key(&self) -> String {
        let key = format!(
            "stockpulse-{}-{}-v{}",
            self.platform, self.listing, self.version
        );
        if key.len() <= 128 && key.is_ascii() {
            return key;
        }
        let hex = crate::auth::short_digest([key.as_bytes()]);
        format!("stockpulse-h{hex}-v{}", self.version)
    }
}
