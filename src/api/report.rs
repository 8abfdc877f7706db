//! The post-show review (直播复盘): `GET /api/v1/rooms/{room}/report` and its CSV. Per
//! listing what the show consumed, sold, gave back and lost, when it sold out and sold
//! fastest, how close the forecast was, every alert with who acknowledged it and after how
//! long, every halt with who lifted it; per room the totals and a timeline. Built from
//! durable state only (the listings' tallies and the notifier's records), so it reads the
//! same after a restart.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::ApiPath;
use crate::alert::{Level, ListingView, LostView, Reason, SeriesView, Thresholds};
use crate::clock::Rfc3339;
use crate::ledger::{LedgerError, RoomId, ShowRecord};

/// One alert of a listing as the review reads it.
#[derive(Clone, Serialize, ToSchema)]
pub(crate) struct ReportAlert {
    id: u64,
    from: Level,
    to: Level,
    #[schema(value_type = String, format = DateTime)]
    at: Rfc3339,
    #[schema(value_type = Vec<Reason>)]
    reasons: serde_json::Value,
    /// `open`, `acknowledged` or `resolved`.
    state: String,
    acknowledged_by: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    acknowledged_at: Option<Rfc3339>,
    /// Seconds from the alert to its acknowledgement.
    acknowledged_after_s: Option<u64>,
    /// Escalations sent (SMS, phone) while it was not acknowledged.
    escalations: u32,
}

/// A halt of the listing in its room and what lifted it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReportHalt {
    #[schema(value_type = String, format = DateTime)]
    at: Rfc3339,
    /// By the alert engine at red.
    auto: bool,
    by: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    resumed_at: Option<Rfc3339>,
    resumed_by: Option<String>,
}

/// One listing of the review.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReportListing {
    sku: String,
    name: String,
    forecast: u64,
    /// Locked + sold by the room's orders now, including what was taken before the show.
    consumed: u64,
    /// Consumed during the show.
    consumed_in_show: u64,
    /// Units of the room's orders paid, refunded, cancelled and left to expire.
    sold: u64,
    refunded: u64,
    cancelled: u64,
    expired: u64,
    /// When the SKU first had nothing available during the show.
    #[schema(value_type = Option<String>, format = DateTime)]
    sold_out_at: Option<Rfc3339>,
    lost: LostView,
    /// The fastest five seconds, in units a minute, and when.
    peak_per_min: f64,
    #[schema(value_type = Option<String>, format = DateTime)]
    peak_at: Option<Rfc3339>,
    /// consumed in the show / forecast.
    accuracy: f64,
    /// `front_loaded`, `history`, …: how the plan was made.
    plan_shape: String,
    level: Level,
    alerts: Vec<ReportAlert>,
    halts: Vec<ReportHalt>,
    /// The thresholds in force at the end (or now), for the curve's bands.
    thresholds: Thresholds,
    /// The consumption curve against the plan, as the room view gives it.
    series: SeriesView,
}

/// What happened, in time order.
#[derive(Serialize, ToSchema)]
pub(crate) struct TimelineEntry {
    #[schema(value_type = String, format = DateTime)]
    at: Rfc3339,
    /// `start`, `alert`, `acknowledged`, `halted`, `resumed`, `sold_out`, `peak` or `end`.
    kind: &'static str,
    sku: Option<String>,
    /// The level an alert went to.
    level: Option<Level>,
    by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReportTotals {
    forecast: u64,
    consumed_in_show: u64,
    sold: u64,
    refunded: u64,
    cancelled: u64,
    expired: u64,
    lost: u64,
    accuracy: f64,
    alerts: usize,
    halts: usize,
}

/// The review of one show.
#[derive(Serialize, ToSchema)]
pub(crate) struct Report {
    room: String,
    name: String,
    #[schema(value_type = String, format = DateTime)]
    starts_at: Rfc3339,
    #[schema(value_type = String, format = DateTime)]
    ends_at: Rfc3339,
    #[schema(value_type = String, format = DateTime)]
    generated_at: Rfc3339,
    /// The show's end has passed.
    finished: bool,
    totals: ReportTotals,
    listings: Vec<ReportListing>,
    timeline: Vec<TimelineEntry>,
}

/// How far before its start and after its end an alert still belongs to a show.
const ALERT_MARGIN_MS: u64 = 3_600_000;

fn room_id(raw: &str) -> Result<RoomId, ApiError> {
    Ok(RoomId::new(raw)?)
}

#[utoipa::path(get, path = "/api/v1/rooms/{room}/report", tag = "rooms",
    params(("room" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The post-show review: per listing forecast, consumption, sales, refunds, cancelled and expired locks, sell-out, lost demand, peak, accuracy, alerts with their acknowledgements, halts; per room totals and a timeline", body = Report),
        (status = 404, description = "No such room", body = ErrorBody)))]
pub(crate) async fn json(
    State(shared): State<AppState>,
    ApiPath(room): ApiPath<String>,
) -> Result<Json<Report>, ApiError> {
    Ok(Json(report(&shared, &room_id(&room)?).await?))
}

#[utoipa::path(get, path = "/api/v1/rooms/{room}/report.csv", tag = "rooms",
    params(("room" = String, Path, description = "Room id")),
    responses(
        (status = 200, description = "The review's listings, one line each, for a spreadsheet (UTF-8 with a byte order mark)", content_type = "text/csv"),
        (status = 404, description = "No such room", body = ErrorBody)))]
pub(crate) async fn csv(
    State(shared): State<AppState>,
    ApiPath(room): ApiPath<String>,
) -> Result<Response, ApiError> {
    let room = room_id(&room)?;
    let report = report(&shared, &room).await?;
    let body = to_csv(&report);
    let disposition = format!(
        "attachment; filename=\"report-{}.csv\"",
        ascii_name(room.as_str())
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// A file name's characters: ASCII letters, digits, `-` and `_`; anything else `_`.
fn ascii_name(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn report(shared: &AppState, room: &RoomId) -> Result<Report, ApiError> {
    let now = shared.now();
    let not_found = || ApiError::from(LedgerError::RoomNotFound { room: room.clone() });
    let state = shared.engine.durable_room(room).ok_or_else(not_found)?;
    let view = shared.engine.room_view(room, now).ok_or_else(not_found)?;
    let alerts = shared
        .notifier
        .list(false)
        .await
        .map_err(super::alerts::unavailable)?;
    let spec = &state.room;
    let mut listings = Vec::new();
    let mut timeline = vec![TimelineEntry {
        at: Rfc3339(spec.starts_at),
        kind: "start",
        sku: None,
        level: None,
        by: None,
    }];
    // A room set up again for another show keeps its id: the alerts of this show are those
    // from an hour before it starts (pre-sales) to an hour after it ends.
    let window = (
        spec.starts_at.as_millis().saturating_sub(ALERT_MARGIN_MS),
        spec.ends_at.as_millis().saturating_add(ALERT_MARGIN_MS),
    );
    for listing_view in view.listings {
        let Some(listing_state) = state
            .listings
            .iter()
            .find(|listing| listing.listing.sku.as_str() == listing_view.sku)
        else {
            continue;
        };
        let ListingView {
            sku,
            name,
            forecast,
            consumed,
            level,
            lost,
            series,
            plan_shape,
            thresholds,
            ..
        } = listing_view;
        let tally = &listing_state.tally;
        let show = ShowRecord::of(spec, &listing_state.listing, tally);
        let listing_alerts: Vec<ReportAlert> = alerts
            .iter()
            .filter(|alert| {
                alert.alert.get("room").and_then(|value| value.as_str()) == Some(room.as_str())
                    && alert.alert.get("sku").and_then(|value| value.as_str()) == Some(&sku)
            })
            .filter_map(|alert| {
                let body = &alert.alert;
                let level =
                    |field: &str| serde_json::from_value::<Level>(body.get(field)?.clone()).ok();
                let at = Rfc3339(super::rooms::parse_time("at", body.get("at")?.as_str()?).ok()?);
                if !(window.0..=window.1).contains(&at.0.as_millis()) {
                    return None;
                }
                let acknowledged_after_s = alert
                    .acknowledged_at
                    .map(|acknowledged| acknowledged.0.saturating_since(at.0).as_secs());
                Some(ReportAlert {
                    id: body.get("id")?.as_u64()?,
                    from: level("from")?,
                    to: level("to")?,
                    at,
                    reasons: body.get("reasons").cloned().unwrap_or_default(),
                    state: format!("{:?}", alert.state).to_lowercase(),
                    acknowledged_by: alert.acknowledged_by.clone(),
                    acknowledged_at: alert.acknowledged_at,
                    acknowledged_after_s,
                    escalations: alert.escalations,
                })
            })
            .collect();
        for alert in &listing_alerts {
            timeline.push(TimelineEntry {
                at: alert.at,
                kind: "alert",
                sku: Some(sku.clone()),
                level: Some(alert.to),
                by: None,
            });
            if let Some(at) = alert.acknowledged_at {
                timeline.push(TimelineEntry {
                    at,
                    kind: "acknowledged",
                    sku: Some(sku.clone()),
                    level: Some(alert.to),
                    by: alert.acknowledged_by.clone(),
                });
            }
        }
        let halts: Vec<ReportHalt> = tally
            .halts
            .iter()
            .map(|halt| ReportHalt {
                at: Rfc3339(halt.at),
                auto: halt.auto,
                by: halt.by.clone(),
                resumed_at: halt.resumed_at.map(Rfc3339),
                resumed_by: halt.resumed_by.clone(),
            })
            .collect();
        for halt in &tally.halts {
            timeline.push(TimelineEntry {
                at: Rfc3339(halt.at),
                kind: "halted",
                sku: Some(sku.clone()),
                level: None,
                by: halt
                    .by
                    .clone()
                    .or_else(|| halt.auto.then(|| "auto".to_owned())),
            });
            if let Some(at) = halt.resumed_at {
                timeline.push(TimelineEntry {
                    at: Rfc3339(at),
                    kind: "resumed",
                    sku: Some(sku.clone()),
                    level: None,
                    by: halt.resumed_by.clone(),
                });
            }
        }
        if let Some(at) = tally.sold_out_at {
            timeline.push(TimelineEntry {
                at: Rfc3339(at),
                kind: "sold_out",
                sku: Some(sku.clone()),
                level: None,
                by: None,
            });
        }
        if let Some(at) = show.peak_at {
            timeline.push(TimelineEntry {
                at: Rfc3339(at),
                kind: "peak",
                sku: Some(sku.clone()),
                level: None,
                by: None,
            });
        }
        listings.push(ReportListing {
            name,
            forecast,
            consumed,
            consumed_in_show: show.consumed,
            sold: tally.outcomes.sold,
            refunded: tally.outcomes.refunded,
            cancelled: tally.outcomes.cancelled,
            expired: tally.outcomes.expired,
            sold_out_at: tally.sold_out_at.map(Rfc3339),
            lost,
            peak_per_min: show.peak_per_min(),
            peak_at: show.peak_at.map(Rfc3339),
            accuracy: show.consumed as f64 / forecast.max(1) as f64,
            plan_shape: plan_shape.shape.to_owned(),
            level,
            alerts: listing_alerts,
            halts,
            thresholds,
            series,
            sku,
        });
    }
    let finished = spec.ends_at <= now;
    if finished {
        timeline.push(TimelineEntry {
            at: Rfc3339(spec.ends_at),
            kind: "end",
            sku: None,
            level: None,
            by: None,
        });
    }
    // In time order; at one instant, in the order above (start first, end last).
    timeline.sort_by_key(|entry| entry.at.0);
    let sum = |pick: fn(&ReportListing) -> u64| listings.iter().map(pick).sum::<u64>();
    let forecast = sum(|listing| listing.forecast);
    let consumed_in_show = sum(|listing| listing.consumed_in_show);
    let totals = ReportTotals {
        forecast,
        consumed_in_show,
        sold: sum(|listing| listing.sold),
        refunded: sum(|listing| listing.refunded),
        cancelled: sum(|listing| listing.cancelled),
        expired: sum(|listing| listing.expired),
        lost: sum(|listing| listing.lost.units),
        accuracy: consumed_in_show as f64 / forecast.max(1) as f64,
        alerts: listings.iter().map(|listing| listing.alerts.len()).sum(),
        halts: listings.iter().map(|listing| listing.halts.len()).sum(),
    };
    Ok(Report {
        room: spec.id.as_str().to_owned(),
        name: spec.name.clone(),
        starts_at: Rfc3339(spec.starts_at),
        ends_at: Rfc3339(spec.ends_at),
        generated_at: Rfc3339(now),
        finished,
        totals,
        listings,
        timeline,
    })
}

/// The CSV's columns, in Chinese and English, for a spreadsheet an operations lead opens.
const COLUMNS: &[&str] = &[
    "商品 sku",
    "名称 name",
    "预估 forecast",
    "本场消耗 consumed_in_show",
    "已付款 sold",
    "退款 refunded",
    "取消 cancelled",
    "超时未付 expired",
    "售罄时间 sold_out_at",
    "错失 lost",
    "缺货错失 lost_insufficient_stock",
    "停售错失 lost_halted",
    "峰值/分钟 peak_per_min",
    "峰值时间 peak_at",
    "预估准确率 accuracy",
    "告警 alerts",
    "平均确认秒数 mean_ack_s",
    "升级 escalations",
    "停售次数 halts",
];

fn to_csv(report: &Report) -> String {
    // A byte order mark, so spreadsheet programs read the Chinese as UTF-8.
    let mut out = String::from("\u{feff}");
    out.push_str(&COLUMNS.join(","));
    out.push_str("\r\n");
    let time = |at: &Option<Rfc3339>| at.map(|at| at.to_string()).unwrap_or_default();
    for listing in &report.listings {
        let acks: Vec<u64> = listing
            .alerts
            .iter()
            .filter_map(|alert| alert.acknowledged_after_s)
            .collect();
        let mean_ack = if acks.is_empty() {
            String::new()
        } else {
            format!("{:.0}", acks.iter().sum::<u64>() as f64 / acks.len() as f64)
        };
        let fields = [
            listing.sku.clone(),
            listing.name.clone(),
            listing.forecast.to_string(),
            listing.consumed_in_show.to_string(),
            listing.sold.to_string(),
            listing.refunded.to_string(),
            listing.cancelled.to_string(),
            listing.expired.to_string(),
            time(&listing.sold_out_at),
            listing.lost.units.to_string(),
            listing.lost.insufficient_stock.to_string(),
            listing.lost.halted.to_string(),
            format!("{:.1}", listing.peak_per_min),
            time(&listing.peak_at),
            format!("{:.3}", listing.accuracy),
            listing.alerts.len().to_string(),
            mean_ack,
            listing
                .alerts
                .iter()
                .map(|alert| u64::from(alert.escalations))
                .sum::<u64>()
                .to_string(),
            listing.halts.len().to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|field| cell(field)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One CSV cell: quoted when it holds a comma, a quote or a line break (RFC 4180), and
/// with a leading `'` when a spreadsheet would read it as a formula.
fn cell(value: &str) -> String {
    let value =
        if value.starts_with(['=', '+', '-', '@', '\t', '\r']) && value.parse::<f64>().is_err() {
            format!("'{value}")
        } else {
            value.to_owned()
        };
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(cell("LIP-01"), "LIP-01");
        assert_eq!(cell("口红, 01"), "\"口红, 01\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("-12"), "-12");
        assert_eq!(cell("@sum"), "'@sum");
        assert_eq!(cell("\t=1+1"), "'\t=1+1");
    }
}
