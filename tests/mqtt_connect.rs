//! CONNECT / CONNACK behaviour with real clients (rumqttc v4 and v5) and raw bytes.

mod common;

use common::*;

#[tokio::test]
async fn v311_client_connects_and_gets_connack_accepted() {
    let server = start_server().await;
    let mut s = raw_connect(server.mqtt).await;
    tokio::io::AsyncWriteExt::write_all(&mut s, &connect_v311("c1"))
        .await
        .unwrap();
    let connack = read_packet(&mut s).await.expect("connack");
    assert_eq!(connack, vec![0x20, 0x02, 0x00, 0x00]);
}
