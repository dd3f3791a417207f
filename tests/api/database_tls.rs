//! Postgres over TLS: `sslmode=require` encrypts every connection tollgate opens;
//! `verify-full` refuses a server whose certificate names another host or chains to another
//! CA. The local cluster serves TLS with a self-signed certificate for `localhost`.

use tollgate::store::{PgStore, Transport};

use crate::helpers::*;

/// A CA certificate that signed nothing the test server presents.
const UNRELATED_CA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/unrelated-ca.pem"
);

/// The certificate the local server presents (self-signed: it is its own CA).
async fn server_certificate() -> String {
    let (client, connection) = tokio_postgres::connect(
        &format!("{}/postgres", postgres_base()),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    actix_web::rt::spawn(connection);
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(
        ssl, "on",
        "these tests need the local Postgres to serve TLS"
    );
    client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0)
}

/// Connects with `url` and runs a statement; if that fails, the error with its causes, as
/// `tollgate serve` prints it when it cannot start.
async fn try_connect(url: &str) -> Result<Transport, String> {
    let described = |e: tollgate::store::DbError| format!("{:#}", anyhow::Error::from(e));
    let store = PgStore::connect(url, 2).map_err(described)?;
    store.ping().await.map_err(described)?;
    Ok(store.transport())
}

#[actix_web::test]
async fn with_sslmode_require_every_connection_tollgate_opens_is_encrypted() {
    let app = spawn_app_with(Default::default(), |s| {
        s.database.url = format!("{}?sslmode=require", s.database.url);
    })
    .await;
    // Work that goes through the pool: an account, a key, a credit.
    let customer = app.customer("5").await;
    assert_eq!(app.balance(&customer.id).await, dec("5"));

    let db = app.db().await;
    let sessions = db
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a
             JOIN pg_stat_ssl s ON s.pid = a.pid
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let sessions: Vec<(String, bool)> = sessions.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(
        sessions
            .iter()
            .any(|(name, _)| name == "tollgate instance lock")
            && sessions.len() >= 2,
        "the instance lock's session and the pool's: {sessions:?}"
    );
    assert!(
        sessions.iter().all(|(_, ssl)| *ssl),
        "every session of tollgate's is encrypted: {sessions:?}"
    );
}

#[actix_web::test]
async fn verify_full_refuses_another_hosts_certificate_or_another_ca_and_says_why() {
    let certificate = server_certificate().await;
    // The server's own certificate as the CA, connecting to 127.0.0.1 under its name.
    let url = |host: &str, rootcert: &str| {
        format!(
            "postgres://postgres@{host}:5432/postgres?sslmode=verify-full&sslrootcert={rootcert}"
        )
    };
    let verified = try_connect(&format!(
        "{}&hostaddr=127.0.0.1",
        url("localhost", &certificate)
    ))
    .await;
    assert_eq!(verified, Ok(Transport::VerifiedFull));

    // The right CA, but the certificate does not name 127.0.0.1.
    let wrong_host = try_connect(&url("127.0.0.1", &certificate))
        .await
        .unwrap_err();
    assert!(
        wrong_host.contains("TLS handshake") && wrong_host.contains("not valid for name"),
        "{wrong_host}"
    );
    // The right name, but a CA that did not sign it. (Not the system's roots: Debian keeps
    // the cluster's self-signed certificate in /etc/ssl/certs, where they are read from.)
    let wrong_ca = try_connect(&format!(
        "{}&hostaddr=127.0.0.1",
        url("localhost", UNRELATED_CA)
    ))
    .await
    .unwrap_err();
    assert!(
        wrong_ca.contains("TLS handshake") && wrong_ca.contains("UnknownIssuer"),
        "{wrong_ca}"
    );
    // verify-ca checks the chain and not the name: 127.0.0.1 is accepted.
    let chain_only = try_connect(&format!(
        "postgres://postgres@127.0.0.1:5432/postgres?sslmode=verify-ca&sslrootcert={certificate}"
    ))
    .await;
    assert_eq!(chain_only, Ok(Transport::VerifiedCa));
}
