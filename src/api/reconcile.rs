//! `POST /api/v1/channels/{platform}/reconcile`: a platform's orders of a window, as JSON or
//! as the CSV its back office exports, matched against the ledger (`channels::reconcile`).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::ApiError;
use super::extract::ApiPath;
use crate::channels::reconcile::{self, PlatformOrder, Reconciliation};
use crate::ledger::{OrderId, Platform, SkuId, stock_qty};

/// Most rows one reconciliation reads.
const ROWS_MAX: usize = 100_000;
/// The longest window one reconciliation covers: a week.
const WINDOW_MS_MAX: u64 = 7 * 24 * 3600 * 1000;

#[derive(Deserialize, IntoParams)]
pub(crate) struct WindowQuery {
    /// The window's start (RFC 3339): the ledger's orders of the platform placed from then…
    from: String,
    /// …until then (exclusive) are matched against the platform's.
    to: String,
}

/// The platform's orders, one row per order line.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReconcileRequest {
    orders: Vec<PlatformRow>,
}

/// One line of one platform order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlatformRow {
    order_id: String,
    sku: String,
    #[serde(deserialize_with = "super::integral::deserialize")]
    qty: i64,
    /// `paid`, `sold`, `shipped`, `completed` (or 已付款, 待发货, 已发货, 已完成, 交易成功):
    /// sold; `cancelled`, `closed`, `refunded` (or 已取消, 已关闭, 交易关闭, 已退款): not sold.
    /// Absent: sold.
    status: Option<String>,
}

/// What the matching found.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReconcileResponse {
    platform: String,
    checked: usize,
    matched: usize,
    /// Units the platform sold that the ledger does not hold (`missing` and `released`).
    oversold_units: u64,
    /// Whether the ledger had more orders of the window than one reconciliation reads.
    truncated: bool,
    incidents: Vec<IncidentBody>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct IncidentBody {
    /// `missing`, `released`, `quantity`, `other_platform`, `held` or `phantom`.
    kind: &'static str,
    order_id: String,
    units: u64,
    platform_lines: BTreeMap<String, u64>,
    ledger_lines: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ledger_status: Option<&'static str>,
}

#[utoipa::path(post, path = "/api/v1/channels/{platform}/reconcile", tag = "channels",
    params(("platform" = String, Path, description = "The platform whose orders these are"), WindowQuery),
    request_body(content = ReconcileRequest, description = "The platform's orders as JSON, or as CSV (`text/csv`) with a header row naming `order_id` (订单号, 订单编号, 主订单编号), `sku` (商家编码, 商品编码, sku编码), `qty` (数量, 商品数量, 购买数量) and optionally `status` (订单状态)"),
    responses(
        (status = 200, description = "The incidents found", body = ReconcileResponse),
        (status = 422, description = "A bad window, row or column", body = super::error::ErrorBody)))]
pub(crate) async fn reconcile(
    State(shared): State<AppState>,
    ApiPath(platform): ApiPath<String>,
    window: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReconcileResponse>, ApiError> {
    let Query(window) = window.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let platform = Platform::new(&platform)?;
    let from = super::rooms::parse_time("from", &window.from)?;
    let to = super::rooms::parse_time("to", &window.to)?;
    if to <= from || WINDOW_MS_MAX < to.as_millis() - from.as_millis() {
        return Err(ApiError::invalid(
            "the window must end after it starts and last at most 7 days",
        ));
    }
    let csv = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/csv"));
    let rows = if csv {
        csv_rows(&body)?
    } else {
        json_rows(&body)?
    };
    let orders = platform_orders(rows)?;
    let (window_orders, truncated) = shared.ledger.orders_of(&platform, from, to);
    let found = reconcile::reconcile(
        &platform,
        &orders,
        |id| shared.ledger.order(id),
        &window_orders,
    );
    shared.channels.count_incidents(&platform, &found);
    Ok(Json(answer(&platform, found, truncated)))
}

fn json_rows(body: &[u8]) -> Result<Vec<PlatformRow>, ApiError> {
    let request: ReconcileRequest = serde_json::from_slice(body)
        .map_err(|error| ApiError::invalid(format!("not a reconciliation body: {error}")))?;
    Ok(request.orders)
}

/// The CSV's rows, its columns found by their names in the header.
fn csv_rows(body: &[u8]) -> Result<Vec<PlatformRow>, ApiError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let header = reader
        .headers()
        .map_err(|error| ApiError::invalid(format!("the CSV's header: {error}")))?
        .clone();
    let column = |names: &[&str]| {
        header
            .iter()
            .position(|name| names.iter().any(|wanted| name.eq_ignore_ascii_case(wanted)))
    };
    let missing = |name: &str| ApiError::invalid(format!("the CSV has no {name} column"));
    let order_id = column(&["order_id", "订单号", "订单编号", "主订单编号"])
        .ok_or_else(|| missing("order_id"))?;
    let sku = column(&["sku", "商家编码", "商品编码", "sku编码"]).ok_or_else(|| missing("sku"))?;
    let qty = column(&["qty", "数量", "商品数量", "购买数量"]).ok_or_else(|| missing("qty"))?;
    let status = column(&["status", "订单状态"]);
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record =
            record.map_err(|error| ApiError::invalid(format!("CSV row {}: {error}", line + 2)))?;
        let cell = |index: usize| record.get(index).unwrap_or_default().to_owned();
        let quantity = cell(qty).parse::<i64>().map_err(|_| {
            ApiError::invalid(format!(
                "CSV row {}: qty {:?} is not a whole number",
                line + 2,
                cell(qty)
            ))
        })?;
        rows.push(PlatformRow {
            order_id: cell(order_id),
            sku: cell(sku),
            qty: quantity,
            status: status.map(cell).filter(|status| !status.is_empty()),
        });
        if ROWS_MAX < rows.len() {
            break;
        }
    }
    Ok(rows)
}

/// Whether a platform's status word counts as sold.
fn sold(status: Option<&str>) -> Result<bool, ApiError> {
    let Some(status) = status else {
        return Ok(true);
    };
    const SOLD: &[&str] = &[
        "paid",
        "sold",
        "shipped",
        "completed",
        "已付款",
        "待发货",
        "已发货",
        "已完成",
        "交易成功",
    ];
    const NOT_SOLD: &[&str] = &[
        "cancelled",
        "canceled",
        "closed",
        "refunded",
        "已取消",
        "已关闭",
        "交易关闭",
        "已退款",
    ];
    let word = status.trim().to_lowercase();
    if SOLD.contains(&word.as_str()) {
        return Ok(true);
    }
    if NOT_SOLD.contains(&word.as_str()) {
        return Ok(false);
    }
    Err(ApiError::invalid(format!(
        "unknown order status {status:?}"
    )))
}

/// Rows grouped by order (an order of several lines takes several rows).
fn platform_orders(rows: Vec<PlatformRow>) -> Result<Vec<PlatformOrder>, ApiError> {
    if ROWS_MAX < rows.len() {
        return Err(ApiError::invalid(format!(
            "at most {ROWS_MAX} rows in one reconciliation"
        )));
    }
    let mut orders: BTreeMap<OrderId, PlatformOrder> = BTreeMap::new();
    for row in rows {
        let order_id = OrderId::new(&row.order_id)?;
        let sku = SkuId::new(&row.sku)?;
        let qty = stock_qty("qty", row.qty)?;
        let sold = sold(row.status.as_deref())?;
        let order = orders
            .entry(order_id.clone())
            .or_insert_with(|| PlatformOrder {
                order_id,
                lines: BTreeMap::new(),
                sold,
            });
        order.sold &= sold;
        let line = order.lines.entry(sku).or_default();
        *line = line.saturating_add(qty);
    }
    Ok(orders.into_values().collect())
}

fn answer(platform: &Platform, found: Reconciliation, truncated: bool) -> ReconcileResponse {
    let names = |lines: BTreeMap<SkuId, u64>| {
        lines
            .into_iter()
            .map(|(sku, qty)| (sku.to_string(), qty))
            .collect()
    };
    ReconcileResponse {
        platform: platform.to_string(),
        checked: found.checked,
        matched: found.matched,
        oversold_units: found.oversold_units,
        truncated,
        incidents: found
            .incidents
            .into_iter()
            .map(|incident| IncidentBody {
                kind: incident.kind.as_str(),
                order_id: incident.order_id.to_string(),
                units: incident.units,
                platform_lines: names(incident.platform_lines),
                ledger_lines: names(incident.ledger_lines),
                ledger_status: incident.ledger_status.map(|status| status.as_str()),
            })
            .collect(),
    }
}
