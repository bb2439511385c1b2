//! A downstream service's fold of `csp.events`: decode, apply the term rule, check the chain,
//! dedupe, fold, answer.
//!
//! This is what a Rust service outside the ledger would write. It uses only the contract crate
//! (`csp_ledger_schemas`: the wire decoders and the term rule, `fencing::TermReader`) and the
//! pure folds (`csp_ledger_projections`), plus `sha2` and `hex` for the hash chain
//! (schemas/CANONICAL.md), never the `csp_ledger` service crate.
//!
//! Input: `csp.events` message values on stdin, one per line, exactly the bytes the publisher
//! puts on the topic, in offset order: events, and the commit and term-start records that say
//! which events are final (a deposed leader's late events never are); delivery is at least
//! once, so values repeat. With `--results FILE`, also `csp.command-results` values, one per
//! line: each final accepted result's events must be the ones folded at their positions
//! (results whose round was never committed are skipped).
//! Output: one JSON line: events folded, duplicates skipped, head, partners and eligibility.
//!
//! ```text
//! cargo run --example downstream_fold -- [--results FILE] < events.jsonl
//! ```

use std::io::BufRead;

use csp_ledger_projections::{views, EventMeta, LedgerState};
use csp_ledger_schemas::event::FoldEvent;
use csp_ledger_schemas::fencing::{EventsRecord, TermReader, Verdict};
use csp_ledger_schemas::wire::{PublishedEvent, ResultMessage};
use sha2::{Digest, Sha256};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("downstream_fold: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SHA-256 of the previous hash as 64 lower-case hex characters, then the canonical bytes.
fn chain_hash(prev_hash: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(hex::encode(prev_hash));
    hasher.update(canonical);
    hasher.finalize().into()
}

/// The hash folded at `position` (`hashes[position - 1]`), if that position was folded.
fn folded(hashes: &[[u8; 32]], position: u64) -> Option<&[u8; 32]> {
    hashes.get(usize::try_from(position.checked_sub(1)?).ok()?)
}

fn run() -> Result<serde_json::Value, String> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let results_file = match arguments.as_slice() {
        [] => None,
        [flag, file] if flag == "--results" => Some(file.clone()),
        _ => return Err("usage: downstream_fold [--results FILE] < csp.events values".into()),
    };

    let mut state = LedgerState::new();
    // Every folded hash, by position: a redelivered value is checked against it.
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    let mut duplicates = 0u64;
    let mut reader = TermReader::new();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let at = format!("stdin line {}", number + 1);
        let line = line.map_err(|e| format!("{at}: {e}"))?;
        // The kind of a record is in its value: no headers needed.
        let record =
            EventsRecord::decode(line.as_bytes(), &[]).map_err(|e| format!("{at}: {e}"))?;
        let repeat = match &record {
            EventsRecord::Event { event, .. } => {
                folded(&hashes, event.position).map(|hash| (*hash, event.hash))
            }
            _ => None,
        };
        match reader.push(record).map_err(|e| format!("{at}: {e}"))? {
            Verdict::Accepted(events) => {
                for event in &events {
                    fold_one(&mut state, &mut hashes, event).map_err(|e| format!("{at}: {e}"))?;
                }
            }
            Verdict::Ignored => {
                // At least once: a value seen before is the same event, or (under the rule,
                // after a term-start) a deposed leader's value for that position, void.
                if let Some((folded_hash, hash)) = repeat {
                    if folded_hash == hash {
                        duplicates += 1;
                    } else if reader.term() == 0 {
                        return Err(format!("{at}: not the event folded at its position"));
                    }
                }
            }
            Verdict::Held | Verdict::TermStarted { .. } => {}
        }
    }

    let mut summary = serde_json::json!({
        "events_folded": hashes.len(),
        "duplicates_skipped": duplicates,
        "head": {
            "position": state.position,
            "hash": hex::encode(hashes.last().copied().unwrap_or([0; 32])),
        },
        "partners": state.partners.len(),
    });
    let mut partner_ids: Vec<_> = state.partners.keys().copied().collect();
    partner_ids.sort();
    let eligibility: Vec<_> = partner_ids
        .into_iter()
        .filter_map(|id| views::partner_eligibility(&state, id))
        .collect();
    summary["eligibility"] = serde_json::to_value(eligibility).map_err(|e| e.to_string())?;

    if let Some(file) = results_file {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
        let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
        for (number, line) in text.lines().enumerate() {
            let at = format!("{file}:{}", number + 1);
            // The correlation_id header is not in a value-only file: no headers.
            let result =
                ResultMessage::decode(line.as_bytes(), &[]).map_err(|e| format!("{at}: {e}"))?;
            if let Some(fence) = result.fence {
                if !reader.is_final_result(fence.term, fence.outcome_seq) {
                    continue;
                }
            }
            for event in &result.events {
                if folded(&hashes, event.position) != Some(&event.hash) {
                    return Err(format!(
                        "{at}: event {} is not the one folded",
                        event.position
                    ));
                }
            }
            *outcomes.entry(result.outcome.as_str()).or_default() += 1;
        }
        summary["results"] = serde_json::to_value(outcomes).map_err(|e| e.to_string())?;
    }
    Ok(summary)
}

/// Checks that `event` continues the folded chain and folds it.
fn fold_one(
    state: &mut LedgerState,
    hashes: &mut Vec<[u8; 32]>,
    event: &PublishedEvent<'_>,
) -> Result<(), String> {
    let head = hashes.len() as u64;
    let head_hash = hashes.last().copied().unwrap_or([0; 32]);
    if event.position != head + 1 {
        return Err(format!("position {} after {head}: a gap", event.position));
    }
    if event.prev_hash != head_hash {
        return Err(format!("prev_hash does not link to position {head}"));
    }
    if chain_hash(&event.prev_hash, &event.canonical) != event.hash {
        return Err(format!(
            "event {}: hash does not match the canonical bytes",
            event.position
        ));
    }
    let fold = FoldEvent::decode(&event.canonical).map_err(|e| e.to_string())?;
    let meta = EventMeta {
        position: fold.position,
        stream_version: fold.stream_version,
        occurred_at: fold.occurred_at,
        recorded_at: fold.recorded_at,
    };
    // try_apply, not apply: these events come from outside, a refusal is an error here.
    state
        .try_apply(&meta, &fold.event)
        .map_err(|e| e.to_string())?;
    hashes.push(event.hash);
    Ok(())
}
