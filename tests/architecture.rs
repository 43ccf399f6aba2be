//! The direction of dependencies in DESIGN.md, checked: a table of forbidden
//! imports, each with the reason it is forbidden. A file breaks a rule when
//! its text names a forbidden path (comments included: a module that talks
//! about another in code comments is usually about to import it).

use std::path::{Path, PathBuf};

/// Files under `from` (a directory of the workspace, walked recursively) must
/// not mention any of `forbidden`, because `reason`.
struct Rule {
    from: &'static str,
    forbidden: &'static [&'static str],
    reason: &'static str,
    /// The directory does not exist yet (a planned module): the rule then
    /// holds for nothing, and starts to hold once the directory is made.
    planned: bool,
}

const RULES: &[Rule] = &[
    Rule {
        from: "src/core",
        forbidden: &["crate::adapter", "tern_mqtt", "tern_stomp", "mqttbytes"],
        reason: "the core knows no protocol: adapters translate into it, so a new protocol needs no core change",
        planned: false,
    },
    Rule {
        from: "src/core",
        forbidden: &["crate::transport", "crate::server", "tokio::net"],
        reason: "the core knows no socket or listener: it is driven by adapters and tested without a network",
        planned: false,
    },
    Rule {
        from: "src/core",
        forbidden: &["crate::cluster", "async_nats"],
        reason: "the core knows no NATS: the cluster implements a trait the core defines",
        planned: false,
    },
    Rule {
        from: "src/adapter",
        forbidden: &["crate::store"],
        reason: "adapters call the core and wait for commits through it (Router::wait_committed), so the store can be replaced (clustered backend) without touching them",
        planned: false,
    },
    Rule {
        from: "src/adapter/mqtt",
        forbidden: &["adapter::stomp", "adapter::http", "tern_stomp"],
        reason: "adapters do not talk to each other: what protocols share goes through the core",
        planned: false,
    },
    Rule {
        from: "src/adapter/stomp",
        forbidden: &["adapter::mqtt", "adapter::http", "tern_mqtt"],
        reason: "adapters do not talk to each other: what protocols share goes through the core",
        planned: false,
    },
    Rule {
        from: "src/adapter/http",
        forbidden: &["adapter::mqtt", "adapter::stomp", "tern_mqtt", "tern_stomp"],
        reason: "adapters do not talk to each other: what protocols share goes through the core",
        planned: true,
    },
    Rule {
        from: "src/store",
        forbidden: &["crate::core"],
        reason: "the store knows records and bytes; the core converts its own types (core::router::persist), so there is no store <-> core circle",
        planned: false,
    },
    Rule {
        from: "src/auth",
        forbidden: &["crate::config"],
        reason: "config assembles each concern's own settings types (auth::settings), never the other way round",
        planned: false,
    },
    Rule {
        from: "src/bridge",
        forbidden: &["crate::store", "crate::adapter", "crate::transport", "crate::config"],
        reason: "a bridge is a core client like an adapter: it publishes and subscribes through the router and waits for commits through it, keeping its queue in a core session (never the store itself); its settings type is its own",
        planned: false,
    },
    Rule {
        from: "protocols/mqtt/src",
        forbidden: &["tern::", "tokio", "std::net"],
        reason: "protocol crates are sans-IO codecs: bytes and frames only, no sockets, no broker types",
        planned: false,
    },
    Rule {
        from: "protocols/stomp/src",
        forbidden: &["tern::", "tokio", "std::net"],
        reason: "protocol crates are sans-IO codecs: bytes and frames only, no sockets, no broker types",
        planned: false,
    },
];

/// Every `.rs` file under `dir` (recursively), with its text.
fn rust_files_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                files.push((path, text));
            }
        }
    }
    files
}

/// The rules `text` of `path` breaks, as messages.
fn broken(rule: &Rule, path: &Path, text: &str) -> Vec<String> {
    rule.forbidden
        .iter()
        .filter(|word| text.contains(*word))
        .map(|word| {
            format!(
                "{} mentions {word}: forbidden in {} because {}",
                path.display(),
                rule.from,
                rule.reason
            )
        })
        .collect()
}

#[test]
fn no_module_imports_what_the_design_forbids() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut violations = Vec::new();
    for rule in RULES {
        let dir = root.join(rule.from);
        if !dir.exists() {
            assert!(rule.planned, "{} is missing", rule.from);
            continue;
        }
        let files = rust_files_under(&dir);
        assert!(!files.is_empty(), "no Rust files under {}", rule.from);
        for (path, text) in files {
            violations.extend(broken(rule, &path, &text));
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_rule_check_sees_a_forbidden_import() {
    let rule = RULES
        .iter()
        .find(|r| r.forbidden.contains(&"crate::store"))
        .expect("the adapters' rule");
    let text = "use crate::store::StoreError;\n";
    assert_eq!(broken(rule, Path::new("src/adapter/x.rs"), text).len(), 1);
    assert!(broken(
        rule,
        Path::new("src/adapter/x.rs"),
        "use crate::core::commit::Commit;"
    )
    .is_empty());
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
