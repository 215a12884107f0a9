//! How a service reaches one shard: the shard URL's `sslmode` (libpq's meaning), the CA that
//! signs the servers' certificates and the password, which may come from a file instead of
//! the URL. Every connection to a shard — pools, migrations, identity checks, the admin tool —
//! is made from a [`ShardLink`], so none of them can end up without TLS when the URL asks
//! for it.
//!
//! tokio-postgres knows `disable`, `prefer` and `require` only; `verify-ca` and `verify-full`
//! (and `sslrootcert`) are taken out of the URL here and become the certificate checks of
//! the OpenSSL connector.

use std::path::{Path, PathBuf};

use openssl::{
    ssl::{SslConnector, SslMethod, SslVerifyMode},
    x509::{store::X509StoreBuilder, X509},
};
use postgres_openssl::MakeTlsConnector;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::{config::SslMode, Client};

use crate::{StoreError, StoreSettings};

/// libpq's `sslmode` values, but `allow` (which tries plaintext first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, without checking its certificate; plaintext otherwise
    /// (the default when the URL names no `sslmode`, as in libpq).
    Prefer,
    /// TLS or no connection. The certificate is checked against the CA only if one is
    /// configured (libpq does the same with a root certificate file).
    Require,
    /// TLS, the certificate signed by the CA; any host name.
    VerifyCa,
    /// TLS, the certificate signed by the CA and issued for the host connected to.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<TlsMode, String> {
        match value {
            "disable" => Ok(TlsMode::Disable),
            "prefer" => Ok(TlsMode::Prefer),
            "require" => Ok(TlsMode::Require),
            "verify-ca" => Ok(TlsMode::VerifyCa),
            "verify-full" => Ok(TlsMode::VerifyFull),
            other => Err(format!(
                "sslmode={other} is not supported (disable, prefer, require, verify-ca, verify-full)"
            )),
        }
    }
}

/// Everything needed to open sessions to one shard.
#[derive(Clone)]
pub struct ShardLink {
    pub config: tokio_postgres::Config,
    pub tls: MakeTlsConnector,
    pub mode: TlsMode,
}

impl StoreSettings {
    /// How to reach the shard at `url` (shard number `shard`, for errors) with these
    /// settings' CA and password file. Reads both files: call it when connecting.
    pub fn link(&self, shard: usize, url: &str) -> Result<ShardLink, StoreError> {
        let config_err = |reason: String| StoreError::Config { shard, reason };
        let (rest, mode, root_cert) = take_tls_params(url).map_err(config_err)?;
        let mode = mode.unwrap_or(TlsMode::Prefer);
        let root_cert = root_cert.or_else(|| self.ssl_root_cert.clone());
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| config_err(e.to_string()))?;
        config.connect_timeout(self.connect_timeout);
        config.ssl_mode(match mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        if let Some(file) = &self.password_file {
            let password = read_secret(file)
                .map_err(|e| config_err(format!("store.password_file {}: {e}", file.display())))?;
            config.password(password.expose_secret());
        }
        let tls = connector(mode, root_cert.as_deref()).map_err(config_err)?;
        Ok(ShardLink { config, tls, mode })
    }

    /// One session to the database at `url`, its connection driven on a task of its own
    /// (the task ends when the client is dropped).
    pub async fn connect(
        &self,
        shard: usize,
        url: &str,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), StoreError> {
        let link = self.link(shard, url)?;
        let (client, connection) = link
            .config
            .connect(link.tls)
            .await
            .map_err(|source| StoreError::Postgres { shard, source })?;
        let task = tokio::spawn(async move {
            // A broken session shows up as the client's next error; nothing to add here.
            let _ = connection.await;
        });
        Ok((client, task))
    }
}

/// The connector for `mode`. Certificates are checked against `root_cert` alone, not the
/// system's trust store, as libpq does with `sslrootcert`; without one, `verify-*` uses
/// the system's store.
fn connector(mode: TlsMode, root_cert: Option<&Path>) -> Result<MakeTlsConnector, String> {
    let tls_err = |e: openssl::error::ErrorStack| format!("TLS setup: {e}");
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls_err)?;
    let verify = match mode {
        TlsMode::VerifyCa | TlsMode::VerifyFull => true,
        TlsMode::Require => root_cert.is_some(),
        TlsMode::Disable | TlsMode::Prefer => false,
    };
    if verify {
        if let Some(path) = root_cert {
            let pem = std::fs::read(path)
                .map_err(|e| format!("store.ssl_root_cert {}: {e}", path.display()))?;
            let certs = X509::stack_from_pem(&pem).map_err(|e| {
                format!(
                    "store.ssl_root_cert {}: not PEM certificates: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "store.ssl_root_cert {}: no certificate in it",
                    path.display()
                ));
            }
            let mut store = X509StoreBuilder::new().map_err(tls_err)?;
            for cert in certs {
                store.add_cert(cert).map_err(tls_err)?;
            }
            builder
                .set_verify_cert_store(store.build())
                .map_err(tls_err)?;
        }
        builder.set_verify(SslVerifyMode::PEER);
    } else {
        builder.set_verify(SslVerifyMode::NONE);
    }
    let mut make = MakeTlsConnector::new(builder.build());
    let check_host = mode == TlsMode::VerifyFull;
    make.set_callback(move |config, _domain| {
        config.set_verify_hostname(check_host);
        Ok(())
    });
    Ok(make)
}

/// The URL without its `sslmode` and `sslrootcert`, and their values. Both forms of
/// connection string: `postgres://…?sslmode=verify-full` and `host=… sslmode=verify-full`
/// (values without quotes or spaces there).
fn take_tls_params(url: &str) -> Result<(String, Option<TlsMode>, Option<PathBuf>), String> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => mode = Some(TlsMode::parse(value)?),
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, &percent_decode(value))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            match token.split_once('=') {
                Some((key, value)) if take(key.trim(), value.trim_matches('\''))? => {}
                _ => kept.push(token),
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root_cert))
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A password file's content but one trailing newline (what `echo` and Kubernetes leave).
fn read_secret(path: &Path) -> std::io::Result<SecretString> {
    let text = std::fs::read_to_string(path)?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_and_root_cert_leave_the_url() {
        let (rest, mode, cert) = take_tls_params(
            "postgres://app@db:5432/events?sslmode=verify-full&application_name=w&sslrootcert=%2Fetc%2Fca.pem",
        )
        .expect("parses");
        assert_eq!(rest, "postgres://app@db:5432/events?application_name=w");
        assert_eq!(mode, Some(TlsMode::VerifyFull));
        assert_eq!(cert, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, mode, _) =
            take_tls_params("host=db user=app sslmode=require dbname=events").expect("parses");
        assert_eq!(rest, "host=db user=app dbname=events");
        assert_eq!(mode, Some(TlsMode::Require));
        let (rest, mode, _) = take_tls_params("postgres://db/events").expect("parses");
        assert_eq!((rest.as_str(), mode), ("postgres://db/events", None));
        assert!(take_tls_params("postgres://db/events?sslmode=allow").is_err());
    }

    #[test]
    fn the_password_file_overrides_the_url_and_errors_do_not_show_it() {
        let file = std::env::temp_dir().join(format!("pg-password-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").expect("write");
        let settings = StoreSettings {
            password_file: Some(file.clone()),
            ..StoreSettings::default()
        };
        let link = settings
            .link(0, "postgres://app:in-url@db:5432/events?sslmode=require")
            .expect("link");
        std::fs::remove_file(&file).expect("remove");
        assert_eq!(link.config.get_password(), Some(&b"from-file"[..]));
        assert_eq!(link.config.get_ssl_mode(), SslMode::Require);
        let err = settings
            .link(0, "postgres://app:in-url@db:5432/events")
            .err()
            .expect("file gone");
        assert!(err.to_string().contains("store.password_file"), "{err}");
        let bad = StoreSettings::default()
            .link(3, "postgres://app:s3cret@db:5432/events?sslmode=verify")
            .err()
            .expect("bad mode");
        assert!(
            !bad.to_string().contains("s3cret") && bad.to_string().contains("shard 3"),
            "{bad}"
        );
    }
}
