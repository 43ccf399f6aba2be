//! The direction of dependencies in DESIGN.md, checked: the routing core knows
//! no protocol and no adapter, listener, server or NATS.

use std::path::Path;

#[test]
fn core_imports_no_protocol_adapter_or_transport() {
    let forbidden = [
        "tern_mqtt",
        "tern_stomp",
        "mqttbytes",
        "crate::adapter",
        "crate::transport",
        "crate::server",
        // The cluster implements the core's `fabric::Fabric`; the core knows no NATS.
        "crate::cluster",
        "async_nats",
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("src/core") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read");
            for word in forbidden {
                assert!(
                    !text.contains(word),
                    "{} mentions {word}: the core must not depend on it",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "expected the core's files, found {checked}");
}

#[test]
fn protocol_crates_know_no_sockets_or_broker() {
    for crate_dir in ["protocols/mqtt/src", "protocols/stomp/src"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_dir);
        for entry in std::fs::read_dir(&dir).expect("crate dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            for word in ["tokio", "std::net", "tern::"] {
                assert!(!text.contains(word), "{} mentions {word}", path.display());
            }
        }
    }
}

/// Lines of every `.rs` file directly in `dir`, by path.
fn rust_files(dir: &str) -> Vec<(std::path::PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read");
            files.push((path, text));
        }
    }
    files
}

#[test]
fn auth_does_not_read_the_config() {
    // The config assembles each concern's own settings types (`auth::settings`),
    // never the other way round.
    let files = rust_files("src/auth");
    assert!(files.len() >= 4, "expected the auth files");
    for (path, text) in files {
        assert!(
            !text.contains("crate::config"),
            "{} imports crate::config",
            path.display()
        );
    }
}

#[test]
fn config_files_are_small() {
    let files = rust_files("src/config");
    assert!(files.len() >= 4, "expected src/config/ split into files");
    for (path, text) in files {
        let lines = text.lines().count();
        assert!(lines <= 600, "{} has {lines} lines", path.display());
    }
}

#[test]
fn stomp_handlers_and_transactions_do_not_import_each_other() {
    // Handlers return an operation; the dispatcher applies it or defers it.
    let files = rust_files("src/adapter/stomp");
    let text_of = |name: &str| {
        files
            .iter()
            .find(|(path, _)| path.file_name().is_some_and(|n| n == name))
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| panic!("src/adapter/stomp/{name} missing"))
    };
    for handler in ["send.rs", "ack.rs"] {
        assert!(
            !text_of(handler).contains("transaction::"),
            "{handler} imports transaction"
        );
    }
    let transaction = text_of("transaction.rs");
    for handler in ["super::send", "super::ack"] {
        assert!(
            !transaction.contains(handler),
            "transaction.rs imports {handler}"
        );
    }
}
