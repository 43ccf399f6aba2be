//! A `nats-server -js` process on a free loopback port with its own storage
//! directory, killed on drop. A missing `nats-server` fails the test
//! (tests/run.sh installs it).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct NatsServer {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::process::free_port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (apt-get install nats-server)");
        let server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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
        server
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server` processes with JetStream routed into one cluster on
/// loopback, each with its own ports (kept across a restart) and store;
/// killed on drop.
pub struct NatsCluster {
    pub servers: Vec<ClusterServer>,
    dir: tempfile::TempDir,
}

pub struct ClusterServer {
    pub name: String,
    pub port: u16,
    cluster_port: u16,
    child: Option<Child>,
}

impl ClusterServer {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl NatsCluster {
    /// Starts `size` servers and waits until the cluster elected a JetStream
    /// meta leader (their log says so).
    pub async fn start(size: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..size)
            .map(|_| (super::process::free_port(), super::process::free_port()))
            .collect();
        let mut cluster = NatsCluster {
            servers: ports
                .iter()
                .enumerate()
                .map(|(i, (port, cluster_port))| ClusterServer {
                    name: format!("nats-{}", i + 1),
                    port: *port,
                    cluster_port: *cluster_port,
                    child: None,
                })
                .collect(),
            dir,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_listening(i).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !(0..size).any(|i| {
            let log = cluster.log(i);
            log.contains("JetStream cluster new metadata leader")
                || log.contains("Self is new JetStream cluster metadata leader")
        }) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the NATS cluster elected no JetStream meta leader:\n{}",
                cluster.log(0)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.wait_placement(size).await;
        cluster
    }

    /// A meta leader may not know every peer yet: a stream with `size`
    /// replicas is then refused ("no suitable peers for placement", seen on
    /// a loaded 2-core CI machine). Creates and deletes a probe stream until
    /// one is placed on all of them.
    async fn wait_placement(&self, size: usize) {
        let urls: Vec<String> = self.servers.iter().map(ClusterServer::url).collect();
        let client = async_nats::connect(urls)
            .await
            .expect("connect to the NATS cluster");
        let js = async_nats::jetstream::new(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let created = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "PLACEMENT_PROBE".into(),
                    subjects: vec!["placement-probe".into()],
                    num_replicas: size,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => {
                    js.delete_stream("PLACEMENT_PROBE")
                        .await
                        .expect("delete the placement probe");
                    return;
                }
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "the NATS cluster never placed a stream on {size} servers: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every server's URL, comma-separated (`cluster.nats_urls`).
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(ClusterServer::url).collect();
        urls.join(",")
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("{}.log", self.servers[i].name)),
        )
        .unwrap_or_default()
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .servers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| format!("\"nats-route://127.0.0.1:{}\"", s.cluster_port))
            .collect();
        let server = &self.servers[i];
        let root = self.dir.path();
        let config = format!(
            "server_name: \"{name}\"\nlisten: \"127.0.0.1:{port}\"\n\
             log_file: \"{log}\"\njetstream {{ store_dir: \"{store}\" }}\n\
             cluster {{ name: \"tern-crash\", listen: \"127.0.0.1:{cport}\", routes: [{routes}] }}\n",
            name = server.name,
            port = server.port,
            log = root.join(format!("{}.log", server.name)).display(),
            store = root.join(format!("{}-js", server.name)).display(),
            cport = server.cluster_port,
            routes = routes.join(", "),
        );
        let path = root.join(format!("{}.conf", server.name));
        std::fs::write(&path, config).expect("write nats-server config");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (apt-get install nats-server)");
        self.servers[i].child = Some(child);
    }

    async fn wait_listening(&self, i: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.servers[i].port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not start:\n{}",
                self.servers[i].name,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL server `i`, as a crash.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store; waits until it listens.
    pub async fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.spawn(i);
        self.wait_listening(i).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill9(i);
        }
    }
}

/// The stream of Tern's store bucket (`KV_tern_store`) on the NATS at `urls`.
pub async fn store_stream(urls: Vec<String>) -> async_nats::jetstream::stream::Stream {
    let client = async_nats::connect(urls).await.expect("connect to NATS");
    async_nats::jetstream::new(client)
        .get_stream("KV_tern_store")
        .await
        .expect("the store bucket exists")
}
