//! At a start: the client ids this node holds whose records another node's
//! journal still holds unread. A run of this node claimed such an id from a
//! node that had just died, and died itself before it read the records (no
//! `Forget` of the id in that journal since); restored from the bucket and
//! this node's journal alone, the session came back as the bucket had it
//! seconds before (the clustered crash test: 3,899 deliveries the old holder
//! had completed came back, 1,844 QoS 2 repeats). Such a client is read as a
//! takeover reads it (every journal over the bucket, `NatsBackend::load_client`).

use std::collections::{HashMap, HashSet};

use async_nats::jetstream;

use super::journal::{self, client_of, Entry};
use super::patience;
use crate::store::Snapshot;

/// The client ids not in `foreign` (held here, or by no node) with an entry
/// in another node's journal that no `Forget` there voids, with every
/// journal as read (their records are taken from it, `NatsBackend::load`).
pub(super) async fn unread_clients(
    jetstream: &jetstream::Context,
    node: &str,
    foreign: &HashSet<String>,
) -> Result<(HashSet<String>, Vec<(u64, String, Entry)>), String> {
    let entries = patience::patiently(journal::STREAM, || async {
        super::recover::read_journals(jetstream, None)
            .await
            .map_err(patience::Failure::Transient)
    })
    .await?;
    let unread = unforgotten(&entries, &journal::subject(node), foreign);
    Ok((unread, entries))
}

/// See [`unread_clients`]; `own`: this node's journal subject.
fn unforgotten(
    entries: &[(u64, String, Entry)],
    own: &str,
    foreign: &HashSet<String>,
) -> HashSet<String> {
    // Per (journal, client): its last entry, and the highest sequence a
    // `Forget` there voids up to.
    let mut last: HashMap<(&str, String), u64> = HashMap::new();
    let mut forgotten: HashMap<(&str, &str), u64> = HashMap::new();
    for (seq, subject, entry) in entries {
        if subject == own {
            continue;
        }
        match entry {
            Entry::Put(key, _) | Entry::Delete(key) => {
                if let Some(client) = client_of(key).filter(|c| !foreign.contains(c)) {
                    last.insert((subject.as_str(), client), *seq);
                }
            }
            Entry::Forget(client, upto) => {
                let voided = forgotten.entry((subject.as_str(), client)).or_insert(0);
                *voided = (*voided).max(*upto);
            }
        }
    }
    last.into_iter()
        .filter(|((subject, client), seq)| {
            *seq > forgotten
                .get(&(*subject, client.as_str()))
                .copied()
                .unwrap_or(0)
        })
        .map(|((_, client), _)| client)
        .collect()
}

/// Adds a client's records read as a takeover reads them to the start's.
pub(super) fn merge(snapshot: &mut Snapshot, client: Snapshot) {
    snapshot.sessions.extend(client.sessions);
    snapshot.deliveries.extend(client.deliveries);
    snapshot
        .deliveries
        .sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let have: HashSet<u64> = snapshot.messages.iter().map(|m| m.0).collect();
    snapshot
        .messages
        .extend(client.messages.into_iter().filter(|m| !have.contains(&m.0)));
    snapshot.incoming_qos2.extend(client.incoming_qos2);
    snapshot.wills.extend(client.wills);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(seq: u64, subject: &str, key: &str) -> (u64, String, Entry) {
        (seq, subject.into(), Entry::Put(key.into(), Vec::new()))
    }

    #[test]
    fn a_client_held_here_with_entries_no_forget_voids_in_another_journal_is_unread() {
        let (own, x) = ("tern.journal.a", "tern.journal.x");
        let entries = vec![
            put(1, x, "s.read"),
            (2, x.into(), Entry::Forget("read".into(), 1)),
            put(3, x, "s.unread"),
            put(4, x, "d.unread.1"),
            put(5, x, "s.theirs"),
            put(6, own, "s.mine"),
            put(7, x, "s.again"),
            (8, x.into(), Entry::Forget("again".into(), 7)),
            put(9, x, "s.again"),
        ];
        let foreign = HashSet::from(["theirs".to_string()]);
        let mut unread: Vec<String> = unforgotten(&entries, own, &foreign).into_iter().collect();
        unread.sort();
        assert_eq!(
            unread,
            ["again", "unread"],
            "voided entries and other nodes' clients are not; one written after the Forget is"
        );
    }
}
