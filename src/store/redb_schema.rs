//! The redb table of admin API schemas: one row per schema name, its value
//! the bytes the core made of its versions. Written in the same group commit
//! as everything else.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::{Snapshot, StoreError, StoreOp};

const SCHEMAS: TableDefinition<&str, &[u8]> = TableDefinition::new("schemas");

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Decode(e.to_string())
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(SCHEMAS)?;
    Ok(())
}

pub(super) fn is_schema_op(op: &StoreOp) -> bool {
    matches!(op, StoreOp::PutSchema { .. } | StoreOp::DeleteSchema { .. })
}

/// Applies the schema operations of one batch, in order, inside `txn`.
pub(super) fn apply(txn: &WriteTransaction, ops: &[StoreOp]) -> Result<(), StoreError> {
    if !ops.iter().any(is_schema_op) {
        return Ok(());
    }
    let mut schemas = txn.open_table(SCHEMAS).map_err(write_err)?;
    for op in ops {
        match op {
            StoreOp::PutSchema { name, record } => {
                schemas
                    .insert(name.as_str(), record.as_slice())
                    .map_err(write_err)?;
            }
            StoreOp::DeleteSchema { name } => {
                schemas.remove(name.as_str()).map_err(write_err)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Adds every stored schema record to `snapshot`.
pub(super) fn load(txn: &ReadTransaction, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let schemas = txn.open_table(SCHEMAS).map_err(read_err)?;
    for row in schemas.iter().map_err(read_err)? {
        let (k, v) = row.map_err(read_err)?;
        snapshot
            .schemas
            .push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(())
}
