//! `mock-epay`: a simulated EPay (易支付) payment gateway.
//!
//! tollgate's integration tests start it in-process on a loopback port, `tollgate demo` runs it
//! so that a newcomer can recharge by hand in a browser, and load tests run it as the
//! `mock-epay` binary. It speaks the protocol Chinese payment aggregators share: a signed
//! redirect to `submit.php`, a payment page, an asynchronous signed notify to the merchant's
//! `notify_url` (retried until the merchant answers `success`), a signed redirect back to the
//! `return_url`, and the `api.php?act=order` query.
//!
//! # Signature
//! [`sign()`]: every parameter but `sign` and `sign_type`, empty values left out, sorted by key,
//! joined as `k=v&k=v` with raw values, the merchant key appended, MD5 in lowercase hex.
//! `sign_type` is `MD5`. Signatures are compared in constant time.
//!
//! # Endpoints
//! - `GET|POST /submit.php` (`pid, type, out_trade_no, notify_url, return_url, name, money,
//!   sign, sign_type`): 400 and a page naming the failed check, or the payment page with a
//!   Pay and a Cancel button. Submitting the same `out_trade_no` again reuses the order (400
//!   if the amount differs).
//! - `POST /pay` (form `trade_no`): marks the order paid, schedules the notify (the first time
//!   only) and answers 303 to `return_url` plus the signed result parameters (a page when
//!   there is no return URL). 409 for a cancelled order.
//! - `POST /cancel` (form `trade_no`): cancels an unpaid order; 303 to `return_url`.
//! - `GET|POST /api.php?act=order&pid&key&out_trade_no` (or `trade_no`): the order as JSON,
//!   `status` 1 when paid; `{"code":-1,"msg":..}` for a wrong pid or key or an unknown order.
//! - `GET /healthz`: `ok`. `GET /`: a short index page.
//! - Test hooks: `GET /orders` (every [`Order`]), `POST /orders/{trade_no}/pay` (as `/pay`,
//!   answering JSON with the signed `return_url` and `params`), `POST
//!   /orders/{trade_no}/notify` (one honest notify now, whatever the knobs; answers
//!   `{"delivered", "attempts"}` once it is over), `GET /knobs`, `PUT /knobs` ([`KnobsPatch`]).
//!
//! # Notify
//! `pid, trade_no, out_trade_no, type, name, money, trade_status=TRADE_SUCCESS, sign,
//! sign_type=MD5`, as a GET query string or a POST form ([`NotifyMethod`]). Acknowledged by a
//! 2xx answer whose trimmed body is exactly `success`; anything else is retried up to
//! [`Knobs::notify_attempts`] attempts in total. [`Knobs`] can drop, delay, duplicate or
//! corrupt it ([`Tamper`]); the return URL's parameters are always honest. The signature
//! covers the gateway's parameters only: a merchant whose `return_url` (or `notify_url`)
//! carries its own query must leave those out when it verifies.
//!
//! Map of the crate: [`config`] (settings and knobs), [`sign`](mod@sign) (the signature),
//! [`orders`] (the in-memory orders), `notify` (delivery), `routes` and `html` (the endpoints
//! and pages), [`server`] ([`MockEpay`], which runs all of this on its own thread).

pub mod config;
mod html;
mod notify;
pub mod orders;
mod routes;
pub mod server;
pub mod sign;
mod state;

pub use config::{Config, Knobs, KnobsPatch, NotifyMethod, Tamper, DEFAULT_KEY, DEFAULT_PID};
pub use orders::{Order, OrderStatus};
pub use server::MockEpay;
pub use sign::{sign, signed_query, verify};
