//! The country to region table, loaded from `data/regions.tsv` (data, not code).

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::values::Country;

/// The table file, compiled in so that the binary needs no data directory.
const REGIONS_TSV: &str = include_str!("../data/regions.tsv");

/// One region of the CSP regional markets table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Stable id returned by read models (`europe`, `united_states`, ...).
    pub id: &'static str,
    /// Human name of the region.
    pub name: &'static str,
}

fn table() -> &'static HashMap<[u8; 2], Region> {
    static TABLE: OnceLock<HashMap<[u8; 2], Region>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map = HashMap::new();
        for line in REGIONS_TSV.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let mut cols = line.split('\t');
            let (Some(id), Some(name), Some(country)) = (cols.next(), cols.next(), cols.next())
            else {
                panic!("regions.tsv: malformed line {line:?} (compiled-in data, a build bug)");
            };
            let bytes = country.as_bytes();
            assert!(bytes.len() == 2, "regions.tsv: bad country {country:?}");
            let previous = map.insert([bytes[0], bytes[1]], Region { id, name });
            assert!(previous.is_none(), "regions.tsv: {country} listed twice");
        }
        map
    })
}

/// The region of a country, or `None` when the country is not in the table
/// (the caller rejects it with `invalid_country`).
pub fn region_of(country: Country) -> Option<&'static Region> {
    table().get(&country.0)
}

/// Every (country, region id) pair of the table, sorted by country.
pub fn all() -> Vec<(Country, &'static str)> {
    let mut rows: Vec<_> = table().iter().map(|(c, r)| (Country(*c), r.id)).collect();
    rows.sort_by_key(|(c, _)| c.0);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_fifteen_regions_and_known_countries() {
        let ids: std::collections::BTreeSet<_> = all().into_iter().map(|(_, r)| r).collect();
        assert_eq!(ids.len(), 15);
        assert_eq!(region_of("DE".parse().unwrap()).unwrap().id, "europe");
        assert_eq!(region_of("FR".parse().unwrap()).unwrap().id, "europe");
        assert_eq!(
            region_of("US".parse().unwrap()).unwrap().id,
            "united_states"
        );
        assert_eq!(
            region_of("ZA".parse().unwrap()).unwrap().id,
            "middle_east_central_eastern_europe"
        );
        assert!(region_of("QQ".parse().unwrap()).is_none());
    }
}

/// A region id held without an allocation: ids of the table are shared `'static` strings;
/// an id from another edition of the table is interned once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegionId(pub &'static str);

impl RegionId {
    /// The id for `id`, allocating only for ids outside the compiled-in table (once each).
    pub fn intern(id: &str) -> RegionId {
        static IDS: OnceLock<Vec<&'static str>> = OnceLock::new();
        let ids = IDS.get_or_init(|| {
            let mut ids: Vec<&'static str> = table().values().map(|r| r.id).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        });
        if let Some(known) = ids.iter().find(|known| **known == id) {
            return RegionId(known);
        }
        static EXTRA: OnceLock<std::sync::Mutex<Vec<&'static str>>> = OnceLock::new();
        let mut extra = EXTRA
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(known) = extra.iter().find(|e| **e == id) {
            return RegionId(known);
        }
        let leaked: &'static str = Box::leak(id.to_string().into_boxed_str());
        extra.push(leaked);
        RegionId(leaked)
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for RegionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl serde::Serialize for RegionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RegionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(RegionId::intern(&raw))
    }
}
