//! Loading and validation, through files as an operator writes them.

use std::path::{Path, PathBuf};

use super::*;

#[test]
fn defaults_are_valid_and_use_documented_ports() {
    let s = Settings::default();
    s.validate().unwrap();
    assert_eq!(s.mqtt.bind.to_string(), "127.0.0.1:1883");
    assert_eq!(s.stomp.bind.to_string(), "127.0.0.1:61613");
    assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
    assert!(s.mqtt.anonymous_allowed());
}

#[test]
fn anonymous_defaults_to_loopback_only() {
    let mut l = ListenerSettings::on("0.0.0.0:1883");
    assert!(!l.anonymous_allowed());
    l.allow_anonymous = Some(true);
    assert!(l.anonymous_allowed());
}

#[test]
fn file_values_override_defaults_and_bad_values_name_the_key() {
    let dir = std::env::temp_dir().join(format!("tern-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[mqtt]\nbind = \"127.0.0.1:1999\"\n[limits]\nmax_inflight = 7\n",
    )
    .unwrap();
    let s = Settings::load(Some(&good)).unwrap();
    assert_eq!(s.mqtt.bind.port(), 1999);
    assert_eq!(s.limits.max_inflight, 7);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_inflight = 0\n").unwrap();
    let err = Settings::load(Some(&bad)).unwrap_err().to_string();
    assert!(err.contains("limits.max_inflight"), "{err}");

    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[mqtt]\nbnd = \"127.0.0.1:1\"\n").unwrap();
    let err = Settings::load(Some(&typo)).unwrap_err().to_string();
    assert!(err.contains("bnd"), "{err}");

    let wrong_type = dir.join("type.toml");
    std::fs::write(&wrong_type, "[mqtt]\nbind = \"not an address\"\n").unwrap();
    let err = Settings::load(Some(&wrong_type)).unwrap_err().to_string();
    assert!(err.contains("bind"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn http_listener_defaults_to_loopback_9090_without_admin_token() {
    let s = Settings::default();
    assert!(s.http.enabled);
    assert_eq!(s.http.bind.to_string(), "127.0.0.1:9090");
    assert_eq!(s.http.admin_token, None);
    assert_eq!(s.sys.interval_secs, 10);
    assert_eq!(Settings::ephemeral().http.bind.port(), 0);
    let s = load_text("[http]\nadmin_token = \"t0k\"\n[sys]\ninterval_secs = 2\n").unwrap();
    assert_eq!(s.http.admin_token.as_deref(), Some("t0k"));
    assert_eq!(s.sys.interval_secs, 2);
    assert_eq!(
        invalid_key(load_text("[http]\nbind = \"127.0.0.1:1883\"\n")),
        "http.bind"
    );
}

#[test]
fn missing_file_is_an_error() {
    let err = Settings::load(Some(Path::new("/nonexistent/tern.toml"))).unwrap_err();
    assert!(matches!(err, ConfigError::Missing(_)));
}

fn load_text(text: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().map_err(|e| ConfigError::Invalid {
        key: "test",
        reason: e.to_string(),
    })?;
    let path = dir.path().join("tern.toml");
    std::fs::write(&path, text).map_err(|e| ConfigError::Invalid {
        key: "test",
        reason: e.to_string(),
    })?;
    Settings::load(Some(&path))
}

fn invalid_key(result: Result<Settings, ConfigError>) -> &'static str {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn tls_listeners_default_off_on_documented_ports() {
    let s = Settings::default();
    assert!(!s.mqtt_tls.enabled && !s.stomp_tls.enabled);
    assert_eq!(s.mqtt_tls.bind.to_string(), "127.0.0.1:8883");
    assert_eq!(s.stomp_tls.bind.to_string(), "127.0.0.1:61614");
    assert_eq!(s.mqtt_tls.client_auth, ClientAuth::None);
    assert_eq!(s.mqtt_tls.cert_username, CertUsername::None);
    assert!(s.mqtt_tls.anonymous_allowed());
    assert_eq!(s.auth, AuthSettings::default());
    assert!(s.acl.is_empty());
    let ephemeral = Settings::ephemeral();
    assert_eq!(ephemeral.mqtt_tls.bind.port(), 0);
    ephemeral.validate().unwrap();
}

#[test]
fn tls_listener_settings_load_from_the_file() {
    let s = load_text(
        "[mqtt_tls]\nenabled = true\nbind = \"0.0.0.0:8883\"\ncert_file = \"certs/dev/server.pem\"\n\
         key_file = \"certs/dev/server.key\"\nclient_ca_file = \"certs/dev/ca.pem\"\n\
         client_auth = \"required\"\ncert_username = \"cn\"\n",
    )
    .unwrap();
    assert!(s.mqtt_tls.enabled);
    assert_eq!(s.mqtt_tls.client_auth, ClientAuth::Required);
    assert_eq!(s.mqtt_tls.cert_username, CertUsername::Cn);
    assert_eq!(
        s.mqtt_tls.client_ca_file.as_deref(),
        Some(Path::new("certs/dev/ca.pem"))
    );
    assert!(!s.mqtt_tls.anonymous_allowed());
}

#[test]
fn enabled_tls_listener_needs_certificate_and_key() {
    assert_eq!(
        invalid_key(load_text("[mqtt_tls]\nenabled = true\n")),
        "mqtt_tls.cert_file"
    );
    assert_eq!(
        invalid_key(load_text(
            "[stomp_tls]\nenabled = true\ncert_file = \"s.pem\"\n"
        )),
        "stomp_tls.key_file"
    );
    assert_eq!(
        invalid_key(load_text(
            "[mqtt_tls]\nenabled = true\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_auth = \"optional\"\n"
        )),
        "mqtt_tls.client_ca_file"
    );
    assert_eq!(
        invalid_key(load_text("[stomp_tls]\ncert_username = \"san\"\n")),
        "stomp_tls.cert_username"
    );
    let err = load_text("[mqtt_tls]\nclient_auth = \"sometimes\"\n").unwrap_err();
    assert!(err.to_string().contains("sometimes"), "{err}");
}

#[test]
fn listeners_may_not_share_an_address() {
    let err = load_text(
        "[mqtt_tls]\nenabled = true\nbind = \"127.0.0.1:1883\"\ncert_file = \"a\"\nkey_file = \"b\"\n",
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Invalid {
                key: "mqtt_tls.bind",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("mqtt.bind"), "{err}");
    assert_eq!(
        invalid_key(load_text("[stomp]\nbind = \"127.0.0.1:1883\"\n")),
        "stomp.bind"
    );
}

#[test]
fn acl_tables_load_and_bad_rules_name_their_position() {
    let s = load_text(
        "[[acl]]\nuser = \"alice\"\nallow = \"both\"\ntopic = \"home/#\"\n\
         [[acl]]\nall = true\ndeny = \"publish\"\ntopic = \"devices/%c/config\"\n",
    )
    .unwrap();
    assert_eq!(s.acl.len(), 2);
    assert_eq!(s.acl[0].user.as_deref(), Some("alice"));
    assert_eq!(s.acl[0].allow, Some(AclAccess::Both));
    assert!(s.acl[1].all);
    assert_eq!(s.acl[1].deny, Some(AclAccess::Publish));

    let err = load_text(
        "[[acl]]\nall = true\nallow = \"both\"\ntopic = \"#\"\n[[acl]]\nall = true\nallow = \"both\"\ntopic = \"a/#/b\"\n",
    )
    .unwrap_err();
    assert!(
        matches!(err, ConfigError::Invalid { key: "acl", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("rule 2"), "{err}");
    let err = load_text("[[acl]]\nall = true\nallow = \"read\"\ntopic = \"#\"\n").unwrap_err();
    assert!(err.to_string().contains("read"), "{err}");
    let err = load_text("[[acl]]\nall = true\nallow = \"both\"\ntopik = \"#\"\n").unwrap_err();
    assert!(err.to_string().contains("topik"), "{err}");
}

#[test]
fn acl_file_rules_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(
        &acl,
        "[[acl]]\nanonymous = true\nallow = \"subscribe\"\ntopic = \"public/#\"\n",
    )
    .unwrap();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nacl_file = {:?}\n[[acl]]\nuser = \"alice\"\nallow = \"both\"\ntopic = \"#\"\n",
            acl.display().to_string()
        ),
    )
    .unwrap();
    let s = Settings::load(Some(&config)).unwrap();
    assert_eq!(s.acl.len(), 2);
    assert_eq!(s.acl[0].user.as_deref(), Some("alice"));
    assert!(s.acl[1].anonymous);

    std::fs::write(&acl, "[[acl]]\nall = true\ntopic = \"#\"\n").unwrap();
    let err = Settings::load(Some(&config)).unwrap_err();
    assert!(
        matches!(err, ConfigError::Invalid { key: "acl", .. }),
        "{err}"
    );

    std::fs::remove_file(&acl).unwrap();
    let err = Settings::load(Some(&config)).unwrap_err();
    assert!(matches!(err, ConfigError::AclFile { .. }), "{err}");
    assert!(err.to_string().contains("acl.toml"), "{err}");
}

#[test]
fn auth_password_file_is_a_path() {
    let s = load_text("[auth]\npassword_file = \"/etc/tern/passwd\"\n").unwrap();
    assert_eq!(
        s.auth.password_file.as_deref(),
        Some(Path::new("/etc/tern/passwd"))
    );
}
#[test]
fn websocket_origins_any_on_loopback_else_only_listed() {
    let mut ws = WebSocketSettings::default();
    assert_eq!(ws.bind.to_string(), "127.0.0.1:8080");
    assert!(ws.origin_allowed("http://anything.example"));
    ws.bind = "0.0.0.0:8080".parse().unwrap();
    assert!(!ws.origin_allowed("http://anything.example"));
    ws.allowed_origins = vec!["https://app.example.com/".into()];
    assert!(ws.origin_allowed("https://APP.example.com"));
    assert!(!ws.origin_allowed("https://app.example.com.evil"));
    ws.allowed_origins.push("*".into());
    assert!(ws.origin_allowed("http://anything.example"));
}

#[test]
fn websocket_and_web_values_are_checked() {
    let mut s = Settings::default();
    s.websocket.max_message_size = 10;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("websocket.max_message_size"), "{e}");
    let mut s = Settings::default();
    s.web.root = Some(PathBuf::from("/nonexistent/tern-web-root"));
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("web.root"), "{e}");
    let mut s = Settings::default();
    s.websocket.bind = s.mqtt.bind;
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("websocket.bind"), "{e}");
}

#[test]
fn bridge_tables_load_and_a_bad_rule_names_the_bridge_key() {
    let good = r#"
[[bridge]]
name = "cloud"
addresses = ["127.0.0.1:18883"]
topics = ["sensors/# out 1", "commands/# in 1 site7/ plant/"]
"#;
    let settings = match load_text(good) {
        Ok(settings) => settings,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(settings.bridge.len(), 1);
    assert_eq!(settings.bridge[0].topics.len(), 2);
    let bad = good.replace("in 1 site7/", "sideways 1 site7/");
    assert_eq!(invalid_key(load_text(&bad)), "bridge");
    let twice = format!("{good}{good}");
    assert_eq!(invalid_key(load_text(&twice)), "bridge");
}

#[test]
fn storage_cache_size_is_a_size_of_at_least_one_mebibyte() {
    assert_eq!(Settings::default().storage.cache_bytes(), Some(64 << 20));
    let s = load_text("[storage]\ncache_size = \"256MiB\"\n").unwrap();
    assert_eq!(s.storage.cache_bytes(), Some(256 << 20));
    let s = load_text("[storage]\ncache_size = \"1000000000\"\n").unwrap();
    assert_eq!(s.storage.cache_bytes(), Some(1_000_000_000));
    for bad in ["lots", "64 MiB per stream", "-1", "512KiB", "0"] {
        let text = format!("[storage]\ncache_size = \"{bad}\"\n");
        assert_eq!(invalid_key(load_text(&text)), "storage.cache_size", "{bad}");
    }
}

#[test]
fn the_nats_store_backend_needs_the_cluster_and_keeps_streams() {
    assert_eq!(
        Settings::default().storage.backend,
        super::StoreBackend::Redb
    );
    let alone = load_text("[storage]\nbackend = \"nats\"\n");
    assert_eq!(invalid_key(alone), "storage.backend");
    let clustered = "[cluster]\nenabled = true\n[storage]\nbackend = \"nats\"\n";
    let settings = load_text(clustered).expect("nats with the cluster is valid");
    assert_eq!(settings.storage.backend, super::StoreBackend::Nats);
    let with_stream = format!("{clustered}[[stream]]\nname = \"s\"\ntopics = [\"s/#\"]\n");
    let kept = load_text(&with_stream).expect("streams on the nats backend are valid");
    assert_eq!(kept.stream.len(), 1);
    let unknown = load_text("[storage]\nbackend = \"sqlite\"\n").unwrap_err();
    assert!(unknown.to_string().contains("storage.backend"), "{unknown}");
}
