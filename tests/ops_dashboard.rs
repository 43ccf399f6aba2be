//! The web dashboard (static files on the HTTP listener, strict CSP) and the
//! `/api/stats` call it polls. The page itself is driven in Chromium by
//! tests/browser/browser.test.mjs.

mod common;

use common::http::{get, request};
use common::stomp::StompClient;
use common::*;

const TOKEN: &str = "dash-token";

#[tokio::test]
async fn the_dashboard_page_and_its_assets_are_served_with_a_strict_policy() {
    let server = start_server().await;
    for path in ["/", "/dashboard"] {
        let page = get(server.http, path).await;
        assert_eq!(page.status, 200, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.header("cache-control"), Some("no-cache"));
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.starts_with("default-src 'self';"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(page
            .body
            .contains(r#"<script src="/dashboard/dashboard.js" defer></script>"#));
        assert!(page.body.contains(r#"<table id="clients">"#));
    }
    for (path, content_type, needle) in [
        (
            "/dashboard/dashboard.js",
            "text/javascript; charset=utf-8",
            "/api/stats",
        ),
        (
            "/dashboard/dashboard.css",
            "text/css; charset=utf-8",
            "button.disconnect",
        ),
        ("/dashboard/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let asset = get(server.http, path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert_eq!(asset.header("content-type"), Some(content_type), "{path}");
        assert_eq!(asset.header("x-content-type-options"), Some("nosniff"));
        assert!(asset.body.contains(needle), "{path}");
    }
    for path in ["/dashboard/missing.js", "/index.html", "/dashboard.js"] {
        assert_eq!(get(server.http, path).await.status, 404, "{path}");
    }
    let post = request(server.http, "POST", "/dashboard", None).await;
    assert_eq!(post.status, 404, "only GET serves the page");
}

#[tokio::test]
async fn stats_need_the_token_and_count_connections_messages_and_the_busiest_topics() {
    let server = start_server_with(|s| s.http.admin_token = Some(TOKEN.into())).await;
    // Behind the token like every admin call (tests/ops_sys_admin.rs tries the rest).
    let refused = get(server.http, "/api/stats").await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    let idle = request(server.http, "GET", "/api/stats", Some(TOKEN))
        .await
        .json();
    assert_eq!(idle["connections"]["total"], 0, "{idle}");
    assert_eq!(idle["top_topics"], serde_json::json!([]));
    assert_eq!(idle["version"], env!("CARGO_PKG_VERSION"));

    let mut device = v4::Client::connect(server.mqtt, "dash-device").await;
    for _ in 0..200 {
        device.publish("dash/load", 1, false, b"x").await;
    }
    for _ in 0..80 {
        device.publish("dash/less", 0, false, b"yy").await;
    }
    device.publish("dash/state", 1, true, b"on").await;
    let mut web = StompClient::connect(server.stomp).await;
    web.subscribe("s1", "/topic/nobody/publishes/here", "auto")
        .await;
    for _ in 0..16 {
        web.send("/topic/dash/stomp", b"z", &[]).await;
    }

    let stats = request(server.http, "GET", "/api/stats", Some(TOKEN))
        .await
        .json();
    assert_eq!(
        stats["connections"],
        serde_json::json!({ "total": 2, "mqtt": 1, "stomp": 1 }),
        "{stats}"
    );
    let messages = &stats["messages"];
    assert_eq!(messages["received"], 200 + 80 + 1 + 16, "{stats}");
    assert_eq!(messages["sent"], 0);
    assert_eq!(messages["bytes_received"], 200 + 160 + 2 + 16);
    assert_eq!(messages["dropped"]["no_subscribers"], 200 + 80 + 1 + 16);
    assert_eq!(
        stats["sessions"],
        serde_json::json!({ "online": 2, "offline": 0 })
    );
    assert_eq!(stats["subscriptions"], 1);
    assert_eq!(stats["retained"], 1);
    assert_eq!(
        stats["queued"],
        serde_json::json!({ "sessions": 0, "queues": 0 })
    );
    assert!(stats["uptime_secs"].is_u64());
    assert_eq!(stats["top_topics_sample"], 8);

    // The test's runtime runs the broker on this one thread, and n consecutive
    // publishes on a thread are n / 8 samples (n a multiple of 8) whatever came
    // before: here the sampled estimates are exact.
    let top = stats["top_topics"].as_array().expect("top_topics");
    let ranked: Vec<(&str, u64)> = top
        .iter()
        .map(|t| {
            (
                t["topic"].as_str().unwrap_or_default(),
                t["messages"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        &ranked[..3],
        [("dash/load", 200), ("dash/less", 80), ("dash/stomp", 16)],
        "{stats}"
    );
    assert!(top[0]["rate"].as_f64().is_some_and(|r| r > 0.0), "{stats}");
    assert!(ranked.len() <= 4, "dash/state may or may not be sampled");
}
