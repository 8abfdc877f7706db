//! The engine's state as bytes, for a cluster's shared snapshot: a node that starts from the
//! snapshot goes on deciding levels, raising alerts and numbering messages exactly where the
//! nodes that saw the whole log are, so a screen can resume on it without a resync.
//!
//! Like the journal's records, these are the engine's own serde types, converted by hand,
//! MessagePack-encoded, and validated on the way back: the bytes come from outside.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::event::{Alert, AlertState, Channel, Latest};
use super::rules::{Hint, Level, LevelState, Reason};
use crate::clock::{Rfc3339, Timestamp};
use crate::ledger::{RoomId, SkuId};

/// The format of the bytes; bumped whenever they change meaning.
const VERSION: u32 = 1;

/// How deep an image may nest: a handful of levels, and a bound keeps hostile bytes from
/// exhausting the stack.
const DEPTH_MAX: usize = 16;

/// Every rule a reason may name.
const RULES: &[&str] = &[
    "consumed_share",
    "coverage",
    "sold_out",
    "tightened",
    "relaxed",
    "hysteresis",
    "dwell",
    "restart",
];

/// What the engine keeps of one listing.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveImage {
    pub room: RoomId,
    pub sku: SkuId,
    pub state: LevelState,
    pub hint: Option<Hint>,
    pub point: (usize, u64),
}

/// The engine's state after the batch ending at fact `position`.
#[derive(Clone, Debug, Default)]
pub struct EngineImage {
    pub position: u64,
    pub next_alert: u64,
    pub live: Vec<LiveImage>,
    pub latest: Vec<((RoomId, SkuId), Latest)>,
    pub sequences: Vec<(Channel, u64)>,
    pub recent: VecDeque<Arc<Alert>>,
}

#[derive(Serialize, Deserialize)]
struct ImageRecord {
    version: u32,
    position: u64,
    next_alert: u64,
    live: Vec<LiveRecord>,
    latest: Vec<LatestRecord>,
    sequences: Vec<SequenceRecord>,
    recent: Vec<AlertRecord>,
}

#[derive(Serialize, Deserialize)]
struct LiveRecord {
    room: String,
    sku: String,
    level: Level,
    since: u64,
    hint: Option<String>,
    bucket: u64,
    consumed: u64,
}

#[derive(Serialize, Deserialize)]
struct LatestRecord {
    room: String,
    sku: String,
    id: u64,
    state: AlertState,
    acknowledged_by: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SequenceRecord {
    /// `room`, `alerts` or `room_alerts`.
    kind: String,
    room: Option<String>,
    seq: u64,
}

#[derive(Serialize, Deserialize)]
struct AlertRecord {
    id: u64,
    room: String,
    sku: String,
    from: Level,
    to: Level,
    at: u64,
    reasons: Vec<ReasonRecord>,
    hot: bool,
    consumed: u64,
    forecast: u64,
    available: u64,
}

#[derive(Serialize, Deserialize)]
struct ReasonRecord {
    rule: String,
    level: Level,
    value: f64,
    threshold: f64,
    /// The English words (images before the Chinese ones were kept hold only these).
    text: String,
    #[serde(default)]
    zh_cn: String,
}

pub fn encode(image: &EngineImage) -> Vec<u8> {
    let record = ImageRecord {
        version: VERSION,
        position: image.position,
        next_alert: image.next_alert,
        live: image
            .live
            .iter()
            .map(|live| LiveRecord {
                room: live.room.as_str().to_owned(),
                sku: live.sku.as_str().to_owned(),
                level: live.state.level,
                since: live.state.since.as_millis(),
                hint: live.hint.map(|hint| hint.key().to_owned()),
                bucket: live.point.0 as u64,
                consumed: live.point.1,
            })
            .collect(),
        latest: image
            .latest
            .iter()
            .map(|((room, sku), latest)| LatestRecord {
                room: room.as_str().to_owned(),
                sku: sku.as_str().to_owned(),
                id: latest.id,
                state: latest.state,
                acknowledged_by: latest.acknowledged_by.clone(),
            })
            .collect(),
        sequences: image
            .sequences
            .iter()
            .map(|(channel, seq)| {
                let (kind, room) = match channel {
                    Channel::Room(room) => ("room", Some(room.as_str().to_owned())),
                    Channel::Alerts => ("alerts", None),
                    Channel::RoomAlerts(room) => ("room_alerts", Some(room.as_str().to_owned())),
                };
                SequenceRecord {
                    kind: kind.to_owned(),
                    room,
                    seq: *seq,
                }
            })
            .collect(),
        recent: image
            .recent
            .iter()
            .map(|alert| AlertRecord {
                id: alert.id,
                room: alert.room.clone(),
                sku: alert.sku.clone(),
                from: alert.from,
                to: alert.to,
                at: alert.at.0.as_millis(),
                reasons: alert
                    .reasons
                    .iter()
                    .map(|reason| ReasonRecord {
                        rule: reason.rule.to_owned(),
                        level: reason.level,
                        value: reason.value,
                        threshold: reason.threshold,
                        text: reason.en.clone(),
                        zh_cn: reason.zh_cn.clone(),
                    })
                    .collect(),
                hot: alert.hot,
                consumed: alert.consumed,
                forecast: alert.forecast,
                available: alert.available,
            })
            .collect(),
    };
    rmp_serde::to_vec(&record).expect("writing to a Vec cannot fail")
}

pub fn decode(bytes: &[u8]) -> Result<EngineImage, String> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(DEPTH_MAX);
    let record = ImageRecord::deserialize(&mut deserializer)
        .map_err(|error| format!("not an alert engine image: {error}"))?;
    if record.version != VERSION {
        return Err(format!(
            "alert engine image of version {}, this node reads {VERSION}",
            record.version
        ));
    }
    let room = |room: &str| RoomId::new(room).map_err(|error| error.to_string());
    let sku = |sku: &str| SkuId::new(sku).map_err(|error| error.to_string());
    let mut image = EngineImage {
        position: record.position,
        next_alert: record.next_alert,
        ..EngineImage::default()
    };
    for live in record.live {
        let hint = match live.hint.as_deref() {
            None => None,
            Some(key) => Some(
                [Hint::SlowThePace, Hint::AddInteraction, Hint::StopSelling]
                    .into_iter()
                    .find(|hint| hint.key() == key)
                    .ok_or_else(|| format!("unknown hint {key:?}"))?,
            ),
        };
        image.live.push(LiveImage {
            room: room(&live.room)?,
            sku: sku(&live.sku)?,
            state: LevelState {
                level: live.level,
                since: Timestamp::from_millis(live.since),
            },
            hint,
            point: (
                usize::try_from(live.bucket).unwrap_or(usize::MAX),
                live.consumed,
            ),
        });
    }
    for latest in record.latest {
        image.latest.push((
            (room(&latest.room)?, sku(&latest.sku)?),
            Latest {
                id: latest.id,
                state: latest.state,
                acknowledged_by: latest.acknowledged_by,
            },
        ));
    }
    for sequence in record.sequences {
        let channel = match (sequence.kind.as_str(), sequence.room.as_deref()) {
            ("room", Some(id)) => Channel::Room(room(id)?),
            ("alerts", None) => Channel::Alerts,
            ("room_alerts", Some(id)) => Channel::RoomAlerts(room(id)?),
            (kind, _) => return Err(format!("unknown channel {kind:?}")),
        };
        image.sequences.push((channel, sequence.seq));
    }
    for alert in record.recent {
        room(&alert.room)?;
        sku(&alert.sku)?;
        let mut reasons = Vec::with_capacity(alert.reasons.len());
        for reason in alert.reasons {
            let rule = RULES
                .iter()
                .find(|rule| **rule == reason.rule)
                .ok_or_else(|| format!("unknown rule {:?}", reason.rule))?;
            // An image kept before reasons had Chinese words shows the English ones.
            let zh_cn = if reason.zh_cn.is_empty() {
                reason.text.clone()
            } else {
                reason.zh_cn
            };
            reasons.push(Reason::new(
                rule,
                reason.level,
                (reason.value, reason.threshold),
                (zh_cn, reason.text),
            ));
        }
        image.recent.push_back(Arc::new(Alert {
            id: alert.id,
            room: alert.room,
            sku: alert.sku,
            from: alert.from,
            to: alert.to,
            at: Rfc3339(Timestamp::from_millis(alert.at)),
            reasons,
            hot: alert.hot,
            consumed: alert.consumed,
            forecast: alert.forecast,
            available: alert.available,
        }));
    }
    Ok(image)
}
