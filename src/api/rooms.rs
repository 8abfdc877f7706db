//! Room routes: create or change a room (schedule, line-up, forecasts, plans and alert
//! policies), read one with every listing's level, reasons, thresholds, forecast and curve,
//! list them, halt and resume a listing.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339 as Rfc3339Format;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use crate::alert::RoomView;
use crate::clock::{Rfc3339, Timestamp};
use crate::ledger::{
    LedgerError, Listing, PLAN_POINTS_MAX, PlanPoint, PlanShape, Policy, ROOM_LISTINGS_MAX, Room,
    RoomId, SHOWS_KEPT_MAX, ShowRecord, SkuId,
};

/// Longest room name accepted, in bytes.
const ROOM_NAME_BYTES_MAX: usize = 256;

/// Create or change a room. Every listing's `policy` field is optional; missing ones take
/// the defaults.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutRoomRequest {
    name: Option<String>,
    /// RFC 3339.
    starts_at: String,
    /// RFC 3339, after `starts_at`; a show lasts at most two days.
    ends_at: String,
    listings: Vec<ListingBody>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListingBody {
    sku: String,
    /// Units expected to sell in this show.
    forecast: i64,
    /// The plan curve: the share of the forecast expected by each point, or a shape; a
    /// straight line when absent.
    #[serde(default)]
    plan: Option<PlanBody>,
    #[serde(default)]
    policy: PolicyBody,
}

/// A plan: its corners, or how to shape it.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum PlanBody {
    /// The share of the forecast expected by each point, straight lines between them.
    Points(Vec<PlanPointBody>),
    Shape(ShapeBody),
}

/// A plan shaped like the product sells (docs/ALERTS.md).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShapeBody {
    shape: ShapeName,
    /// With `history`: how many of the SKU's latest finished shows to average (5).
    #[schema(minimum = 1, maximum = 20)]
    shows: Option<u32>,
}

/// `linear` (a straight line), `front_loaded` (开场即巅峰: half the forecast in the first
/// fifth of the show), `slow_start` (慢热型: most in the second half), or `history` (the
/// average curve of the SKU's latest finished shows; a straight line when it has none).
#[derive(Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ShapeName {
    Linear,
    FrontLoaded,
    SlowStart,
    History,
}

/// Shows a `history` plan averages unless told.
const HISTORY_SHOWS_DEFAULT: u32 = 5;

impl PlanBody {
    /// The plan's corners over a show of `show_ms`, and how they were made; `history` gives
    /// the SKU's finished shows.
    fn resolve(
        self,
        show_ms: u64,
        history: impl FnOnce() -> Vec<ShowRecord>,
    ) -> Result<(Vec<PlanPoint>, PlanShape), ApiError> {
        let (name, shows) = match self {
            PlanBody::Points(points) => {
                if PLAN_POINTS_MAX < points.len() {
                    return Err(ApiError::invalid(format!(
                        "a plan has at most {PLAN_POINTS_MAX} points"
                    )));
                }
                let points = points
                    .into_iter()
                    .map(|point| {
                        Ok(PlanPoint {
                            elapsed_ms: millis("plan.elapsed_s", point.elapsed_s)?,
                            share: thousandths("plan.share", point.share)?,
                        })
                    })
                    .collect::<Result<_, ApiError>>()?;
                return Ok((points, PlanShape::Given));
            }
            PlanBody::Shape(ShapeBody { shape, shows }) => (shape, shows),
        };
        if shows.is_some() && !matches!(name, ShapeName::History) {
            return Err(ApiError::invalid(
                "plan.shows goes with the history shape only",
            ));
        }
        let resolved = match name {
            ShapeName::Linear => (Vec::new(), PlanShape::Given),
            ShapeName::FrontLoaded => (
                PlanShape::FrontLoaded.profile(show_ms).unwrap_or_default(),
                PlanShape::FrontLoaded,
            ),
            ShapeName::SlowStart => (
                PlanShape::SlowStart.profile(show_ms).unwrap_or_default(),
                PlanShape::SlowStart,
            ),
            ShapeName::History => {
                let asked = shows.unwrap_or(HISTORY_SHOWS_DEFAULT);
                if !(1..=SHOWS_KEPT_MAX as u32).contains(&asked) {
                    return Err(ApiError::invalid(format!(
                        "plan.shows must be between 1 and {SHOWS_KEPT_MAX}, got {asked}"
                    )));
                }
                crate::ledger::history_plan(&history(), asked as usize, show_ms)
            }
        };
        Ok(resolved)
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanPointBody {
    /// Seconds into the show.
    elapsed_s: u64,
    /// Share of the forecast consumed by then (0.5 = 50 %).
    share: f64,
}

/// A listing's alert policy; see `docs/ALERTS.md` for every rule.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyBody {
    /// Shares of the forecast consumed at which yellow, orange and red start (0.8, 1.0, 1.2).
    yellow: Option<f64>,
    orange: Option<f64>,
    red: Option<f64>,
    /// Yellow when available < coverage × the forecast demand still to come (1.2).
    coverage: Option<f64>,
    /// Replenishment lead time in seconds (0); raises the coverage factor.
    lead_time_s: Option<u64>,
    /// Tighten the thresholds when `tighten_share` is sold within `tighten_within_s`
    /// (0.4 within 1800 s), by `tighten_factor` (0.85).
    tighten_share: Option<f64>,
    tighten_within_s: Option<u64>,
    tighten_factor: Option<f64>,
    /// Relax them when under `relax_share` after `relax_after_s` (0.1 after 3600 s), by
    /// `relax_factor` (1.15).
    relax_share: Option<f64>,
    relax_after_s: Option<u64>,
    relax_factor: Option<f64>,
    /// A level goes down only this far past its threshold (0.05) and after `dwell_s` (30).
    hysteresis: Option<f64>,
    dwell_s: Option<u64>,
    /// The window the sales velocity is measured over, in seconds (120).
    velocity_window_s: Option<u64>,
    /// Halt the listing in this room at red (false).
    auto_halt: Option<bool>,
    /// A hot product: its alerts go to more channels (false).
    hot: Option<bool>,
}

fn thousandths(field: &'static str, value: f64) -> Result<u32, ApiError> {
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return Err(ApiError::invalid(format!(
            "{field} must be a number between 0 and 100, got {value}"
        )));
    }
    Ok((value * 1000.0).round() as u32)
}

fn millis(field: &'static str, seconds: u64) -> Result<u64, ApiError> {
    seconds
        .checked_mul(1000)
        .filter(|ms| *ms <= crate::ledger::SHOW_MS_MAX)
        .ok_or_else(|| ApiError::invalid(format!("{field} must be at most two days")))
}

impl PolicyBody {
    fn into_policy(self) -> Result<Policy, ApiError> {
        let defaults = Policy::default();
        let share = |field, value: Option<f64>, default| match value {
            Some(value) => thousandths(field, value),
            None => Ok(default),
        };
        let duration = |field, value: Option<u64>, default| match value {
            Some(value) => millis(field, value),
            None => Ok(default),
        };
        let policy = Policy {
            yellow: share("policy.yellow", self.yellow, defaults.yellow)?,
            orange: share("policy.orange", self.orange, defaults.orange)?,
            red: share("policy.red", self.red, defaults.red)?,
            coverage: share("policy.coverage", self.coverage, defaults.coverage)?,
            lead_time_ms: duration(
                "policy.lead_time_s",
                self.lead_time_s,
                defaults.lead_time_ms,
            )?,
            tighten_share: share(
                "policy.tighten_share",
                self.tighten_share,
                defaults.tighten_share,
            )?,
            tighten_within_ms: duration(
                "policy.tighten_within_s",
                self.tighten_within_s,
                defaults.tighten_within_ms,
            )?,
            tighten_factor: share(
                "policy.tighten_factor",
                self.tighten_factor,
                defaults.tighten_factor,
            )?,
            relax_share: share("policy.relax_share", self.relax_share, defaults.relax_share)?,
            relax_after_ms: duration(
                "policy.relax_after_s",
                self.relax_after_s,
                defaults.relax_after_ms,
            )?,
            relax_factor: share(
                "policy.relax_factor",
                self.relax_factor,
                defaults.relax_factor,
            )?,
            hysteresis: share("policy.hysteresis", self.hysteresis, defaults.hysteresis)?,
            dwell_ms: duration("policy.dwell_s", self.dwell_s, defaults.dwell_ms)?,
            velocity_window_ms: duration(
                "policy.velocity_window_s",
                self.velocity_window_s,
                defaults.velocity_window_ms,
            )?,
            auto_halt: self.auto_halt.unwrap_or(defaults.auto_halt),
            hot: self.hot.unwrap_or(defaults.hot),
        };
        policy.validate()?;
        Ok(policy)
    }
}

pub(super) fn parse_time(field: &'static str, text: &str) -> Result<Timestamp, ApiError> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339Format).map_err(|error| {
        ApiError::invalid(format!(
            "{field} must be an RFC 3339 time, got {text:?}: {error}"
        ))
    })?;
    let millis = parsed.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(millis)
        .map(Timestamp::from_millis)
        .map_err(|_| ApiError::invalid(format!("{field} must be after 1970")))
}

impl PutRoomRequest {
    /// The room this body describes; `history` gives a SKU's finished shows, for plans
    /// shaped by them.
    fn into_room(
        self,
        id: RoomId,
        history: &dyn Fn(&SkuId) -> Vec<ShowRecord>,
    ) -> Result<Room, ApiError> {
        let name = self.name.unwrap_or_default();
        if ROOM_NAME_BYTES_MAX < name.len() || name.chars().any(char::is_control) {
            return Err(ApiError::invalid(format!(
                "name must be at most {ROOM_NAME_BYTES_MAX} bytes, without control characters"
            )));
        }
        if ROOM_LISTINGS_MAX < self.listings.len() {
            return Err(ApiError::invalid(format!(
                "a room holds at most {ROOM_LISTINGS_MAX} listings"
            )));
        }
        let starts_at = parse_time("starts_at", &self.starts_at)?;
        let ends_at = parse_time("ends_at", &self.ends_at)?;
        let listings = self
            .listings
            .into_iter()
            .map(|listing| {
                let forecast = u64::try_from(listing.forecast)
                    .ok()
                    .filter(|forecast| 0 < *forecast)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "forecast must be at least 1, got {}",
                            listing.forecast
                        ))
                    })?;
                let sku = SkuId::new(&listing.sku)?;
                let show_ms = ends_at.as_millis().saturating_sub(starts_at.as_millis());
                let (plan, shape) = match listing.plan {
                    Some(plan) => plan.resolve(show_ms, || history(&sku))?,
                    None => (Vec::new(), PlanShape::Given),
                };
                Ok(Listing {
                    sku,
                    forecast,
                    plan,
                    shape,
                    policy: listing.policy.into_policy()?,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        let room = Room {
            id,
            name,
            starts_at,
            ends_at,
            listings,
        };
        room.validate()?;
        Ok(room)
    }
}

/// Decodes and checks a room body as `PUT /api/v1/rooms/{room}` would.
pub(crate) fn decode_room(bytes: &[u8]) -> bool {
    let Ok(id) = RoomId::new("fuzz") else {
        return false;
    };
    serde_json::from_slice::<PutRoomRequest>(bytes)
        .ok()
        .is_some_and(|body| body.into_room(id, &|_| Vec::new()).is_ok())
}

fn room_id(raw: &str) -> Result<RoomId, ApiError> {
    Ok(RoomId::new(raw)?)
}

fn view(shared: &AppState, room: &RoomId) -> Result<Json<RoomView>, ApiError> {
    shared
        .engine
        .room_view(room, shared.now())
        .map(Json)
        .ok_or_else(|| LedgerError::RoomNotFound { room: room.clone() }.into())
}

#[utoipa::path(put, path = "/api/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "Room id")),
    request_body = PutRoomRequest,
    responses(
        (status = 200, description = "The room with every listing's stock, level, reasons, thresholds, forecast and curve (docs/ALERTS.md)", body = RoomView),
        (status = 404, description = "A listed SKU does not exist", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody)))]
pub(crate) async fn put(
    State(shared): State<AppState>,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<PutRoomRequest>,
) -> Result<Json<RoomView>, ApiError> {
    let id = room_id(&room)?;
    let room = body.into_room(id.clone(), &|sku| {
        shared.ledger.shows(sku).unwrap_or_default()
    })?;
    shared.writable()?;
    shared.ledger.put_room(shared.now(), room)?;
    // The view reads durable state, so it is taken once this change is durable.
    shared.durable().await?;
    view(&shared, &id)
}

#[utoipa::path(get, path = "/api/v1/rooms/{room}", tag = "rooms",
    params(("room" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The room with every listing's stock, level, reasons, thresholds, forecast and curve (docs/ALERTS.md)", body = RoomView),
        (status = 404, description = "No such room", body = ErrorBody)))]
pub(crate) async fn get(
    State(shared): State<AppState>,
    ApiPath(room): ApiPath<String>,
) -> Result<Json<RoomView>, ApiError> {
    view(&shared, &room_id(&room)?)
}

/// One room in the listing of rooms.
#[derive(Serialize, ToSchema)]
pub(crate) struct RoomSummary {
    room: String,
    name: String,
    #[schema(value_type = String)]
    starts_at: Rfc3339,
    #[schema(value_type = String)]
    ends_at: Rfc3339,
    listings: Vec<ListingSummary>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ListingSummary {
    sku: String,
    /// `green`, `yellow`, `orange` or `red`.
    level: String,
    halted: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RoomListResponse {
    rooms: Vec<RoomSummary>,
}

#[utoipa::path(get, path = "/api/v1/rooms", tag = "rooms",
    responses((status = 200, description = "Every room, by id, with each listing's level", body = RoomListResponse)))]
pub(crate) async fn list(
    State(shared): State<AppState>,
    claims: Option<axum::Extension<crate::auth::Claims>>,
) -> Json<RoomListResponse> {
    let now = shared.now();
    let allowed = claims.and_then(|axum::Extension(claims)| claims.rooms);
    let rooms = shared
        .ledger
        .rooms()
        .iter()
        .filter(|room| {
            allowed
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|id| id == room.id.as_str()))
        })
        .filter_map(|room| shared.engine.room_summary(&room.id, now))
        .map(|view| RoomSummary {
            room: view.room,
            name: view.name,
            starts_at: view.starts_at,
            ends_at: view.ends_at,
            listings: view
                .listings
                .into_iter()
                .map(|listing| ListingSummary {
                    sku: listing.sku,
                    level: listing.level.as_str().to_owned(),
                    halted: listing.halted,
                })
                .collect(),
        })
        .collect();
    Json(RoomListResponse { rooms })
}

#[utoipa::path(post, path = "/api/v1/rooms/{room}/listings/{sku}/halt", tag = "rooms",
    params(("room" = String, Path, description = "Room id"), ("sku" = String, Path, description = "SKU id")),
    request_body(content = super::alerts::AckRequest, description = "Optional: who halts it (the token's subject otherwise)"),
    responses(
        (status = 200, description = "The room; orders naming it are refused for the SKU with `halted`", body = RoomView),
        (status = 404, description = "No such room, or the room does not list the SKU", body = ErrorBody)))]
pub(crate) async fn halt(
    State(shared): State<AppState>,
    claims: Option<axum::Extension<crate::auth::Claims>>,
    ApiPath((room, sku)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<RoomView>, ApiError> {
    let by = acting(claims, &body)?;
    set_halted(shared, room, sku, true, by).await
}

/// Who halts or resumes: the body's `by`, or the token's subject.
fn acting(
    claims: Option<axum::Extension<crate::auth::Claims>>,
    body: &[u8],
) -> Result<String, ApiError> {
    let claims = claims.map_or_else(crate::auth::Claims::open, |axum::Extension(claims)| claims);
    super::alerts::acting(&claims, body)
}

#[utoipa::path(post, path = "/api/v1/rooms/{room}/listings/{sku}/resume", tag = "rooms",
    params(("room" = String, Path, description = "Room id"), ("sku" = String, Path, description = "SKU id")),
    request_body(content = super::alerts::AckRequest, description = "Optional: who resumes it (the token's subject otherwise)"),
    responses(
        (status = 200, description = "The room; orders naming it are taken for the SKU again", body = RoomView),
        (status = 404, description = "No such room, or the room does not list the SKU", body = ErrorBody)))]
pub(crate) async fn resume(
    State(shared): State<AppState>,
    claims: Option<axum::Extension<crate::auth::Claims>>,
    ApiPath((room, sku)): ApiPath<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<RoomView>, ApiError> {
    let by = acting(claims, &body)?;
    set_halted(shared, room, sku, false, by).await
}

async fn set_halted(
    shared: AppState,
    room: String,
    sku: String,
    halted: bool,
    by: String,
) -> Result<Json<RoomView>, ApiError> {
    let room = room_id(&room)?;
    let sku = SkuId::new(&sku)?;
    shared.writable()?;
    if halted {
        shared
            .ledger
            .halt_listing(shared.now(), &room, &sku, false, Some(&by))?;
    } else {
        shared
            .ledger
            .resume_listing(shared.now(), &room, &sku, Some(&by))?;
    }
    shared.durable().await?;
    view(&shared, &room)
}

/// A listing's new forecast.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForecastRequest {
    #[serde(deserialize_with = "super::integral::deserialize")]
    forecast: i64,
}

#[utoipa::path(put, path = "/api/v1/rooms/{room}/listings/{sku}/forecast", tag = "rooms",
    params(("room" = String, Path, description = "Room id"), ("sku" = String, Path, description = "SKU id")),
    request_body = ForecastRequest,
    responses(
        (status = 200, description = "The room with the listing's new forecast (what it consumed stays)", body = RoomView),
        (status = 404, description = "No such room, or the room does not list the SKU", body = ErrorBody),
        (status = 422, description = "`forecast` not positive", body = ErrorBody)))]
pub(crate) async fn forecast(
    State(shared): State<AppState>,
    ApiPath((room, sku)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ForecastRequest>,
) -> Result<Json<RoomView>, ApiError> {
    let id = room_id(&room)?;
    let sku = SkuId::new(&sku)?;
    let forecast = u64::try_from(body.forecast)
        .ok()
        .filter(|forecast| (1..=crate::ledger::STOCK_QTY_MAX).contains(forecast))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "forecast must be at least 1, got {}",
                body.forecast
            ))
        })?;
    shared.writable()?;
    shared
        .ledger
        .set_forecast(shared.now(), &id, &sku, forecast)?;
    // The view reads durable state, so it is taken once this change is durable.
    shared.durable().await?;
    view(&shared, &id)
}
