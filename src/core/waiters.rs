//! The lines of callers parked by `CACHE.LOCKGET ... WAIT`, one line per key, in the order
//! they parked; and when each line must next be looked at.
//!
//! Pure bookkeeping: which caller is first in line, which lease was handed to whom and not yet
//! told, which leases were left behind by callers that went away (orphans), and the instant at
//! which a line's lease ends. Redis's side (blocked clients, the timer, the keys) is in
//! `wrapper::blocked` and `storage::handover`.

use std::collections::{HashMap, VecDeque};

/// A key in one database: what callers wait on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LineKey {
    pub db: i32,
    pub key: Vec<u8>,
}

/// One parked caller, as Redis knows it (its blocked client's private data names it).
pub type TicketId = u64;

#[derive(Debug)]
struct Slot {
    ticket: TicketId,
    lease_ms: i64,
    /// The token of a lease handed to this caller, not yet answered.
    granted: Option<u64>,
}

#[derive(Debug, Default)]
struct Line {
    slots: VecDeque<Slot>,
    /// When this line must be looked at next: its lease ends, or something may have changed it.
    check_at_ms: i64,
}

/// The first caller of a line: who would be handed a lease now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Front {
    pub ticket: TicketId,
    pub lease_ms: i64,
}

#[derive(Debug, Default)]
pub struct Registry {
    next_ticket: TicketId,
    lines: HashMap<LineKey, Line>,
    parked: usize,
    /// Leases handed to callers that went away before being told.
    orphans: Vec<(LineKey, u64)>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Puts a caller at the end of `line`, whose current lease ends at `lease_ends_ms`.
    pub fn park(&mut self, line: LineKey, lease_ms: i64, lease_ends_ms: i64) -> TicketId {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let l = self.lines.entry(line).or_insert_with(|| Line {
            slots: VecDeque::new(),
            check_at_ms: lease_ends_ms,
        });
        l.check_at_ms = l.check_at_ms.min(lease_ends_ms);
        l.slots.push_back(Slot {
            ticket,
            lease_ms,
            granted: None,
        });
        self.parked += 1;
        ticket
    }

    /// Callers parked now, all lines together.
    pub fn parked(&self) -> usize {
        self.parked
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.orphans.is_empty()
    }

    pub fn is_waited(&self, line: &LineKey) -> bool {
        self.lines.contains_key(line)
    }

    /// The longest-waiting caller of `line`.
    pub fn front(&self, line: &LineKey) -> Option<Front> {
        let s = self.lines.get(line)?.slots.front()?;
        Some(Front {
            ticket: s.ticket,
            lease_ms: s.lease_ms,
        })
    }

    fn slot(&mut self, line: &LineKey, ticket: TicketId) -> Option<&mut Slot> {
        self.lines
            .get_mut(line)?
            .slots
            .iter_mut()
            .find(|s| s.ticket == ticket)
    }

    /// Records that `ticket` was handed the lease `token` (it is told when Redis serves it).
    pub fn hand(&mut self, line: &LineKey, ticket: TicketId, token: u64) {
        if let Some(s) = self.slot(line, ticket) {
            s.granted = Some(token);
        }
    }

    /// The lease handed to `ticket` and not yet told.
    pub fn granted(&mut self, line: &LineKey, ticket: TicketId) -> Option<u64> {
        self.slot(line, ticket).and_then(|s| s.granted)
    }

    /// `ticket` was told of its lease: if it goes away now, the lease is no orphan.
    pub fn told(&mut self, line: &LineKey, ticket: TicketId) {
        if let Some(s) = self.slot(line, ticket) {
            s.granted = None;
        }
    }

    /// Takes `ticket` out of its line (answered, timed out, disconnected). A lease it was
    /// handed but not told of becomes an orphan, returned and kept for `take_orphans`.
    pub fn leave(&mut self, line: &LineKey, ticket: TicketId) -> Option<u64> {
        let l = self.lines.get_mut(line)?;
        let pos = l.slots.iter().position(|s| s.ticket == ticket)?;
        let slot = l.slots.remove(pos)?;
        if l.slots.is_empty() {
            self.lines.remove(line);
        }
        self.parked -= 1;
        if let Some(token) = slot.granted {
            self.orphans.push((line.clone(), token));
        }
        slot.granted
    }

    pub fn take_orphans(&mut self) -> Vec<(LineKey, u64)> {
        std::mem::take(&mut self.orphans)
    }

    /// When `line` must be looked at next (its lease's end, say).
    pub fn check_at(&mut self, line: &LineKey, at_ms: i64) {
        if let Some(l) = self.lines.get_mut(line) {
            l.check_at_ms = at_ms;
        }
    }

    /// Something may have ended the lease of `line` (a delete, a flush): look now.
    pub fn check_now(&mut self, line: &LineKey) {
        self.check_at(line, i64::MIN);
    }

    /// Every line is to be looked at now (a flush, a reload).
    pub fn check_all_now(&mut self) {
        for l in self.lines.values_mut() {
            l.check_at_ms = i64::MIN;
        }
    }

    /// The lines due at `now`.
    pub fn due(&self, now: i64) -> Vec<LineKey> {
        self.lines
            .iter()
            .filter(|(_, l)| l.check_at_ms <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// When the next line is due: the earliest instant to wake up at (None: nobody waits; an
    /// orphan is due at once).
    pub fn next_due(&self) -> Option<i64> {
        if !self.orphans.is_empty() {
            return Some(i64::MIN);
        }
        self.lines.values().map(|l| l.check_at_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> LineKey {
        LineKey {
            db: 0,
            key: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn callers_are_served_in_the_order_they_parked() {
        let mut r = Registry::new();
        let a = r.park(k("x"), 100, 50);
        let b = r.park(k("x"), 200, 50);
        assert_eq!(r.parked(), 2);
        assert_eq!(
            r.front(&k("x")),
            Some(Front {
                ticket: a,
                lease_ms: 100
            })
        );
        assert_eq!(r.leave(&k("x"), a), None);
        assert_eq!(r.front(&k("x")).map(|f| f.ticket), Some(b));
        assert_eq!(r.leave(&k("x"), b), None);
        assert!(!r.is_waited(&k("x")) && r.is_empty() && r.parked() == 0);
        assert_eq!(r.leave(&k("x"), b), None, "leaving twice changes nothing");
        assert_eq!(r.parked(), 0);
    }

    #[test]
    fn lines_are_per_key_and_database() {
        let mut r = Registry::new();
        r.park(k("x"), 1, 10);
        let other_db = LineKey { db: 1, ..k("x") };
        assert!(r.is_waited(&k("x")) && !r.is_waited(&other_db) && !r.is_waited(&k("y")));
    }

    #[test]
    fn a_lease_handed_but_not_told_is_an_orphan_when_its_caller_leaves() {
        let mut r = Registry::new();
        let a = r.park(k("x"), 1, 10);
        let b = r.park(k("x"), 1, 10);
        r.hand(&k("x"), a, 77);
        assert_eq!(r.granted(&k("x"), a), Some(77));
        assert_eq!(r.granted(&k("x"), b), None);
        assert_eq!(r.leave(&k("x"), a), Some(77));
        assert_eq!(r.next_due(), Some(i64::MIN), "an orphan is due at once");
        assert_eq!(r.take_orphans(), vec![(k("x"), 77)]);
        assert!(r.take_orphans().is_empty());

        r.hand(&k("x"), b, 78);
        r.told(&k("x"), b);
        assert_eq!(r.leave(&k("x"), b), None, "told: no orphan");
        assert!(r.is_empty());
    }

    #[test]
    fn lines_are_due_when_their_lease_ends_or_when_told_to_look() {
        let mut r = Registry::new();
        r.park(k("x"), 1, 500);
        r.park(k("x"), 1, 300);
        r.park(k("y"), 1, 900);
        assert_eq!(r.next_due(), Some(300), "the earliest lease end of a line");
        assert!(r.due(299).is_empty());
        assert_eq!(r.due(300), vec![k("x")]);
        r.check_at(&k("x"), 1000);
        assert_eq!(r.next_due(), Some(900));
        r.check_now(&k("x"));
        assert_eq!(r.due(0), vec![k("x")]);
        r.check_all_now();
        let mut due = r.due(0);
        due.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(due, vec![k("x"), k("y")]);
        assert_eq!(Registry::new().next_due(), None);
    }
}
