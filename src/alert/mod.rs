//! The alert engine: listing levels, dynamic thresholds, the sell-out forecast and the host's
//! hints. `rules` is pure (inputs and a clock reading in, a decision out); `engine` keeps each
//! listing's last decided level and turns durable facts into level changes, hints and curve
//! points for the push hub.

mod engine;
mod event;
pub mod image;
mod rules;
mod view;

#[cfg(test)]
mod tests;

pub use engine::{Engine, RECENT_ALERTS_MAX};
pub use event::{
    Alert, AlertState, Body, Channel, ChannelSnapshot, HintChange, Latest, ListingChange,
    LostChange, Message, Point, RoomEvent, StateChange,
};
pub use rules::{
    Adjustment, Evaluation, Forecast, Hint, Inputs, LOST_RECENT_WINDOW, Level, LevelState, Reason,
    Thresholds, evaluate, forecast, plan_share, thresholds,
};
pub use view::{ListingView, LostView, RoomView, SeriesView};
