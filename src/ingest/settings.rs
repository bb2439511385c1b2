//! `--kafka-config FILE`: librdkafka settings for a secured cluster (SPEC.md section 10), given
//! to every client the ledger creates (consumer, producers, admin client, lease, standby,
//! `submit`).
//!
//! The file is Java-style properties: `key=value` lines, `#` or `!` comment lines, blank lines;
//! key and value are trimmed. Keys that the ledger sets itself (its correctness depends on
//! them) are refused rather than silently overridden. Values are never formatted: a
//! `sasl.password` or `ssl.key.password` appears in no log line, error or metric.

use std::fmt;
use std::path::{Path, PathBuf};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

/// Keys the ledger sets on its own clients (or takes from its own flags): refused in the file.
pub const LEDGER_OWNED_KEYS: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "acks",
    "request.required.acks",
    "transactional.id",
    "isolation.level",
    "message.timeout.ms",
    "linger.ms",
    "queue.buffering.max.ms",
    "fetch.wait.max.ms",
];

/// Why a `--kafka-config` file was refused. Messages name the line and key, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the Kafka config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a key=value line")]
    Syntax { path: PathBuf, line: usize },
    #[error("{path}:{line}: {key} is set by the ledger itself (use its flags: --kafka, --kafka-group, ...); remove it from the Kafka config")]
    Owned {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("{path}:{line}: {key} is given twice")]
    Twice {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("{path}:{line}: librdkafka refuses {key}{detail}")]
    Refused {
        path: PathBuf,
        line: usize,
        key: String,
        /// librdkafka's reason, left out for secret-bearing keys (it may quote the value).
        detail: String,
    },
}

/// librdkafka settings from `--kafka-config`, in file order. Prints its keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    entries: Vec<(String, String)>,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Whether a key's value is (or may hold) a secret: its librdkafka error messages are not shown.
pub fn is_secret_key(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key.ends_with(".pem")
        || key == "sasl.oauthbearer.config"
        || key == "sasl.username"
}

impl ClientSettings {
    /// Reads and checks a properties file.
    pub fn load(path: &Path) -> Result<ClientSettings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ClientSettings::parse(path, &text)
    }

    /// Parses properties text (`path` only names it in errors), refusing keys the ledger owns
    /// and settings librdkafka does not take.
    pub fn parse(path: &Path, text: &str) -> Result<ClientSettings, SettingsError> {
        let mut settings = ClientSettings::default();
        let mut lines = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(SettingsError::Syntax {
                    path: path.to_path_buf(),
                    line,
                });
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(SettingsError::Syntax {
                    path: path.to_path_buf(),
                    line,
                });
            }
            if LEDGER_OWNED_KEYS.contains(&key) {
                return Err(SettingsError::Owned {
                    path: path.to_path_buf(),
                    line,
                    key: key.to_string(),
                });
            }
            if settings.entries.iter().any(|(k, _)| k == key) {
                return Err(SettingsError::Twice {
                    path: path.to_path_buf(),
                    line,
                    key: key.to_string(),
                });
            }
            settings.entries.push((key.to_string(), value.to_string()));
            lines.push(line);
        }
        // librdkafka checks names and values when a client is made: check them once here, so
        // that a typo is reported with its line, at start-up.
        for ((key, value), line) in settings.entries.iter().zip(lines) {
            let mut config = ClientConfig::new();
            config.set(key, value);
            if let Err(KafkaError::ClientConfig(_, description, _, _)) =
                config.create_native_config()
            {
                return Err(SettingsError::Refused {
                    path: path.to_path_buf(),
                    line,
                    key: key.clone(),
                    detail: if is_secret_key(key) {
                        String::new()
                    } else {
                        format!(": {description}")
                    },
                });
            }
        }
        Ok(settings)
    }

    /// The keys, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets every setting on `config`.
    pub fn apply(&self, config: &mut ClientConfig) {
        for (key, value) in &self.entries {
            config.set(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientSettings, SettingsError> {
        ClientSettings::parse(Path::new("kafka.properties"), text)
    }

    #[test]
    fn properties_are_trimmed_and_comments_and_blank_lines_skipped() {
        let settings = parse(
            "# a comment\n! another\n\n  security.protocol = SASL_PLAINTEXT \nsasl.mechanism=SCRAM-SHA-256\nsasl.username=ledger\nsasl.password = s3cr=t\n",
        )
        .unwrap();
        assert_eq!(
            settings.entries,
            vec![
                (
                    "security.protocol".to_string(),
                    "SASL_PLAINTEXT".to_string()
                ),
                ("sasl.mechanism".into(), "SCRAM-SHA-256".into()),
                ("sasl.username".into(), "ledger".into()),
                ("sasl.password".into(), "s3cr=t".into()),
            ]
        );
        let mut config = ClientConfig::new();
        settings.apply(&mut config);
        assert_eq!(config.get("sasl.password"), Some("s3cr=t"));
        // Neither the settings nor librdkafka's config print the password.
        assert!(!format!("{settings:?}").contains("s3cr"));
        assert!(!format!("{config:?}").contains("s3cr"));
    }

    #[test]
    fn owned_keys_bad_lines_duplicates_and_unknown_keys_are_refused_with_their_line() {
        let error = parse("sasl.mechanism=PLAIN\ngroup.id=other\n").unwrap_err();
        assert!(
            matches!(error, SettingsError::Owned { line: 2, .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("group.id is set by the ledger"),
            "{error}"
        );
        for key in [
            "bootstrap.servers",
            "enable.auto.commit",
            "transactional.id",
            "isolation.level",
        ] {
            assert!(matches!(
                parse(&format!("{key}=x")),
                Err(SettingsError::Owned { .. })
            ));
        }
        assert!(matches!(
            parse("just words"),
            Err(SettingsError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            parse("=value"),
            Err(SettingsError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            parse("sasl.mechanism=PLAIN\nsasl.mechanism=PLAIN"),
            Err(SettingsError::Twice { line: 2, .. })
        ));
        let error = parse("\nsecurity.protocl=SSL").unwrap_err();
        assert!(
            matches!(error, SettingsError::Refused { line: 2, .. }),
            "{error}"
        );
        let error = parse("security.protocol=NOPE").unwrap_err();
        assert!(error.to_string().contains("security.protocol"), "{error}");
    }

    #[test]
    fn a_refused_secret_setting_is_not_quoted() {
        // librdkafka quotes a refused value; for a secret-bearing key the reason is left out.
        // (librdkafka takes any password string, so the check is on the formatting rule.)
        let error = SettingsError::Refused {
            path: "k".into(),
            line: 1,
            key: "sasl.password".into(),
            detail: String::new(),
        };
        assert_eq!(error.to_string(), "k:1: librdkafka refuses sasl.password");
        assert!(is_secret_key("sasl.password"));
        assert!(is_secret_key("ssl.key.password"));
        assert!(is_secret_key("ssl.key.pem"));
        assert!(!is_secret_key("security.protocol"));
    }
}
