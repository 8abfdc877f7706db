//! Who may do what: roles, signed tokens with an expiry, and signed order webhooks.
//!
//! A token is `sp1.<base64url JSON claims>.<base64url HMAC-SHA256 of "sp1.<claims>">` under
//! the server's secret: `{"sub", "role", "rooms", "exp"}`. Nothing is stored per token; a
//! token is revoked by changing the secret or by its expiry. `stockpulse token` issues them.
//!
//! Roles: `admin` (everything), `operator` (stock and room commands and alerts, for its rooms
//! when it has a list), `ingest` (the order API), `viewer` (reads and pushes, for its rooms
//! when it has a list: a screen or a phone).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::clock::Timestamp;

/// The shortest secret accepted.
pub const SECRET_BYTES_MIN: usize = 32;
/// Signed webhooks older or newer than this are refused (replays).
pub const WEBHOOK_WINDOW_S: u64 = 300;
const PREFIX: &str = "sp1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Ingest,
    Viewer,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "ingest" => Some(Role::Ingest),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who it was issued to, for logs and acknowledgements.
    pub sub: String,
    pub role: Role,
    /// The rooms an operator or a viewer is limited to; none means every room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Unix seconds after which the token is refused.
    pub exp: u64,
}

/// What a request wants to do, for [`Claims::allows`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Read anything not tied to one room (SKUs, orders, deliveries, metrics, every alert).
    ReadAll,
    /// Read one room, its push topic included.
    ReadRoom(&'a str),
    /// Place or move orders.
    Order,
    /// Change stock (SKU settings, restocks, halts).
    Stock,
    /// Change a room (its line-up, forecasts, halts).
    OperateRoom(&'a str),
    /// Acknowledge alerts (of the rooms the token names, when it names some: the notifier
    /// finds no other).
    Acknowledge,
}

impl Claims {
    /// An administrator: what every request is when no secret is configured (loopback).
    pub fn open() -> Claims {
        Claims {
            sub: "local".to_owned(),
            role: Role::Admin,
            rooms: None,
            exp: u64::MAX,
        }
    }

    fn has_room(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|allowed| allowed == room))
    }

    pub fn allows(&self, action: Action<'_>) -> bool {
        match (self.role, action) {
            (Role::Admin, _) => true,
            // An operator of some rooms is kept to them: stock and the other rooms' reads
            // are for operators of every room.
            (Role::Operator, Action::ReadAll | Action::Stock) => self.rooms.is_none(),
            (Role::Operator, Action::ReadRoom(room) | Action::OperateRoom(room)) => {
                self.has_room(room)
            }
            (Role::Operator, Action::Acknowledge) => true,
            (Role::Ingest, Action::Order | Action::ReadAll) => true,
            (Role::Ingest, Action::ReadRoom(_)) => true,
            (Role::Viewer, Action::ReadRoom(room)) => self.has_room(room),
            (Role::Viewer, Action::ReadAll) => self.rooms.is_none(),
            _ => false,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the webhook's timestamp is more than {WEBHOOK_WINDOW_S} s from now")]
    Stale,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size")
}

/// Issues and checks tokens under one secret.
#[derive(Clone)]
pub struct Authority {
    secret: Vec<u8>,
}

impl Authority {
    pub fn new(secret: &[u8]) -> Authority {
        Authority {
            secret: secret.to_vec(),
        }
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims encode"));
        let signed = format!("{PREFIX}.{payload}");
        let mut mac = mac(&self.secret);
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        let mut mac = mac(&self.secret);
        mac.update(PREFIX.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::BadSignature)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
        if claims.exp <= now.as_millis() / 1000 {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }
}

/// Checks a platform's signed webhook: `signature` is `sha256=<hex HMAC-SHA256 of
/// "<timestamp>.<body>">` under the platform's secret, and the timestamp is within the
/// replay window.
pub fn verify_webhook(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: Timestamp,
) -> Result<(), AuthError> {
    let seconds: u64 = timestamp.parse().map_err(|_| AuthError::Malformed)?;
    if WEBHOOK_WINDOW_S < seconds.abs_diff(now.as_millis() / 1000) {
        return Err(AuthError::Stale);
    }
    let expected = signature
        .strip_prefix("sha256=")
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .ok_or(AuthError::Malformed)?;
    webhook_mac(secret, timestamp, body)
        .verify_slice(&expected)
        .map_err(|_| AuthError::BadSignature)
}

/// The HMAC-SHA256 of `"<timestamp>.<body>"`: what signs a webhook either way, the ones
/// platforms send here and the ones alert delivery sends out.
fn webhook_mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = mac(secret);
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `sha256=<hex>` of [`webhook_mac`], as the `X-Stockpulse-Signature` header carries it.
pub fn sign_webhook(secret: &[u8], timestamp_s: u64, body: &[u8]) -> String {
    let mac = webhook_mac(secret, &timestamp_s.to_string(), body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The first 128 bits of the SHA-256 of `parts` joined by newlines, in hex: how an
/// idempotency key too long to send as it is gets shortened.
pub fn short_digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    use sha2::Digest;
    let mut digest = Sha256::new();
    for (index, part) in parts.into_iter().enumerate() {
        if 0 < index {
            digest.update(b"\n");
        }
        digest.update(part);
    }
    hex::encode(&digest.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

    fn claims(role: Role, rooms: Option<&[&str]>) -> Claims {
        Claims {
            sub: "test".to_owned(),
            role,
            rooms: rooms.map(|rooms| rooms.iter().map(|room| (*room).to_owned()).collect()),
            exp: 1_800_000_600,
        }
    }

    #[test]
    fn a_token_round_trips_and_tampering_or_expiry_is_refused() {
        let authority = Authority::new(b"0123456789abcdef0123456789abcdef");
        let token = authority.issue(&claims(Role::Viewer, Some(&["r1"])));
        assert_eq!(
            authority.verify(&token, NOW),
            Ok(claims(Role::Viewer, Some(&["r1"])))
        );
        let forged =
            Authority::new(b"another secret of thirty-two byt").issue(&claims(Role::Admin, None));
        assert_eq!(authority.verify(&forged, NOW), Err(AuthError::BadSignature));
        let (head, signature) = token.rsplit_once('.').expect("three parts");
        let promoted = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims(Role::Admin, None)).expect("encodes"));
        let tampered = format!("sp1.{promoted}.{signature}");
        assert_eq!(
            authority.verify(&tampered, NOW),
            Err(AuthError::BadSignature)
        );
        assert_eq!(authority.verify(head, NOW), Err(AuthError::Malformed));
        assert_eq!(authority.verify("", NOW), Err(AuthError::Malformed));
        let late = Timestamp::from_millis(1_800_000_600_000);
        assert_eq!(authority.verify(&token, late), Err(AuthError::Expired));
    }

    #[test]
    fn roles_allow_what_they_say() {
        let admin = claims(Role::Admin, None);
        let operator = claims(Role::Operator, Some(&["r1"]));
        let ingest = claims(Role::Ingest, None);
        let screen = claims(Role::Viewer, Some(&["r1"]));
        let viewer = claims(Role::Viewer, None);
        for action in [
            Action::ReadAll,
            Action::ReadRoom("r2"),
            Action::Order,
            Action::Stock,
            Action::OperateRoom("r2"),
        ] {
            assert!(admin.allows(action));
        }
        assert!(operator.allows(Action::OperateRoom("r1")));
        assert!(!operator.allows(Action::OperateRoom("r2")));
        assert!(!operator.allows(Action::Order));
        assert!(!operator.allows(Action::ReadAll));
        assert!(!operator.allows(Action::Stock));
        assert!(claims(Role::Operator, None).allows(Action::Stock));
        assert!(ingest.allows(Action::Order));
        assert!(!ingest.allows(Action::Stock));
        assert!(screen.allows(Action::ReadRoom("r1")));
        assert!(!screen.allows(Action::ReadRoom("r2")));
        assert!(!screen.allows(Action::ReadAll));
        assert!(viewer.allows(Action::ReadAll));
        assert!(!viewer.allows(Action::Order));
        assert!(!viewer.allows(Action::OperateRoom("r1")));
    }

    #[test]
    fn a_signed_webhook_verifies_within_its_window_only() {
        let secret = b"platform secret";
        let body = br#"{"order_id":"dy-1"}"#;
        let timestamp = (NOW.as_millis() / 1000).to_string();
        let mut mac = mac(secret);
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            verify_webhook(secret, &timestamp, &signature, body, NOW),
            Ok(())
        );
        assert_eq!(
            verify_webhook(secret, &timestamp, &signature, b"{}", NOW),
            Err(AuthError::BadSignature)
        );
        let later = Timestamp::from_millis(NOW.as_millis() + 301_000);
        assert_eq!(
            verify_webhook(secret, &timestamp, &signature, body, later),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify_webhook(secret, "soon", &signature, body, NOW),
            Err(AuthError::Malformed)
        );
    }
}
