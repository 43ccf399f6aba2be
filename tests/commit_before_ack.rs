//! Commit before ack, seen from real sockets: the MQTT and STOMP adapters
//! serve a router whose store commits only when the test opens a gate. A
//! PUBACK or RECEIPT that promises a stored message waits for that commit; one
//! that promises nothing stored does not wait for another client's commit.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tern::adapter::{Context, Peer};
use tern::config::Settings;
use tern::core::router::{Router, RouterSettings};
use tern::store::{Backend, Durability, Snapshot, Store, StoreError, StoreOp};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::stomp::{frame, StompClient};
use common::*;
use tern_stomp::Command;

/// A backend that keeps what it applied and applies nothing while its gate is shut.
#[derive(Default)]
struct GatedBackend {
    applied: Mutex<Vec<StoreOp>>,
    open: Mutex<bool>,
    opened: Condvar,
}

impl GatedBackend {
    fn set_open(&self, open: bool) {
        *self.open.lock() = open;
        self.opened.notify_all();
    }

    fn holds(&self, found: impl Fn(&StoreOp) -> bool) -> bool {
        self.applied.lock().iter().any(found)
    }
}

impl Backend for GatedBackend {
    fn apply(&self, ops: &[StoreOp], _fsync: bool) -> Result<i64, StoreError> {
        let mut open = self.open.lock();
        while !*open {
            self.opened.wait(&mut open);
        }
        self.applied.lock().extend(ops.iter().cloned());
        Ok(0)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
}

struct Gated {
    mqtt: SocketAddr,
    stomp: SocketAddr,
    backend: Arc<GatedBackend>,
    store: Arc<Store>,
}

impl Drop for Gated {
    fn drop(&mut self) {
        // Let the writer thread finish so it can be joined.
        self.backend.set_open(true);
        self.store.close();
    }
}

/// MQTT and STOMP served on port 0 over a router with a gated store (open).
async fn gated_broker() -> Gated {
    let backend = Arc::new(GatedBackend::default());
    backend.set_open(true);
    let store = Store::start(
        Arc::clone(&backend) as Arc<dyn Backend>,
        Durability::Batched,
    );
    let settings = Settings::ephemeral();
    let router = Arc::new(Router::from_settings(RouterSettings {
        store: Some(Arc::clone(&store)),
        ..RouterSettings::new(settings.limits.queue_limits())
    }));
    let ctx = Context::open(router, Arc::new(settings), CancellationToken::new());
    let mqtt = listen(ctx.clone(), "mqtt").await;
    let stomp = listen(ctx, "stomp").await;
    Gated {
        mqtt,
        stomp,
        backend,
        store,
    }
}

async fn listen(ctx: Context, protocol: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, addr)) = listener.accept().await {
            let peer = Peer {
                addr,
                listener: protocol,
                anonymous_allowed: true,
                admitted: true,
                cert_username: None,
            };
            let ctx = ctx.for_new_connection();
            if protocol == "mqtt" {
                tokio::spawn(tern::adapter::mqtt::serve(stream, peer, ctx));
            } else {
                tokio::spawn(tern::adapter::stomp::serve(stream, peer, ctx));
            }
        }
    });
    addr
}

fn puback(packet_id: u16) -> Vec<u8> {
    ack_packet(0x40, packet_id)
}

#[tokio::test]
async fn a_puback_for_a_stored_message_waits_for_its_commit_and_no_other() {
    let broker = gated_broker().await;
    // An offline persistent subscriber: a QoS 1 message to `kept` is stored for it.
    let (mut sub, _) = raw_client(broker.mqtt, &connect_level(5, "keeper", false, 300)).await;
    send(&mut sub, &subscribe_packet(1, Some(&[0]), &[("kept", 1)])).await;
    assert_eq!(read_packet(&mut sub).await.expect("SUBACK")[0], 0x90);
    drop(sub);
    let (mut publisher, _) = raw_client(broker.mqtt, &connect_level(4, "pub", true, 0)).await;
    let (mut other, _) = raw_client(broker.mqtt, &connect_level(4, "other", true, 0)).await;

    broker.backend.set_open(false);
    send(
        &mut publisher,
        &publish_packet(0x02, "kept", Some(7), None, b"m"),
    )
    .await;
    // Another client's QoS 1 message that nothing stores is acknowledged
    // while the first one's commit is held back.
    send(
        &mut other,
        &publish_packet(0x02, "nobody", Some(3), None, b"x"),
    )
    .await;
    assert_eq!(read_packet(&mut other).await, Some(puback(3)));
    expect_silence(&mut publisher).await;
    assert!(
        !broker.backend.holds(
            |op| matches!(op, StoreOp::PutDelivery { client_id, .. } if client_id == "keeper")
        ),
        "nothing is committed while the gate is shut"
    );

    broker.backend.set_open(true);
    assert_eq!(read_packet(&mut publisher).await, Some(puback(7)));
    assert!(
        broker.backend.holds(
            |op| matches!(op, StoreOp::PutDelivery { client_id, .. } if client_id == "keeper")
        ),
        "the PUBACK came before the delivery was committed"
    );
}

#[tokio::test]
async fn a_stomp_receipt_for_a_queued_message_waits_for_its_commit() {
    let broker = gated_broker().await;
    let mut producer = StompClient::connect(broker.stomp).await;
    let mut other = StompClient::connect(broker.stomp).await;

    broker.backend.set_open(false);
    let send = frame(
        Command::Send,
        &[("destination", "/queue/jobs"), ("receipt", "q-1")],
        b"job",
    );
    producer.send_frame(&send).await;
    // A SEND to a topic nobody stores, on another connection, is not held up.
    other
        .send_with_receipt(frame(Command::Send, &[("destination", "/topic/t")], b"x"))
        .await;
    producer.expect_nothing().await;
    assert!(!broker
        .backend
        .holds(|op| matches!(op, StoreOp::PutQueued { .. })));

    broker.backend.set_open(true);
    let receipt = producer.expect(Command::Receipt).await;
    assert_eq!(receipt.header("receipt-id"), Some("q-1"));
    assert!(
        broker
            .backend
            .holds(|op| matches!(op, StoreOp::PutQueued { queue, .. } if queue == "jobs")),
        "the RECEIPT came before the queued message was committed"
    );
}
