//! `[[schema]]` tables: files read beside the config file, and every way a
//! table can be wrong stops the load naming the `schema` key and the schema.

use std::path::Path;

use super::{ConfigError, Settings};

const SCHEMA: &str = r#"{"type": "object"}"#;

fn table(name: &str, file: &str) -> String {
    format!(
        "[[schema]]\nname = \"{name}\"\ntopics = [\"a/#\"]\nkind = \"json-schema\"\nfile = \"{file}\"\non_invalid = \"reject\"\n"
    )
}

/// Writes `config` as `<dir>/conf/tern.toml` and `files` under `<dir>/conf`, then loads it.
fn load(dir: &Path, config: &str, files: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let conf = dir.join("conf");
    std::fs::create_dir_all(conf.join("schemas")).unwrap();
    for (name, text) in files {
        std::fs::write(conf.join(name), text).unwrap();
    }
    let path = conf.join("tern.toml");
    std::fs::write(&path, config).unwrap();
    Settings::load(Some(&path))
}

fn schema_error(result: Result<Settings, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid {
            key: "schema",
            reason,
        }) => reason,
        other => panic!("expected an invalid `schema`, got {other:?}"),
    }
}

#[test]
fn a_schema_file_is_read_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let settings = load(
        dir.path(),
        &table("t", "schemas/t.json"),
        &[("schemas/t.json", SCHEMA)],
    )
    .unwrap();
    assert_eq!(
        settings.schema[0].file,
        dir.path().join("conf").join("schemas/t.json")
    );
}

#[test]
fn a_missing_or_uncompilable_schema_file_names_the_schema_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let reason = schema_error(load(dir.path(), &table("t", "schemas/none.json"), &[]));
    assert!(
        reason.contains("\"t\"") && reason.contains("`file`"),
        "{reason}"
    );
    let reason = schema_error(load(
        dir.path(),
        &table("t", "schemas/bad.json"),
        &[("schemas/bad.json", r#"{"type": 5}"#)],
    ));
    assert!(reason.contains("not a valid JSON Schema"), "{reason}");
}

#[test]
fn a_file_that_climbs_out_of_the_config_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let reason = schema_error(load(dir.path(), &table("t", "../t.json"), &[]));
    assert!(
        reason.contains("`file`") && reason.contains(".."),
        "{reason}"
    );
}

#[test]
fn schema_names_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let twice = format!(
        "{}{}",
        table("t", "schemas/t.json"),
        table("t", "schemas/t.json")
    );
    let reason = schema_error(load(dir.path(), &twice, &[("schemas/t.json", SCHEMA)]));
    assert!(reason.contains("declared twice"), "{reason}");
}
