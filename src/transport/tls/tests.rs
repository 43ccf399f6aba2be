//! Handshakes of a real tokio-rustls client against [`ReloadableTls`] over
//! loopback TCP, with certificates made by `crate::certs` at test time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::client;
use tokio_rustls::TlsConnector;

use super::*;
use crate::certs::{DevCa, Pem, Usage};

const SECTION: &str = "mqtt_tls";
const TIMEOUT: Duration = Duration::from_secs(5);
const BOTH_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A CA, a server certificate and a client certificate on disk.
struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
    ca_pem: Pem,
    server: Pem,
    client: Pem,
}

impl Pki {
    fn new() -> Pki {
        let ca = DevCa::new("Test CA").unwrap();
        let server = ca
            .issue_for_days("localhost", &["localhost", "127.0.0.1"], Usage::Server, 30)
            .unwrap();
        let client = ca
            .issue_for_days("device-1", &["device-1.example"], Usage::Client, 30)
            .unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca_pem: ca.pem(),
            ca,
            server,
            client,
        };
        pki.write_server(&pki.server.clone());
        pki.write("ca.pem", &pki.ca_pem.cert);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    fn write_server(&self, pem: &Pem) {
        self.write("server.pem", &pem.cert);
        self.write("server.key", &pem.key);
    }

    fn settings(
        &self,
        client_auth: ClientAuth,
        cert_username: CertUsername,
    ) -> TlsListenerSettings {
        TlsListenerSettings {
            enabled: true,
            cert_file: Some(self.path("server.pem")),
            key_file: Some(self.path("server.key")),
            client_ca_file: (client_auth != ClientAuth::None).then(|| self.path("ca.pem")),
            client_auth,
            cert_username,
            ..TlsListenerSettings::default()
        }
    }

    fn tls(&self, client_auth: ClientAuth, cert_username: CertUsername) -> Arc<ReloadableTls> {
        match ReloadableTls::new(SECTION, &self.settings(client_auth, cert_username)) {
            Ok(tls) => tls,
            Err(e) => panic!("TLS config should load: {e}"),
        }
    }
}

/// What the server side saw for one connection.
type Outcome = Result<Option<String>, String>;

/// Accepts connections, handshakes, reports the outcome, then greets and echoes.
async fn serve(tls: Arc<ReloadableTls>) -> (SocketAddr, mpsc::UnboundedReceiver<Outcome>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let tls = Arc::clone(&tls);
            let tx = tx.clone();
            tokio::spawn(async move {
                match tls.handshake(tcp, peer, TIMEOUT).await {
                    Ok(mut conn) => {
                        let _ = tx.send(Ok(conn.cert_username.clone()));
                        let _ = conn.stream.write_all(b"hi").await;
                        let _ = conn.stream.flush().await;
                        let mut buf = [0u8; 64];
                        while let Ok(n @ 1..) = conn.stream.read(&mut buf).await {
                            if conn.stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            let _ = conn.stream.flush().await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

struct ClientOptions<'a> {
    trust: &'a str,
    cert: Option<&'a Pem>,
    server_name: &'a str,
    versions: &'a [&'static rustls::SupportedProtocolVersion],
}

impl<'a> ClientOptions<'a> {
    fn trusting(ca_pem: &'a str) -> ClientOptions<'a> {
        ClientOptions {
            trust: ca_pem,
            cert: None,
            server_name: "localhost",
            versions: BOTH_VERSIONS,
        }
    }

    fn with_cert(mut self, cert: &'a Pem) -> Self {
        self.cert = Some(cert);
        self
    }
}

/// Connects, handshakes and reads the server's "hi": a rejected client
/// certificate shows only there under TLS 1.3.
async fn connect(
    addr: SocketAddr,
    options: &ClientOptions<'_>,
) -> std::io::Result<client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(options.trust.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(options.versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match options.cert {
        Some(pem) => {
            let chain = vec![CertificateDer::from_pem_slice(pem.cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(options.server_name.to_owned()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let mut hi = [0u8; 2];
    stream.read_exact(&mut hi).await?;
    assert_eq!(&hi, b"hi");
    Ok(stream)
}

async fn outcome(rx: &mut mpsc::UnboundedReceiver<Outcome>) -> Outcome {
    match tokio::time::timeout(TIMEOUT, rx.recv()).await {
        Ok(Some(outcome)) => outcome,
        other => panic!("no handshake outcome: {other:?}"),
    }
}

async fn echo(stream: &mut client::TlsStream<TcpStream>, text: &[u8]) {
    stream.write_all(text).await.unwrap();
    stream.flush().await.unwrap();
    let mut back = vec![0u8; text.len()];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(back, text);
}

#[tokio::test]
async fn handshake_succeeds_with_tls13_and_tls12() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::None, CertUsername::None)).await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut options = ClientOptions::trusting(&pki.ca_pem.cert);
        let versions = [version];
        options.versions = &versions;
        let mut stream = connect(addr, &options).await.unwrap();
        assert_eq!(stream.get_ref().1.protocol_version(), Some(version.version));
        assert_eq!(outcome(&mut rx).await, Ok(None));
        echo(&mut stream, b"ping").await;
    }
}

#[tokio::test]
async fn handshake_by_ip_address_name_succeeds() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::None, CertUsername::None)).await;
    let mut options = ClientOptions::trusting(&pki.ca_pem.cert);
    options.server_name = "127.0.0.1";
    assert!(connect(addr, &options).await.is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(None));
}

#[tokio::test]
async fn client_trusting_another_ca_fails_and_the_server_says_why() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::None, CertUsername::None)).await;
    let other = DevCa::new("Other CA").unwrap().pem();
    let err = connect(addr, &ClientOptions::trusting(&other.cert))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let server = outcome(&mut rx).await.unwrap_err();
    assert!(server.contains("alert"), "{server}");
    // Nothing else is affected: the next good client connects.
    assert!(connect(addr, &ClientOptions::trusting(&pki.ca_pem.cert))
        .await
        .is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(None));
}

#[tokio::test]
async fn wrong_host_name_fails() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::None, CertUsername::None)).await;
    let mut options = ClientOptions::trusting(&pki.ca_pem.cert);
    options.server_name = "broker.example.com";
    let err = connect(addr, &options).await.unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    assert!(outcome(&mut rx).await.is_err());
}

#[tokio::test]
async fn expired_server_certificate_fails() {
    let pki = Pki::new();
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .ca
        .issue(
            "localhost",
            &["localhost"],
            Usage::Server,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    pki.write_server(&expired);
    let (addr, mut rx) = serve(pki.tls(ClientAuth::None, CertUsername::None)).await;
    let err = connect(addr, &ClientOptions::trusting(&pki.ca_pem.cert))
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
    assert!(outcome(&mut rx).await.is_err());
}

#[tokio::test]
async fn expired_client_certificate_fails_when_required() {
    let pki = Pki::new();
    let now = time::OffsetDateTime::now_utc();
    let expired = pki
        .ca
        .issue(
            "device-1",
            &[],
            Usage::Client,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::Required, CertUsername::Cn)).await;
    let options = ClientOptions::trusting(&pki.ca_pem.cert).with_cert(&expired);
    assert!(connect(addr, &options).await.is_err());
    let server = outcome(&mut rx).await.unwrap_err();
    assert!(server.to_lowercase().contains("expired"), "{server}");
}

#[tokio::test]
async fn missing_client_certificate_fails_when_required() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::Required, CertUsername::None)).await;
    assert!(connect(addr, &ClientOptions::trusting(&pki.ca_pem.cert))
        .await
        .is_err());
    let server = outcome(&mut rx).await.unwrap_err();
    assert!(
        server.contains("NoCertificatesPresented") || server.contains("no certificate"),
        "{server}"
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_fails() {
    let pki = Pki::new();
    let other = DevCa::new("Other CA").unwrap();
    let foreign = other
        .issue_for_days("device-1", &[], Usage::Client, 30)
        .unwrap();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::Required, CertUsername::Cn)).await;
    let options = ClientOptions::trusting(&pki.ca_pem.cert).with_cert(&foreign);
    assert!(connect(addr, &options).await.is_err());
    let server = outcome(&mut rx).await.unwrap_err();
    assert!(server.contains("UnknownIssuer"), "{server}");
}

#[tokio::test]
async fn common_name_becomes_the_username() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::Required, CertUsername::Cn)).await;
    let options = ClientOptions::trusting(&pki.ca_pem.cert).with_cert(&pki.client);
    assert!(connect(addr, &options).await.is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(Some("device-1".into())));
}

#[tokio::test]
async fn san_becomes_the_username() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::Required, CertUsername::San)).await;
    let options = ClientOptions::trusting(&pki.ca_pem.cert).with_cert(&pki.client);
    assert!(connect(addr, &options).await.is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(Some("device-1.example".into())));
}

#[tokio::test]
async fn optional_client_auth_accepts_clients_with_and_without_certificates() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::Optional, CertUsername::Cn)).await;
    assert!(connect(addr, &ClientOptions::trusting(&pki.ca_pem.cert))
        .await
        .is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(None));
    let options = ClientOptions::trusting(&pki.ca_pem.cert).with_cert(&pki.client);
    assert!(connect(addr, &options).await.is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(Some("device-1".into())));
}

#[tokio::test]
async fn cert_username_none_ignores_the_certificate_name() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::Required, CertUsername::None)).await;
    let options = ClientOptions::trusting(&pki.ca_pem.cert).with_cert(&pki.client);
    assert!(connect(addr, &options).await.is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(None));
}

#[tokio::test]
async fn plain_tcp_to_a_tls_port_fails_the_handshake() {
    let pki = Pki::new();
    let (addr, mut rx) = serve(pki.tls(ClientAuth::None, CertUsername::None)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // An MQTT 3.1.1 CONNECT.
    tcp.write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        .await
        .unwrap();
    let server = outcome(&mut rx).await.unwrap_err();
    assert!(
        server.contains("corrupt message") || server.contains("InvalidContentType"),
        "{server}"
    );
    let mut rest = Vec::new();
    // The server closes (possibly after an alert); it never speaks MQTT.
    let _ = tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut rest)).await;
    assert!(!rest.starts_with(b"\x20"), "{rest:?}");
}

#[tokio::test]
async fn silent_client_times_out() {
    let pki = Pki::new();
    let tls = pki.tls(ClientAuth::None, CertUsername::None);
    let (server_side, _client_side) = tokio::io::duplex(1024);
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let result = tls
        .handshake(server_side, peer, Duration::from_millis(50))
        .await;
    assert!(matches!(result, Err(HandshakeError::Timeout)), "{result:?}");
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_only() {
    let pki = Pki::new();
    let tls = pki.tls(ClientAuth::None, CertUsername::None);
    let (addr, mut rx) = serve(Arc::clone(&tls)).await;
    let mut old_conn = connect(addr, &ClientOptions::trusting(&pki.ca_pem.cert))
        .await
        .unwrap();
    assert_eq!(outcome(&mut rx).await, Ok(None));

    let new_ca = DevCa::new("New CA").unwrap();
    let new_server = new_ca
        .issue_for_days("localhost", &["localhost"], Usage::Server, 30)
        .unwrap();
    pki.write_server(&new_server);
    tls.reload().unwrap();

    let new_ca_pem = new_ca.pem().cert;
    assert!(connect(addr, &ClientOptions::trusting(&new_ca_pem))
        .await
        .is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(None));
    assert!(connect(addr, &ClientOptions::trusting(&pki.ca_pem.cert))
        .await
        .is_err());
    assert!(outcome(&mut rx).await.is_err());
    // The connection made before the reload is untouched.
    echo(&mut old_conn, b"still here").await;
}

#[tokio::test]
async fn failed_reload_keeps_the_old_certificate() {
    let pki = Pki::new();
    let tls = pki.tls(ClientAuth::None, CertUsername::None);
    let (addr, mut rx) = serve(Arc::clone(&tls)).await;

    pki.write(
        "server.key",
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    );
    let err = tls.reload().unwrap_err();
    assert!(err.to_string().contains("mqtt_tls.key_file"), "{err}");
    // A key that does not belong to the certificate is refused too.
    let stranger = pki
        .ca
        .issue_for_days("localhost", &["localhost"], Usage::Server, 30)
        .unwrap();
    pki.write("server.key", &stranger.key);
    let err = tls.reload().unwrap_err();
    assert!(err.to_string().contains("mqtt_tls.key_file"), "{err}");
    std::fs::remove_file(pki.path("server.pem")).unwrap();
    assert!(matches!(tls.reload(), Err(TlsError::Read { .. })));

    assert!(connect(addr, &ClientOptions::trusting(&pki.ca_pem.cert))
        .await
        .is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(None));
}

#[test]
fn reload_if_changed_notices_only_changes() {
    let pki = Pki::new();
    let tls = pki.tls(ClientAuth::None, CertUsername::None);
    assert!(tls.reload_if_changed().is_none());
    let other = pki
        .ca
        .issue_for_days("localhost", &["localhost"], Usage::Server, 30)
        .unwrap();
    // A half-written pair (new certificate, old key) fails; completing it succeeds.
    pki.write("server.pem", &other.cert);
    assert!(matches!(tls.reload_if_changed(), Some(Err(_))));
    assert!(
        tls.reload_if_changed().is_none(),
        "a broken file is not retried until it changes"
    );
    pki.write("server.key", &other.key);
    assert!(matches!(tls.reload_if_changed(), Some(Ok(()))));
    assert!(tls.reload_if_changed().is_none());
}

#[tokio::test]
async fn watch_reloads_when_files_change() {
    let pki = Pki::new();
    let tls = pki.tls(ClientAuth::None, CertUsername::None);
    let (addr, mut rx) = serve(Arc::clone(&tls)).await;
    let shutdown = CancellationToken::new();
    let watcher = tokio::spawn(Arc::clone(&tls).watch(Duration::from_millis(20), shutdown.clone()));

    let new_ca = DevCa::new("New CA").unwrap();
    let new_server = new_ca
        .issue_for_days("localhost", &["localhost"], Usage::Server, 30)
        .unwrap();
    let before = tls.config();
    pki.write_server(&new_server);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while Arc::ptr_eq(&before, &tls.config()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch did not reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new_ca_pem = new_ca.pem().cert;
    assert!(connect(addr, &ClientOptions::trusting(&new_ca_pem))
        .await
        .is_ok());
    assert_eq!(outcome(&mut rx).await, Ok(None));

    shutdown.cancel();
    tokio::time::timeout(TIMEOUT, watcher)
        .await
        .unwrap()
        .unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_calls_the_reload_hook() {
    let calls = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let counter = Arc::clone(&calls);
    let hook = on_sighup(shutdown.clone(), move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let task = tokio::spawn(hook);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP hook not called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
}

fn expect_err(settings: &TlsListenerSettings) -> TlsError {
    match server_config(SECTION, settings) {
        Ok(_) => panic!("config should be refused"),
        Err(e) => e,
    }
}

#[test]
fn config_errors_name_the_key_and_the_path() {
    let pki = Pki::new();
    let base = pki.settings(ClientAuth::None, CertUsername::None);

    let mut missing = base.clone();
    missing.cert_file = Some(PathBuf::from("/nonexistent/server.pem"));
    let err = expect_err(&missing);
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("mqtt_tls.cert_file") && text.contains("/nonexistent/server.pem"),
        "{text}"
    );

    let mut unset = base.clone();
    unset.key_file = None;
    assert!(expect_err(&unset).to_string().contains("mqtt_tls.key_file"));

    pki.write("empty.pem", "");
    let mut empty = base.clone();
    empty.cert_file = Some(pki.path("empty.pem"));
    let err = expect_err(&empty);
    assert!(matches!(err, TlsError::Empty { .. }), "{err:?}");

    // A certificate where the key should be.
    let mut swapped = base.clone();
    swapped.key_file = Some(pki.path("server.pem"));
    let err = expect_err(&swapped);
    assert!(
        err.to_string().contains("mqtt_tls.key_file") && err.to_string().contains("private key"),
        "{err}"
    );

    let mut no_ca = pki.settings(ClientAuth::Required, CertUsername::None);
    no_ca.client_ca_file = Some(pki.path("missing-ca.pem"));
    assert!(expect_err(&no_ca)
        .to_string()
        .contains("mqtt_tls.client_ca_file"));

    let mut ca_not_cert = pki.settings(ClientAuth::Required, CertUsername::None);
    ca_not_cert.client_ca_file = Some(pki.path("server.key"));
    assert!(matches!(expect_err(&ca_not_cert), TlsError::Empty { .. }));
}

#[cfg(unix)]
#[test]
fn unreadable_key_is_a_read_error() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let key = pki.path("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&key).is_ok() {
        // Running as root: permissions do not stop reads; nothing to test.
        return;
    }
    let err = expect_err(&pki.settings(ClientAuth::None, CertUsername::None));
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("mqtt_tls.key_file"), "{err}");
}

#[test]
fn username_from_cert_reads_cn_and_san() {
    let pki = Pki::new();
    let der = CertificateDer::from_pem_slice(pki.client.cert.as_bytes()).unwrap();
    assert_eq!(
        username_from_cert(&der, CertUsername::Cn).as_deref(),
        Some("device-1")
    );
    assert_eq!(
        username_from_cert(&der, CertUsername::San).as_deref(),
        Some("device-1.example")
    );
    assert_eq!(username_from_cert(&der, CertUsername::None), None);
    let no_san = pki.ca.issue_for_days("x", &[], Usage::Client, 1).unwrap();
    let der = CertificateDer::from_pem_slice(no_san.cert.as_bytes()).unwrap();
    assert_eq!(username_from_cert(&der, CertUsername::San), None);
    assert_eq!(
        username_from_cert(&CertificateDer::from(vec![1, 2, 3]), CertUsername::Cn),
        None
    );
}

#[test]
fn reload_all_reports_failures() {
    let pki = Pki::new();
    let tls = pki.tls(ClientAuth::None, CertUsername::None);
    assert!(reload_all(&[Arc::clone(&tls)]));
    pki.write("server.pem", "junk");
    assert!(!reload_all(&[tls]));
}

#[test]
fn hints_explain_common_failures() {
    let wrap = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    assert!(hint(&wrap(rustls::Error::InvalidMessage(
        rustls::InvalidMessage::InvalidContentType
    )))
    .contains("plain TCP"));
    assert!(hint(&wrap(rustls::Error::NoCertificatesPresented)).contains("required"));
    assert_eq!(hint(&std::io::Error::other("reset")), "");
}
