//! The WebSocket port's HTTP side: which upgrades are accepted (subprotocol,
//! path, origin), the statuses of refusals, and the static files of `web.root`.

mod common;

use common::start_server_with;
use common::ws::{self, http_get, refused_status};

#[tokio::test]
async fn subprotocol_is_echoed_and_decides_over_the_path() {
    let server = common::start_server().await;
    for (offer, expected) in [
        (&["mqtt"][..], "mqtt"),
        (&["mqttv3.1"][..], "mqttv3.1"),
        (&["v12.stomp", "v11.stomp", "v10.stomp"][..], "v12.stomp"),
        (&["chat", "v11.stomp"][..], "v11.stomp"),
    ] {
        // The path says MQTT; the subprotocol wins.
        let (_ws, chosen) = ws::try_open(server.ws, "/mqtt", offer, None)
            .await
            .unwrap_or_else(|e| panic!("{offer:?} refused: {e}"));
        assert_eq!(chosen.as_deref(), Some(expected), "offer {offer:?}");
    }
}

#[tokio::test]
async fn no_subprotocol_falls_back_to_the_path() {
    let server = common::start_server().await;
    for path in ["/mqtt", "/stomp"] {
        let (_ws, chosen) = ws::try_open(server.ws, path, &[], None)
            .await
            .unwrap_or_else(|e| panic!("{path} refused: {e}"));
        assert_eq!(chosen, None);
    }
    let (status, body) = refused_status(server.ws, "/elsewhere", &[], None).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/mqtt or /stomp"), "{body}");
}

#[tokio::test]
async fn unknown_subprotocol_is_refused_with_400() {
    let server = common::start_server().await;
    let (status, body) = refused_status(server.ws, "/mqtt", &["wamp", "mqttv5"], None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("wamp, mqttv5"), "{body}");
    assert!(body.contains("v12.stomp"), "{body}");
}

#[tokio::test]
async fn origins_follow_the_allowed_list() {
    let server = start_server_with(|s| {
        s.websocket.allowed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let (status, body) = refused_status(
        server.ws,
        "/mqtt",
        &["mqtt"],
        Some("https://evil.example.com"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    ws::try_open(
        server.ws,
        "/mqtt",
        &["mqtt"],
        Some("https://app.example.com"),
    )
    .await
    .expect("listed origin accepted");
    ws::try_open(server.ws, "/mqtt", &["mqtt"], None)
        .await
        .expect("no Origin (not a browser) accepted");
}

#[tokio::test]
async fn any_origin_on_loopback_by_default() {
    let server = common::start_server().await;
    ws::try_open(server.ws, "/stomp", &[], Some("http://localhost:3000"))
        .await
        .expect("accepted");
}

#[tokio::test]
async fn plain_get_of_an_endpoint_is_426_and_wrong_version_too() {
    let server = common::start_server().await;
    let (status, head, _) = http_get(server.ws, "/mqtt").await;
    assert_eq!(status, 426, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.ws).await.unwrap();
    let request = "GET /mqtt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 426"), "{head}");
    assert!(head.contains("sec-websocket-version: 13"), "{head}");
}

#[tokio::test]
async fn without_web_root_nothing_is_served() {
    let server = common::start_server().await;
    let (status, _, _) = http_get(server.ws, "/").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn web_root_is_served_without_escaping_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    std::fs::create_dir_all(root.join("js")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>tern</h1>").unwrap();
    std::fs::write(root.join("js/app.js"), "console.log(1)").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "do not serve").unwrap();
    let server = start_server_with(|s| s.web.root = Some(root.clone())).await;

    let (status, head, body) = http_get(server.ws, "/").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert_eq!(body, b"<h1>tern</h1>");

    let (status, head, body) = http_get(server.ws, "/js/app.js").await;
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("javascript"), "{head}");
    assert_eq!(body, b"console.log(1)");

    for path in [
        "/../secret.txt",
        "/js/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/missing.html",
    ] {
        let (status, head, body) = http_get(server.ws, path).await;
        assert_eq!(status, 404, "{path}: {head}");
        assert!(!String::from_utf8_lossy(&body).contains("do not serve"));
    }
    // The same port still upgrades.
    ws::open(server.ws, "/stomp", &["v12.stomp"]).await;
}

#[tokio::test]
async fn symlinks_leaving_web_root_are_not_followed_and_nul_is_a_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("site");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("js")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("js/app.js"), "console.log(1)").unwrap();
    std::fs::write(outside.join("passwd"), "do not serve").unwrap();
    // Out of the root: a directory link (as `etclink -> /etc`) and a file link.
    std::os::unix::fs::symlink(&outside, root.join("etclink")).unwrap();
    std::os::unix::fs::symlink(outside.join("passwd"), root.join("passwd")).unwrap();
    // Inside the root: still served.
    std::os::unix::fs::symlink(root.join("js"), root.join("scripts")).unwrap();
    let server = start_server_with(|s| s.web.root = Some(root.clone())).await;

    for path in ["/etclink/passwd", "/passwd", "/etclink/"] {
        let (status, head, body) = http_get(server.ws, path).await;
        assert_eq!(status, 404, "{path}: {head}");
        assert!(!String::from_utf8_lossy(&body).contains("do not serve"));
    }
    let (status, head, body) = http_get(server.ws, "/scripts/app.js").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"console.log(1)");

    for path in ["/js/app.js%00", "/%00/x", "/js%00/app.js"] {
        let (status, head, _) = http_get(server.ws, path).await;
        assert_eq!(status, 400, "{path}: {head}");
    }
}
