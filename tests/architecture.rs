//! The direction of dependencies in DESIGN.md, checked: the routing core knows
//! no protocol and no adapter, listener or server.

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
