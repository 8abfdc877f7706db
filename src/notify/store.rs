//! The outbox and the alert records on disk: one redb database (`notify.redb` in the data
//! directory), written in a transaction, synced, before anything it records is sent or
//! answered. Alerts and deliveries are kept as JSON, in a layout whose version the store
//! records (`meta`, `format`).

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::dispatch::AlertRecord;
use crate::clock::Timestamp;

const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");
const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");
/// The store's own facts: `format`, the version of its records' layout.
const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
/// Bumped whenever the records change meaning, as the journal's format is; a store of
/// another version is refused rather than read wrong. A store without one was written
/// before versions and holds version 1.
pub(super) const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Still failing after the outbox's maximum age: logged, counted, kept for the API.
    Dead,
}

/// One message to one receiver, and every attempt to send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: u64,
    pub receiver: String,
    /// Sent with every attempt, so the receiver drops duplicates.
    pub idempotency_key: String,
    pub alerts: Vec<u64>,
    pub escalation: bool,
    pub held_back: u64,
    pub created_at: Timestamp,
    /// The request body, fixed when the delivery was made: every attempt sends the same.
    pub body: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt: Timestamp,
    pub last_error: Option<String>,
    pub finished_at: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("notify store: {0}")]
    Database(String),
    #[error("notify store holds a record that does not decode: {0}")]
    Record(#[from] serde_json::Error),
    #[error("notify store of format {found}; this server reads format {FORMAT_VERSION}")]
    Format { found: u32 },
}

fn db_error<E: std::fmt::Display>(error: E) -> StoreError {
    StoreError::Database(error.to_string())
}

pub(super) struct Store {
    database: Database,
}

/// What the store held at start-up.
pub(super) struct Loaded {
    pub alerts: BTreeMap<u64, AlertRecord>,
    pub deliveries: BTreeMap<u64, Delivery>,
}

impl Store {
    pub(super) fn open(path: &Path) -> Result<(Store, Loaded), StoreError> {
        let database = Database::create(path).map_err(db_error)?;
        let write = database.begin_write().map_err(db_error)?;
        write.open_table(ALERTS).map_err(db_error)?;
        write.open_table(DELIVERIES).map_err(db_error)?;
        {
            let mut meta = write.open_table(META).map_err(db_error)?;
            let found = meta
                .get("format")
                .map_err(db_error)?
                .map(|version| version.value());
            match found {
                None => {
                    meta.insert("format", FORMAT_VERSION).map_err(db_error)?;
                }
                Some(FORMAT_VERSION) => {}
                Some(found) => return Err(StoreError::Format { found }),
            }
        }
        write.commit().map_err(db_error)?;
        let read = database.begin_read().map_err(db_error)?;
        let mut loaded = Loaded {
            alerts: BTreeMap::new(),
            deliveries: BTreeMap::new(),
        };
        for entry in read
            .open_table(ALERTS)
            .map_err(db_error)?
            .iter()
            .map_err(db_error)?
        {
            let (id, value) = entry.map_err(db_error)?;
            match serde_json::from_slice(value.value()) {
                Ok(record) => {
                    loaded.alerts.insert(id.value(), record);
                }
                Err(error) => {
                    tracing::error!(id = id.value(), %error, "Skipping an alert record that does not decode.");
                }
            }
        }
        for entry in read
            .open_table(DELIVERIES)
            .map_err(db_error)?
            .iter()
            .map_err(db_error)?
        {
            let (id, value) = entry.map_err(db_error)?;
            match serde_json::from_slice(value.value()) {
                Ok(delivery) => {
                    loaded.deliveries.insert(id.value(), delivery);
                }
                Err(error) => {
                    tracing::error!(id = id.value(), %error, "Skipping a delivery record that does not decode.");
                }
            }
        }
        drop(read);
        Ok((Store { database }, loaded))
    }

    /// Writes these records in one synced transaction.
    pub(super) fn save(
        &self,
        alerts: &[&AlertRecord],
        deliveries: &[&Delivery],
    ) -> Result<(), StoreError> {
        if alerts.is_empty() && deliveries.is_empty() {
            return Ok(());
        }
        let write = self.database.begin_write().map_err(db_error)?;
        {
            let mut table = write.open_table(ALERTS).map_err(db_error)?;
            for record in alerts {
                let bytes = serde_json::to_vec(record)?;
                table
                    .insert(record.notice.id, bytes.as_slice())
                    .map_err(db_error)?;
            }
            let mut table = write.open_table(DELIVERIES).map_err(db_error)?;
            for delivery in deliveries {
                let bytes = serde_json::to_vec(delivery)?;
                table
                    .insert(delivery.id, bytes.as_slice())
                    .map_err(db_error)?;
            }
        }
        write.commit().map_err(db_error)
    }

    /// Removes these records in one synced transaction.
    pub(super) fn delete(&self, alerts: &[u64], deliveries: &[u64]) -> Result<(), StoreError> {
        if alerts.is_empty() && deliveries.is_empty() {
            return Ok(());
        }
        let write = self.database.begin_write().map_err(db_error)?;
        {
            let mut table = write.open_table(ALERTS).map_err(db_error)?;
            for id in alerts {
                table.remove(*id).map_err(db_error)?;
            }
            let mut table = write.open_table(DELIVERIES).map_err(db_error)?;
            for id in deliveries {
                table.remove(*id).map_err(db_error)?;
            }
        }
        write.commit().map_err(db_error)
    }
}
