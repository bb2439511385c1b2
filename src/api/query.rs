//! The query router: every read path of SPEC.md section 7, answered from the live projection
//! or, with `as_of`, from a fold of just the streams the answer depends on. One router, two
//! transports: `csp-ledger query PATH` and the HTTP server give the same JSON.
//!
//! Every answer is a JSON object carrying `position` (the log position it reflects) and
//! `head_hash` (the hash of the event at that position). Lists are
//! `{"items": [...], "next_cursor": string|null, ...}`, paged with `limit` and `cursor`.

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use csp_ledger_projections::state::{EventMeta, LedgerState};
use csp_ledger_projections::views;
use csp_ledger_schemas::event::{FoldEvent, StreamId};
use serde::Serialize;
use serde_json::{json, Value};
use thiserror::Error;
use uuid::Uuid;

use crate::store::log::{Log, LogError};
use crate::store::read::{join_personal, AnsweredEvent};

/// Items per page when `limit` is absent.
pub const PAGE_LIMIT_DEFAULT: usize = 100;
/// Largest `limit` accepted.
pub const PAGE_LIMIT_MAX: usize = 1000;

/// A route of the API: method and path template. The OpenAPI document must list every one
/// (a test checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub template: &'static str,
}

/// Every read route, in SPEC.md order (plus the overdue-verification extension).
pub const READ_ROUTES: &[Route] = &[
    Route {
        method: "GET",
        template: "/v1/partners/{id}",
    },
    Route {
        method: "GET",
        template: "/v1/partners/{id}/eligibility",
    },
    Route {
        method: "GET",
        template: "/v1/partners/{id}/direct-bill-readiness",
    },
    Route {
        method: "GET",
        template: "/v1/providers/{id}/resellers",
    },
    Route {
        method: "GET",
        template: "/v1/resellers/{id}/providers",
    },
    Route {
        method: "GET",
        template: "/v1/relationships/{provider_id}/{reseller_id}",
    },
    Route {
        method: "GET",
        template: "/v1/customers/{id}",
    },
    Route {
        method: "GET",
        template: "/v1/customers/{id}/order-eligibility",
    },
    Route {
        method: "GET",
        template: "/v1/streams/{stream}/events",
    },
    Route {
        method: "GET",
        template: "/v1/events",
    },
    Route {
        method: "GET",
        template: "/v1/audit/verify",
    },
    Route {
        method: "GET",
        template: "/v1/verifications/overdue",
    },
];

/// Why a query has no answer. Each variant maps to an HTTP status and a JSON body with `code`.
#[derive(Debug, Error)]
pub enum QueryError {
    /// Unknown id or path. Edge: 404.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// A malformed parameter (`as_of`, `date`, `limit`, an id). Edge: 400.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// `min_position` not reached within the wait. Edge: 503 with the current position.
    #[error("the read model is at position {position}, below min_position {wanted}")]
    NotYet { position: u64, wanted: u64 },
    /// Reading the log failed. Edge: 500.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The answer would read more events than the view's budget: an expensive read (SPEC.md
    /// section 11). Edge: the server runs it again on the bounded pool; 429 `busy` when
    /// that is full.
    #[error("this read must read more than {budget} events from the log")]
    Expensive { budget: usize },
}

/// Most events a cheap read may read from the log (SPEC.md section 11); a read that needs more
/// (and every `/v1/audit/verify`) is expensive and runs on the bounded pool.
pub const CHEAP_READ_EVENTS_MAX: usize = 10_000;

/// The longest prefix of the log this server has verified intact, and the hash it ends in:
/// `/v1/audit/verify` checks only the tail after it (`?full=true` walks from position 1).
#[derive(Debug, Default)]
pub struct VerifiedPrefix(std::sync::Mutex<(u64, [u8; 32])>);

impl VerifiedPrefix {
    fn get(&self) -> (u64, [u8; 32]) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn extend(&self, position: u64, hash: [u8; 32]) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if position > kept.0 {
            *kept = (position, hash);
        }
    }
}

impl QueryError {
    pub fn status(&self) -> u16 {
        match self {
            QueryError::NotFound { .. } => 404,
            QueryError::BadRequest { .. } => 400,
            QueryError::NotYet { .. } => 503,
            QueryError::Log(_) => 500,
            QueryError::Expensive { .. } => 429,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            QueryError::NotFound { code, .. } | QueryError::BadRequest { code, .. } => code,
            QueryError::NotYet { .. } => "not_yet_at_position",
            QueryError::Log(_) => "internal_error",
            QueryError::Expensive { .. } => "busy",
        }
    }

    /// `{"code","message"}` (+ `position` for 503).
    pub fn body(&self) -> Value {
        let mut body = json!({"code": self.code(), "message": self.to_string()});
        if let QueryError::NotYet { position, .. } = self {
            body["position"] = json!(position);
        }
        body
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> QueryError {
    QueryError::BadRequest {
        code,
        message: message.into(),
    }
}

fn not_found(code: &'static str, message: impl Into<String>) -> QueryError {
    QueryError::NotFound {
        code,
        message: message.into(),
    }
}

/// A parsed request: path segments and decoded query parameters.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub path: String,
    pub params: HashMap<String, String>,
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Request {
    /// Parses `/path?a=1&b=2`.
    pub fn parse(path_and_query: &str) -> Request {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Request {
            path: path.to_string(),
            params,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// What a query reads: the live projection and the log it reflects. The caller guarantees the
/// state equals the durable log (no batch in flight) while the view is used.
#[derive(Clone, Copy)]
pub struct ReadView<'a> {
    pub state: &'a LedgerState,
    pub log: &'a Log,
    /// Whether event answers carry clear personal data (the caller's `personal` grant);
    /// without it they carry commitments only.
    pub personal: bool,
    /// Most events the answer may read from the log (`None`: no limit); more is
    /// [`QueryError::Expensive`], before anything is read.
    pub budget: Option<usize>,
    /// The prefix already verified, for an incremental `/v1/audit/verify` (`None`: walk all).
    pub verified: Option<&'a VerifiedPrefix>,
}

impl ReadView<'_> {
    /// Refuses a read of `events` events beyond the budget.
    fn charge(&self, events: usize) -> Result<(), QueryError> {
        match self.budget {
            Some(budget) if events > budget => Err(QueryError::Expensive { budget }),
            _ => Ok(()),
        }
    }
}

/// Resolves `as_of`: a position, or an RFC 3339 time matched against `recorded_at`.
pub fn resolve_as_of(state: &LedgerState, raw: Option<&str>) -> Result<u64, QueryError> {
    let Some(raw) = raw else {
        return Ok(state.position);
    };
    if let Ok(position) = raw.parse::<u64>() {
        if position > state.position {
            return Err(bad(
                "invalid_as_of",
                format!(
                    "as_of position {position} is beyond the head ({})",
                    state.position
                ),
            ));
        }
        return Ok(position);
    }
    // A `+` of a time zone offset arrives as a space when the client did not encode it.
    let time = DateTime::parse_from_rfc3339(&raw.replace(' ', "+")).map_err(|_| {
        bad(
            "invalid_as_of",
            format!("as_of {raw:?} is neither a position nor an RFC 3339 time"),
        )
    })?;
    Ok(state.position_at(time.with_timezone(&Utc)))
}

fn parse_id(raw: &str, what: &str) -> Result<Uuid, QueryError> {
    Uuid::parse_str(raw).map_err(|_| bad("invalid_id", format!("{what} {raw:?} is not a UUID")))
}

fn parse_limit(request: &Request) -> Result<usize, QueryError> {
    match request.param("limit") {
        None => Ok(PAGE_LIMIT_DEFAULT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(limit) if (1..=PAGE_LIMIT_MAX).contains(&limit) => Ok(limit),
            _ => Err(bad(
                "invalid_limit",
                format!("limit must be 1 to {PAGE_LIMIT_MAX}"),
            )),
        },
    }
}

fn parse_date(
    request: &Request,
    state: &LedgerState,
    position: u64,
) -> Result<NaiveDate, QueryError> {
    match request.param("date") {
        Some(raw) => NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| bad("invalid_date", format!("date {raw:?} is not YYYY-MM-DD"))),
        // Default: the date the answer's position was recorded (today for the head).
        None => Ok(recorded_date(state, position).unwrap_or_else(|| Utc::now().date_naive())),
    }
}

fn recorded_date(state: &LedgerState, position: u64) -> Option<NaiveDate> {
    if position == state.position {
        return Some(Utc::now().date_naive());
    }
    let index = state
        .recorded
        .partition_point(|(first, _)| *first <= position);
    index
        .checked_sub(1)
        .map(|i| state.recorded[i].1.date_naive())
}

/// The state as of `position`, folded from `streams` only (or the live state at the head).
fn state_as_of<'a>(
    view: ReadView<'a>,
    position: u64,
    streams: &[StreamId],
) -> Result<Cow<'a, LedgerState>, QueryError> {
    if position == view.state.position {
        return Ok(Cow::Borrowed(view.state));
    }
    let mut positions: Vec<u64> = streams
        .iter()
        .filter_map(|s| view.state.streams.get(s))
        .flat_map(|ps| ps.iter().copied().take_while(|p| *p <= position))
        .collect();
    positions.sort_unstable();
    positions.dedup();
    view.charge(positions.len())?;
    let mut scratch = LedgerState::new();
    for stored in view.log.read_positions(&positions)? {
        let event = FoldEvent::decode(&stored.canonical).map_err(|reason| LogError::Corrupt {
            position: Some(stored.position),
            reason,
        })?;
        let meta = EventMeta {
            position: stored.position,
            stream_version: event.stream_version,
            occurred_at: event.occurred_at,
            recorded_at: event.recorded_at,
        };
        scratch.apply(&meta, &event.event);
    }
    Ok(Cow::Owned(scratch))
}

fn head_hash(view: ReadView<'_>, position: u64) -> Result<String, QueryError> {
    let head = view.log.head();
    let hash = if position == head.position {
        Some(head.hash)
    } else {
        view.log.hash_at(position)?
    };
    hash.map(hex::encode).ok_or_else(|| {
        QueryError::Log(LogError::Corrupt {
            position: Some(position),
            reason: "no event at this position".into(),
        })
    })
}

fn object(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn page(items: Vec<Value>, next_cursor: Option<String>) -> Value {
    json!({"items": items, "next_cursor": next_cursor})
}

/// Answers one read request.
pub fn answer(view: ReadView<'_>, request: &Request) -> Result<Value, QueryError> {
    if let Some(raw) = request.param("min_position") {
        let wanted: u64 = raw
            .parse()
            .map_err(|_| bad("invalid_min_position", "min_position must be a position"))?;
        if view.state.position < wanted {
            return Err(QueryError::NotYet {
                position: view.state.position,
                wanted,
            });
        }
    }
    let position = resolve_as_of(view.state, request.param("as_of"))?;
    let segments: Vec<&str> = request
        .path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .collect();
    let mut body = match segments.as_slice() {
        ["v1", "partners", id] => partner_profile(view, position, id)?,
        ["v1", "partners", id, "eligibility"] => partner_eligibility(view, position, id)?,
        ["v1", "partners", id, "direct-bill-readiness"] => {
            direct_bill_readiness(view, request, position, id)?
        }
        ["v1", "providers", id, "resellers"] | ["v1", "resellers", id, "providers"] => {
            partner_relationships(view, request, position, id, segments[1] == "providers")?
        }
        ["v1", "relationships", provider, reseller] => {
            relationship(view, position, provider, reseller)?
        }
        ["v1", "customers", id] => customer(view, position, id)?,
        ["v1", "customers", id, "order-eligibility"] => {
            order_eligibility(view, request, position, id)?
        }
        ["v1", "streams", stream, "events"] => stream_events(view, request, position, stream)?,
        ["v1", "events"] => events(view, request, position)?,
        ["v1", "audit", "verify"] => audit_verify(view, request, position)?,
        ["v1", "verifications", "overdue"] => overdue_verifications(view, request, position)?,
        _ => {
            return Err(not_found(
                "route_not_found",
                format!("no route for {}", request.path),
            ))
        }
    };
    body["position"] = json!(position);
    body["head_hash"] = json!(head_hash(view, position)?);
    Ok(body)
}

/// `["v1", "partners", id]`
fn partner_profile(view: ReadView<'_>, position: u64, id: &str) -> Result<Value, QueryError> {
    Ok({
        let id = parse_id(id, "partner id")?;
        let state = state_as_of(view, position, &views::streams_for_partner(id))?;
        object(views::partner_profile(&state, id).ok_or_else(|| partner_missing(id))?)
    })
}

/// `["v1", "partners", id, "eligibility"]`
fn partner_eligibility(view: ReadView<'_>, position: u64, id: &str) -> Result<Value, QueryError> {
    Ok({
        let id = parse_id(id, "partner id")?;
        let state = state_as_of(view, position, &views::streams_for_partner(id))?;
        object(views::partner_eligibility(&state, id).ok_or_else(|| partner_missing(id))?)
    })
}

/// `["v1", "partners", id, "direct-bill-readiness"]`
fn direct_bill_readiness(
    view: ReadView<'_>,
    request: &Request,
    position: u64,
    id: &str,
) -> Result<Value, QueryError> {
    Ok({
        let id = parse_id(id, "partner id")?;
        let date = parse_date(request, view.state, position)?;
        let state = state_as_of(view, position, &views::streams_for_partner(id))?;
        object(views::direct_bill_readiness(&state, id, date).ok_or_else(|| partner_missing(id))?)
    })
}

/// `["v1", "providers", id, "resellers"] | ["v1", "resellers", id, "providers"]`
fn partner_relationships(
    view: ReadView<'_>,
    request: &Request,
    position: u64,
    id: &str,
    as_provider: bool,
) -> Result<Value, QueryError> {
    Ok({
        let id = parse_id(id, "partner id")?;
        let limit = parse_limit(request)?;
        let after = request
            .param("cursor")
            .map(|c| parse_id(c, "cursor"))
            .transpose()?;
        let mut streams = views::streams_for_partner(id);
        streams.extend(if as_provider {
            views::relationship_streams(view.state, Some(id), None)
        } else {
            views::relationship_streams(view.state, None, Some(id))
        });
        let state = state_as_of(view, position, &streams)?;
        if state.partner(id).is_none() {
            return Err(partner_missing(id));
        }
        let rows = if as_provider {
            views::resellers_of(&state, id, after, limit + 1)
        } else {
            views::providers_of(&state, id, after, limit + 1)
        };
        let more = rows.len() > limit;
        let rows: Vec<_> = rows.into_iter().take(limit).collect();
        let next = more
            .then(|| {
                rows.last().map(|r| {
                    if as_provider {
                        r.reseller_id
                    } else {
                        r.provider_id
                    }
                    .to_string()
                })
            })
            .flatten();
        page(rows.into_iter().map(object).collect(), next)
    })
}

/// `["v1", "relationships", provider, reseller]`
fn relationship(
    view: ReadView<'_>,
    position: u64,
    provider: &str,
    reseller: &str,
) -> Result<Value, QueryError> {
    Ok({
        let provider = parse_id(provider, "provider id")?;
        let reseller = parse_id(reseller, "reseller id")?;
        let streams = [
            StreamId::Partner(provider),
            StreamId::Partner(reseller),
            StreamId::Relationship { provider, reseller },
        ];
        let state = state_as_of(view, position, &streams)?;
        for id in [provider, reseller] {
            if state.partner(id).is_none() {
                return Err(partner_missing(id));
            }
        }
        object(views::relationship(&state, provider, reseller))
    })
}

/// `["v1", "customers", id]`
fn customer(view: ReadView<'_>, position: u64, id: &str) -> Result<Value, QueryError> {
    Ok({
        let id = parse_id(id, "customer id")?;
        let state = state_as_of(view, position, &[StreamId::Customer(id)])?;
        object(views::customer(&state, id).ok_or_else(|| customer_missing(id))?)
    })
}

/// `["v1", "customers", id, "order-eligibility"]`
fn order_eligibility(
    view: ReadView<'_>,
    request: &Request,
    position: u64,
    id: &str,
) -> Result<Value, QueryError> {
    Ok({
        let id = parse_id(id, "customer id")?;
        let partner = request
            .param("partner")
            .ok_or_else(|| bad("missing_partner", "order-eligibility needs ?partner=ID"))?;
        let partner = parse_id(partner, "partner id")?;
        let mut streams = vec![StreamId::Customer(id), StreamId::Partner(partner)];
        streams.extend(views::relationship_streams(view.state, Some(partner), None));
        let state = state_as_of(view, position, &streams)?;
        if state.customer(id).is_none() {
            return Err(customer_missing(id));
        }
        if state.partner(partner).is_none() {
            return Err(partner_missing(partner));
        }
        object(views::order_eligibility(&state, id, partner))
    })
}

/// `["v1", "streams", stream, "events"]`
fn stream_events(
    view: ReadView<'_>,
    request: &Request,
    position: u64,
    stream: &str,
) -> Result<Value, QueryError> {
    Ok({
        let stream: StreamId = stream
            .parse()
            .map_err(|e: String| bad("invalid_stream", e))?;
        let limit = parse_limit(request)?;
        let after: u64 = request
            .param("cursor")
            .map(|c| {
                c.parse()
                    .map_err(|_| bad("invalid_cursor", "cursor must be a position"))
            })
            .transpose()?
            .unwrap_or(0);
        let positions: Vec<u64> = view
            .state
            .streams
            .get(&stream)
            .ok_or_else(|| not_found("stream_not_found", format!("stream {stream} has no events")))?
            .iter()
            .copied()
            .filter(|p| *p > after && *p <= position)
            .take(limit + 1)
            .collect();
        let more = positions.len() > limit;
        let positions = &positions[..positions.len().min(limit)];
        let items = events_at(view.log, positions, view.personal)?;
        page(
            items,
            more.then(|| positions.last().map(u64::to_string)).flatten(),
        )
    })
}

/// `["v1", "events"]`
fn events(view: ReadView<'_>, request: &Request, position: u64) -> Result<Value, QueryError> {
    Ok({
        let limit = parse_limit(request)?;
        let from: u64 = match request.param("from").or(request.param("cursor")) {
            Some(raw) => raw
                .parse()
                .map_err(|_| bad("invalid_from", "from must be a position"))?,
            None => 1,
        };
        let last = position.min(from.saturating_add(limit as u64).saturating_sub(1));
        let positions: Vec<u64> = (from.max(1)..=last).collect();
        let items = events_at(view.log, &positions, view.personal)?;
        let next = (last < position).then(|| (last + 1).to_string());
        page(items, next)
    })
}

/// `["v1", "audit", "verify"]`: the chain up to `position`, from the prefix this server
/// verified before (`verified_from` says where the walk started), or from position 1 with
/// `full=true` or without a kept prefix. Always expensive.
fn audit_verify(view: ReadView<'_>, request: &Request, position: u64) -> Result<Value, QueryError> {
    let full = match request.param("full") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad(
                "invalid_full",
                format!("full must be true or false, not {other:?}"),
            ))
        }
    };
    view.charge(usize::MAX)?;
    let kept = view.verified.filter(|_| !full).map(VerifiedPrefix::get);
    let start = match kept {
        // The prefix up to `position` was verified already: nothing to walk.
        Some((verified, _)) if verified >= position => {
            let hash = view.log.hash_at(position)?.unwrap_or([0; 32]);
            return Ok(json!({"ok": true, "events": position, "head_hash": hex::encode(hash), "first_bad_position": Value::Null, "verified_from": position + 1}));
        }
        Some((verified, hash)) if verified > 0 => crate::store::audit::WalkStart {
            position: verified + 1,
            prev_hash: hash,
        },
        _ => crate::store::audit::WalkStart::GENESIS,
    };
    let from = start.position;
    let mut intact = from - 1;
    let walked = crate::store::audit::walk(
        view.log,
        start,
        position,
        crate::store::audit::decode_full,
        |_, _| intact += 1,
    );
    Ok(match walked {
        Ok((events, hash)) => {
            let ok = events == position;
            if ok {
                if let Some(verified) = view.verified {
                    verified.extend(events, hash);
                }
            }
            json!({"ok": ok, "events": events, "head_hash": hex::encode(hash), "first_bad_position": if ok { Value::Null } else { json!(events + 1) }, "verified_from": from})
        }
        Err(crate::store::audit::WalkError::Broken(broken)) => {
            json!({"ok": false, "events": intact, "head_hash": Value::Null, "first_bad_position": broken.position, "reason": broken.reason, "verified_from": from})
        }
        Err(crate::store::audit::WalkError::Log(error)) => return Err(error.into()),
    })
}

/// `["v1", "verifications", "overdue"]`
fn overdue_verifications(
    view: ReadView<'_>,
    request: &Request,
    position: u64,
) -> Result<Value, QueryError> {
    Ok({
        let date = parse_date(request, view.state, position)?;
        let limit = parse_limit(request)?;
        let after = request
            .param("cursor")
            .map(|c| parse_id(c, "cursor"))
            .transpose()?;
        // At the head or as of an earlier position, from the state's indexes: no event is
        // read, so this is a cheap read whatever `as_of` says.
        let rows = views::overdue_verifications_at(view.state, position, date, after, limit + 1);
        let more = rows.len() > limit;
        let rows: Vec<_> = rows.into_iter().take(limit).collect();
        let next = more
            .then(|| rows.last().map(|r| r.partner_id.to_string()))
            .flatten();
        page(rows.into_iter().map(object).collect(), next)
    })
}

fn partner_missing(id: Uuid) -> QueryError {
    not_found(
        "partner_not_found",
        format!("partner {id} is not enrolled (at this position)"),
    )
}

fn customer_missing(id: Uuid) -> QueryError {
    not_found(
        "customer_not_found",
        format!("customer {id} is not registered (at this position)"),
    )
}

/// Event envelopes at `positions`, with predecessor hashes and, when `personal`, clear
/// personal data.
fn events_at(log: &Log, positions: &[u64], personal: bool) -> Result<Vec<Value>, QueryError> {
    let mut wanted: Vec<u64> = Vec::with_capacity(positions.len() * 2);
    for p in positions {
        if *p > 1 {
            wanted.push(p - 1);
        }
        wanted.push(*p);
    }
    wanted.sort_unstable();
    wanted.dedup();
    let stored = log.read_positions(&wanted)?;
    let hashes: HashMap<u64, [u8; 32]> = stored.iter().map(|s| (s.position, s.hash)).collect();
    let mut out = Vec::with_capacity(positions.len());
    let mut line = Vec::with_capacity(1024);
    for event in stored
        .into_iter()
        .filter(|s| positions.binary_search(&s.position).is_ok())
    {
        let prev_hash = if event.position == 1 {
            [0; 32]
        } else {
            hashes
                .get(&(event.position - 1))
                .copied()
                .unwrap_or([0; 32])
        };
        let personal = if personal {
            join_personal(log, &event)
                .map_err(|e| QueryError::Log(LogError::Contract(e.to_string())))?
        } else {
            Vec::new()
        };
        line.clear();
        AnsweredEvent {
            stored: event,
            prev_hash,
            personal,
        }
        .line()
        .encode(&mut line);
        out.push(serde_json::from_slice(&line).map_err(|e| LogError::Contract(e.to_string()))?);
    }
    Ok(out)
}
