//! Loading: built-in defaults, then the file, then `TERN_*` variables, then the
//! rules of `auth.acl_file`; the result is validated before it is returned.

use std::path::Path;

use serde::Deserialize;

use super::{AclRule, ConfigError, Settings};

/// The shape of `auth.acl_file`: nothing but `[[acl]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AclFile {
    acl: Vec<AclRule>,
}

impl Settings {
    /// Defaults, then `file` if given, then `TERN_*` variables (`TERN_MQTT__BIND=0.0.0.0:1883`).
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("TERN")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                // Lists from one variable: TERN_CLUSTER__NATS_URLS=nats://a:4222,nats://b:4222
                .list_separator(",")
                .with_list_parse_key("cluster.nats_urls")
                .source(Some(setting_env_vars())),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if let Some(path) = settings.auth.acl_file.clone() {
            settings.acl.extend(load_acl_file(&path)?);
        }
        // Schema files are read beside the config file; from here on their paths are whole.
        let base = file.and_then(Path::parent);
        for schema in &mut settings.schema {
            schema.file = schema
                .resolved_file(base)
                .map_err(|e| ConfigError::Invalid {
                    key: "schema",
                    reason: e.to_string(),
                })?;
        }
        settings.validate()?;
        Ok(settings)
    }
}

/// Reads the `[[acl]]` tables of `auth.acl_file`.
fn load_acl_file(path: &Path) -> Result<Vec<AclRule>, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::AclFile {
            path: path.to_path_buf(),
            source: config::ConfigError::Message("the file does not exist".into()),
        });
    }
    let wrap = |source| ConfigError::AclFile {
        path: path.to_path_buf(),
        source,
    };
    let file: AclFile = config::Config::builder()
        .add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        )
        .build()
        .map_err(wrap)?
        .try_deserialize()
        .map_err(wrap)?;
    Ok(file.acl)
}

/// `TERN_<SECTION>__<KEY>` variables only: a variable without `__` (say `TERN_BIN`
/// of a test harness) cannot name a setting and must not stop the broker.
fn setting_env_vars() -> config::Map<String, String> {
    std::env::vars()
        .filter(|(name, _)| {
            name.strip_prefix("TERN_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect()
}
