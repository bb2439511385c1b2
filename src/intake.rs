//! The intake: bytes in, typed submissions out. A command line or message value is parsed
//! into an envelope (strictly, SPEC.md section 3) with the body hash that identifies it for
//! idempotency, or kept as a malformed submission that still gets an outcome.

use std::sync::{Arc, LazyLock};

use csp_ledger_schemas::command::{CommandEnvelope, MalformedCommand};
use csp_ledger_schemas::wire::DeadLetter;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::auth::Principal;

/// The CLI's principal (`local`, SPEC.md section 10), shared by every local submission.
static LOCAL: LazyLock<Arc<Principal>> = LazyLock::new(|| Arc::new(Principal::local()));

/// The CLI's principal: `local`, an administrator.
pub fn local_principal() -> Arc<Principal> {
    Arc::clone(&LOCAL)
}

/// The dead-letter reason of a Kafka message that was not authenticated (SPEC.md section 10).
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// The principal of an unauthenticated message: no grants at all (it is never consulted, as
/// such a message is never parsed as a command).
static NOBODY: LazyLock<Arc<Principal>> = LazyLock::new(|| {
    Arc::new(Principal {
        id: crate::auth::PrincipalId::builtin(UNAUTHENTICATED),
        act_as: Vec::new(),
        read: crate::auth::ReadGrants::default(),
    })
});

/// A command read from input: parsed (with its body hash) or malformed.
#[derive(Debug, Clone)]
pub struct Submission {
    /// 1-based input line, when the command came from a file.
    pub line: Option<u64>,
    pub parsed: Result<ParsedCommand, MalformedCommand>,
    /// Where a Kafka message came from. Malformed input from Kafka is recorded in the outcome
    /// log (for the results or the dead-letter topic); from a file it is only answered.
    pub source: Option<MessageSource>,
    /// Who submitted it: the authenticated principal (`local` for the CLI). Its grants decide
    /// which actors the command may claim; its id is the events' `submitted_by`.
    pub principal: Arc<Principal>,
}

/// The Kafka origin of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSource {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The message value as received.
    pub bytes: Vec<u8>,
    /// Why the message was refused, beyond the dead letter's reason (which header was
    /// missing, that the signature did not match): the dead letter's `detail`.
    pub detail: Option<String>,
}

impl Submission {
    /// Parses one JSON command envelope submitted by the CLI's `local` principal.
    pub fn parse(line: Option<u64>, bytes: &[u8]) -> Submission {
        Submission::parse_as(line, bytes, local_principal())
    }

    /// A Kafka message whose `csp-principal`/`csp-signature` headers did not authenticate it
    /// (`detail` says why): a dead letter with reason [`UNAUTHENTICATED`], never parsed, so it
    /// takes no command id and leaves no result even when its body is a valid command.
    pub fn unauthenticated(mut source: MessageSource, detail: String) -> Submission {
        source.detail = Some(detail);
        Submission {
            line: None,
            parsed: Err(MalformedCommand {
                command_id: None,
                reason: UNAUTHENTICATED.into(),
            }),
            source: Some(source),
            principal: Arc::clone(&NOBODY),
        }
    }

    /// An input line longer than any command (`bytes` long, skipped unread): malformed.
    pub fn oversized(line: Option<u64>, bytes: u64) -> Submission {
        Submission {
            line,
            parsed: Err(MalformedCommand {
                command_id: None,
                reason: format!(
                    "command is {bytes} bytes, above the limit of {}",
                    csp_ledger_schemas::command::COMMAND_BYTES_MAX
                ),
            }),
            source: None,
            principal: local_principal(),
        }
    }

    /// Parses one JSON command envelope submitted by `principal`.
    pub fn parse_as(line: Option<u64>, bytes: &[u8], principal: Arc<Principal>) -> Submission {
        Submission {
            line,
            parsed: ParsedCommand::parse(bytes),
            source: None,
            principal,
        }
    }
}

impl MessageSource {
    /// The dead letter of this message (`schemas::wire::DeadLetter`), refused for `reason`.
    pub fn dead_letter<'a>(&'a self, reason: &'a str) -> DeadLetter<'a> {
        DeadLetter {
            reason: reason.into(),
            detail: self.detail.as_deref().map(Into::into),
            topic: self.topic.as_str().into(),
            partition: self.partition,
            offset: self.offset,
            original: self.bytes.as_slice().into(),
        }
    }
}

/// A valid envelope and the hash that identifies its body for idempotency.
#[derive(Debug, Clone)]
pub struct ParsedCommand {
    pub envelope: CommandEnvelope,
    pub body_hash: [u8; 16],
}

impl ParsedCommand {
    pub fn parse(bytes: &[u8]) -> Result<ParsedCommand, MalformedCommand> {
        let envelope = CommandEnvelope::parse(bytes)?;
        Ok(ParsedCommand::new(envelope))
    }

    pub fn new(envelope: CommandEnvelope) -> ParsedCommand {
        let digest = Sha256::digest(envelope.body_bytes());
        let mut body_hash = [0u8; 16];
        body_hash.copy_from_slice(&digest[..16]);
        ParsedCommand {
            envelope,
            body_hash,
        }
    }
}
/// Most commands in one `POST /v1/commands` array (SPEC.md section 11).
pub const COMMANDS_PER_REQUEST_MAX: usize = 4096;

/// Why a `POST /v1/commands` body was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandsError {
    /// Not JSON at all (400 `invalid_json`).
    #[error("{0}")]
    NotJson(String),
    /// An array of more than [`COMMANDS_PER_REQUEST_MAX`] (413 `too_many_commands`).
    #[error("more than {COMMANDS_PER_REQUEST_MAX} commands")]
    TooMany,
}

/// The elements of a JSON array, refused at the first element over the limit (so that a huge
/// array is not collected first).
struct Elements<'a>(Vec<&'a RawValue>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Elements<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Elements<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of command envelopes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    if items.len() == COMMANDS_PER_REQUEST_MAX {
                        return Err(serde::de::Error::custom(TOO_MANY));
                    }
                    items.push(item);
                }
                Ok(Elements(items))
            }
        }
        deserializer.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

const TOO_MANY: &str = "too many commands";

/// The body of `POST /v1/commands`: one envelope or an array of envelopes, each parsed as a
/// submission numbered from 1; `true` when it was a single one.
pub fn parse_commands(
    body: &[u8],
    principal: &Arc<Principal>,
) -> Result<(Vec<Submission>, bool), CommandsError> {
    let raw: &RawValue = serde_json::from_slice(body)
        .map_err(|e| CommandsError::NotJson(format!("the body is not JSON: {e}")))?;
    if raw.get().trim_start().starts_with('[') {
        let Elements(items) = serde_json::from_str(raw.get()).map_err(|e| {
            if e.to_string().starts_with(TOO_MANY) {
                CommandsError::TooMany
            } else {
                CommandsError::NotJson(format!("the body is not a JSON array: {e}"))
            }
        })?;
        if items.is_empty() {
            return Err(CommandsError::NotJson("the array holds no command".into()));
        }
        Ok((
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    Submission::parse_as(
                        Some(i as u64 + 1),
                        item.get().as_bytes(),
                        Arc::clone(principal),
                    )
                })
                .collect(),
            false,
        ))
    } else {
        Ok((
            vec![Submission::parse_as(
                Some(1),
                raw.get().as_bytes(),
                Arc::clone(principal),
            )],
            true,
        ))
    }
}
