//! An insertion-ordered map on a `Vec`, for the client's tables.
//!
//! They hold few entries: publishes in flight (bounded by the server's Receive Maximum),
//! subscriptions, pending SUBACKs and topic aliases (bounded by our Topic Alias Maximum). A
//! linear search over a handful of entries is as fast as a tree or a hash table, keeps the
//! order things were sent in (resends after a resumed session follow it, also across packet-id
//! wrap-around), and saves the browser package the ~15 KB of `BTreeMap`/`HashMap` code.

use std::borrow::Borrow;

/// A map from `K` to `V` in insertion order (a replaced value keeps its place).
#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<K: PartialEq, V> VecMap<K, V> {
    fn position<Q: PartialEq + ?Sized>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
    {
        self.0.iter().position(|(k, _)| k.borrow() == key)
    }

    /// The value for `key`.
    pub(crate) fn get<Q: PartialEq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.position(key).map(|i| &self.0[i].1)
    }

    /// The value for `key`, mutably.
    pub(crate) fn get_mut<Q: PartialEq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        self.position(key).map(|i| &mut self.0[i].1)
    }

    /// Whether `key` is present.
    pub(crate) fn contains_key<Q: PartialEq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.position(key).is_some()
    }

    /// Sets `key` to `value`; the previous value, if any.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the others in order; its value, if any.
    pub(crate) fn remove<Q: PartialEq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.position(key).map(|i| self.0.remove(i).1)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Removes everything.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// The entries in insertion order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Takes the values out in insertion order, leaving the map empty.
    pub(crate) fn drain_values(&mut self) -> impl Iterator<Item = V> + '_ {
        self.0.drain(..).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::VecMap;

    #[test]
    fn keeps_insertion_order_and_replaces_in_place() {
        let mut m = VecMap::default();
        assert_eq!(m.insert(3u16, "c"), None);
        assert_eq!(m.insert(1, "a"), None);
        assert_eq!(m.insert(2, "b"), None);
        assert_eq!(m.insert(1, "A"), Some("a"));
        assert_eq!(
            m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            [(3, "c"), (1, "A"), (2, "b")]
        );
        assert_eq!(m.remove(&3), Some("c"));
        assert_eq!(m.remove(&3), None);
        assert!(m.contains_key(&2) && !m.contains_key(&3));
        if let Some(v) = m.get_mut(&2) {
            *v = "B";
        }
        assert_eq!(m.get(&2), Some(&"B"));
        assert_eq!(m.len(), 2);
        assert_eq!(m.drain_values().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn string_keys_are_looked_up_by_str() {
        let mut m: VecMap<String, u8> = VecMap::default();
        m.insert("a/b".to_owned(), 1);
        assert_eq!(m.get("a/b"), Some(&1));
        m.clear();
        assert_eq!(m.get("a/b"), None);
    }
}
