//! Which of the org's candidates a message involves, and whether it is internal-only.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::address::AddressNormalizer;
use crate::message::{Participants, Role};

/// A set of [`Role`]s (a bit mask).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleSet(u8);

impl RoleSet {
    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

/// One candidate a message involves, and in which fields their addresses appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateHit<C> {
    pub candidate: C,
    pub roles: RoleSet,
}

/// The result of matching one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involvement<C> {
    /// Candidates involved, sorted by candidate id, each once.
    pub candidates: Vec<CandidateHit<C>>,
    /// Every participant is on one of the org's own domains (and there is at least one).
    pub internal_only: bool,
    /// Number of participants not on the org's domains.
    pub external_count: usize,
}

impl<C> Involvement<C> {
    pub fn involves_candidates(&self) -> bool {
        !self.candidates.is_empty()
    }
}

/// The org's candidate addresses, keyed by the org's normalized address key.
///
/// Lookups are hash-map lookups with a reused key buffer, so matching cost does
/// not depend on the number of candidates (100,000 addresses is fine).
#[derive(Debug, Clone)]
pub struct CandidateIndex<C> {
    normalizer: AddressNormalizer,
    by_key: HashMap<String, C>,
}

/// An address already belongs to another candidate (after normalization).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConflict<C> {
    pub key: String,
    pub existing: C,
    pub rejected: C,
}

impl<C: Clone + Ord> CandidateIndex<C> {
    pub fn new(normalizer: AddressNormalizer) -> Self {
        Self {
            normalizer,
            by_key: HashMap::new(),
        }
    }

    /// Builds an index; conflicting addresses keep their first owner and are returned.
    pub fn build<I, S>(normalizer: AddressNormalizer, entries: I) -> (Self, Vec<KeyConflict<C>>)
    where
        I: IntoIterator<Item = (S, C)>,
        S: AsRef<str>,
    {
        let mut index = Self::new(normalizer);
        let iter = entries.into_iter();
        index.by_key.reserve(iter.size_hint().0);
        let conflicts = iter
            .filter_map(|(a, c)| index.insert(a.as_ref(), c).err())
            .collect();
        (index, conflicts)
    }

    /// Adds one candidate address. One normalized address belongs to at most one
    /// candidate: a different owner is refused.
    pub fn insert(&mut self, address: &str, candidate: C) -> Result<(), KeyConflict<C>> {
        let key = self.normalizer.key(address).as_str().to_string();
        match self.by_key.entry(key) {
            Entry::Vacant(v) => {
                v.insert(candidate);
                Ok(())
            }
            Entry::Occupied(o) if *o.get() == candidate => Ok(()),
            Entry::Occupied(o) => Err(KeyConflict {
                key: o.key().clone(),
                existing: o.get().clone(),
                rejected: candidate,
            }),
        }
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn normalizer(&self) -> &AddressNormalizer {
        &self.normalizer
    }

    /// The candidate owning `address`, if any.
    pub fn lookup(&self, address: &str) -> Option<&C> {
        let mut buf = String::new();
        self.normalizer.key_into(address, &mut buf);
        self.by_key.get(buf.as_str())
    }

    /// Matches a message's participants. The result does not depend on the order
    /// of the addresses.
    pub fn involvement(&self, participants: &Participants) -> Involvement<C> {
        let mut buf = String::with_capacity(64);
        let mut found: Vec<(&C, Role)> = Vec::new();
        let mut total = 0usize;
        let mut external = 0usize;
        for (role, mb) in participants.iter() {
            total += 1;
            if !self.normalizer.is_internal(&mb.address) {
                external += 1;
            }
            if self.by_key.is_empty() {
                continue;
            }
            self.normalizer.key_into(&mb.address, &mut buf);
            if let Some(c) = self.by_key.get(buf.as_str()) {
                found.push((c, role));
            }
        }
        found.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut hits: Vec<CandidateHit<C>> = Vec::new();
        for (c, role) in found {
            match hits.last_mut() {
                Some(h) if h.candidate == *c => h.roles.insert(role),
                _ => {
                    let mut roles = RoleSet::default();
                    roles.insert(role);
                    hits.push(CandidateHit {
                        candidate: c.clone(),
                        roles,
                    });
                }
            }
        }
        Involvement {
            candidates: hits,
            internal_only: total > 0 && external == 0,
            external_count: external,
        }
    }
}
