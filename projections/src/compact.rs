//! Small collections for the per-entity fields of the state: most partners hold one role, one
//! or two customers relationships, a few revenue months. A sorted `Vec` costs one small
//! allocation where a `BTreeMap` costs a node of eleven slots; a bit set costs nothing.

use csp_ledger_schemas::event::ProgramRole;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of program roles as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles(u8);

const ALL_ROLES: [ProgramRole; 3] = [
    ProgramRole::IndirectReseller,
    ProgramRole::IndirectProvider,
    ProgramRole::DirectBill,
];

fn bit(role: ProgramRole) -> u8 {
    match role {
        ProgramRole::IndirectReseller => 1,
        ProgramRole::IndirectProvider => 2,
        ProgramRole::DirectBill => 4,
    }
}

impl Roles {
    pub fn of(role: ProgramRole) -> Roles {
        Roles(bit(role))
    }
    pub fn contains(&self, role: ProgramRole) -> bool {
        self.0 & bit(role) != 0
    }
    pub fn insert(&mut self, role: ProgramRole) {
        self.0 |= bit(role);
    }
    pub fn remove(&mut self, role: ProgramRole) {
        self.0 &= !bit(role);
    }
    /// The roles held, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = ProgramRole> + '_ {
        ALL_ROLES.into_iter().filter(|r| self.contains(*r))
    }
}

/// A map kept as a `Vec` sorted by key: for a handful of entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<K: Ord + Copy, V> VecMap<K, V> {
    pub fn get(&self, key: &K) -> Option<&V> {
        self.0
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.0
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| &mut self.0[i].1)
    }
    pub fn insert(&mut self, key: K, value: V) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }
    /// The value of `key`, inserted with `make` when missing.
    pub fn entry_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (key, make()));
                i
            }
        };
        &mut self.0[i].1
    }
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, K: Deserialize<'de> + Ord + Copy, V: Deserialize<'de>> Deserialize<'de> for VecMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut entries: Vec<(K, V)> = Vec::deserialize(deserializer)?;
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(VecMap(entries))
    }
}

/// A set kept as a sorted `Vec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VecSet<K>(Vec<K>);

impl<K: Ord + Copy> VecSet<K> {
    pub fn insert(&mut self, key: K) {
        if let Err(i) = self.0.binary_search(&key) {
            self.0.insert(i, key);
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = &K> + '_ {
        self.0.iter()
    }
    /// Members greater than `after` (all when `None`), in order.
    pub fn after(&self, after: Option<K>) -> impl Iterator<Item = &K> + '_ {
        let start = match after {
            Some(after) => self.0.partition_point(|k| *k <= after),
            None => 0,
        };
        self.0[start..].iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_map_and_set_stay_sorted() {
        let mut map = VecMap::default();
        for k in [5, 1, 3, 1] {
            *map.entry_or_insert_with(k, || 0) += 1;
        }
        assert_eq!(
            map.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            [(1, 2), (3, 1), (5, 1)]
        );
        let mut set = VecSet::default();
        for k in [4, 2, 9, 2] {
            set.insert(k);
        }
        assert_eq!(set.after(Some(2)).copied().collect::<Vec<_>>(), [4, 9]);
        let mut roles = Roles::of(ProgramRole::IndirectReseller);
        roles.remove(ProgramRole::IndirectReseller);
        roles.insert(ProgramRole::DirectBill);
        assert_eq!(roles.iter().collect::<Vec<_>>(), [ProgramRole::DirectBill]);
    }
}
