//! Per-key coalescing of a batch: of all the events of a key only the highest version is
//! written, since the version-guarded upsert would discard the others anyway. Every event's
//! index stays with its key, so the whole batch can be acknowledged after the commit, and a key
//! the database rejects can be dead-lettered with all of its events.

use crate::event::Event;
use std::collections::HashMap;

/// What one key of a batch writes: the winning event and its batch index, and the batch
/// indices of every event of that key (the winner's included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyWrite {
    pub event: Event,
    pub winner: usize,
    pub members: Vec<usize>,
}

/// Coalesces `(batch index, event)` pairs per key; the highest version wins, a delete being just
/// an event without a value. On equal versions (a redelivered event) the first one stays.
/// The result is sorted by key, so concurrent workers lock rows in the same order and do not
/// deadlock each other in PostgreSQL.
pub fn coalesce(events: impl IntoIterator<Item = (usize, Event)>) -> Vec<KeyWrite> {
    let mut writes: Vec<KeyWrite> = Vec::new();
    let mut slot: HashMap<Vec<u8>, usize> = HashMap::new();
    for (index, event) in events {
        match slot.get(&event.key) {
            Some(&at) => {
                let write = &mut writes[at];
                write.members.push(index);
                if event.version > write.event.version {
                    write.event = event;
                    write.winner = index;
                }
            }
            None => {
                slot.insert(event.key.clone(), writes.len());
                writes.push(KeyWrite {
                    event,
                    winner: index,
                    members: vec![index],
                });
            }
        }
    }
    writes.sort_by(|a, b| a.event.key.cmp(&b.event.key));
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, version: u64, value: &str) -> Event {
        Event {
            key: key.into(),
            value: Some(value.into()),
            version,
            ms: version * 10,
        }
    }

    fn del(key: &str, version: u64) -> Event {
        Event {
            key: key.into(),
            value: None,
            version,
            ms: version * 10,
        }
    }

    #[test]
    fn highest_version_wins_whatever_the_order() {
        let batch = vec![
            set("a", 1, "a1"),
            set("b", 7, "b7"),
            set("a", 3, "a3"),
            set("a", 2, "a2"),
            del("b", 5),
        ];
        let writes = coalesce(batch.into_iter().enumerate());
        assert_eq!(
            writes,
            vec![
                KeyWrite {
                    event: set("a", 3, "a3"),
                    winner: 2,
                    members: vec![0, 2, 3]
                },
                KeyWrite {
                    event: set("b", 7, "b7"),
                    winner: 1,
                    members: vec![1, 4]
                },
            ]
        );
    }

    #[test]
    fn a_delete_wins_when_newer() {
        let writes = coalesce(vec![(0, set("k", 1, "v")), (1, del("k", 2))]);
        assert_eq!(writes.len(), 1);
        assert!(writes[0].event.deleted());
        assert_eq!(writes[0].event.version, 2);
    }

    #[test]
    fn a_redelivered_event_keeps_the_first_copy() {
        let writes = coalesce(vec![(4, set("k", 9, "first")), (8, set("k", 9, "second"))]);
        assert_eq!(writes[0].event.value.as_deref(), Some(&b"first"[..]));
        assert_eq!((writes[0].winner, &writes[0].members[..]), (4, &[4, 8][..]));
    }

    #[test]
    fn every_index_is_kept_exactly_once_and_keys_are_sorted() {
        let events: Vec<(usize, Event)> = (0..1000)
            .map(|i| (i, set(&format!("k{}", (i * 7919) % 37), i as u64, "v")))
            .collect();
        let writes = coalesce(events);
        assert_eq!(writes.len(), 37);
        let mut seen: Vec<usize> = writes.iter().flat_map(|w| w.members.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert!(writes.windows(2).all(|w| w[0].event.key < w[1].event.key));
        for w in &writes {
            let top = *w.members.iter().max().unwrap();
            assert_eq!((w.event.version, w.winner), (top as u64, top));
        }
    }
}
