//! The epochs of a snapshot-diff dataflow, each with its own setup (a run's [`DiffSpec`]: the
//! committed state it diffs against, where its new state goes), and how an operator finds the
//! epochs it must handle.
//!
//! A dataflow of one run knows one epoch; a long-lived one is told each epoch's setup before
//! its rows are read ([`DiffEpochs::announce`]). Every epoch must be classified even when it
//! brings no rows (an empty table deletes every key), so an operator does not wait for data:
//! it holds a capability at its input frontier and opens each announced epoch the frontier
//! reaches (or passes: a frontier may jump over an epoch that had nothing in it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;

use super::classify::unreadable_state;
use super::DiffSpec;
use crate::snapshot::state_fingerprint_version;

/// Each announced epoch's diff setup, shared by the dataflow's workers and its owner.
#[derive(Clone, Default)]
pub struct DiffEpochs(Arc<Mutex<BTreeMap<u64, Arc<DiffSpec>>>>);

impl DiffEpochs {
    /// Announces epoch `epoch` with its setup, before any of its rows are read. A state keeps
    /// the fingerprint version it was first written with; a state that cannot be read is an
    /// error (with the way out).
    pub fn announce(&self, epoch: u64, spec: Arc<DiffSpec>) -> Result<(), String> {
        let spec = match state_fingerprint_version(&spec.previous) {
            Ok(v) if v == spec.hasher.fingerprint_version() => spec,
            Ok(v) => Arc::new(DiffSpec {
                hasher: Arc::new(spec.hasher.with_fingerprint(v)),
                ..(*spec).clone()
            }),
            Err(e) => return Err(unreadable_state(e)),
        };
        self.0
            .lock()
            .map_err(|_| "the diff's epochs are poisoned".to_string())?
            .insert(epoch, spec);
        Ok(())
    }

    /// Forgets the epochs up to `epoch` (they are past every operator).
    pub fn retire_through(&self, epoch: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|e, _| *e > epoch);
        }
    }

    /// The setup of `epoch`, if announced.
    pub(super) fn get(&self, epoch: u64) -> Option<Arc<DiffSpec>> {
        self.0.lock().ok()?.get(&epoch).cloned()
    }

    /// The announced epochs after `last` and up to `upto` (all after `last` when `None`).
    fn between(&self, last: Option<u64>, upto: Option<u64>) -> Vec<(u64, Arc<DiffSpec>)> {
        let Ok(m) = self.0.lock() else {
            return Vec::new();
        };
        m.iter()
            .filter(|(e, _)| last.is_none_or(|l| **e > l) && upto.is_none_or(|u| **e <= u))
            .map(|(e, s)| (*e, s.clone()))
            .collect()
    }
}

/// An epoch an operator has opened: its time's capability and its setup.
pub(super) struct Opened {
    pub epoch: u64,
    pub cap: Capability<u64>,
    pub spec: Arc<DiffSpec>,
}

/// Finds the epochs one operator must handle (see the module's text); epochs open in order.
pub(super) struct EpochWatch {
    /// At the input frontier's least time; dropped once the frontier is empty.
    cap: Option<Capability<u64>>,
    epochs: DiffEpochs,
    last: Option<u64>,
}

impl EpochWatch {
    pub(super) fn new(cap: Capability<u64>, epochs: DiffEpochs) -> Self {
        EpochWatch {
            cap: Some(cap),
            epochs,
            last: None,
        }
    }

    /// The epochs to open now: those announced up to the frontier's least time (all of them
    /// once it is empty). The watch's capability follows the frontier.
    pub(super) fn reached(&mut self, frontier: &MutableAntichain<u64>) -> Vec<Opened> {
        let least = frontier.frontier().first().copied();
        let mut opened = Vec::new();
        if let Some(cap) = self.cap.as_ref() {
            for (epoch, spec) in self.epochs.between(self.last, least) {
                if epoch < *cap.time() {
                    continue;
                }
                opened.push(Opened {
                    epoch,
                    cap: cap.delayed(&epoch),
                    spec,
                });
                self.last = Some(epoch);
            }
        }
        match least {
            Some(t) => {
                if let Some(cap) = self.cap.as_mut().filter(|c| *c.time() < t) {
                    cap.downgrade(&t);
                }
            }
            None => self.cap = None,
        }
        opened
    }

    /// Opens `epoch` for data that arrived at it before the frontier showed it (the frontier
    /// is at or before it, so the watch's capability is too); `None` if it is open already or
    /// was never announced.
    pub(super) fn open(&mut self, epoch: u64) -> Option<Opened> {
        if self.last.is_some_and(|l| epoch <= l) {
            return None;
        }
        let spec = self.epochs.get(epoch)?;
        let cap = self
            .cap
            .as_ref()
            .filter(|c| *c.time() <= epoch)?
            .delayed(&epoch);
        self.last = Some(epoch);
        Some(Opened { epoch, cap, spec })
    }
}
