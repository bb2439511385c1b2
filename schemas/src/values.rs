//! Value types of the contract: countries, money, months, e-mail addresses and personal-data
//! commitments. Each one parses strictly, so that a malformed value is rejected at the edge.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Why a value did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <Cow<'de, str>>::deserialize(deserializer)?;
                raw.parse().map_err(|e: ValueError| de::Error::custom(e.0))
            }
        }
    };
}

/// ISO 3166-1 alpha-2 country code, upper case (`DE`). Whether the country is in the regions
/// table is a business check (`invalid_country`), not a parse error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country(pub [u8; 2]);

impl FromStr for Country {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Country([*a, *b])),
            _ => Err(ValueError(format!(
                "country {s:?} is not an ISO 3166-1 alpha-2 code in upper case"
            ))),
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0[0] as char, self.0[1] as char)
    }
}
string_serde!(Country);

impl JsonSchema for Country {
    fn schema_name() -> Cow<'static, str> {
        "Country".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^[A-Z]{2}$",
            "description": "ISO 3166-1 alpha-2 country code, upper case"})
    }
}

/// An amount of US dollars in cents. On the wire a decimal string with at most two fraction
/// digits (`"12500.00"`, `"-3.5"`); written back with exactly two. The largest amount one
/// command may carry is USD 1,000,000,000,000,000.00 (10^15) either way
/// ([`USD_AMOUNT_MAX_CENTS`]). Sums of amounts are [`UsdTotal`]s, which cannot wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UsdAmount {
    /// The amount in cents.
    pub cents: i64,
}

/// Largest absolute amount accepted on the wire: USD 10^15 (10^17 cents), far above any
/// revenue figure. Ninety-three such amounts already pass `i64::MAX` cents, so totals are not
/// kept in `i64`: see [`UsdTotal`]. The parser and the JSON Schema pattern
/// ([`usd_amount_pattern`]) are both made from it.
pub const USD_AMOUNT_MAX_CENTS: i64 = 100_000_000_000_000_000;

/// Most digits before the decimal point, leading zeros included: those of the largest amount.
pub const USD_AMOUNT_WHOLE_DIGITS_MAX: usize = decimal_digits(USD_AMOUNT_MAX_CENTS / 100);

const fn decimal_digits(mut n: i64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

// The pattern below states the cap exactly only for a whole power of ten of dollars.
const _: () = assert!(
    USD_AMOUNT_MAX_CENTS % 100 == 0
        && USD_AMOUNT_MAX_CENTS / 100 == 10i64.pow(USD_AMOUNT_WHOLE_DIGITS_MAX as u32 - 1)
);

/// The JSON Schema pattern of an amount, from [`USD_AMOUNT_MAX_CENTS`]: up to
/// `WHOLE_DIGITS_MAX - 1` digits, or `WHOLE_DIGITS_MAX` with a leading zero, with up to two
/// fraction digits; or the cap itself (`1000000000000000`, `.0`, `.00`).
pub fn usd_amount_pattern() -> String {
    let digits = USD_AMOUNT_WHOLE_DIGITS_MAX;
    let cap = USD_AMOUNT_MAX_CENTS / 100;
    format!(
        "^-?(([0-9]{{1,{below}}}|0[0-9]{{{below}}})(\\.[0-9]{{1,2}})?|{cap}(\\.0{{1,2}})?)$",
        below = digits - 1
    )
}

impl UsdAmount {
    pub const ZERO: UsdAmount = UsdAmount { cents: 0 };

    pub fn from_cents(cents: i64) -> Self {
        UsdAmount { cents }
    }
}

impl FromStr for UsdAmount {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let cents = parse_cents(s, USD_AMOUNT_WHOLE_DIGITS_MAX).ok_or_else(|| {
            ValueError(format!(
                "amount {s:?} is not a decimal with at most 2 fraction digits"
            ))
        })?;
        if cents.abs() > i128::from(USD_AMOUNT_MAX_CENTS) {
            return Err(ValueError(format!(
                "amount {s:?} is above the limit of USD 10^15"
            )));
        }
        // In range: the cap is far inside i64.
        Ok(UsdAmount {
            cents: cents as i64,
        })
    }
}

/// Cents of a decimal dollar string: an optional `-`, 1 to `whole_digits_max` digits, and an
/// optional `.` with 1 or 2 fraction digits. `None` for anything else. The one parser of
/// [`UsdAmount`] and [`UsdTotal`] (`whole_digits_max` of at most 36 keeps it inside i128).
fn parse_cents(s: &str, whole_digits_max: usize) -> Option<i128> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, f),
        None => (digits, ""),
    };
    if whole.is_empty()
        || whole.len() > whole_digits_max
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 2
        || (digits.contains('.') && fraction.is_empty())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let frac: i128 = match fraction.len() {
        0 => 0,
        1 => fraction.parse::<i128>().ok()? * 10,
        _ => fraction.parse().ok()?,
    };
    let cents = whole.checked_mul(100)?.checked_add(frac)?;
    Some(if negative { -cents } else { cents })
}

/// `-1234.05`: the wire form of a number of cents.
fn write_cents(f: &mut fmt::Formatter<'_>, cents: i128) -> fmt::Result {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    write!(f, "{sign}{}.{:02}", abs / 100, abs % 100)
}

impl fmt::Display for UsdAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_cents(f, i128::from(self.cents))
    }
}
string_serde!(UsdAmount);

impl JsonSchema for UsdAmount {
    fn schema_name() -> Cow<'static, str> {
        "UsdAmount".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": usd_amount_pattern(),
            "description": "US dollars as a decimal string with at most 2 fraction digits, at most USD 10^15 either way"})
    }
}

/// Whole-dollar digits a [`UsdTotal`] may have on the wire: 36, so that every such value fits
/// in `i128` cents (about 1.7 * 10^38).
pub const USD_TOTAL_DIGITS_MAX: usize = 36;

/// A sum of [`UsdAmount`]s in cents (a month's revenue total, the trailing-twelve-month
/// figure), kept in `i128` so that it cannot wrap. Every amount is at most 10^17 cents and a
/// log holds fewer than 2^64 events, so no total can pass 2^64 * 10^17 (about 1.8 * 10^36
/// cents): the largest total is exact, far inside `i128`. Arithmetic saturates at the `i128`
/// bounds all the same, so even a damaged log cannot make a total wrap. On the wire like
/// [`UsdAmount`], with up to [`USD_TOTAL_DIGITS_MAX`] whole-dollar digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UsdTotal {
    /// The total in cents.
    pub cents: i128,
}

impl UsdTotal {
    pub const ZERO: UsdTotal = UsdTotal { cents: 0 };

    pub fn from_cents(cents: i128) -> Self {
        UsdTotal { cents }
    }

    /// This total plus `amount` (saturating: see the type's documentation).
    #[must_use]
    pub fn plus(self, amount: UsdAmount) -> UsdTotal {
        UsdTotal {
            cents: self.cents.saturating_add(i128::from(amount.cents)),
        }
    }

    /// The sum of two totals (saturating: see the type's documentation).
    #[must_use]
    pub fn plus_total(self, other: UsdTotal) -> UsdTotal {
        UsdTotal {
            cents: self.cents.saturating_add(other.cents),
        }
    }
}

impl From<UsdAmount> for UsdTotal {
    fn from(amount: UsdAmount) -> Self {
        UsdTotal {
            cents: i128::from(amount.cents),
        }
    }
}

impl FromStr for UsdTotal {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        parse_cents(s, USD_TOTAL_DIGITS_MAX)
            .map(UsdTotal::from_cents)
            .ok_or_else(|| {
                ValueError(format!(
                    "total {s:?} is not a decimal with at most {USD_TOTAL_DIGITS_MAX} whole and 2 fraction digits"
                ))
            })
    }
}

impl fmt::Display for UsdTotal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_cents(f, self.cents)
    }
}
string_serde!(UsdTotal);

impl JsonSchema for UsdTotal {
    fn schema_name() -> Cow<'static, str> {
        "UsdTotal".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^-?[0-9]{1,36}(\\.[0-9]{1,2})?$",
            "description": "A total of US dollar amounts as a decimal string with at most 2 fraction digits; exact, never wraps"})
    }
}

/// A calendar month, `YYYY-MM` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month {
    pub year: u16,
    /// 1 to 12.
    pub month: u8,
}

impl Month {
    /// Months since year 0; consecutive months have consecutive indexes.
    pub fn index(self) -> i32 {
        i32::from(self.year) * 12 + i32::from(self.month) - 1
    }

    /// The month of a date.
    pub fn of_date(date: chrono::NaiveDate) -> Month {
        use chrono::Datelike;
        Month {
            year: date.year().clamp(0, 9999) as u16,
            month: date.month() as u8,
        }
    }
}

impl FromStr for Month {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError(format!("month {s:?} is not YYYY-MM"));
        let b = s.as_bytes();
        if b.len() != 7 || b[4] != b'-' || !b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let year: u16 = s[..4].parse().map_err(|_| bad())?;
        let month: u8 = s[5..].parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}
string_serde!(Month);

impl JsonSchema for Month {
    fn schema_name() -> Cow<'static, str> {
        "Month".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"})
    }
}

/// Control characters (Unicode category Cc, Rust's `char::is_control`) as a regex class body,
/// in `\uXXXX` escapes that ECMA-262 and Rust's regex read alike.
pub const CONTROL_CLASS: &str = "\\u0000-\\u001F\\u007F-\\u009F";

/// The white space of Rust's `char::is_whitespace` (Unicode White_Space) that is not a control
/// character, as a regex class body. Spelled out rather than `\s`, which in ECMA-262 also
/// matches U+FEFF.
pub const SPACE_CLASS: &str = " \\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000";

/// The pattern of an e-mail address as [`Email`] parses it: a non-empty local part (which may
/// hold `@`), `@`, and a domain with a dot that neither starts nor ends with one; no white
/// space or control characters anywhere.
pub fn email_pattern() -> String {
    let other = format!("{CONTROL_CLASS}{SPACE_CLASS}");
    format!("^[^{other}]+@[^{other}@.][^{other}@]*\\.[^{other}@]*[^{other}@.]$")
}

/// Longest e-mail address accepted (RFC 5321 path limit).
pub const EMAIL_LENGTH_MAX: usize = 254;

/// An e-mail address in clear. Personal data: it appears in commands and in the personal-data
/// store, never in the hashed event bytes (events carry a [`Commitment`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(pub String);

impl Email {
    /// The domain part, lower case.
    pub fn domain_lowercase(&self) -> String {
        self.0
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

impl FromStr for Email {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let valid = s.len() <= EMAIL_LENGTH_MAX
            && match s.rsplit_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
                }
                None => false,
            };
        if valid {
            Ok(Email(s.to_string()))
        } else {
            Err(ValueError(format!("{s:?} is not an e-mail address")))
        }
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(Email);

impl JsonSchema for Email {
    fn schema_name() -> Cow<'static, str> {
        "Email".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "email", "maxLength": EMAIL_LENGTH_MAX,
            "x-max-bytes": EMAIL_LENGTH_MAX, "pattern": email_pattern(),
            "x-personal-data": true,
            "description": format!("Personal data: kept out of the hashed event bytes. At most {EMAIL_LENGTH_MAX} bytes of UTF-8 (x-max-bytes; maxLength counts characters, the same only for ASCII); something@domain.with.dot, no white space or control characters.")})
    }
}

/// A salted SHA-256 commitment to a personal value: `sha256:` and 64 lower-case hex digits of
/// SHA-256(salt || UTF-8 value). The clear value and its 16-byte salt live in the
/// personal-data store; erasing them leaves every event hash valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commitment(pub [u8; 32]);

impl FromStr for Commitment {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError(format!("{s:?} is not a sha256: commitment"));
        let hex = s.strip_prefix("sha256:").ok_or_else(bad)?;
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Commitment(out))
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
string_serde!(Commitment);

impl JsonSchema for Commitment {
    fn schema_name() -> Cow<'static, str> {
        "Commitment".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^sha256:[0-9a-f]{64}$",
            "x-personal-data": true,
            "description": "Salted SHA-256 commitment to a personal value; the clear value is in the personal-data store"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_amounts_parse_strictly_and_print_two_digits() {
        assert_eq!("12500.00".parse::<UsdAmount>().unwrap().cents, 1_250_000);
        assert_eq!("-3.5".parse::<UsdAmount>().unwrap().cents, -350);
        assert_eq!("7".parse::<UsdAmount>().unwrap().to_string(), "7.00");
        assert_eq!(UsdAmount::from_cents(-5).to_string(), "-0.05");
        for bad in [
            "",
            "1.234",
            "1.",
            ".5",
            "1e3",
            "+1",
            "12,00",
            "--1",
            "99999999999999999",
        ] {
            assert!(bad.parse::<UsdAmount>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn usd_totals_hold_sums_past_i64_and_round_trip() {
        let largest = UsdAmount::from_cents(USD_AMOUNT_MAX_CENTS);
        let total = (0..100).fold(UsdTotal::ZERO, |total, _| total.plus(largest));
        assert_eq!(total.to_string(), "100000000000000000.00");
        assert_eq!(total.to_string().parse::<UsdTotal>().unwrap(), total);
        assert_eq!("-3.5".parse::<UsdTotal>().unwrap().cents, -350);
        let widest = format!("{}.99", "9".repeat(USD_TOTAL_DIGITS_MAX));
        assert_eq!(widest.parse::<UsdTotal>().unwrap().to_string(), widest);
        let too_wide = format!("1{}", "0".repeat(USD_TOTAL_DIGITS_MAX));
        assert!(too_wide.parse::<UsdTotal>().is_err());
        let top = UsdTotal::from_cents(i128::MAX);
        assert_eq!(top.plus(largest), top, "saturates instead of wrapping");
    }

    #[test]
    fn months_and_countries_parse_strictly() {
        assert_eq!(
            "2026-03".parse::<Month>().unwrap().index()
                - "2025-03".parse::<Month>().unwrap().index(),
            12
        );
        for bad in ["2026-13", "2026-00", "26-01", "2026/01"] {
            assert!(bad.parse::<Month>().is_err(), "{bad} accepted");
        }
        assert!("de".parse::<Country>().is_err());
        assert!("DEU".parse::<Country>().is_err());
    }

    #[test]
    fn emails_and_commitments_round_trip() {
        let email: Email = "Ana@Contoso.Example".parse().unwrap();
        assert_eq!(email.domain_lowercase(), "contoso.example");
        assert!("no-at-sign".parse::<Email>().is_err());
        assert!("a@b".parse::<Email>().is_err());
        let c = Commitment([0xab; 32]);
        assert_eq!(c.to_string().parse::<Commitment>().unwrap(), c);
    }
}
