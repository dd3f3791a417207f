//! The OpenAPI document (`/api/v1/openapi.json`) and the page that renders it (`/api/docs`):
//! the document is served to anyone, is OpenAPI 3, and lists exactly the routes the service
//! registers under `/api/v1` and `/admin/v1`, so a route added without its `#[utoipa::path]`
//! fails here (docs/adr/0020-openapi-generated-with-utoipa.md).

use std::collections::BTreeSet;
use std::path::Path;

use regex::Regex;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp, ADMIN_TOKEN};
use mock_anthropic::MockConfig;

/// One route as registered: its method (upper case) and its full path template.
type Route = (String, String);

/// The `.route("<path>", web::<method>()...)` calls in `source`, each with `prefix` before its
/// path. It refuses what it cannot read (a route whose path is not a literal, or a method
/// given some other way), so that no registration slips past it.
fn routes_in(source: &str, prefix: &str) -> Result<Vec<Route>, String> {
    let call = Regex::new(r#"\.route\(\s*"([^"]*)"\s*,\s*web::([a-z]+)\(\)"#).unwrap();
    let found: Vec<Route> = call
        .captures_iter(source)
        .map(|c| (c[2].to_ascii_uppercase(), format!("{prefix}{}", &c[1])))
        .collect();
    let calls = source.matches(".route(").count();
    if calls != found.len() {
        return Err(format!(
            "{calls} .route( calls but {} read as .route(\"path\", web::method()): teach routes_in the new form",
            found.len()
        ));
    }
    for (method, path) in &found {
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
            return Err(format!("{method} {path}: an unexpected method"));
        }
    }
    Ok(found)
}

/// The body of `fn <name>(` in `source`, up to the first line that closes it.
fn function_body<'a>(source: &'a str, name: &str) -> &'a str {
    let start = source
        .find(&format!("fn {name}("))
        .unwrap_or_else(|| panic!("no fn {name} in the route table"));
    let rest = &source[start..];
    let end = rest.find("\n}\n").expect("the function ends");
    &rest[..end]
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every route the service registers under `/api/v1` and `/admin/v1`, read from the source
/// the service is built from: every file of `src/http/customer/` (the `/api/v1` scope's
/// `configure`), the admin scope in `src/http/mod.rs`, and the files of `src/http/admin/`.
fn registered_routes() -> BTreeSet<Route> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let table = read(&root.join("mod.rs"));
    assert!(
        table.contains(r#"web::scope("/api/v1")"#)
            && table.contains(".configure(customer::routes)"),
        "the customer API is no longer mounted as this test reads it"
    );
    let mut routes = BTreeSet::new();
    let admin = function_body(&table, "admin_routes");
    assert_eq!(
        admin.matches("web::scope(").count(),
        1,
        "the admin table has a scope inside its scope: teach this test to read it"
    );
    routes.extend(routes_in(admin, "/admin/v1").unwrap());
    for (dir, prefix) in [("customer", "/api/v1"), ("admin", "/admin/v1")] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let source = read(&file);
            for nested in ["web::scope(", "web::resource(", ".configure(", ".service("] {
                assert!(
                    !source.contains(nested),
                    "{} registers routes with {nested}: teach this test to read it",
                    file.display()
                );
            }
            routes.extend(
                routes_in(&source, prefix).unwrap_or_else(|e| panic!("{}: {e}", file.display())),
            );
        }
    }
    routes
}

fn documented_routes(document: &Value) -> BTreeSet<Route> {
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                routes.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    routes
}

async fn document_of(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/api/v1/openapi.json", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    response.json().await.unwrap()
}

async fn spawn() -> TestApp {
    spawn_app_with(MockConfig::default(), |settings| {
        settings.accounts.require_email_verification = false;
    })
    .await
}

#[test]
fn the_route_reader_reads_every_form_it_accepts_and_refuses_the_rest() {
    let source = r#"
        cfg.route("/a", web::get().to(a))
            .route(
                "/b/{id}",
                web::delete().to(b),
            )
    "#;
    assert_eq!(
        routes_in(source, "/p").unwrap(),
        vec![
            ("GET".to_string(), "/p/a".to_string()),
            ("DELETE".to_string(), "/p/b/{id}".to_string())
        ]
    );
    assert!(routes_in(r#".route(PATH, web::get().to(a))"#, "").is_err());
    assert!(routes_in(r#".route("/x", web::method(Method::GET).to(a))"#, "").is_err());
}

#[actix_web::test]
async fn the_served_document_is_openapi_3_and_lists_every_registered_route() {
    let app = spawn().await;
    let document = document_of(&app).await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        document["openapi"]
    );
    let registered = registered_routes();
    assert!(registered.contains(&("GET".into(), "/api/v1/openapi.json".into())));
    assert!(registered.contains(&("POST".into(), "/admin/v1/accounts".into())));
    let documented = documented_routes(&document);
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "registered but not in the OpenAPI document (add #[utoipa::path] and list it in ApiDoc): {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&registered).collect();
    assert!(stale.is_empty(), "documented but not registered: {stale:?}");
    let schemes = &document["components"]["securitySchemes"];
    for name in ["customer_session", "admin_token"] {
        assert_eq!(schemes[name]["type"], "http", "{name}");
        assert_eq!(schemes[name]["scheme"], "bearer", "{name}");
    }
    // Every admin operation asks for the admin token, and every error answer has the one
    // error shape.
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if path.starts_with("/admin/v1") {
                assert_eq!(
                    operation["security"],
                    json!([{"admin_token": []}]),
                    "{method} {path}"
                );
                assert!(
                    operation["responses"].get("401").is_some(),
                    "{method} {path}"
                );
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                // EPay's notify answers in the protocol's plain text, `success` or `fail`.
                if status.starts_with('4') && !path.starts_with("/api/v1/payments/epay/") {
                    let text = response.to_string();
                    let reference = response["$ref"].as_str().unwrap_or_default();
                    assert!(
                        reference.starts_with("#/components/responses/")
                            || text.contains("#/components/schemas/ErrorBody"),
                        "{method} {path} {status}: {text}"
                    );
                }
            }
        }
    }
}

/// A body field the document lists but the route does not read would be refused as
/// unknown: each is sent alone, as `null`, and must not be.
#[actix_web::test]
async fn every_documented_body_field_is_one_its_route_reads() {
    let app = spawn().await;
    let document = document_of(&app).await;
    let account = app.create_account("fields@example.com").await;
    let password = "fields-pass-1";
    let registered = app
        .http
        .post(format!("{}/api/v1/auth/register", app.base))
        .json(&json!({"email": "customer@example.com", "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let login: Value = app
        .http
        .post(format!("{}/api/v1/auth/login", app.base))
        .json(&json!({"email": "customer@example.com", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = login["token"].as_str().unwrap().to_string();
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let Some(schema) = operation["requestBody"]["content"]["application/json"]
                .get("schema")
                .cloned()
            else {
                continue;
            };
            let schema = match schema["$ref"].as_str() {
                Some(reference) => document
                    .pointer(reference.trim_start_matches('#'))
                    .unwrap()
                    .clone(),
                None => schema,
            };
            let url = format!("{}{}", app.base, path.replace("{id}", &account));
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let token = if path.starts_with("/admin/v1") {
                ADMIN_TOKEN
            } else {
                &session
            };
            for field in schema["properties"].as_object().unwrap().keys() {
                let response = app
                    .http
                    .request(method.clone(), &url)
                    .bearer_auth(token)
                    .json(&json!({ field: null }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body = response.text().await.unwrap();
                assert!(
                    !body.contains("unknown field"),
                    "{method} {path}: documented field {field} is refused as unknown ({status} {body})"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} fields checked");
}

#[actix_web::test]
async fn the_docs_page_is_self_contained_html() {
    let app = spawn().await;
    let response = app
        .http
        .get(format!("{}/api/docs", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.contains("/api/v1/openapi.json"));
    let off_site =
        Regex::new(r#"(?i)<script[^>]*\bsrc\s*=|(?i)(src|href)\s*=\s*["']?(https?:)?//"#).unwrap();
    assert!(
        !off_site.is_match(&page),
        "{:?}",
        off_site.find(&page).map(|m| m.as_str())
    );
    assert!(
        !page.contains("innerHTML"),
        "spec text is written as text nodes only"
    );
}

#[actix_web::test]
async fn a_route_asked_with_another_method_answers_405_naming_the_ones_it_takes() {
    let app = spawn().await;
    let wrong = app
        .http
        .patch(format!(
            "{}/api/v1/keys/0194d0a8-0000-7000-8000-000000000000",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "DELETE");
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let admin = app.admin(Method::GET, "/flush").send().await.unwrap();
    assert_eq!(admin.status(), 405);
    assert_eq!(admin.headers()["allow"], "POST");
    let unknown = app
        .admin(Method::GET, "/no-such-route")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[actix_web::test]
async fn a_body_too_large_is_refused_in_the_error_shape() {
    let app = spawn().await;
    let huge = app
        .http
        .post(format!("{}/api/v1/auth/register", app.base))
        .header("content-type", "application/json")
        .body(format!("{{\"email\":\"{}\"}}", "a".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
}
