//! Identities: `IdentityStore`, and decoding an identity's row with its identifiers and addresses.
use super::{PostgresStore, commit, decode_all};
use crate::domain::identity::{CredentialKind, Identifier, Identity, VerifiableAddress};
use crate::store::sql_common::{
    AddressRow, IdentifierRow, IdentityRow, StoredAddress, assemble, corrupt, map_error,
    map_identifier_insert_error, merge_addresses,
};
use crate::store::{IdentityStore, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::types::Json;
use uuid::Uuid;

/// An identity with its identifiers and addresses in one statement, so it is read from one
/// snapshot in one round trip (a statement sees one snapshot even outside a transaction).
macro_rules! identity_select {
    () => {
        concat!("SELECT ", identity_columns!(), "FROM identities i ")
    };
}

/// Children of an identity as `identity_columns!` aggregates them.
#[derive(serde::Deserialize)]
struct IdentifierJson {
    kind: String,
    value: String,
    trait_name: String,
    channel: Option<String>,
}

#[derive(serde::Deserialize)]
struct AddressJson {
    id: Uuid,
    value: String,
    channel: String,
    trait_name: String,
    verified: bool,
    verified_at: Option<DateTime<Utc>>,
}

fn identity_row(row: &PgRow) -> Result<IdentityRow, sqlx::Error> {
    Ok(IdentityRow {
        id: row.try_get("id")?,
        schema_id: row.try_get("schema_id")?,
        traits: row.try_get::<Json<Value>, _>("traits")?.0,
        state: row.try_get("state")?,
        has_password: row.try_get("has_password")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Decodes one row of `identity_columns!` into a complete identity.
pub(super) fn identity_from(row: &PgRow) -> StoreResult<Identity> {
    let decode = || -> Result<_, sqlx::Error> {
        let identity = identity_row(row)?;
        let identifiers = row
            .try_get::<Json<Vec<IdentifierJson>>, _>("identifiers")?
            .0;
        let addresses = row.try_get::<Json<Vec<AddressJson>>, _>("addresses")?.0;
        Ok((identity, identifiers, addresses))
    };
    let (identity, identifiers, addresses) =
        decode().map_err(|error| map_error("decode identity", error))?;
    let identity_id = identity.id;
    let identifiers = identifiers
        .into_iter()
        .map(|identifier| IdentifierRow {
            identity_id,
            kind: identifier.kind,
            value: identifier.value,
            trait_name: identifier.trait_name,
            channel: identifier.channel,
        })
        .collect();
    let addresses = addresses
        .into_iter()
        .map(|address| AddressRow {
            id: address.id,
            identity_id,
            value: address.value,
            channel: address.channel,
            trait_name: address.trait_name,
            verified: address.verified,
            verified_at: address.verified_at,
        })
        .collect();
    assemble(vec![identity], identifiers, addresses)?
        .pop()
        .ok_or_else(|| corrupt("identity row assembled into nothing"))
}

async fn insert_children(
    conn: &mut PgConnection,
    identity_id: Uuid,
    identifiers: &[Identifier],
    addresses: &[VerifiableAddress],
) -> StoreResult<()> {
    // One statement per identifier, so a collision names exactly the identifier that collided.
    for (position, identifier) in identifiers.iter().enumerate() {
        sqlx::query(
            "INSERT INTO identity_identifiers \
             (identity_id, position, kind, value, trait_name, channel) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(identity_id)
        .bind(position as i32)
        .bind(identifier.kind.as_str())
        .bind(&identifier.value)
        .bind(&identifier.trait_name)
        .bind(identifier.channel.map(|channel| channel.as_str()))
        .execute(&mut *conn)
        .await
        .map_err(|error| map_identifier_insert_error(identifier, error))?;
    }
    for (position, address) in addresses.iter().enumerate() {
        sqlx::query(
            "INSERT INTO identity_verifiable_addresses \
             (id, identity_id, position, value, channel, trait_name, verified, verified_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(address.id)
        .bind(identity_id)
        .bind(position as i32)
        .bind(&address.value)
        .bind(address.channel.as_str())
        .bind(&address.trait_name)
        .bind(address.verified)
        .bind(address.verified_at)
        .execute(&mut *conn)
        .await
        .map_err(|error| map_error("insert address", error))?;
    }
    Ok(())
}

#[async_trait]
impl IdentityStore for PostgresStore {
    async fn insert_identity(
        &self,
        identity: &Identity,
        password_hash: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO identities (id, schema_id, traits, state, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(identity.id)
        .bind(&identity.schema_id)
        .bind(Json(&identity.traits))
        .bind(identity.state.as_str())
        .bind(identity.created_at)
        .bind(identity.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|error| map_error("insert identity", error))?;
        insert_children(
            &mut tx,
            identity.id,
            &identity.identifiers,
            &identity.verifiable_addresses,
        )
        .await?;
        if let Some(hash) = password_hash {
            sqlx::query(
                "INSERT INTO identity_credentials \
                 (identity_id, kind, password_hash, created_at, updated_at) \
                 VALUES ($1, 'password', $2, $3, $3)",
            )
            .bind(identity.id)
            .bind(hash)
            .bind(identity.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("insert password credential", error))?;
        }
        commit(tx).await
    }

    async fn update_identity(&self, identity: &Identity) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        // Updating the identity row first locks it, so concurrent updates of one identity queue
        // up instead of interleaving their identifier and address rewrites.
        let updated = sqlx::query(
            "UPDATE identities SET schema_id = $2, traits = $3, state = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(identity.id)
        .bind(&identity.schema_id)
        .bind(Json(&identity.traits))
        .bind(identity.state.as_str())
        .bind(identity.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|error| map_error("update identity", error))?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        let stored = sqlx::query(
            "SELECT id, channel, value, verified, verified_at FROM identity_verifiable_addresses \
             WHERE identity_id = $1",
        )
        .bind(identity.id)
        .fetch_all(&mut *tx)
        .await
        .map_err(|error| map_error("load addresses", error))?;
        let stored = decode_all(&stored, stored_address_row, "decode address")?;
        let addresses = merge_addresses(&identity.verifiable_addresses, &stored);
        sqlx::query("DELETE FROM identity_identifiers WHERE identity_id = $1")
            .bind(identity.id)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("delete identifiers", error))?;
        sqlx::query("DELETE FROM identity_verifiable_addresses WHERE identity_id = $1")
            .bind(identity.id)
            .execute(&mut *tx)
            .await
            .map_err(|error| map_error("delete addresses", error))?;
        insert_children(&mut tx, identity.id, &identity.identifiers, &addresses).await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn get_identity(&self, id: Uuid) -> StoreResult<Option<Identity>> {
        let row = sqlx::query(concat!(identity_select!(), "WHERE i.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| map_error("get identity", error))?;
        row.as_ref().map(identity_from).transpose()
    }

    async fn find_by_identifier(
        &self,
        kind: CredentialKind,
        value: &str,
    ) -> StoreResult<Option<Identity>> {
        let row = sqlx::query(concat!(
            identity_select!(),
            "WHERE i.id = (SELECT identity_id FROM identity_identifiers \
                           WHERE kind = $1 AND value = $2)"
        ))
        .bind(kind.as_str())
        .bind(value)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| map_error("find identity by identifier", error))?;
        row.as_ref().map(identity_from).transpose()
    }

    async fn password_hash(&self, identity_id: Uuid) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT password_hash FROM identity_credentials \
             WHERE identity_id = $1 AND kind = 'password'",
        )
        .bind(identity_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| map_error("get password hash", error))?;
        row.map(|row| row.try_get("password_hash"))
            .transpose()
            .map_err(|error| map_error("decode password hash", error))
    }

    async fn list_identities(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Identity>> {
        let rows = sqlx::query(concat!(
            identity_select!(),
            "WHERE ($1::uuid IS NULL OR i.id > $1) ORDER BY i.id LIMIT $2"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|error| map_error("list identities", error))?;
        rows.iter().map(identity_from).collect()
    }

    async fn delete_identity(&self, id: Uuid) -> StoreResult<bool> {
        // Credentials, identifiers, addresses and sessions go with it (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM identities WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|error| map_error("delete identity", error))?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn mark_address_verified(
        &self,
        identity_id: Uuid,
        value: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // The first verification time is kept when an address is verified again.
        let updated = sqlx::query(
            "UPDATE identity_verifiable_addresses \
             SET verified = true, verified_at = COALESCE(verified_at, $3) \
             WHERE identity_id = $1 AND value = $2",
        )
        .bind(identity_id)
        .bind(value)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(|error| map_error("mark address verified", error))?;
        Ok(updated.rows_affected() > 0)
    }
}

fn stored_address_row(row: &PgRow) -> Result<StoredAddress, sqlx::Error> {
    Ok(StoredAddress {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        value: row.try_get("value")?,
        verified: row.try_get("verified")?,
        verified_at: row.try_get("verified_at")?,
    })
}
