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
    /// `min_position` not reached within the wait, or an `as_of` position beyond the head.
    /// Edge: 503 with the current position.
    #[error("the read model is at position {position}, below {param} {wanted}")]
    NotYet {
        position: u64,
        wanted: u64,
        /// The parameter that asked for `wanted` (`min_position` or `as_of`).
        param: &'static str,
    },
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
            // A stored personal value that does not match its commitment (SPEC.md section 12).
            QueryError::Log(LogError::PersonalMismatch { .. }) => "personal_data_mismatch",
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

/// A position parameter (`as_of`, `min_position`, `from`, a position `cursor`): ASCII digits
/// only, no sign, no blanks, at least one (the OpenAPI pattern `^[0-9]+$`, or an integer with
/// minimum 0). Digits beyond `u64::MAX` read as `u64::MAX`: such a position is beyond every
/// head, so the document needs no maximum and the server refuses no digit string (issue 11
/// item 7: the document and the parser accept exactly the same strings).
pub fn parse_position(raw: &str) -> Option<u64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(raw.parse().unwrap_or(u64::MAX))
}

/// A parsed `as_of`.
enum AsOf {
    Head,
    Position(u64),
    Time(DateTime<Utc>),
}

/// Whether `s` has the shape of an RFC 3339 `date-time` (section 5.6: `full-date "T"
/// full-time`, `T` and `Z` in either case, any number of fraction digits); chrono then
/// checks the ranges. chrono alone is more lenient than the grammar the document names.
fn is_rfc3339_date_time(s: &[u8]) -> bool {
    let digits =
        |r: std::ops::Range<usize>| s.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if s.len() < 20
        || !is_full_date(&s[..10])
        || !matches!(s[10], b'T' | b't')
        || !(digits(11..13) && s[13] == b':' && digits(14..16) && s[16] == b':' && digits(17..19))
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &fraction[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

/// Whether `s` has the shape of an RFC 3339 `full-date` (`YYYY-MM-DD`, four-digit year).
fn is_full_date(s: &[u8]) -> bool {
    s.len() == 10
        && s.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// Parses `as_of` (SPEC.md section 7): a position (digits, see [`parse_position`]) or an RFC
/// 3339 date-time matched against `recorded_at`; the document's `anyOf` of the pattern
/// `^[0-9]+$` and `format: date-time`. An empty `as_of` is neither, and 400: the document
/// forbids it (both branches need at least one character) rather than the server reading it
/// as "the head", which is what leaving `as_of` out says.
fn parse_as_of(raw: Option<&str>) -> Result<AsOf, QueryError> {
    let Some(raw) = raw else {
        return Ok(AsOf::Head);
    };
    if let Some(position) = parse_position(raw) {
        return Ok(AsOf::Position(position));
    }
    // A `+` of a time zone offset arrives as a space when the client did not encode it.
    let time = raw.replace(' ', "+");
    is_rfc3339_date_time(time.as_bytes())
        .then(|| DateTime::parse_from_rfc3339(&time).ok())
        .flatten()
        .map(|time| AsOf::Time(time.with_timezone(&Utc)))
        .ok_or_else(|| {
            bad(
                "invalid_as_of",
                format!("as_of {raw:?} is neither a position nor an RFC 3339 date-time"),
            )
        })
}

/// Resolves `as_of`: a position, or an RFC 3339 time matched against `recorded_at`.
///
/// A position beyond the head is 503 `not_yet_at_position`, as a `min_position` beyond it
/// is: the document cannot bound it (the head moves), so it is a valid request this ledger
/// cannot answer yet (on a standby, the leader may already hold it), not a malformed one
/// (it used to be 400 `invalid_as_of`: issue 11 item 7). `min_position` with the same
/// value waits for it.
pub fn resolve_as_of(state: &LedgerState, raw: Option<&str>) -> Result<u64, QueryError> {
    match parse_as_of(raw)? {
        AsOf::Head => Ok(state.position),
        AsOf::Position(position) if position > state.position => Err(QueryError::NotYet {
            position: state.position,
            wanted: position,
            param: "as_of",
        }),
        AsOf::Position(position) => Ok(position),
        AsOf::Time(time) => Ok(state.position_at(time)),
    }
}

/// An id: a UUID in its hyphenated form (`format: uuid`, RFC 4122: 8-4-4-4-12 hex digits,
/// either case). The braced, URN and 32-digit forms that `Uuid::parse_str` also reads are
/// refused, as the document's format refuses them.
fn parse_id(raw: &str, what: &str) -> Result<Uuid, QueryError> {
    let b = raw.as_bytes();
    let hyphenated = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    hyphenated
        .then(|| Uuid::parse_str(raw).ok())
        .flatten()
        .ok_or_else(|| bad("invalid_id", format!("{what} {raw:?} is not a UUID")))
}

/// A stream name (`partner-<id>`, `customer-<id>`, `relationship-<provider>-<reseller>`),
/// with ids as [`parse_id`] reads them.
fn parse_stream(raw: &str) -> Result<StreamId, QueryError> {
    let ids_ok = if let Some(id) = raw
        .strip_prefix("partner-")
        .or_else(|| raw.strip_prefix("customer-"))
    {
        parse_id(id, "stream id").is_ok()
    } else if let Some(pair) = raw.strip_prefix("relationship-") {
        pair.len() == 73
            && pair.as_bytes()[36] == b'-'
            && parse_id(&pair[..36], "provider id").is_ok()
            && parse_id(&pair[37..], "reseller id").is_ok()
    } else {
        false
    };
    let parsed: Result<StreamId, String> = if ids_ok {
        raw.parse()
    } else {
        Err(format!("{raw:?} is not a stream (partner-<id>, customer-<id>, relationship-<provider>-<reseller>)"))
    };
    parsed.map_err(|e| bad("invalid_stream", e))
}

/// `limit`: digits only, 1 to [`PAGE_LIMIT_MAX`] (`type: integer`, `minimum: 1`, `maximum:
/// 1000` in the document).
fn parse_limit(request: &Request) -> Result<usize, QueryError> {
    match request.param("limit") {
        None => Ok(PAGE_LIMIT_DEFAULT),
        Some(raw) => match parse_position(raw) {
            Some(limit) if (1..=PAGE_LIMIT_MAX as u64).contains(&limit) => Ok(limit as usize),
            _ => Err(bad(
                "invalid_limit",
                format!("limit must be 1 to {PAGE_LIMIT_MAX}"),
            )),
        },
    }
}

/// A position parameter that is not `as_of` (`min_position`, `from`, a position `cursor`).
fn parse_position_param(
    request: &Request,
    name: &'static str,
    code: &'static str,
) -> Result<Option<u64>, QueryError> {
    request
        .param(name)
        .map(|raw| {
            parse_position(raw).ok_or_else(|| {
                bad(
                    code,
                    format!("{name} must be a position (digits), not {raw:?}"),
                )
            })
        })
        .transpose()
}

/// A UUID `cursor` (relationship lists, the overdue list: the last id of the page before).
fn parse_id_cursor(request: &Request) -> Result<Option<Uuid>, QueryError> {
    request
        .param("cursor")
        .map(|c| parse_id(c, "cursor"))
        .transpose()
}

/// `full` of `/v1/audit/verify`: `true` or `false` (`type: boolean`).
fn parse_full(request: &Request) -> Result<bool, QueryError> {
    match request.param("full") {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(bad(
            "invalid_full",
            format!("full must be true or false, not {other:?}"),
        )),
    }
}

/// `date`: an RFC 3339 `full-date`, `YYYY-MM-DD` with a four-digit year (`format: date`);
/// chrono alone would also read `2026-1-1` and `+2026-01-01`.
fn parse_date_param(request: &Request) -> Result<Option<NaiveDate>, QueryError> {
    request
        .param("date")
        .map(|raw| {
            is_full_date(raw.as_bytes())
                .then(|| NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok())
                .flatten()
                .ok_or_else(|| bad("invalid_date", format!("date {raw:?} is not YYYY-MM-DD")))
        })
        .transpose()
}

fn parse_date(
    request: &Request,
    state: &LedgerState,
    position: u64,
) -> Result<NaiveDate, QueryError> {
    match parse_date_param(request)? {
        Some(date) => Ok(date),
        // Default: the date the answer's position was recorded (today for the head).
        None => Ok(recorded_date(state, position).unwrap_or_else(|| Utc::now().date_naive())),
    }
}

/// The path's segments after the leading `/`, a trailing `/` ignored.
fn segments(request: &Request) -> Vec<&str> {
    request
        .path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .collect()
}

/// Checks every parameter of `request` as its route parses it, before anything is read or
/// waited for, so that a malformed request is 400 at once and never a 503 after the
/// `min_position` wait (issue 11 item 7); an unknown route is 404 at once. Only the syntax is
/// checked here: what depends on the log (an `as_of` beyond the head, an unknown id) is
/// decided by [`answer`], which calls this first, after the wait.
pub fn validate(request: &Request) -> Result<(), QueryError> {
    parse_position_param(request, "min_position", "invalid_min_position")?;
    parse_as_of(request.param("as_of"))?;
    match segments(request).as_slice() {
        ["v1", "partners", id] | ["v1", "partners", id, "eligibility"] => {
            parse_id(id, "partner id")?;
        }
        ["v1", "partners", id, "direct-bill-readiness"] => {
            parse_id(id, "partner id")?;
            parse_date_param(request)?;
        }
        ["v1", "providers", id, "resellers"] | ["v1", "resellers", id, "providers"] => {
            parse_id(id, "partner id")?;
            parse_limit(request)?;
            parse_id_cursor(request)?;
        }
        ["v1", "relationships", provider, reseller] => {
            parse_id(provider, "provider id")?;
            parse_id(reseller, "reseller id")?;
        }
        ["v1", "customers", id] => {
            parse_id(id, "customer id")?;
        }
        ["v1", "customers", id, "order-eligibility"] => {
            parse_id(id, "customer id")?;
            let partner = request
                .param("partner")
                .ok_or_else(|| bad("missing_partner", "order-eligibility needs ?partner=ID"))?;
            parse_id(partner, "partner id")?;
        }
        ["v1", "streams", stream, "events"] => {
            parse_stream(stream)?;
            parse_limit(request)?;
            parse_position_param(request, "cursor", "invalid_cursor")?;
        }
        ["v1", "events"] => {
            parse_limit(request)?;
            parse_position_param(request, "from", "invalid_from")?;
            parse_position_param(request, "cursor", "invalid_cursor")?;
        }
        ["v1", "audit", "verify"] => {
            parse_full(request)?;
        }
        ["v1", "verifications", "overdue"] => {
            parse_date_param(request)?;
            parse_limit(request)?;
            parse_id_cursor(request)?;
        }
        _ => {
            return Err(not_found(
                "route_not_found",
                format!("no route for {}", request.path),
            ))
        }
    }
    Ok(())
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
    validate(request)?;
    if let Some(wanted) = parse_position_param(request, "min_position", "invalid_min_position")? {
        if view.state.position < wanted {
            return Err(QueryError::NotYet {
                position: view.state.position,
                wanted,
                param: "min_position",
            });
        }
    }
    let position = resolve_as_of(view.state, request.param("as_of"))?;
    let segments = segments(request);
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
        let stream = parse_stream(stream)?;
        let limit = parse_limit(request)?;
        let after = parse_position_param(request, "cursor", "invalid_cursor")?.unwrap_or(0);
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
        // `from` wins over `cursor` (the next page's first position); 0 reads from 1.
        let from = parse_position_param(request, "from", "invalid_from")?;
        let cursor = parse_position_param(request, "cursor", "invalid_cursor")?;
        let from = from.or(cursor).unwrap_or(1).max(1);
        let last = position.min(from.saturating_add(limit as u64).saturating_sub(1));
        let positions: Vec<u64> = (from..=last).collect();
        let items = events_at(view.log, &positions, view.personal)?;
        let next = (last < position).then(|| (last + 1).to_string());
        page(items, next)
    })
}

/// `["v1", "audit", "verify"]`: the chain up to `position`, from the prefix this server
/// verified before (`verified_from` says where the walk started), or from position 1 with
/// `full=true` or without a kept prefix. Always expensive.
fn audit_verify(view: ReadView<'_>, request: &Request, position: u64) -> Result<Value, QueryError> {
    let full = parse_full(request)?;
    view.charge(usize::MAX)?;
    let kept = view.verified.filter(|_| !full).map(VerifiedPrefix::get);
    let start = match kept {
        // The prefix up to `position` was verified already: nothing to walk.
        Some((verified, _)) if verified >= position => {
            let hash = view.log.hash_at(position)?.unwrap_or([0; 32]);
            return Ok(
                json!({"ok": true, "events": position, "head_hash": hex::encode(hash), "first_bad_position": Value::Null, "verified_from": position + 1}),
            );
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
            join_personal(log, &event)?
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
