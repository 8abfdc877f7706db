//! A stand-in for Douyin shop's open platform (`sku.syncStock`), built from its SDK's
//! behaviour: the query's `sign` checked (HMAC-SHA256 over the secret-wrapped parameters,
//! `param_json` as received), incremental calls keyed by `idempotent_id` (a repeat answered
//! `isv.parameter-invalid:40010`), a decrease below zero refused with 库存不足
//! (`isv.business-failed:2010012`), rate limits answered with code 60000.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use parking_lot::Mutex;
use serde_json::{Value, json};

pub(crate) const APP_KEY: &str = "7000000000000000001";
pub(crate) const APP_SECRET: &str = "douyin-app-secret";
pub(crate) const ACCESS_TOKEN: &str = "douyin-access-token";

#[derive(Default)]
struct Inner {
    stock: BTreeMap<i64, i64>,
    idempotent: HashSet<String>,
    calls: Vec<Value>,
    bad_signs: u32,
    limit_next: u32,
    limited: u32,
    short: u32,
}

#[derive(Clone)]
pub(crate) struct Douyin {
    pub(crate) address: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Douyin {
    pub(crate) async fn start() -> Douyin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let douyin = Douyin {
            address: listener.local_addr().expect("address"),
            inner: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/sku/syncStock", axum::routing::post(sync_stock))
            .with_state(douyin.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        douyin
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub(crate) fn stock(&self, sku_id: i64) -> Option<i64> {
        self.inner.lock().stock.get(&sku_id).copied()
    }

    /// A buyer takes `qty` on Douyin, before stockpulse hears of it.
    pub(crate) fn sell(&self, sku_id: i64, qty: i64) -> bool {
        let mut inner = self.inner.lock();
        match inner.stock.get_mut(&sku_id) {
            Some(stock) if qty <= *stock => {
                *stock -= qty;
                true
            }
            _ => false,
        }
    }

    /// The shop changes the number in Douyin's back office.
    pub(crate) fn set(&self, sku_id: i64, stock: i64) {
        self.inner.lock().stock.insert(sku_id, stock);
    }

    pub(crate) fn limit_next(&self, calls: u32) {
        self.inner.lock().limit_next = calls;
    }

    /// (calls with a bad sign, calls rate-limited, decreases refused for want of stock).
    pub(crate) fn refusals(&self) -> (u32, u32, u32) {
        let inner = self.inner.lock();
        (inner.bad_signs, inner.limited, inner.short)
    }

    pub(crate) fn calls(&self) -> Vec<Value> {
        self.inner.lock().calls.clone()
    }
}

fn answer(code: i64, msg: &str, sub_code: &str, sub_msg: &str) -> Json<Value> {
    Json(
        json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg, "data": {}, "log_id": "test"}),
    )
}

async fn sync_stock(
    State(douyin): State<Douyin>,
    Query(query): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> Json<Value> {
    let param_json = String::from_utf8_lossy(&body).into_owned();
    let get = |name: &str| query.get(name).cloned().unwrap_or_default();
    let expected = stockpulse::channels::douyin::sign(
        &get("app_key"),
        APP_SECRET,
        &get("timestamp"),
        &param_json,
    );
    let mut inner = douyin.inner.lock();
    let valid = get("sign") == expected
        && get("app_key") == APP_KEY
        && get("access_token") == ACCESS_TOKEN
        && get("method") == "sku.syncStock"
        && get("v") == "2"
        && get("sign_method") == "hmac-sha256";
    if !valid {
        inner.bad_signs += 1;
        return answer(40003, "非法的参数", "isv.signature-invalid", "签名校验失败");
    }
    if 0 < inner.limit_next {
        inner.limit_next -= 1;
        inner.limited += 1;
        return answer(60000, "触发限流，请稍后重试", "", "");
    }
    let Ok(params) = serde_json::from_str::<Value>(&param_json) else {
        return answer(40004, "非法的参数", "isv.parameter-invalid", "param_json");
    };
    inner.calls.push(params.clone());
    let (Some(sku_id), Some(stock_num)) = (params["sku_id"].as_i64(), params["stock_num"].as_i64())
    else {
        return answer(
            40002,
            "缺少必选参数",
            "isv.missing-parameter",
            "sku_id, stock_num",
        );
    };
    let current = inner.stock.get(&sku_id).copied().unwrap_or(0);
    if params["incremental"] == true {
        let Some(id) = params["idempotent_id"].as_str() else {
            return answer(
                40002,
                "缺少必选参数",
                "isv.missing-parameter",
                "idempotent_id",
            );
        };
        if inner.idempotent.contains(id) {
            return answer(
                40004,
                "非法的参数",
                "isv.parameter-invalid:40010",
                "[idempotent_id]重复，操作已执行",
            );
        }
        if current + stock_num < 0 {
            inner.short += 1;
            return answer(
                50002,
                "业务处理失败",
                "isv.business-failed:2010012",
                "更新库存数失败: 库存不足",
            );
        }
        inner.idempotent.insert(id.to_owned());
        inner.stock.insert(sku_id, current + stock_num);
    } else {
        if stock_num < 0 {
            return answer(40004, "非法的参数", "isv.parameter-invalid", "stock_num");
        }
        inner.stock.insert(sku_id, stock_num);
    }
    answer(10000, "success", "", "")
}
