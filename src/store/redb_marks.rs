//! The redb table of nodes' marks (cluster mode, `StoreOp::PutPeerMarks`):
//! one row per node, its value the postcard of its marks. Written in the
//! same group commit as everything else.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::record::PeerMarkRecord;
use super::redb_stream::{read_err, write_err};
use super::{Snapshot, StoreError, StoreOp};

const PEER_MARKS: TableDefinition<&str, &[u8]> = TableDefinition::new("peer_marks");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(PEER_MARKS)?;
    Ok(())
}

/// Applies the marks of one batch (the last per node wins) inside `txn`.
pub(super) fn apply(txn: &WriteTransaction, ops: &[StoreOp]) -> Result<(), StoreError> {
    if !ops
        .iter()
        .any(|op| matches!(op, StoreOp::PutPeerMarks { .. }))
    {
        return Ok(());
    }
    let mut table = txn.open_table(PEER_MARKS).map_err(write_err)?;
    for op in ops {
        if let StoreOp::PutPeerMarks { node, marks } = op {
            let bytes = postcard::to_allocvec(marks).map_err(write_err)?;
            table
                .insert(node.as_str(), bytes.as_slice())
                .map_err(write_err)?;
        }
    }
    Ok(())
}

/// Adds every node's stored marks to `snapshot`.
pub(super) fn load(txn: &ReadTransaction, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let table = txn.open_table(PEER_MARKS).map_err(read_err)?;
    for row in table.iter().map_err(read_err)? {
        let (k, v) = row.map_err(read_err)?;
        let marks: Vec<PeerMarkRecord> = postcard::from_bytes(v.value()).map_err(read_err)?;
        snapshot.peer_marks.push((k.value().to_string(), marks));
    }
    Ok(())
}
