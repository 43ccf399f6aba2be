//! The broker as a separate process (the built `tern` binary), for tests that
//! kill it with SIGKILL and restart it on the same store, and a minimal MQTT
//! connection on the project's codec for such tests, which need to see exactly
//! which packet was acknowledged when.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use tern_mqtt::{
    Connect, Packet, Properties, ProtocolVersion, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

pub struct Broker {
    child: Child,
    pub mqtt: SocketAddr,
    pub stomp: SocketAddr,
    /// The banner line (`tern … listening: mqtt=… http=… data=…`).
    pub banner: String,
    /// The broker's log lines (stderr) so far, when started with `start_with`.
    pub log: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

/// A port free right now (the broker must come back on the same one after a kill).
/// Chosen below Linux's ephemeral range (32768+), so no port-0 listener or client
/// socket of a test running alongside can take it while the broker is down.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Spread processes apart, then walk up from there (20000..32000).
    let start = (std::process::id() % 1_000) as u16 * 12;
    loop {
        let port = 20_000 + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A fresh data directory for one test.
pub fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The longest a broker's start may take before its banner.
const BANNER_WITHIN: Duration = Duration::from_secs(60);

impl Broker {
    /// Starts the tern binary on fixed ports and waits for its banner line.
    pub async fn start(mqtt_port: u16, stomp_port: u16, data_dir: &Path) -> Broker {
        Broker::start_with(mqtt_port, stomp_port, data_dir, &[])
            .await
            .expect("broker starts")
    }

    /// As `start`, with more environment (`TERN_…` settings) and the log
    /// (stderr) kept in `log`; Err(the log) when the broker exits before its banner.
    pub async fn start_with(
        mqtt_port: u16,
        stomp_port: u16,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<Broker, String> {
        let capture = !env.is_empty();
        // `TERN_BIN`: another build of tern (a before/after comparison).
        let bin = std::env::var_os("TERN_BIN")
            .unwrap_or_else(|| std::ffi::OsString::from(env!("CARGO_BIN_EXE_tern")));
        let mut command = Command::new(bin);
        command.envs(env.iter().copied());
        if capture {
            command.stderr(Stdio::piped());
        } else {
            command.stderr(Stdio::inherit());
        }
        Broker::spawn(command, mqtt_port, stomp_port, data_dir, capture).await
    }

    async fn spawn(
        mut command: Command,
        mqtt_port: u16,
        stomp_port: u16,
        data_dir: &Path,
        capture: bool,
    ) -> Result<Broker, String> {
        // A test's own setting wins over these defaults.
        let given: Vec<String> = command
            .get_envs()
            .map(|(key, _)| key.to_string_lossy().into_owned())
            .collect();
        let mut default = |key: &str, value: &std::ffi::OsStr| {
            if !given.iter().any(|k| k == key) {
                command.env(key, value);
            }
        };
        default("TERN_LOG__LEVEL", "warn".as_ref());
        // Persistent subscribers in these tests must never hit the queue bound.
        default("TERN_LIMITS__MAX_QUEUED_MESSAGES", "10000000".as_ref());
        let mut child = command
            .env("TERN_MQTT__BIND", format!("127.0.0.1:{mqtt_port}"))
            .env("TERN_STOMP__BIND", format!("127.0.0.1:{stomp_port}"))
            .env("TERN_WEBSOCKET__BIND", "127.0.0.1:0")
            .env("TERN_STORAGE__DATA_DIR", data_dir)
            .env("TERN_HTTP__BIND", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tern");
        let log = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut log_done = None;
        if capture {
            let stderr = child.stderr.take().expect("stderr");
            let stderr = tokio::process::ChildStderr::from_std(stderr).expect("async stderr");
            let mut lines = BufReader::new(stderr).lines();
            let sink = std::sync::Arc::clone(&log);
            log_done = Some(tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().push(line);
                }
            }));
        }
        let stdout = child.stdout.take().expect("stdout");
        let stdout = tokio::process::ChildStdout::from_std(stdout).expect("async stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Long: a clustered node's start reads its store from JetStream,
        // which can stall for a while after a NATS server came back (the
        // clustered crash test: 29 s once).
        let Ok(banner) = timeout(BANNER_WITHIN, lines.next_line()).await else {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(done) = log_done {
                let _ = timeout(Duration::from_secs(5), done).await;
            }
            return Err(format!(
                "no banner within {} s; the log:\n{}",
                BANNER_WITHIN.as_secs(),
                log.lock().join("\n")
            ));
        };
        let banner = banner.expect("read banner");
        let Some(banner) = banner else {
            // Exited before the banner: hand back what it logged.
            let _ = child.wait();
            if let Some(done) = log_done {
                let _ = timeout(Duration::from_secs(5), done).await;
            }
            return Err(log.lock().join("\n"));
        };
        assert!(banner.contains("listening"), "unexpected banner: {banner}");
        // Keep draining stdout so the broker never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Broker {
            child,
            mqtt: SocketAddr::from(([127, 0, 0, 1], mqtt_port)),
            stomp: SocketAddr::from(([127, 0, 0, 1], stomp_port)),
            banner,
            log,
        })
    }

    /// The address of listener `name` in the banner (`http`, `ws`, …).
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        let prefix = format!("{name}=");
        self.banner
            .split_whitespace()
            .find_map(|word| word.strip_prefix(&prefix))
            .and_then(|addr| addr.parse().ok())
    }

    /// Waits (up to 10 s) for a log line containing every one of `words`; returns it.
    pub async fn wait_for_log(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .log
                .lock()
                .iter()
                .find(|line| words.iter().all(|w| line.contains(w)))
                .cloned();
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {words:?} in:\n{}",
                self.log.lock().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code (None: killed by a signal
    /// or not gone within 15 s, then killed).
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        None
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An MQTT connection speaking through the project's codec.
pub struct Conn {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    /// For tests that number their packets.
    pub next_id: u16,
    buf: BytesMut,
}

impl Conn {
    /// CONNECT with `clean` and (5.0) `session_expiry`; Some((conn, session_present)) on success.
    pub async fn open_with(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean: bool,
        session_expiry: Option<u32>,
    ) -> Option<(Conn, bool)> {
        let properties = Properties {
            session_expiry_interval: session_expiry,
            ..Properties::default()
        };
        Conn::open_connect(
            addr,
            Connect {
                protocol: version,
                clean_start: clean,
                keep_alive: 30,
                client_id: client_id.into(),
                will: None,
                username: None,
                password: None,
                properties,
                bridge: false,
            },
        )
        .await
    }

    /// Sends `connect` as it is; Some((conn, session_present)) on a successful CONNACK.
    pub async fn open_connect(addr: SocketAddr, connect: Connect) -> Option<(Conn, bool)> {
        let stream = timeout(Duration::from_secs(2), TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        let mut conn = Conn {
            stream,
            version: connect.protocol,
            next_id: 0,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        conn.send(&Packet::Connect(connect)).await?;
        match conn.recv(Duration::from_secs(5)).await? {
            Packet::ConnAck(ack) if ack.code == 0 => Some((conn, ack.session_present)),
            _ => None,
        }
    }

    /// MQTT 3.1.1 CONNECT.
    pub async fn open(addr: SocketAddr, client_id: &str, clean: bool) -> Option<(Conn, bool)> {
        Conn::open_with(addr, ProtocolVersion::V311, client_id, clean, None).await
    }

    pub async fn send(&mut self, packet: &Packet) -> Option<()> {
        let mut out = BytesMut::new();
        tern_mqtt::encode(packet, self.version, &mut out).ok()?;
        self.stream.write_all(&out).await.ok()
    }

    /// The next packet, or None on close or after `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = tern_mqtt::decode(&mut self.buf, self.version, 1 << 20).ok()? {
                return Some(p);
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }
}

/// SUBSCRIBE (packet id 1) to `filter` at `qos`, no other option.
pub fn subscribe_packet(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties: Properties::default(),
    })
}
