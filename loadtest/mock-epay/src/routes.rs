//! The HTTP endpoints of the gateway.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::config::{is_http_url, KnobsPatch, Tamper};
use crate::html;
use crate::notify::{self, append_query, result_params, tampered_money};
use crate::orders::{parse_cents, NewOrder, Order, OrderStatus, PayError};
use crate::sign::{constant_time_eq, encode_pairs, verify};
use crate::state::Shared;

/// Longest accepted `out_trade_no`, as EPay gateways limit it.
const MAX_OUT_TRADE_NO: usize = 64;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/submit.php", web::get().to(submit))
        .route("/submit.php", web::post().to(submit))
        .route("/pay", web::post().to(pay))
        .route("/cancel", web::post().to(cancel))
        .route("/api.php", web::get().to(api))
        .route("/api.php", web::post().to(api))
        .route("/healthz", web::get().to(healthz))
        .route("/orders", web::get().to(orders))
        .route("/orders/{trade_no}/pay", web::post().to(pay_json))
        .route("/orders/{trade_no}/notify", web::post().to(notify_now))
        .route("/knobs", web::get().to(get_knobs))
        .route("/knobs", web::put().to(put_knobs));
}

/// The query string's parameters, then the form body's (a body value wins); a repeated key
/// keeps its last value, as PHP does.
fn params_of(req: &HttpRequest, body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    let query: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| "the query string is not URL-encoded".to_owned())?;
    params.extend(query);
    if !body.is_empty() {
        let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| "the body is not a URL-encoded form".to_owned())?;
        params.extend(form);
    }
    Ok(params)
}

fn html_response(status: StatusCode, page: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(ContentType::html())
        .body(page)
}

fn bad_request(message: &str) -> HttpResponse {
    html_response(StatusCode::BAD_REQUEST, html::error_page(message))
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

async fn index(shared: web::Data<Shared>) -> HttpResponse {
    html_response(
        StatusCode::OK,
        html::index_page(&shared.pid, &shared.public_url),
    )
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok")
}

/// Checks a `submit.php` request in a fixed order and names the first check that fails.
fn check_submit(shared: &Shared, params: &BTreeMap<String, String>) -> Result<NewOrder, String> {
    let field = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    for required in [
        "pid",
        "type",
        "out_trade_no",
        "notify_url",
        "name",
        "money",
        "sign",
    ] {
        if field(required).is_empty() {
            return Err(format!("missing parameter: {required}"));
        }
    }
    if field("pid") != shared.pid {
        return Err("unknown merchant: pid is not a merchant of this gateway".to_owned());
    }
    let sign_type = field("sign_type");
    if !sign_type.is_empty() && !sign_type.eq_ignore_ascii_case("MD5") {
        return Err("sign_type must be MD5".to_owned());
    }
    if !verify(params, &shared.key, field("sign")) {
        return Err("signature does not verify (sign)".to_owned());
    }
    let pay_type = field("type");
    if pay_type != "alipay" && pay_type != "wxpay" {
        return Err("unsupported payment type: type must be alipay or wxpay".to_owned());
    }
    let money = field("money");
    let Some(cents) = parse_cents(money) else {
        return Err("money must be a positive amount with at most 2 decimals".to_owned());
    };
    let out_trade_no = field("out_trade_no");
    if out_trade_no.chars().count() > MAX_OUT_TRADE_NO {
        return Err(format!(
            "out_trade_no is longer than {MAX_OUT_TRADE_NO} characters"
        ));
    }
    if !is_http_url(field("notify_url")) {
        return Err("notify_url must be an http(s) URL".to_owned());
    }
    let return_url = field("return_url");
    if !return_url.is_empty() && !is_http_url(return_url) {
        return Err("return_url must be an http(s) URL".to_owned());
    }
    Ok(NewOrder {
        out_trade_no: out_trade_no.to_owned(),
        pid: field("pid").to_owned(),
        pay_type: pay_type.to_owned(),
        name: field("name").to_owned(),
        money: money.to_owned(),
        cents,
        notify_url: field("notify_url").to_owned(),
        return_url: return_url.to_owned(),
    })
}

async fn submit(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let params = match params_of(&req, &body) {
        Ok(params) => params,
        Err(message) => return bad_request(&message),
    };
    let new = match check_submit(&shared, &params) {
        Ok(new) => new,
        Err(message) => {
            tracing::info!(%message, "submit.php refused");
            return bad_request(&message);
        }
    };
    match shared.orders.create_or_reuse(new) {
        Ok(order) => {
            tracing::info!(trade_no = %order.trade_no, out_trade_no = %order.out_trade_no, money = %order.money, "order open");
            html_response(
                StatusCode::OK,
                html::payment_page(&order, &shared.public_url),
            )
        }
        Err(message) => bad_request(&message),
    }
}

/// Marks the order paid and, the first time, schedules its notify under the current knobs.
fn pay_order(shared: &Arc<Shared>, trade_no: &str) -> Result<Order, PayError> {
    let (order, newly_paid) = shared.orders.pay(trade_no)?;
    if newly_paid {
        tracing::info!(trade_no, out_trade_no = %order.out_trade_no, "order paid");
        notify::schedule(Arc::clone(shared), order.clone(), shared.knobs());
    }
    Ok(order)
}

/// The order's return URL with the signed (honest) result parameters appended, or `None`
/// when the merchant gave no return URL.
fn signed_return_url(shared: &Shared, order: &Order) -> Option<String> {
    if order.return_url.is_empty() {
        return None;
    }
    let params = result_params(order, &shared.key, Tamper::None);
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Some(append_query(&order.return_url, &encode_pairs(&pairs)))
}

fn form_trade_no(req: &HttpRequest, body: &[u8]) -> Result<String, String> {
    let params = params_of(req, body)?;
    match params.get("trade_no") {
        Some(trade_no) if !trade_no.is_empty() => Ok(trade_no.clone()),
        _ => Err("missing parameter: trade_no".to_owned()),
    }
}

fn not_found_page() -> HttpResponse {
    html_response(
        StatusCode::NOT_FOUND,
        html::message_page("Order not found", "The gateway has no such order.", None),
    )
}

async fn pay(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let trade_no = match form_trade_no(&req, &body) {
        Ok(trade_no) => trade_no,
        Err(message) => return bad_request(&message),
    };
    let shared = shared.into_inner();
    match pay_order(&shared, &trade_no) {
        Ok(order) => match signed_return_url(&shared, &order) {
            Some(url) => see_other(&url),
            None => html_response(
                StatusCode::OK,
                html::message_page(
                    "Paid",
                    &format!("Order {} is paid.", order.out_trade_no),
                    None,
                ),
            ),
        },
        Err(PayError::NotFound) => not_found_page(),
        Err(PayError::Cancelled) => html_response(
            StatusCode::CONFLICT,
            html::message_page(
                "Order cancelled",
                "This order was cancelled and can no longer be paid.",
                None,
            ),
        ),
    }
}

async fn cancel(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let trade_no = match form_trade_no(&req, &body) {
        Ok(trade_no) => trade_no,
        Err(message) => return bad_request(&message),
    };
    let Some(order) = shared.orders.cancel(&trade_no) else {
        return not_found_page();
    };
    tracing::info!(trade_no, status = ?order.status, "cancel pressed");
    if !order.return_url.is_empty() {
        return see_other(&order.return_url);
    }
    let message = match order.status {
        OrderStatus::Paid => format!("Order {} was already paid.", order.out_trade_no),
        _ => format!("Order {} was cancelled.", order.out_trade_no),
    };
    html_response(
        StatusCode::OK,
        html::message_page("Cancelled", &message, None),
    )
}

fn api_error(message: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "code": -1, "msg": message }))
}

/// `api.php?act=order`: the merchant's query of one order.
async fn api(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let params = match params_of(&req, &body) {
        Ok(params) => params,
        Err(message) => return api_error(&message),
    };
    let field = |name: &str| params.get(name).map(String::as_str).unwrap_or("");
    if field("act") != "order" {
        return api_error("unsupported act (only act=order)");
    }
    let pid_ok = constant_time_eq(field("pid").as_bytes(), shared.pid.as_bytes());
    let key_ok = constant_time_eq(field("key").as_bytes(), shared.key.as_bytes());
    if !(pid_ok & key_ok) {
        return api_error("pid or key is wrong");
    }
    let order = if !field("out_trade_no").is_empty() {
        shared
            .orders
            .by_out_trade_no(&shared.pid, field("out_trade_no"))
    } else if !field("trade_no").is_empty() {
        shared
            .orders
            .get(field("trade_no"))
            .filter(|order| order.pid == shared.pid)
    } else {
        return api_error("out_trade_no or trade_no is required");
    };
    let Some(order) = order else {
        return api_error("order not found");
    };
    let knobs = shared.knobs();
    let money = if knobs.tamper_query && knobs.tamper == Tamper::Money {
        tampered_money(&order.money)
    } else {
        order.money.clone()
    };
    HttpResponse::Ok().json(json!({
        "code": 1,
        "msg": "succ",
        "trade_no": order.trade_no,
        "out_trade_no": order.out_trade_no,
        "type": order.pay_type,
        "pid": order.pid,
        "addtime": order.addtime,
        "endtime": order.endtime,
        "name": order.name,
        "money": money,
        "status": i32::from(order.status == OrderStatus::Paid),
    }))
}

async fn orders(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.orders.list())
}

/// `POST /orders/{trade_no}/pay`: `/pay` without a browser.
async fn pay_json(path: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let trade_no = path.into_inner();
    let shared = shared.into_inner();
    match pay_order(&shared, &trade_no) {
        Ok(order) => {
            let params: serde_json::Map<String, serde_json::Value> =
                result_params(&order, &shared.key, Tamper::None)
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
            HttpResponse::Ok().json(json!({
                "trade_no": order.trade_no,
                "out_trade_no": order.out_trade_no,
                "money": order.money,
                "status": order.status,
                "return_url": signed_return_url(&shared, &order),
                "params": params,
            }))
        }
        Err(PayError::NotFound) => json_error(StatusCode::NOT_FOUND, "order not found"),
        Err(PayError::Cancelled) => json_error(StatusCode::CONFLICT, "order is cancelled"),
    }
}

/// `POST /orders/{trade_no}/notify`: one honest notify now, with the current method,
/// attempts and retry pause, whatever `drop_notify`, the delay, duplicates and `tamper` say.
/// Answers when the delivery (with its retries) is over.
async fn notify_now(path: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let trade_no = path.into_inner();
    let Some(order) = shared.orders.get(&trade_no) else {
        return json_error(StatusCode::NOT_FOUND, "order not found");
    };
    if order.status != OrderStatus::Paid {
        return json_error(StatusCode::CONFLICT, "order is not paid");
    }
    let knobs = shared.knobs();
    let params = result_params(&order, &shared.key, Tamper::None);
    let (delivered, attempts) = notify::deliver(&shared, &order, &params, &knobs).await;
    HttpResponse::Ok().json(json!({
        "trade_no": trade_no,
        "delivered": delivered,
        "attempts": attempts,
    }))
}

async fn get_knobs(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.knobs())
}

async fn put_knobs(body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let patch: KnobsPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("invalid knobs: {e}")),
    };
    match shared.patch_knobs(&patch) {
        Ok(knobs) => {
            tracing::info!(?knobs, "knobs changed");
            HttpResponse::Ok().json(knobs)
        }
        Err(e) => json_error(StatusCode::BAD_REQUEST, &format!("invalid knobs: {e}")),
    }
}
