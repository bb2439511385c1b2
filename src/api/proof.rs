//! The auditor's paths (SPEC.md section 12), one implementation for HTTP and the CLI
//! (`csp-ledger audit checkpoint|prove|consistency`): signed checkpoints, inclusion proofs and
//! consistency proofs of the Merkle tree over the log. Public: they hold no personal data and
//! nothing a checkpoint does not already commit to.
//!
//! Sizes are tree sizes (numbers of events, so positions); a proof reads O(log n) stored nodes
//! and at most one block of 256 event hashes, whatever the size of the log.

use serde_json::{json, Value};

use crate::api::query::{parse_position, QueryError};
use crate::store::log::{Log, ProofError};

fn invalid_range(message: impl Into<String>) -> QueryError {
    QueryError::BadRequest {
        code: "invalid_range",
        message: message.into(),
    }
}

/// A size or position parameter: digits, or `invalid_range`.
fn number(name: &str, raw: Option<&str>) -> Result<Option<u64>, QueryError> {
    raw.map(|raw| {
        parse_position(raw)
            .ok_or_else(|| invalid_range(format!("{name} must be a number (digits), not {raw:?}")))
    })
    .transpose()
}

fn proof_error(error: ProofError) -> QueryError {
    match error {
        ProofError::Range(range) => invalid_range(range.to_string()),
        ProofError::Log(error) => QueryError::Log(error),
    }
}

fn hex_list(hashes: &[[u8; 32]]) -> Value {
    json!(hashes.iter().map(hex::encode).collect::<Vec<_>>())
}

/// A tree size of at most the head (default: the head).
fn tree_size(log: &Log, name: &str, raw: Option<&str>) -> Result<u64, QueryError> {
    let head = log.head().position;
    let size = number(name, raw)?.unwrap_or(head);
    if size > head {
        return Err(invalid_range(format!(
            "{name} {size} is beyond the head of the log ({head} events)"
        )));
    }
    Ok(size)
}

/// `{"position","tree_size","leaf_hash","hashes"}`: the inclusion proof of the event at
/// `position` in the tree of `tree_size` events (default: the head).
pub fn inclusion(
    log: &Log,
    position: Option<&str>,
    tree_size_raw: Option<&str>,
) -> Result<Value, QueryError> {
    let position = number("position", position)?
        .ok_or_else(|| invalid_range("position is required (?position=P)"))?;
    let size = tree_size(log, "tree_size", tree_size_raw)?;
    if position == 0 || position > size {
        return Err(invalid_range(format!(
            "position {position} is outside the tree of size {size} (1..={size})"
        )));
    }
    let (leaf, hashes) = log
        .leaf_and_inclusion_proof(position - 1, size)
        .map_err(proof_error)?;
    Ok(json!({
        "position": position,
        "tree_size": size,
        "leaf_hash": hex::encode(leaf),
        "hashes": hex_list(&hashes),
    }))
}

/// `{"from","to","hashes"}`: the consistency proof from the tree of `from` events to that of
/// `to` (default: the head); empty when they are equal.
pub fn consistency(log: &Log, from: Option<&str>, to: Option<&str>) -> Result<Value, QueryError> {
    let from = number("from", from)?.ok_or_else(|| invalid_range("from is required (?from=M)"))?;
    let to = tree_size(log, "to", to)?;
    if from == 0 || from > to {
        return Err(invalid_range(format!(
            "from must be a size in 1..={to}, not {from}"
        )));
    }
    let hashes = log.consistency_proof(from, to).map_err(proof_error)?;
    Ok(json!({"from": from, "to": to, "hashes": hex_list(&hashes)}))
}

/// The signed checkpoint note at `tree_size`, or the latest one.
pub fn checkpoint(log: &Log, tree_size: Option<&str>) -> Result<String, QueryError> {
    let size = number("tree_size", tree_size)?;
    match log.signed_checkpoint(size).map_err(QueryError::Log)? {
        Some((_, note)) => Ok(note),
        None => Err(QueryError::NotFound {
            code: "checkpoint_not_found",
            message: match size {
                Some(size) => format!("no checkpoint was signed at tree size {size}"),
                None => "no checkpoint was signed yet".into(),
            },
        }),
    }
}
