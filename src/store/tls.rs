//! Postgres over TLS, with rustls, as `database.url`'s `sslmode` asks, in libpq's meanings:
//!
//! | `sslmode` | the connection |
//! |---|---|
//! | unset, `disable`, `allow`, `prefer` | plain: tollgate does not try TLS |
//! | `require` | encrypted; the server's certificate is not checked, as libpq does: this stops a listener on the wire, not an impostor. With `sslrootcert`, as `verify-ca` (libpq does the same) |
//! | `verify-ca` | encrypted; the certificate must chain to the CA, which must be a file (refused without one) |
//! | `verify-full` | `verify-ca`, and the certificate must name the host of the URL |
//!
//! The CA is `sslrootcert=<PEM file>` in the URL, or, for `verify-full` only, the system's
//! roots when it is unset or `system` (libpq would read `~/.postgresql/root.crt`). With `hostaddr`, the certificate is
//! checked against `host` while the connection goes to `hostaddr`
//! (docs/adr/0018-postgres-over-tls-with-rustls.md).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;

/// How a connection to Postgres is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    /// Encrypted, the certificate unchecked (`require`).
    Encrypted,
    /// Encrypted, the chain checked against the CA (`verify-ca`, or `require` with a CA).
    VerifiedCa,
    /// Encrypted, the chain and the host name checked (`verify-full`).
    VerifiedFull,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Plain => "plain",
            Transport::Encrypted => "TLS, certificate not verified (sslmode=require)",
            Transport::VerifiedCa => "TLS, certificate chain verified",
            Transport::VerifiedFull => "TLS, certificate chain and host name verified",
        })
    }
}

/// Where and how to connect: the driver's configuration, and the TLS connector if any.
pub(super) struct PgTarget {
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: Option<MakeRustlsConnect>,
    pub(super) transport: Transport,
}

/// A connection's driver, to be spawned; it ends when the connection does.
pub(super) type Driver = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

impl PgTarget {
    /// Reads `url`: tokio-postgres's own parameters, and `sslmode` and `sslrootcert` as
    /// libpq reads them (tokio-postgres knows neither `verify-ca` nor `verify-full`).
    pub(super) fn from_url(url: &str) -> Result<PgTarget, DbError> {
        let (rest, ssl) = take_ssl_parameters(url);
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            // The driver's message alone is "invalid connection string"; the cause says which
            // part (an unknown option, a bad port). It never holds the password.
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            DbError::Config(format!("database.url: {e}{cause}"))
        })?;
        // The driver's default. Anything else means an `sslmode` this parser missed reached
        // the driver, and the connection would silently be what the URL did not ask for.
        if config.get_ssl_mode() != SslMode::Prefer {
            return Err(DbError::Config(
                "database.url: sslmode is written in a form tollgate cannot read (spaces around '=', or a '?' left unencoded before the query); write it as sslmode=<mode>".into(),
            ));
        }
        let file = ssl.rootcert.as_deref().filter(|path| *path != "system");
        let transport = match (ssl.mode.as_deref(), ssl.rootcert.as_deref()) {
            (None | Some("disable" | "allow" | "prefer"), _) => Transport::Plain,
            (Some("require"), None) => Transport::Encrypted,
            // As libpq: only verify-full may trust the system's roots, since any public CA
            // issues certificates for names of its customers' choosing.
            (Some("require" | "verify-ca"), _) if file.is_none() => {
                return Err(DbError::Config(
                    "database.url: verifying the server's certificate chain without its name (sslmode=verify-ca, or require with sslrootcert) needs sslrootcert=<PEM file> of your own CA; with the system's roots, use sslmode=verify-full".into(),
                ))
            }
            (Some("require" | "verify-ca"), _) => Transport::VerifiedCa,
            (Some("verify-full"), _) => Transport::VerifiedFull,
            (Some(other), _) => {
                return Err(DbError::Config(format!(
                    "database.url: sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                )))
            }
        };
        let tls = match transport {
            Transport::Plain => {
                config.ssl_mode(SslMode::Disable);
                None
            }
            _ => {
                config.ssl_mode(SslMode::Require);
                Some(MakeRustlsConnect::new(client_config(
                    transport,
                    ssl.rootcert.as_deref(),
                )?))
            }
        };
        Ok(PgTarget {
            config,
            tls,
            transport,
        })
    }

    /// Opens one connection outside the pool.
    pub(super) async fn connect(&self) -> Result<(Client, Driver), DbError> {
        Ok(match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                (client, Box::pin(connection) as Driver)
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                (client, Box::pin(connection) as Driver)
            }
        })
    }
}

/// `sslmode` and `sslrootcert` as the URL gave them.
#[derive(Debug, Default, PartialEq, Eq)]
struct SslParameters {
    mode: Option<String>,
    rootcert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string, URL
/// (`postgres://…?sslmode=verify-full`) or key-value (`host=… sslmode=verify-full`), and
/// returns the rest as it was.
fn take_ssl_parameters(url: &str) -> (String, SslParameters) {
    let mut ssl = SslParameters::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            ssl.mode = Some(value);
            true
        }
        "sslrootcert" => {
            ssl.rootcert = Some(value);
            true
        }
        _ => false,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let rest = if is_url {
        // The query starts at the first '?' after the user info: a password may hold a '?'.
        let authority = url.rfind('@').map_or(0, |at| at + 1);
        let split = url
            .get(authority..)
            .and_then(|tail| tail.find('?'))
            .and_then(|at| url.get(..authority + at).zip(url.get(authority + at + 1..)));
        match split {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        let decoded = percent_encoding::percent_decode_str(value)
                            .decode_utf8_lossy()
                            .into_owned();
                        !take(key, decoded)
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_string(),
        }
    } else {
        url.split_inclusive(char::is_whitespace)
            .filter(|token| {
                let Some((key, value)) = token.trim().split_once('=') else {
                    return true;
                };
                !take(key, value.trim_matches('\'').to_string())
            })
            .collect()
    };
    (rest, ssl)
}

/// rustls's configuration for `transport`, with the CA of `rootcert`.
fn client_config(transport: Transport, rootcert: Option<&str>) -> Result<ClientConfig, DbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Config(format!("TLS: {e}")))?;
    let chain = match transport {
        Transport::Plain | Transport::Encrypted => None,
        Transport::VerifiedCa | Transport::VerifiedFull => Some(
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(rootcert)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| DbError::Config(format!("TLS: {e}")))?,
        ),
    };
    let verifier = ServerCertificateCheck {
        provider,
        chain,
        check_name: transport == Transport::VerifiedFull,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The CA certificates of `rootcert` (a PEM file), or the system's.
fn root_store(rootcert: Option<&str>) -> Result<RootCertStore, DbError> {
    let mut roots = RootCertStore::empty();
    match rootcert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(DbError::Config(
                    "database.url asks to verify the server's certificate, and the system has no CA certificates; name one with sslrootcert=<PEM file>".into(),
                ));
            }
        }
        Some(path) => {
            let unreadable = |e: &dyn std::fmt::Display| {
                DbError::Config(format!("database.url: sslrootcert {path}: {e}"))
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                roots
                    .add(cert.map_err(|e| unreadable(&e))?)
                    .map_err(|e| unreadable(&e))?;
            }
            if roots.is_empty() {
                return Err(unreadable(&"no certificate in the file"));
            }
        }
    }
    Ok(roots)
}

/// What is checked of the server's certificate. The handshake's signatures are always
/// checked, so the connection is encrypted to whoever holds the certificate's key.
#[derive(Debug)]
struct ServerCertificateCheck {
    provider: Arc<CryptoProvider>,
    /// The chain must lead to these roots (`verify-ca`, `verify-full`); `None` accepts any
    /// certificate (`require`, as libpq does).
    chain: Option<Arc<WebPkiServerVerifier>>,
    /// The certificate must name the host (`verify-full`).
    check_name: bool,
}

impl ServerCertVerifier for ServerCertificateCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // webpki checks the name only once the chain is valid.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, Option<String>, Option<String>) {
        let (rest, ssl) = take_ssl_parameters(url);
        (rest, ssl.mode, ssl.rootcert)
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_either_form_and_the_rest_kept() {
        assert_eq!(
            split("postgres://u:p%40ss@db:5432/tg?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem"),
            (
                "postgres://u:p%40ss@db:5432/tg?application_name=x".into(),
                Some("verify-full".into()),
                Some("/etc/ca.pem".into())
            )
        );
        assert_eq!(
            split("postgresql://db/tg?sslmode=require"),
            ("postgresql://db/tg".into(), Some("require".into()), None)
        );
        assert_eq!(
            split("postgres://db/tg"),
            ("postgres://db/tg".into(), None, None)
        );
        assert_eq!(
            split("host=db password='a  b' sslmode=verify-ca sslrootcert='/ca.pem' dbname=tg"),
            (
                "host=db password='a  b' dbname=tg".into(),
                Some("verify-ca".into()),
                Some("/ca.pem".into())
            )
        );
    }

    #[test]
    fn each_sslmode_gets_its_transport_and_an_unknown_one_is_refused() {
        let transport = |url: &str| PgTarget::from_url(url).map(|t| t.transport);
        for (query, expected) in [
            ("", Transport::Plain),
            ("?sslmode=disable", Transport::Plain),
            ("?sslmode=prefer", Transport::Plain),
            ("?sslmode=require", Transport::Encrypted),
            ("?sslmode=verify-full", Transport::VerifiedFull),
            (
                "?sslmode=verify-full&sslrootcert=system",
                Transport::VerifiedFull,
            ),
        ] {
            assert_eq!(
                transport(&format!("postgres://db/tg{query}")).unwrap(),
                expected,
                "{query}"
            );
        }
        let refused = transport("postgres://db/tg?sslmode=verify-everything").unwrap_err();
        assert!(refused.to_string().contains("sslmode=verify-everything"));
        let missing =
            transport("postgres://db/tg?sslmode=verify-full&sslrootcert=/nonexistent.pem")
                .unwrap_err();
        assert!(
            missing.to_string().contains("sslrootcert /nonexistent.pem"),
            "{missing}"
        );
    }

    /// A CA certificate in a file, for the transports that need one.
    const CA_FILE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/unrelated-ca.pem"
    );

    #[test]
    fn checking_the_chain_without_the_name_needs_a_ca_of_ones_own() {
        let transport = |url: &str| PgTarget::from_url(url).map(|t| t.transport);
        for query in [
            "?sslmode=verify-ca",
            "?sslmode=verify-ca&sslrootcert=system",
            "?sslmode=require&sslrootcert=system",
        ] {
            let refused = transport(&format!("postgres://db/tg{query}")).unwrap_err();
            assert!(
                refused.to_string().contains("verify-full"),
                "{query}: {refused}"
            );
        }
        let path = CA_FILE;
        for mode in ["verify-ca", "require"] {
            assert_eq!(
                transport(&format!(
                    "postgres://db/tg?sslmode={mode}&sslrootcert={path}"
                ))
                .unwrap(),
                Transport::VerifiedCa,
                "{mode}"
            );
        }
    }

    #[test]
    fn an_sslmode_the_parser_misses_is_refused_not_dropped_to_plain() {
        let transport = |url: &str| PgTarget::from_url(url).map(|t| t.transport);
        // A '?' in the password does not start the query.
        assert_eq!(
            transport("postgres://u:pa?ss@db/tg?sslmode=require").unwrap(),
            Transport::Encrypted
        );
        assert_eq!(
            split("postgres://u:pa?ss@db/tg?sslmode=require&application_name=x").0,
            "postgres://u:pa?ss@db/tg?application_name=x"
        );
        // Spaces around '=': the driver reads it, this parser does not.
        let refused = transport("host=db sslmode = require dbname=tg").unwrap_err();
        assert!(refused.to_string().contains("sslmode"), "{refused}");
    }

    #[test]
    fn a_malformed_url_says_what_is_wrong_with_it() {
        let refused = PgTarget::from_url("host=db sslcert=/c.pem")
            .map(|t| t.transport)
            .unwrap_err();
        assert!(refused.to_string().contains("sslcert"), "{refused}");
    }
}
