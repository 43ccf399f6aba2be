//! A `nats-server -js` for unit tests, on a free loopback port, in a
//! temporary directory; killed on drop. A missing `nats-server` fails the
//! test (tests/run.sh installs it).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the server may take to listen.
const WAIT: Duration = Duration::from_secs(10);

/// A `nats-server` with JetStream in a temporary directory, killed on drop.
pub(crate) struct Nats {
    child: Child,
    pub(crate) url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub(crate) async fn start() -> Nats {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (apt-get install nats-server)");
        let nats = Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nats
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
