//! SIGHUP re-reads the configuration: ACL rules and the log level change while
//! clients stay connected; a file that no longer loads keeps the running
//! configuration. Runs the real binary with a config file.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::v4;
use common::TestClient;

struct Tern {
    child: Child,
    mqtt: SocketAddr,
    log: PathBuf,
}

impl Drop for Tern {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tern {
    fn start(dir: &Path, config: &Path) -> Tern {
        let log = dir.join("tern.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("--config")
            .arg(config)
            .env("TERN_MQTT__BIND", "127.0.0.1:0")
            .env("TERN_STOMP__ENABLED", "false")
            .env("TERN_STORAGE__ENABLED", "false")
            .env("TERN_HTTP__ENABLED", "false")
            .env("TERN_WEBSOCKET__ENABLED", "false")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn tern");
        let stdout = child.stdout.take().expect("stdout");
        let mut banner = String::new();
        BufReader::new(stdout)
            .read_line(&mut banner)
            .expect("banner");
        let mqtt = banner
            .split_whitespace()
            .find_map(|word| word.strip_prefix("mqtt="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no mqtt address in {banner:?}"));
        Tern { child, mqtt, log }
    }

    fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }

    /// Waits until the log has `count` lines containing `text` (the broker's own
    /// report that it applied the reload).
    async fn log_has(&self, text: &str, count: usize) {
        let deadline = Instant::now() + common::WAIT;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.matches(text).count() >= count {
                return;
            }
            assert!(Instant::now() < deadline, "no {text:?} in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn config(topic: &str, level: &str) -> String {
    format!(
        "[log]\nlevel = \"{level}\"\n\n[[acl]]\nall = true\nallow = \"both\"\ntopic = \"{topic}\"\n"
    )
}

#[tokio::test]
async fn sighup_reloads_acl_rules_and_log_level_and_keeps_them_when_the_file_is_broken() {
    let dir = std::env::temp_dir().join(format!("tern-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tern.toml");
    std::fs::write(&file, config("before/#", "info")).expect("write config");
    let tern = Tern::start(&dir, &file);

    let mut client = v4::Client::connect(tern.mqtt, "stays").await;
    assert_eq!(
        client.subscribe("after/#", 1).await,
        vec![0x80],
        "denied before the reload"
    );

    std::fs::write(&file, config("after/#", "debug")).expect("rewrite config");
    tern.sighup();
    tern.log_has("ACL rules reloaded", 1).await;
    tern.log_has("log level changed", 1).await;
    // The same connection, unbroken, now gets what the new rules allow.
    assert_eq!(client.subscribe("after/#", 1).await, vec![1]);
    assert_eq!(client.subscribe("before/#", 1).await, vec![0x80]);

    std::fs::write(&file, "[[acl]]\nnobody = true\n").expect("break config");
    tern.sighup();
    tern.log_has("config reload failed", 1).await;
    assert_eq!(
        client.subscribe("after/x", 1).await,
        vec![1],
        "a broken file keeps the rules in force"
    );
    drop(tern);
    let _ = std::fs::remove_dir_all(&dir);
}

fn limits_config(total: usize, subscriptions: usize, mqtt_listener: Option<usize>) -> String {
    let listener = mqtt_listener.map_or(String::new(), |n| {
        format!("[mqtt]\nbind = \"127.0.0.1:0\"\nmax_connections = {n}\n\n")
    });
    format!("{listener}[limits]\nmax_connections = {total}\nmax_subscriptions_per_client = {subscriptions}\n")
}

/// The CONNACK return code of a 3.1.1 CONNECT (0 accepted, 3 server unavailable).
async fn connack_code(addr: SocketAddr, id: &str) -> (tokio::net::TcpStream, u8) {
    let (stream, connack) = common::raw_client(addr, &common::connect_v311(id)).await;
    let code = *connack.last().expect("CONNACK has a return code");
    (stream, code)
}

#[tokio::test]
async fn sighup_reloads_limits_connection_caps_at_once_and_per_connection_limits_for_new_connections(
) {
    let dir = std::env::temp_dir().join(format!("tern-reload-limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tern.toml");
    std::fs::write(&file, limits_config(1, 1, None)).expect("write config");
    let tern = Tern::start(&dir, &file);

    let mut first = v4::Client::connect(tern.mqtt, "first").await;
    let (_refused, code) = connack_code(tern.mqtt, "second").await;
    assert_eq!(code, 3, "over limits.max_connections = 1");

    std::fs::write(&file, limits_config(2, 2, None)).expect("rewrite config");
    tern.sighup();
    tern.log_has("limits reloaded", 1).await;
    let mut second = v4::Client::connect(tern.mqtt, "second").await;
    assert_eq!(second.subscribe("a/1", 1).await, vec![1]);
    assert_eq!(
        second.subscribe("a/2", 1).await,
        vec![1],
        "the new cap of 2 holds for a new connection"
    );
    assert_eq!(first.subscribe("a/1", 1).await, vec![1]);
    assert_eq!(
        first.subscribe("a/2", 1).await,
        vec![0x80],
        "a connection keeps the limits it was accepted under"
    );

    // Lowered below what is connected: nobody is dropped, nobody new gets in.
    std::fs::write(&file, limits_config(10, 2, Some(1))).expect("rewrite config");
    tern.sighup();
    tern.log_has("limits reloaded", 2).await;
    let (_refused, code) = connack_code(tern.mqtt, "third").await;
    assert_eq!(code, 3, "over [mqtt] max_connections = 1");
    assert_eq!(
        first.subscribe("a/1", 0).await,
        vec![0],
        "the first client is still connected"
    );
    assert_eq!(
        second.subscribe("a/1", 0).await,
        vec![0],
        "the second client is still connected"
    );
    drop(tern);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `allow both #` for everybody, and with `deny`, `deny subscribe test/nosubscribe`.
fn one_forbidden_topic(deny: bool) -> String {
    let mut text = String::from("[[acl]]\nall = true\nallow = \"both\"\ntopic = \"#\"\n");
    if deny {
        text.push_str(
            "\n[[acl]]\nall = true\ndeny = \"subscribe\"\ntopic = \"test/nosubscribe\"\n",
        );
    }
    text
}

#[tokio::test]
async fn sighup_carves_a_new_deny_rule_out_of_a_connected_wildcard_subscription_and_gives_it_back()
{
    let dir = std::env::temp_dir().join(format!("tern-reload-carve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tern.toml");
    std::fs::write(&file, one_forbidden_topic(false)).expect("write config");
    let tern = Tern::start(&dir, &file);

    let mut everything = v4::Client::connect(tern.mqtt, "everything").await;
    assert_eq!(everything.subscribe("#", 1).await, vec![1]);
    let mut publisher = v4::Client::connect(tern.mqtt, "publisher").await;
    publisher
        .publish("test/nosubscribe", 1, false, b"before")
        .await;
    let got = everything.recv().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("test/nosubscribe", &b"before"[..])
    );

    std::fs::write(&file, one_forbidden_topic(true)).expect("add the deny rule");
    tern.sighup();
    tern.log_has("ACL rules reloaded", 1).await;
    tern.log_has("subscription exceptions changed", 1).await;
    publisher
        .publish("test/nosubscribe", 1, false, b"hidden")
        .await;
    publisher.publish("a/b", 1, false, b"marker").await;
    let got = everything.recv().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("a/b", &b"marker"[..]),
        "the denied topic no longer reaches `#`, other topics still do"
    );
    // The same connection, unbroken: the topic itself is now refused.
    assert_eq!(
        everything.subscribe("test/nosubscribe", 1).await,
        vec![0x80]
    );

    std::fs::write(&file, one_forbidden_topic(false)).expect("remove the deny rule");
    tern.sighup();
    tern.log_has("ACL rules reloaded", 2).await;
    tern.log_has("subscription exceptions changed", 2).await;
    publisher
        .publish("test/nosubscribe", 1, false, b"restored")
        .await;
    let got = everything.recv().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("test/nosubscribe", &b"restored"[..])
    );
    everything.expect_no_message().await;
    drop(tern);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 5.0 PUBLISH of `body` bytes to `big`.
fn big_publish(body: usize) -> Vec<u8> {
    common::publish_packet(0, "big", None, Some(&[0]), &vec![b'x'; body])
}

#[tokio::test]
async fn sighup_changes_the_buffer_budget_at_once_for_connected_clients_too() {
    let dir = std::env::temp_dir().join(format!("tern-reload-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tern.toml");
    std::fs::write(&file, "[limits]\nmax_buffered_bytes = 1000\n").expect("write config");
    let tern = Tern::start(&dir, &file);

    let packet = big_publish(10_000);
    let (mut refused, _) = common::raw_client(tern.mqtt, &common::connect_v5("refused")).await;
    let (mut waiting, _) = common::raw_client(tern.mqtt, &common::connect_v5("waiting")).await;
    common::send(&mut refused, &packet[..5000]).await;
    let before_close = common::expect_closed(&mut refused).await;
    assert_eq!(common::disconnect_reason(&before_close), 0x97);
    tern.log_has("closing connection over the buffer budget", 1)
        .await;

    std::fs::write(&file, "[limits]\nmax_buffered_bytes = 100000\n").expect("rewrite config");
    tern.sighup();
    tern.log_has("limits reloaded", 1).await;
    // Connected before the reload, it holds the same frame now.
    common::send(&mut waiting, &packet[..5000]).await;
    common::send(&mut waiting, &packet[5000..]).await;
    common::expect_alive(&mut waiting).await;
    drop(tern);
    let _ = std::fs::remove_dir_all(&dir);
}
