//! `tern certs dev`: a development PKI made with rcgen. A CA, a server
//! certificate for `localhost`, `127.0.0.1` and `::1`, and a client certificate
//! (CN `device-1` by default) for mutual TLS. ECDSA P-256 keys, PKCS#8 PEM.
//! For development and tests only: the CA key is written next to the certificates.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The files `write` makes, in this order.
pub const FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

/// The client certificate's common name unless told otherwise.
pub const DEFAULT_CLIENT_CN: &str = "device-1";

/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("cannot make certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0} already exists (use --force to overwrite)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A development CA and the server and client certificates it signed.
#[derive(Debug, Clone)]
pub struct DevCerts {
    pub ca: Pem,
    pub server: Pem,
    pub client: Pem,
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// A CA able to sign more certificates (tests make expired or foreign ones with it).
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new self-signed CA named `common_name`, valid for ten years.
    pub fn new(common_name: &str) -> Result<DevCa, CertsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(DevCa { issuer })
    }

    pub fn pem(&self) -> Pem {
        Pem {
            cert: self.issuer.pem(),
            key: self.issuer.key().serialize_pem(),
        }
    }

    /// Signs a leaf certificate: `common_name`, subject alternative names `sans`
    /// (IP addresses or DNS names), valid from `not_before` to `not_after`.
    pub fn issue(
        &self,
        common_name: &str,
        sans: &[&str],
        usage: Usage,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Pem, CertsError> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name = name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// A leaf valid from yesterday for `days` days.
    pub fn issue_for_days(
        &self,
        common_name: &str,
        sans: &[&str],
        usage: Usage,
        days: i64,
    ) -> Result<Pem, CertsError> {
        let now = OffsetDateTime::now_utc();
        self.issue(
            common_name,
            sans,
            usage,
            now - Duration::days(1),
            now + Duration::days(days),
        )
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tern development");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Makes a fresh development CA, server certificate and client certificate.
pub fn generate(client_cn: &str) -> Result<DevCerts, CertsError> {
    let ca = DevCa::new("Tern development CA")?;
    let server = ca.issue_for_days("localhost", &SERVER_NAMES, Usage::Server, 825)?;
    let client = ca.issue_for_days(client_cn, &[], Usage::Client, 825)?;
    Ok(DevCerts {
        ca: ca.pem(),
        server,
        client,
    })
}

impl DevCerts {
    /// Writes the six [`FILES`] into `dir` (created if needed); keys get mode 0600.
    /// Refuses, before writing anything, if one exists and `force` is false.
    pub fn write(&self, dir: &Path, force: bool) -> Result<Vec<PathBuf>, CertsError> {
        let paths: Vec<PathBuf> = FILES.iter().map(|f| dir.join(f)).collect();
        if !force {
            if let Some(existing) = paths.iter().find(|p| p.exists()) {
                return Err(CertsError::Exists(existing.clone()));
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let contents = [
            &self.ca.cert,
            &self.ca.key,
            &self.server.cert,
            &self.server.key,
            &self.client.cert,
            &self.client.key,
        ];
        for (path, text) in paths.iter().zip(contents) {
            let private = path.extension().is_some_and(|e| e == "key");
            write_file(path, text.as_bytes(), private).map_err(|source| CertsError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(paths)
    }
}

/// `tern certs dev --out DIR [--force]`: generate and write; the paths written.
pub fn write_dev(dir: &Path, force: bool, client_cn: &str) -> Result<Vec<PathBuf>, CertsError> {
    let certs = generate(client_cn)?;
    let paths = certs.write(dir, force)?;
    tracing::info!(dir = %dir.display(), client_cn, "development certificates written");
    Ok(paths)
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if private { 0o600 } else { 0o644 };
        options.mode(mode);
        let mut file = options.open(path)?;
        // An existing file keeps its old mode when opened: set it explicitly.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = private;
        let mut file = options.open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    fn parse_cert(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn generated_certificates_have_the_documented_names() {
        let certs = generate("sensor-9").unwrap();
        let server = parse_cert(&certs.server.cert);
        let (_, server) = x509_parser::parse_x509_certificate(&server).unwrap();
        let san = server.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("7f:00:00:01")), "{names:?}");
        assert_eq!(names.len(), 3, "{names:?}");

        let client = parse_cert(&certs.client.cert);
        let (_, client) = x509_parser::parse_x509_certificate(&client).unwrap();
        let cn = client.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "sensor-9");
        assert!(client.validity().is_valid());

        let ca = parse_cert(&certs.ca.cert);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca).unwrap();
        assert!(ca.is_ca());
        assert_eq!(client.issuer(), ca.subject());
        for key in [&certs.ca.key, &certs.server.key, &certs.client.key] {
            assert!(PrivateKeyDer::from_pem_slice(key.as_bytes()).is_ok());
        }
    }

    #[test]
    fn write_makes_six_files_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dev");
        let paths = write_dev(&out, false, DEFAULT_CLIENT_CN).unwrap();
        assert_eq!(paths.len(), 6);
        for f in FILES {
            assert!(out.join(f).is_file(), "{f}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |f: &str| std::fs::metadata(out.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("ca.key"), 0o600);
            assert_eq!(mode("client.key"), 0o600);
            assert_eq!(mode("server.pem"), 0o644);
        }
        let before = std::fs::read_to_string(out.join("ca.pem")).unwrap();
        let err = write_dev(&out, false, DEFAULT_CLIENT_CN).unwrap_err();
        assert!(matches!(err, CertsError::Exists(_)), "{err}");
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read_to_string(out.join("ca.pem")).unwrap(), before);

        write_dev(&out, true, DEFAULT_CLIENT_CN).unwrap();
        assert_ne!(std::fs::read_to_string(out.join("ca.pem")).unwrap(), before);
    }

    #[test]
    fn one_existing_file_is_enough_to_refuse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.key"), "mine").unwrap();
        let err = write_dev(dir.path(), false, DEFAULT_CLIENT_CN).unwrap_err();
        assert!(err.to_string().contains("client.key"), "{err}");
        assert!(!dir.path().join("ca.pem").exists());
    }
}
