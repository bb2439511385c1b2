//! Upcasting: a stored envelope of any version this build reads, brought to the current shape.
//!
//! Stored events are never rewritten: their canonical bytes and hashes stay as written. A
//! decoder reads the version-dependent members of an envelope into [`Upcast`], checks them
//! against what a stored envelope of its version holds ([`STORED`]), then applies one step per
//! version ([`STEPS`]) up to [`SCHEMA_VERSION`]. A new version adds a stored-shape check and a
//! step here (the arrays' lengths follow `SCHEMA_VERSION`, so forgetting one does not build);
//! the decoders and the folds do not branch on versions.
//!
//! | version | members | step to the next |
//! |---|---|---|
//! | 1 | no `submitted_by` | `submitted_by: null` |
//! | 2 | `submitted_by`: the submitting principal's id | (current) |
//!
//! Upcasting changes what a decoder hands on, never the bytes: [`EventEnvelope`] keeps the
//! stored `schema_version`, and its canonical bytes are written in that version's shape.
//!
//! [`EventEnvelope`]: crate::event::EventEnvelope

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};

use crate::event::{check_principal_id, SCHEMA_VERSION};

/// An optional envelope member as stored: left out, `null`, or a string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Member<'a> {
    #[default]
    Absent,
    Null,
    Text(Cow<'a, str>),
}

impl<'a> Member<'a> {
    /// `Text` as `Some`, `Absent` and `Null` as `None`.
    pub fn into_option(self) -> Option<Cow<'a, str>> {
        match self {
            Member::Text(text) => Some(text),
            Member::Absent | Member::Null => None,
        }
    }
}

/// A string that borrows from the input unless it had escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Deserializes a present member (use with `#[serde(default, borrow)]`: a missing member is
/// then [`Member::Absent`]).
impl<'de: 'a, 'a> Deserialize<'de> for Member<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<Text<'de>>::deserialize(deserializer)? {
            None => Member::Null,
            Some(Text(text)) => Member::Text(text),
        })
    }
}

/// The members of an envelope that a version may change, as the steps see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upcast<'a> {
    /// The version these members have been brought to (at first: the stored `schema_version`).
    pub version: u32,
    /// The envelope's `type`.
    pub event_type: Cow<'a, str>,
    /// The `data` object as JSON text: borrowed from the stored bytes unless a step changed it.
    pub data: Cow<'a, str>,
    /// `submitted_by` (from version 2).
    pub submitted_by: Member<'a>,
}

/// A check of the members a stored envelope of one version holds.
type Check = fn(&Upcast<'_>) -> Result<(), String>;
/// One step: members of version `n` to version `n + 1`.
type Step = fn(&mut Upcast<'_>) -> Result<(), String>;

/// What a stored envelope of each version holds: `STORED[n - 1]` checks version `n`.
const STORED: [Check; SCHEMA_VERSION as usize] = [stored_v1, stored_v2];

/// The steps: `STEPS[n - 1]` brings version `n` to `n + 1`.
const STEPS: [Step; SCHEMA_VERSION as usize - 1] = [v1_to_v2];

/// Version 1: no `submitted_by`.
fn stored_v1(members: &Upcast<'_>) -> Result<(), String> {
    match members.submitted_by {
        Member::Absent => Ok(()),
        _ => Err("a schema_version 1 envelope has no submitted_by".into()),
    }
}

/// Version 2: `submitted_by` names the principal that submitted the command.
fn stored_v2(members: &Upcast<'_>) -> Result<(), String> {
    match &members.submitted_by {
        Member::Text(id) => {
            check_principal_id(id).map_err(|reason| format!("submitted_by: {reason}"))
        }
        Member::Absent | Member::Null => {
            Err("a schema_version 2 envelope names its submitter (submitted_by)".into())
        }
    }
}

/// 1 → 2: the submitter of a version 1 event was not recorded.
fn v1_to_v2(members: &mut Upcast<'_>) -> Result<(), String> {
    members.submitted_by = Member::Null;
    members.version = 2;
    Ok(())
}

/// Checks `members` against their stored version and brings them to [`SCHEMA_VERSION`].
/// Refuses versions this build does not read.
pub fn to_current(members: &mut Upcast<'_>) -> Result<(), String> {
    let stored = members.version;
    let index = stored
        .checked_sub(1)
        .and_then(|i| usize::try_from(i).ok())
        .filter(|i| *i < STORED.len())
        .ok_or_else(|| {
            format!("unsupported schema_version {stored} (this build reads 1 to {SCHEMA_VERSION})")
        })?;
    STORED[index](members)?;
    for step in &STEPS[index..] {
        let from = members.version;
        step(members)?;
        debug_assert_eq!(
            members.version,
            from + 1,
            "a step raises the version by one"
        );
    }
    debug_assert_eq!(members.version, SCHEMA_VERSION);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(version: u32, submitted_by: Member<'static>) -> Upcast<'static> {
        Upcast {
            version,
            event_type: Cow::Borrowed("PartnerVerified"),
            data: Cow::Borrowed(r#"{"partner_id":"00000000-0000-0000-0000-000000000001"}"#),
            submitted_by,
        }
    }

    #[test]
    fn version_1_upcasts_to_a_null_submitter_and_keeps_its_data() {
        let mut m = members(1, Member::Absent);
        to_current(&mut m).unwrap();
        assert_eq!(m.version, SCHEMA_VERSION);
        assert_eq!(m.submitted_by, Member::Null);
        assert_eq!(m, members(SCHEMA_VERSION, Member::Null));
        assert!(matches!(m.data, Cow::Borrowed(_)));
    }

    #[test]
    fn version_2_is_current_and_passes_unchanged() {
        let mut m = members(2, Member::Text("local".into()));
        to_current(&mut m).unwrap();
        assert_eq!(m, members(2, Member::Text("local".into())));
    }

    #[test]
    fn stored_shapes_are_checked() {
        for (version, submitted_by) in [
            (1, Member::Null),
            (1, Member::Text("local".into())),
            (2, Member::Absent),
            (2, Member::Null),
            (2, Member::Text("".into())),
            (2, Member::Text("a@b.example".into())),
            (2, Member::Text("x".repeat(129).into())),
        ] {
            assert!(
                to_current(&mut members(version, submitted_by.clone())).is_err(),
                "{version} {submitted_by:?}"
            );
        }
        for version in [0, 3, u32::MAX] {
            let error = to_current(&mut members(version, Member::Absent)).unwrap_err();
            assert!(error.starts_with("unsupported schema_version"), "{error}");
        }
    }

    #[test]
    fn members_deserialize_absent_null_or_text() {
        #[derive(Deserialize)]
        struct Probe<'a> {
            #[serde(default, borrow)]
            m: Member<'a>,
        }
        let absent: Probe<'_> = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.m, Member::Absent);
        let null: Probe<'_> = serde_json::from_str(r#"{"m":null}"#).unwrap();
        assert_eq!(null.m, Member::Null);
        let text: Probe<'_> = serde_json::from_str(r#"{"m":"local"}"#).unwrap();
        assert!(matches!(text.m, Member::Text(Cow::Borrowed("local"))));
        assert!(serde_json::from_str::<Probe<'_>>(r#"{"m":1}"#).is_err());
    }
}
