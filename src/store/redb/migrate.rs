//! Older store formats brought to the current one at open, in the open's
//! write transaction (so a failed migration leaves the file as it was).

use serde::de::DeserializeOwned;

use super::{decode, encode, DELIVERIES, MESSAGES, MESSAGE_REFS};
use crate::store::record::{unix_ms_now, DeliveryRecord, DeliveryRecordV1, DeliveryRecordV2};

/// Migrates the deliveries of a format `from` (1 or 2) store to the current
/// format. A delivery stored without its queue time counts its age from now.
pub(super) fn deliveries(txn: &redb::WriteTransaction, from: u64) -> Result<(), String> {
    let now = unix_ms_now();
    if from != 1 {
        return rewrite(txn, |old: DeliveryRecordV2| {
            Ok(old.rest.current(old.message_id, now))
        });
    }
    // Format 1 kept a copy of the message in every delivery: each becomes a
    // stored message of its own (copies are not merged) that the delivery refers to.
    let mut messages = txn.open_table(MESSAGES).map_err(|e| e.to_string())?;
    let mut refs = txn.open_table(MESSAGE_REFS).map_err(|e| e.to_string())?;
    let mut ids = 1u64..;
    rewrite(txn, |old: DeliveryRecordV1| {
        let id = ids.next().unwrap_or(u64::MAX);
        let message = encode(&old.message).map_err(|e| e.to_string())?;
        messages
            .insert(id, message.as_slice())
            .map_err(|e| e.to_string())?;
        refs.insert(id, 1).map_err(|e| e.to_string())?;
        Ok(old.rest.current(id, now))
    })
}

/// Rewrites every stored delivery, read as an `Old` record, as `convert` makes it.
fn rewrite<Old: DeserializeOwned>(
    txn: &redb::WriteTransaction,
    mut convert: impl FnMut(Old) -> Result<DeliveryRecord, String>,
) -> Result<(), String> {
    let mut deliveries = txn.open_table(DELIVERIES).map_err(|e| e.to_string())?;
    let mut old = Vec::new();
    for row in redb::ReadableTable::iter(&deliveries).map_err(|e| e.to_string())? {
        let (k, v) = row.map_err(|e| e.to_string())?;
        let (client, seq) = k.value();
        let record: Old = decode(v.value()).map_err(|e| e.to_string())?;
        old.push((client.to_string(), seq, record));
    }
    for (client, seq, record) in old {
        let delivery = encode(&convert(record)?).map_err(|e| e.to_string())?;
        deliveries
            .insert((client.as_str(), seq), delivery.as_slice())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
