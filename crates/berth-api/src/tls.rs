//! TLS for the API and the agent channel: a rustls server configuration from PEM files,
//! or a self-signed CA and server certificate made once in the data directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use tokio_rustls::TlsAcceptor;

/// Where `--tls-self-signed` keeps its material, under the data directory.
pub const SELF_SIGNED_DIR: &str = "tls";
pub const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server.key";

/// A certificate chain and key to serve with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed `cert`, when berth made it (to hand to agents and clients).
    pub ca: Option<PathBuf>,
}

/// The acceptor for `files` (HTTP/1.1 only, as the server speaks).
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading the TLS certificate {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the TLS private key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The self-signed material in `data_dir/tls`, made on first use and reused after: a CA
/// (`ca.pem`, world-readable, to give to agents and clients; `ca.key` 0600) and a server
/// certificate it signed for `hosts` plus localhost and the loopback addresses.
pub fn self_signed(data_dir: &Path, hosts: &[String]) -> anyhow::Result<TlsFiles> {
    let dir = data_dir.join(SELF_SIGNED_DIR);
    let files = TlsFiles {
        cert: dir.join(SERVER_CERT_FILE),
        key: dir.join(SERVER_KEY_FILE),
        ca: Some(dir.join(CA_CERT_FILE)),
    };
    let ca = dir.join(CA_CERT_FILE);
    if files.cert.exists() && files.key.exists() && ca.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let (ca_pem, ca_key_pem, cert_pem, key_pem) = generate(&names)?;
    // Keys first, owner-only; the certificates last, so a half-written set is regenerated.
    write_file(&dir.join(CA_KEY_FILE), ca_key_pem.as_bytes(), 0o600)?;
    write_file(&files.key, key_pem.as_bytes(), 0o600)?;
    write_file(&files.cert, cert_pem.as_bytes(), 0o644)?;
    write_file(&ca, ca_pem.as_bytes(), 0o644)?;
    tracing::info!(ca = %ca.display(), names = ?names, "made a self-signed TLS CA and server certificate");
    Ok(files)
}

/// (CA cert, CA key, server cert, server key), PEM.
fn generate(names: &[String]) -> anyhow::Result<(String, String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "berth self-signed CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "berth server");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok((
        ca.pem(),
        ca_key.serialize_pem(),
        cert.pem(),
        key.serialize_pem(),
    ))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            options.mode(mode);
            let mut file = options.open(&tmp)?;
            // A leftover temp file keeps its old mode through `open`.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        #[cfg(not(unix))]
        {
            let _ = mode;
            options.open(&tmp)?.write_all(bytes)?;
        }
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_with_private_keys_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let files = self_signed(dir.path(), &["berth.example".into()]).unwrap();
        acceptor(&files).unwrap();
        let first = std::fs::read(&files.cert).unwrap();
        let again = self_signed(dir.path(), &[]).unwrap();
        assert_eq!(again, files);
        assert_eq!(std::fs::read(&again.cert).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&files.key), 0o600);
            assert_eq!(mode(&dir.path().join("tls/ca.key")), 0o600);
            assert_eq!(mode(files.ca.as_ref().unwrap()), 0o644);
        }
    }
}
