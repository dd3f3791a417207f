//! The gateway's pages: plain HTML with an inline style, no scripts, nothing fetched.

use crate::orders::{format_cents, parse_cents, Order, OrderStatus};

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f3f5f7;margin:0;\
padding:2rem;color:#222}main{max-width:28rem;margin:0 auto;background:#fff;border-radius:8px;\
padding:1.5rem 2rem;box-shadow:0 1px 4px rgba(0,0,0,.12)}h1{font-size:1.3rem;margin-top:0}\
.banner{font-size:.8rem;color:#8a5a00;background:#fff4d6;padding:.4rem .6rem;border-radius:4px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.5rem 1rem}dt{color:#666}\
dd{margin:0;word-break:break-all}.amount{font-size:1.4rem;font-weight:bold}\
.actions{display:flex;gap:1rem;margin-top:1.5rem}form{margin:0}\
button{font-size:1rem;padding:.6rem 1.4rem;border-radius:6px;border:1px solid #888;\
cursor:pointer;background:#fff}button.pay{background:#1677ff;border-color:#1677ff;color:#fff}\
.error{color:#b00020}";

/// `s` safe inside HTML text and double-quoted attributes.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title} - mock EPay</title><style>{STYLE}</style></head><body><main>\
<p class=\"banner\">Simulated EPay (易支付) gateway: no real money moves.</p>\
<h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = escape(title),
    )
}

fn method_label(pay_type: &str) -> &'static str {
    match pay_type {
        "alipay" => "Alipay (支付宝)",
        "wxpay" => "WeChat Pay (微信支付)",
        _ => "Unknown",
    }
}

fn amount(order: &Order) -> String {
    match parse_cents(&order.money) {
        Some(cents) => format!("¥{}", format_cents(cents)),
        None => format!("¥{}", order.money),
    }
}

/// The page `submit.php` shows: the order and the Pay and Cancel buttons.
pub(crate) fn payment_page(order: &Order, public_url: &str) -> String {
    let trade_no = escape(&order.trade_no);
    let details = format!(
        "<dl>\
<dt>Merchant order number</dt><dd id=\"out_trade_no\">{out_trade_no}</dd>\
<dt>Gateway trade number</dt><dd id=\"trade_no\">{trade_no}</dd>\
<dt>Product</dt><dd id=\"name\">{name}</dd>\
<dt>Amount (CNY)</dt><dd id=\"money\" class=\"amount\">{amount}</dd>\
<dt>Payment method</dt><dd id=\"type\">{method} <code>{pay_type}</code></dd>\
<dt>Status</dt><dd id=\"status\">{status}</dd>\
</dl>",
        out_trade_no = escape(&order.out_trade_no),
        name = escape(&order.name),
        amount = escape(&amount(order)),
        method = method_label(&order.pay_type),
        pay_type = escape(&order.pay_type),
        status = match order.status {
            OrderStatus::Unpaid => "Awaiting payment",
            OrderStatus::Paid => "Paid",
            OrderStatus::Cancelled => "Cancelled",
        },
    );
    let pay = format!(
        "<form method=\"post\" action=\"{public_url}/pay\">\
<input type=\"hidden\" name=\"trade_no\" value=\"{trade_no}\">\
<button type=\"submit\" class=\"pay\">{label}</button></form>",
        public_url = escape(public_url),
        label = if order.status == OrderStatus::Paid {
            "Pay (already paid: return to the merchant)"
        } else {
            "Pay"
        },
    );
    let cancel = format!(
        "<form method=\"post\" action=\"{public_url}/cancel\">\
<input type=\"hidden\" name=\"trade_no\" value=\"{trade_no}\">\
<button type=\"submit\" class=\"cancel\">Cancel</button></form>",
        public_url = escape(public_url),
    );
    let actions = match order.status {
        OrderStatus::Unpaid => format!("<div class=\"actions\">{pay}{cancel}</div>"),
        OrderStatus::Paid => format!("<div class=\"actions\">{pay}</div>"),
        OrderStatus::Cancelled => {
            "<p class=\"error\">This order was cancelled and can no longer be paid.</p>".into()
        }
    };
    page("Confirm payment", &format!("{details}{actions}"))
}

/// A short page with a message and, when given, a link back to the merchant.
pub(crate) fn message_page(title: &str, message: &str, link: Option<&str>) -> String {
    let link = match link {
        Some(url) => format!(
            "<p><a href=\"{}\">Return to the merchant</a></p>",
            escape(url)
        ),
        None => String::new(),
    };
    page(title, &format!("<p>{}</p>{link}", escape(message)))
}

/// The 400 page of a refused request: which check failed, never the key or a signature.
pub(crate) fn error_page(message: &str) -> String {
    page(
        "Payment request refused",
        &format!("<p class=\"error\">{}</p>", escape(message)),
    )
}

/// `GET /`: what this is and where the endpoints are.
pub(crate) fn index_page(pid: &str, public_url: &str) -> String {
    let url = escape(public_url);
    page(
        "Mock EPay gateway",
        &format!(
            "<p>Merchant id (pid): <code>{pid}</code></p><ul>\
<li><code>{url}/submit.php</code>: start a payment (GET or POST, signed)</li>\
<li><code>{url}/api.php?act=order</code>: query an order</li>\
<li><code>{url}/orders</code>: every order (JSON)</li>\
<li><code>{url}/knobs</code>: the misbehaviour knobs (GET, PUT JSON)</li></ul>",
            pid = escape(pid),
        ),
    )
}
