//! What one node tells another over NATS, sealed so that nothing else can say it.
//!
//! NATS subjects are reachable by whoever can publish on the NATS cluster: an application
//! sharing the account, a mistaken permission, a leaked NATS password. So a node trusts no
//! message from another node that the other node did not seal with the cluster's key, which
//! is derived from `auth.secret` (the secret every node already shares to check tokens):
//! HMAC-SHA256 over the message, checked before anything in it is read.
//!
//! A sealed request also names its sender (node and process), a number that sender never
//! uses twice, and the time it was sent; [`ReplayGuard`] refuses one sent too long ago or
//! seen already, so a captured request cannot be played again. A sealed answer names the
//! request it answers.
//!
//! A cluster started with `--insecure` and no secret has no key: its messages travel
//! unsealed and are believed, which is what `--insecure` says.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What the key is derived for: a new purpose gets a new key from the same secret.
const KEY_PURPOSE: &[u8] = b"stockpulse cluster seal v1";

const MAC_BYTES: usize = 32;
const SEALED: u8 = 1;
const OPEN: u8 = 0;

/// How far a sealed request's time may be from the receiver's clock.
pub const REPLAY_WINDOW_MS: u64 = 60_000;

/// Requests one sender may have in flight out of order before the oldest are refused.
const REORDER_WINDOW: u64 = 1024;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the message is not sealed, and this cluster seals its messages")]
    Unsealed,
    #[error("the seal does not match: not sent by a node of this cluster")]
    Forged,
    #[error("the message is cut short")]
    Short,
    #[error("sent {0} ms from this node's clock, more than the {REPLAY_WINDOW_MS} ms allowed")]
    Stale(u64),
    #[error("seen already: a replay")]
    Replayed,
}

/// Seals and opens node-to-node messages with the cluster's key, when there is one.
#[derive(Clone)]
pub struct Seal {
    key: Option<[u8; 32]>,
}

impl Seal {
    /// The seal of a cluster whose nodes share `secret`; no key without one.
    pub fn new(secret: Option<&[u8]>) -> Seal {
        Seal {
            key: secret.map(|secret| {
                let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key");
                mac.update(KEY_PURPOSE);
                mac.finalize().into_bytes().into()
            }),
        }
    }

    /// Whether messages are sealed.
    pub fn keyed(&self) -> bool {
        self.key.is_some()
    }

    fn mac(key: &[u8; 32]) -> HmacSha256 {
        HmacSha256::new_from_slice(key).expect("HMAC takes any key")
    }

    /// `body`, sealed (or marked open when there is no key).
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        match &self.key {
            Some(key) => {
                let mut mac = Seal::mac(key);
                mac.update(body);
                let mut sealed = Vec::with_capacity(1 + MAC_BYTES + body.len());
                sealed.push(SEALED);
                sealed.extend_from_slice(&mac.finalize().into_bytes());
                sealed.extend_from_slice(body);
                sealed
            }
            None => {
                let mut open = Vec::with_capacity(1 + body.len());
                open.push(OPEN);
                open.extend_from_slice(body);
                open
            }
        }
    }

    /// The body of `payload` once its seal checks; an error, and nothing read, otherwise.
    pub fn open<'a>(&self, payload: &'a [u8]) -> Result<&'a [u8], SealError> {
        let (&kind, rest) = payload.split_first().ok_or(SealError::Short)?;
        match (&self.key, kind) {
            (Some(key), SEALED) => {
                if rest.len() < MAC_BYTES {
                    return Err(SealError::Short);
                }
                let (tag, body) = rest.split_at(MAC_BYTES);
                let mut mac = Seal::mac(key);
                mac.update(body);
                mac.verify_slice(tag).map_err(|_| SealError::Forged)?;
                Ok(body)
            }
            (Some(_), _) => Err(SealError::Unsealed),
            (None, OPEN) => Ok(rest),
            // Sealed by a node that has a key this one lacks: not of this cluster.
            (None, _) => Err(SealError::Forged),
        }
    }
}

/// Who sent a sealed request, and which of its requests it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Sender {
    pub node: String,
    /// Random for each start of the sender's process: numbers start again with it.
    pub process: u64,
}

/// The requests seen from one sender: the highest number, and which of the
/// [`REORDER_WINDOW`] numbers below it were seen.
struct Seen {
    highest: u64,
    window: [u64; (REORDER_WINDOW / 64) as usize],
    last_ms: u64,
}

impl Seen {
    fn bit(number: u64) -> (usize, u64) {
        let slot = number % REORDER_WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    /// Marks `number` seen; false when it was, or is too old to tell.
    fn take(&mut self, number: u64) -> bool {
        if self.highest < number {
            // Forget the numbers the window slides past.
            let slide = (number - self.highest).min(REORDER_WINDOW);
            for step in 1..=slide {
                let (word, bit) = Seen::bit(self.highest + step);
                self.window[word] &= !bit;
            }
            self.highest = number;
        } else if self.highest - number >= REORDER_WINDOW {
            return false;
        }
        let (word, bit) = Seen::bit(number);
        if self.window[word] & bit != 0 {
            return false;
        }
        self.window[word] |= bit;
        true
    }
}

/// Refuses sealed requests sent too long ago, or seen already. Memory is a few hundred
/// bytes per sending process, and a sender silent for three windows is forgotten (any
/// request of its that could be replayed is then too old).
#[derive(Default)]
pub struct ReplayGuard {
    senders: parking_lot::Mutex<HashMap<Sender, Seen>>,
}

impl ReplayGuard {
    /// Admits request `number` of `sender`, sent at `sent_ms`, received at `now_ms`.
    pub fn admit(
        &self,
        sender: &Sender,
        number: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<(), SealError> {
        let apart = sent_ms.abs_diff(now_ms);
        if REPLAY_WINDOW_MS < apart {
            return Err(SealError::Stale(apart));
        }
        let mut senders = self.senders.lock();
        senders.retain(|_, seen| now_ms.saturating_sub(seen.last_ms) < 3 * REPLAY_WINDOW_MS);
        let seen = senders.entry(sender.clone()).or_insert(Seen {
            highest: 0,
            window: [0; (REORDER_WINDOW / 64) as usize],
            last_ms: now_ms,
        });
        seen.last_ms = now_ms;
        if seen.take(number) {
            Ok(())
        } else {
            Err(SealError::Replayed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_message_opens_only_with_the_same_secret_and_unchanged() {
        let seal = Seal::new(Some(b"a secret of the cluster, 32 bytes"));
        let sealed = seal.seal(b"PUT /api/v1/skus/A");
        assert_eq!(seal.open(&sealed), Ok(&b"PUT /api/v1/skus/A"[..]));
        let other = Seal::new(Some(b"another cluster's secret, 32 byte"));
        assert_eq!(other.open(&sealed), Err(SealError::Forged));
        let mut changed = sealed.clone();
        *changed.last_mut().expect("a body") ^= 1;
        assert_eq!(seal.open(&changed), Err(SealError::Forged));
        assert_eq!(seal.open(&sealed[..10]), Err(SealError::Short));
        assert_eq!(seal.open(&[]), Err(SealError::Short));
        let open = Seal::new(None);
        assert_eq!(seal.open(&open.seal(b"x")), Err(SealError::Unsealed));
        assert_eq!(open.open(&sealed), Err(SealError::Forged));
        assert_eq!(open.open(&open.seal(b"x")), Ok(&b"x"[..]));
    }

    #[test]
    fn a_request_is_taken_once_within_the_window_and_out_of_order() {
        let guard = ReplayGuard::default();
        let a = Sender {
            node: "a".to_owned(),
            process: 7,
        };
        let now = 1_000_000_000;
        assert_eq!(guard.admit(&a, 2, now, now), Ok(()));
        assert_eq!(guard.admit(&a, 1, now, now), Ok(()));
        assert_eq!(guard.admit(&a, 2, now, now), Err(SealError::Replayed));
        assert_eq!(guard.admit(&a, 1, now, now), Err(SealError::Replayed));
        // Another process of the same node counts afresh.
        let restarted = Sender {
            process: 8,
            ..a.clone()
        };
        assert_eq!(guard.admit(&restarted, 1, now, now), Ok(()));
        // Far ahead: what slid out of the window is refused, what is in it is taken once.
        assert_eq!(guard.admit(&a, 5000, now, now), Ok(()));
        assert_eq!(guard.admit(&a, 3, now, now), Err(SealError::Replayed));
        assert_eq!(guard.admit(&a, 4999, now, now), Ok(()));
        assert_eq!(guard.admit(&a, 4999, now, now), Err(SealError::Replayed));
        // Too old or too far ahead of this clock.
        assert_eq!(
            guard.admit(&a, 6000, now - REPLAY_WINDOW_MS - 1, now),
            Err(SealError::Stale(REPLAY_WINDOW_MS + 1))
        );
        assert!(
            guard
                .admit(&a, 6001, now + REPLAY_WINDOW_MS + 5, now)
                .is_err()
        );
    }
}
