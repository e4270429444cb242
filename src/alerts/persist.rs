//! Thresholds and alerts in the store: the `thresholds` table (id → the
//! normalised [`ThresholdSpec`] as versioned JSON) and the `alerts` table
//! (alert id → [`AlertRecordV1`]).
//!
//! Invariants: a record's encoding is `codec::encode_json` with version
//! [`RECORD_V1`]; a threshold is stored only after it parsed into a
//! [`Rule`]; firing alerts are never pruned, resolved ones beyond the
//! history limit are (oldest first), in the same transaction that writes
//! the cycle's transitions.

use std::collections::{BTreeMap, HashMap};

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::alert::{Alert, AlertState, Transition};
use super::threshold::Rule;
use crate::config::ThresholdSpec;
use crate::error::Result;
use crate::store::Store;
use crate::store::codec;
use crate::store::tables::{ALERTS, THRESHOLDS};

/// Version byte of both tables' records.
pub(super) const RECORD_V1: u8 = 1;

/// One alert as stored, with what the state machine needs to pick it up
/// again after a restart.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct AlertRecordV1 {
    pub(super) series_id: u64,
    pub(super) started_ms: i64,
    pub(super) resolved_ms: Option<i64>,
    pub(super) alert: Alert,
}

/// Alert history by id, and the firing alerts by threshold id → series id.
pub(super) type Loaded = (
    BTreeMap<u64, AlertRecordV1>,
    HashMap<String, HashMap<u64, u64>>,
);

fn encode_json<T: Serialize>(table: &'static str, v: &T) -> Result<Vec<u8>> {
    codec::encode_json(table, RECORD_V1, v)
}

fn decode_json<T: for<'de> Deserialize<'de>>(table: &'static str, bytes: &[u8]) -> Result<T> {
    codec::decode_json(table, RECORD_V1, bytes)
}

/// Every stored threshold, parsed.
pub(super) fn load_rules(store: &Store) -> Result<Vec<Rule>> {
    let txn = store.begin_read()?;
    let mut rules = Vec::new();
    for e in txn.open_table(THRESHOLDS)?.iter()? {
        let (_, v) = e?;
        let spec: ThresholdSpec = decode_json("thresholds", v.value())?;
        rules.push(Rule::parse(spec)?);
    }
    Ok(rules)
}

/// Every stored alert, and which are firing.
pub(super) fn load_alerts(store: &Store) -> Result<Loaded> {
    let txn = store.begin_read()?;
    let mut history = BTreeMap::new();
    let mut firing: HashMap<String, HashMap<u64, u64>> = HashMap::new();
    for e in txn.open_table(ALERTS)?.iter()? {
        let (k, v) = e?;
        let rec: AlertRecordV1 = decode_json("alerts", v.value())?;
        if rec.alert.state == AlertState::Firing {
            firing
                .entry(rec.alert.threshold_id.clone())
                .or_default()
                .insert(rec.series_id, k.value());
        }
        history.insert(k.value(), rec);
    }
    Ok((history, firing))
}

/// Stores (or replaces) one threshold.
pub(super) fn store_threshold(store: &Store, spec: &ThresholdSpec) -> Result<()> {
    let txn = store.begin_write()?;
    txn.open_table(THRESHOLDS)?.insert(
        spec.id.as_str(),
        encode_json("thresholds", spec)?.as_slice(),
    )?;
    txn.commit()?;
    Ok(())
}

/// Deletes one threshold.
pub(super) fn delete_threshold(store: &Store, id: &str) -> Result<()> {
    let txn = store.begin_write()?;
    txn.open_table(THRESHOLDS)?.remove(id)?;
    txn.commit()?;
    Ok(())
}

/// Writes the alerts `transitions` changed and prunes resolved ones past
/// `limit` (from the store, then from `history` once committed).
pub(super) fn store_alerts(
    store: &Store,
    history: &mut BTreeMap<u64, AlertRecordV1>,
    transitions: &[Transition],
    limit: usize,
) -> Result<()> {
    if transitions.is_empty() {
        return Ok(());
    }
    let resolved: Vec<u64> = history
        .iter()
        .filter(|(_, r)| r.alert.state == AlertState::Resolved)
        .map(|(k, _)| *k)
        .collect();
    let excess = resolved.len().saturating_sub(limit);
    let txn = store.begin_write()?;
    {
        let mut table = txn.open_table(ALERTS)?;
        for t in transitions {
            if let Some(rec) = history.get(&t.alert.id) {
                table.insert(t.alert.id, encode_json("alerts", rec)?.as_slice())?;
            }
        }
        for id in &resolved[..excess] {
            table.remove(*id)?;
        }
    }
    txn.commit()?;
    for id in &resolved[..excess] {
        history.remove(id);
    }
    Ok(())
}
