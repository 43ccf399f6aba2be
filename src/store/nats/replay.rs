//! Journals read back: the entries of one node's journal (at start) or of
//! every node's (a takeover) folded, in stream order, into the last write
//! per key, on top of what the store bucket holds.
//!
//! A `Forget` of a client id in a node's journal voids that node's earlier
//! entries of the client up to the sequence it names (the client went from
//! that node; another node holds its records since). Folding is idempotent:
//! the last write per key wins, so entries already compacted into the
//! bucket (a crash between writing the bucket and purging the journal)
//! change nothing.

use bytes::Bytes;
use indexmap::IndexMap;

use super::journal::{client_of, Entry};

/// The last write per key (None: deleted) of `entries` (sequence, subject,
/// entry) whose key `keep` takes, and the last sequence read (0: none).
pub(super) fn fold(
    entries: Vec<(u64, String, Entry)>,
    keep: impl Fn(&str) -> bool,
) -> (IndexMap<String, Option<Bytes>>, u64) {
    let last = entries.last().map_or(0, |e| e.0);
    let mut writes: Vec<(u64, String, String, Option<Bytes>)> = Vec::new();
    for (seq, subject, entry) in entries {
        match entry {
            Entry::Put(key, value) if keep(&key) => {
                writes.push((seq, subject, key, Some(value.into())));
            }
            Entry::Delete(key) if keep(&key) => writes.push((seq, subject, key, None)),
            Entry::Forget(client, upto) => writes.retain(|(at, from, key, _)| {
                *at > upto || from != &subject || client_of(key).as_deref() != Some(client.as_str())
            }),
            Entry::Put(..) | Entry::Delete(_) => {}
        }
    }
    let mut folded = IndexMap::new();
    for (_, _, key, value) in writes {
        folded.insert(key, value);
    }
    (folded, last)
}

/// The journal subjects among `entries` with entries of `client` that no
/// `Forget` voids, each with the last sequence of them: the nodes whose
/// journal still holds its records.
pub(super) fn holders(entries: &[(u64, String, Entry)], client: &str) -> Vec<(String, u64)> {
    let mut holders: Vec<(String, u64)> = Vec::new();
    for (seq, subject, entry) in entries {
        match entry {
            Entry::Put(key, _) | Entry::Delete(key)
                if client_of(key).as_deref() == Some(client) =>
            {
                match holders.iter_mut().find(|h| &h.0 == subject) {
                    Some(holder) => holder.1 = *seq,
                    None => holders.push((subject.clone(), *seq)),
                }
            }
            Entry::Forget(c, upto) if c == client => {
                holders.retain(|(s, last)| s != subject || last > upto);
            }
            _ => {}
        }
    }
    holders
}

/// `bucket` (key, value) with `overlay` written over it.
pub(super) fn overlay(
    bucket: Vec<(String, Bytes)>,
    overlay: &IndexMap<String, Option<Bytes>>,
) -> Vec<(String, Bytes)> {
    let mut merged: IndexMap<String, Bytes> = bucket.into_iter().collect();
    for (key, value) in overlay {
        match value {
            Some(value) => {
                merged.insert(key.clone(), value.clone());
            }
            None => {
                merged.shift_remove(key);
            }
        }
    }
    merged.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(seq: u64, node: &str, key: &str, value: &[u8]) -> (u64, String, Entry) {
        (seq, node.into(), Entry::Put(key.into(), value.to_vec()))
    }

    #[test]
    fn the_last_write_per_key_wins_and_a_forget_voids_that_nodes_entries_up_to_its_sequence() {
        let entries = vec![
            put(1, "a", "s.c", b"1"),
            put(1, "a", "m.a.1", b"m"),
            put(2, "b", "d.c.1", b"x"),
            (3, "a".into(), Entry::Delete("d.c.1".into())),
            put(4, "b", "w.c", b"w"),
            // Written into b's journal by a node that read it up to 2.
            (5, "b".into(), Entry::Forget("c".into(), 2)),
            put(6, "a", "s.c", b"2"),
            put(6, "a", "s.other", b"o"),
        ];
        assert_eq!(
            holders(&entries, "c"),
            vec![("a".to_string(), 6), ("b".to_string(), 4)],
            "b wrote w.c after the sequence forgotten"
        );
        let (folded, last) = fold(entries, |key| key != "s.other");
        assert_eq!(last, 6);
        let got: Vec<(&str, Option<&[u8]>)> = folded
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("s.c", Some(&b"2"[..])),
                ("m.a.1", Some(&b"m"[..])),
                ("d.c.1", None),
                ("w.c", Some(&b"w"[..])),
            ],
            "b's put of d.c.1 is void; a's delete of it and b's later will stay"
        );
        let merged = overlay(
            vec![
                ("d.c.1".into(), Bytes::from_static(b"old")),
                ("r.t".into(), Bytes::new()),
            ],
            &folded,
        );
        let keys: Vec<&str> = merged.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(keys, vec!["r.t", "s.c", "m.a.1", "w.c"]);
    }
}
