//! What the alert engine says: alerts, the events of a room, alert states, and the numbered
//! messages it queues for the hub on its channels. Plain values, shared by the engine, its
//! image and the hub.

use std::sync::Arc;

use serde::Serialize;

use super::rules::{Level, Reason};
use super::view::{HintView, LostView, RoomView};
use crate::clock::Rfc3339;
use crate::ledger::{RoomId, Stock};

/// A level change of one listing: an alert.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub id: u64,
    pub room: String,
    pub sku: String,
    pub from: Level,
    pub to: Level,
    #[schema(value_type = String, format = DateTime)]
    pub at: Rfc3339,
    pub reasons: Vec<Reason>,
    pub hot: bool,
    pub consumed: u64,
    pub forecast: u64,
    pub available: u64,
}

/// A listing's hint changed (`hint` is `null` when there is nothing to do).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct HintChange {
    pub room: String,
    pub sku: String,
    pub level: Level,
    pub hint: Option<HintView>,
    #[schema(value_type = String, format = DateTime)]
    pub at: Rfc3339,
}

/// The consumption curve grew: consumed at the end of `bucket`, and the plan there.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Point {
    pub room: String,
    pub sku: String,
    pub bucket: usize,
    pub actual: u64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Rfc3339,
}

/// A listing was halted or resumed in its room.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ListingChange {
    pub room: String,
    pub sku: String,
    pub halted: bool,
    /// Halted by the engine at red, rather than by an operator.
    pub auto: bool,
    #[schema(value_type = String, format = DateTime)]
    pub at: Rfc3339,
}

/// Orders naming the room were refused for the listing: its lost demand now.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LostChange {
    pub room: String,
    pub sku: String,
    pub lost: LostView,
    #[schema(value_type = String, format = DateTime)]
    pub at: Rfc3339,
}

/// What became of an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Acknowledged,
    /// A later level change of the same listing superseded it.
    Resolved,
}

/// An alert's state changed: the alerts topics tell the console.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StateChange {
    pub id: u64,
    pub room: String,
    pub state: AlertState,
    pub acknowledged_by: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub at: Rfc3339,
}

/// Something a room's subscribers (and, for alerts, the alerts topics) must see.
#[derive(Clone, Debug)]
pub enum RoomEvent {
    Stock {
        room: RoomId,
        stock: Stock,
    },
    Level {
        room: RoomId,
        alert: Arc<Alert>,
    },
    Hint {
        room: RoomId,
        change: HintChange,
    },
    Point {
        room: RoomId,
        point: Point,
    },
    Listing {
        room: RoomId,
        change: ListingChange,
    },
    Lost {
        room: RoomId,
        change: LostChange,
    },
    /// The room was created or changed: its view, with the actual curves only of the
    /// listings whose curve changed (new ones, or all when the schedule moved).
    Room {
        room: RoomId,
        view: Box<RoomView>,
    },
    /// An alert was acknowledged or resolved, or a new one opened: for the alerts topics
    /// only.
    AlertState {
        room: RoomId,
        change: StateChange,
    },
}

impl RoomEvent {
    pub fn room(&self) -> &RoomId {
        match self {
            RoomEvent::Stock { room, .. }
            | RoomEvent::Level { room, .. }
            | RoomEvent::Hint { room, .. }
            | RoomEvent::Point { room, .. }
            | RoomEvent::Listing { room, .. }
            | RoomEvent::Lost { room, .. }
            | RoomEvent::Room { room, .. }
            | RoomEvent::AlertState { room, .. } => room,
        }
    }
}

/// Where a message of the engine goes: a room's topic, the alerts of every room, or the
/// alerts of one room.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Room(RoomId),
    Alerts,
    RoomAlerts(RoomId),
}

/// What a message of the engine carries.
#[derive(Clone, Debug)]
pub enum Body {
    /// On a room's topic.
    Event(Arc<RoomEvent>),
    /// On the alerts topics: a new alert.
    Alert(Arc<Alert>),
    /// On the alerts topics: an alert's new state.
    State(Arc<StateChange>),
}

/// One message of the engine with its channel's sequence number. The engine numbers every
/// channel itself, from the durable facts alone, so every node of a cluster numbers them
/// alike and a screen can resume on any node.
#[derive(Clone, Debug)]
pub struct Message {
    pub channel: Channel,
    pub seq: u64,
    pub body: Body,
}

/// What a channel's snapshot shows.
pub enum ChannelSnapshot {
    /// The room's view; `None` once the room is gone.
    Room(Option<Box<RoomView>>),
    /// The latest alerts, oldest first.
    Alerts(Vec<Arc<Alert>>),
}

/// Each listing's newest alert, which a later one resolves and an acknowledgement
/// acknowledges while it is open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Latest {
    pub id: u64,
    pub state: AlertState,
    pub acknowledged_by: Option<String>,
}
