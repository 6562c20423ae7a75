//! The listener's certificate: a CA and server certificate generated on first start and
//! kept in `data_dir/tls` (mode `self-signed`), or PEM files the operator provides.
//!
//! The server certificate is re-issued by the same CA when the configured names change or
//! it nears expiry, so nodes that trust `ca.crt` keep working.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_config::{Config, TlsMode};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// What could not be set up for TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("generating the self-signed certificate failed: {0}")]
    Generate(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The listener's TLS material.
#[derive(Debug, Clone)]
pub struct Tls {
    pub server_config: Arc<ServerConfig>,
    /// The CA certificate (PEM) clients should trust, when airlock generated it.
    pub ca_pem: Option<String>,
}

const CA_LIFETIME_DAYS: i64 = 3650;
const SERVER_LIFETIME_DAYS: i64 = 825;
const RENEW_BEFORE_DAYS: i64 = 30;

/// Builds the TLS setup for `config`, or `None` for `mode = "off"`.
pub fn setup(config: &Config, tls_dir: &Path) -> Result<Option<Tls>, TlsError> {
    match config.tls.mode {
        TlsMode::Off => Ok(None),
        TlsMode::Files => {
            let cert = config
                .tls
                .cert
                .as_ref()
                .expect("validated: files mode has cert");
            let key = config
                .tls
                .key
                .as_ref()
                .expect("validated: files mode has key");
            let chain = read_chain(cert)?;
            let key = read_key(key)?;
            Ok(Some(Tls {
                server_config: server_config(chain, key)?,
                ca_pem: None,
            }))
        }
        TlsMode::SelfSigned => {
            let names = certificate_names(config);
            let (ca_pem, chain, key) = self_signed(tls_dir, &names)?;
            Ok(Some(Tls {
                server_config: server_config(chain, key)?,
                ca_pem: Some(ca_pem),
            }))
        }
    }
}

/// `hostname`, `*.hostname` (for `harbor.<host>`-style names), `extra_names`, `localhost`.
fn certificate_names(config: &Config) -> Vec<String> {
    let host = &config.server.hostname;
    let mut names = vec![host.clone()];
    if host.parse::<IpAddr>().is_err() && host != "localhost" {
        names.push(format!("*.{host}"));
    }
    names.extend(config.server.extra_names.iter().cloned());
    for local in ["localhost", "127.0.0.1", "::1"] {
        names.push(local.to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if chain.is_empty() {
        return Err(file_err(path, "holds no PEM certificate"));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| file_err(path, format!("no usable PEM private key ({e})")))
}

/// What the stored server certificate was issued for.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Issued {
    names: Vec<String>,
    not_after: i64,
}

fn gen_err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Generate(e.to_string())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "airlock gateway CA");
    dn.push(DnType::OrganizationName, "airlock");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Writes a key or certificate through a temporary created new (`O_EXCL`, a random name,
/// mode 0600 from the start) beside `path`, then renamed over it: nothing planted in the
/// directory is followed, and no one reads the key half-written or world-readable.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".airlock-tls-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| file_err(dir, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| file_err(file.path(), e))?;
    file.persist(path).map_err(|e| file_err(path, e.error))?;
    Ok(())
}

type Material = (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn self_signed(dir: &Path, names: &[String]) -> Result<Material, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let (ca_cert_path, ca_key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (cert_path, key_path, issued_path) = (
        dir.join("server.crt"),
        dir.join("server.key"),
        dir.join("server.json"),
    );
    let now = OffsetDateTime::now_utc();

    let ca_key = if ca_key_path.exists() && ca_cert_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path).map_err(|e| file_err(&ca_key_path, e))?;
        KeyPair::from_pem(&pem).map_err(|e| file_err(&ca_key_path, e))?
    } else {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = ca_params();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(CA_LIFETIME_DAYS);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        write_private(&ca_cert_path, &cert.pem())?;
        tracing::info!(target: "airlock::tls", path = %ca_cert_path.display(), "generated a new CA; nodes must trust it");
        // A new CA invalidates any server certificate issued by an old one.
        let _ = std::fs::remove_file(&issued_path);
        key
    };
    let ca_pem = std::fs::read_to_string(&ca_cert_path).map_err(|e| file_err(&ca_cert_path, e))?;

    let current: Option<Issued> = std::fs::read(&issued_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let fresh = current.as_ref().is_some_and(|issued| {
        issued.names == names && issued.not_after - now.unix_timestamp() > RENEW_BEFORE_DAYS * 86400
    }) && cert_path.exists()
        && key_path.exists();
    if !fresh {
        // The issuer object only needs the CA's name and key; both are stable.
        let issuer = ca_params().self_signed(&ca_key).map_err(gen_err)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(gen_err),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = now - Duration::days(1);
        let not_after = now + Duration::days(SERVER_LIFETIME_DAYS);
        params.not_after = not_after;
        let key = KeyPair::generate().map_err(gen_err)?;
        let cert = params.signed_by(&key, &issuer, &ca_key).map_err(gen_err)?;
        write_private(&key_path, &key.serialize_pem())?;
        write_private(&cert_path, &format!("{}{}", cert.pem(), ca_pem))?;
        let issued = Issued {
            names: names.to_vec(),
            not_after: not_after.unix_timestamp(),
        };
        write_private(
            &issued_path,
            &serde_json::to_string_pretty(&issued).expect("serializes"),
        )?;
        tracing::info!(target: "airlock::tls", names = ?names, "issued the server certificate");
    }
    Ok((ca_pem, read_chain(&cert_path)?, read_key(&key_path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_kept_and_reissued_when_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::embedded_default();
        config.server.hostname = "staging.example.edu".into();
        let first = setup(&config, dir.path()).unwrap().unwrap();
        let server_pem = std::fs::read(dir.path().join("server.crt")).unwrap();
        let again = setup(&config, dir.path()).unwrap().unwrap();
        assert_eq!(first.ca_pem, again.ca_pem);
        assert_eq!(
            std::fs::read(dir.path().join("server.crt")).unwrap(),
            server_pem,
            "unchanged names keep the cert"
        );
        config.server.extra_names.push("10.20.0.5".into());
        let third = setup(&config, dir.path()).unwrap().unwrap();
        assert_eq!(first.ca_pem, third.ca_pem, "the CA survives a re-issue");
        assert_ne!(
            std::fs::read(dir.path().join("server.crt")).unwrap(),
            server_pem
        );
        let issued: Issued =
            serde_json::from_slice(&std::fs::read(dir.path().join("server.json")).unwrap())
                .unwrap();
        assert!(issued.names.contains(&"*.staging.example.edu".to_owned()));
        assert!(issued.names.contains(&"10.20.0.5".to_owned()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Regression: keys were written through `<name>.tmp`, opened without `O_EXCL`, so a
    /// symlink planted there received the CA key.
    #[test]
    fn keys_are_written_through_fresh_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("stolen");
        std::fs::write(&elsewhere, "").unwrap();
        for planted in ["ca.tmp", "server.tmp"] {
            std::os::unix::fs::symlink(&elsewhere, dir.path().join(planted)).unwrap();
        }
        setup(&Config::embedded_default(), dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "");
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "server.key"] {
            let meta = std::fs::symlink_metadata(dir.path().join(key)).unwrap();
            assert!(meta.is_file(), "{key}");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn files_mode_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        std::fs::write(&cert, "not pem").unwrap();
        let mut config = Config::embedded_default();
        config.tls.mode = TlsMode::Files;
        config.tls.cert = Some(cert.clone());
        config.tls.key = Some(dir.path().join("missing.key"));
        let err = setup(&config, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("tls.crt") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
