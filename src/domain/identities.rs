//! Identity administration: create, read, list, update traits, delete. Traits are validated and
//! normalised by the identity schema before anything is stored.
use super::error::{DomainError, DomainResult, FieldViolation};
use super::identity::{CredentialKind, Identifier, Identity, IdentityState, VerifiableAddress};
use super::paging::PageRequest;
use super::schema::{AddressCandidate, ExtractedTraits, IdentitySchema};
use super::{Context, Settings, password};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// What a caller asks for when creating an identity.
#[derive(Debug, Clone, Default)]
pub struct NewIdentity {
    pub schema_id: String,
    pub traits: Value,
    pub password: Option<String>,
    /// Address values (as they appear in the traits) to record as already verified.
    pub verified_addresses: Vec<String>,
}

pub struct IdentityPage {
    pub identities: Vec<Identity>,
    pub next_page_token: Option<String>,
}

fn schema_for(context: &Context, schema_id: &str) -> DomainResult<std::sync::Arc<IdentitySchema>> {
    context
        .settings()
        .schemas
        .resolve(schema_id)
        .ok_or_else(|| DomainError::SchemaNotFound(schema_id.to_owned()))
}

fn extract(schema: &IdentitySchema, traits: &Value) -> DomainResult<ExtractedTraits> {
    schema.extract(traits).map_err(DomainError::TraitsInvalid)
}

/// Turns a store collision into an error that names the trait, so a UI can point at the field.
fn name_collision(error: StoreError) -> DomainError {
    match error {
        StoreError::IdentifierTaken { trait_name, .. } => DomainError::IdentifierTaken {
            field: format!("traits.{trait_name}"),
        },
        other => DomainError::Store(other),
    }
}

fn addresses_from(
    candidates: &[AddressCandidate],
    previous: &[VerifiableAddress],
    newly_verified: &[String],
    now: DateTime<Utc>,
) -> Vec<VerifiableAddress> {
    candidates
        .iter()
        .map(|candidate| {
            let kept = previous
                .iter()
                .find(|old| old.channel == candidate.channel && old.value == candidate.value);
            let verified_now = newly_verified.iter().any(|value| value == &candidate.value);
            VerifiableAddress {
                id: kept.map(|old| old.id).unwrap_or_else(Uuid::now_v7),
                value: candidate.value.clone(),
                channel: candidate.channel,
                trait_name: candidate.trait_name.clone(),
                verified: verified_now || kept.is_some_and(|old| old.verified),
                verified_at: match kept.and_then(|old| old.verified_at) {
                    Some(at) => Some(at),
                    None if verified_now => Some(now),
                    None => None,
                },
            }
        })
        .collect()
}

/// Creates an identity (registration and the admin API share this).
pub async fn create_identity(context: &Context, new: NewIdentity) -> DomainResult<Identity> {
    let settings = context.settings();
    let schema = schema_for(context, &new.schema_id)?;
    let extracted = extract(&schema, &new.traits)?;

    let mut unknown = Vec::new();
    let mut verified = Vec::new();
    for (index, value) in new.verified_addresses.iter().enumerate() {
        let normalised = normalise_identifier(value);
        match extracted
            .addresses
            .iter()
            .find(|address| address.value == normalised)
        {
            Some(address) => verified.push(address.value.clone()),
            None => unknown.push(FieldViolation::new(
                format!("verified_addresses[{index}]"),
                "is not one of the identity's addresses",
            )),
        }
    }
    if !unknown.is_empty() {
        return Err(DomainError::Validation(unknown));
    }

    let password_hash = match new.password.filter(|password| !password.is_empty()) {
        Some(password) => {
            let min_length = settings
                .config
                .selfservice
                .methods
                .password
                .config
                .min_password_length;
            password::check_policy("password", &password, min_length)?;
            Some(password::hash(password).await?)
        }
        None => None,
    };

    let now = context.clock.now();
    let identity = Identity {
        id: Uuid::now_v7(),
        schema_id: schema.id().to_owned(),
        verifiable_addresses: addresses_from(&extracted.addresses, &[], &verified, now),
        traits: extracted.traits,
        state: IdentityState::Active,
        identifiers: extracted.identifiers,
        has_password: password_hash.is_some(),
        created_at: now,
        updated_at: now,
    };
    context
        .stores
        .identities
        .insert_identity(&identity, password_hash.as_deref())
        .await
        .map_err(name_collision)?;
    tracing::info!(identity_id = %identity.id, schema_id = %identity.schema_id, "identity created");
    Ok(identity)
}

pub async fn get_identity(context: &Context, id: Uuid) -> DomainResult<Identity> {
    context
        .stores
        .identities
        .get_identity(id)
        .await?
        .ok_or(DomainError::IdentityNotFound)
}

/// One page of identities, or the one identity holding `identifier` when it is given.
pub async fn list_identities(
    context: &Context,
    page_size: u32,
    page_token: &str,
    identifier: &str,
) -> DomainResult<IdentityPage> {
    if !identifier.is_empty() {
        let identity = find_by_any_identifier(context, identifier).await?;
        return Ok(IdentityPage {
            identities: identity.into_iter().collect(),
            next_page_token: None,
        });
    }
    let page = PageRequest::parse(page_size, page_token)?;
    let mut identities = context
        .stores
        .identities
        .list_identities(page.cursor, page.fetch())
        .await?;
    let next_page_token = page.finish(&mut identities, |identity| identity.id);
    Ok(IdentityPage {
        identities,
        next_page_token,
    })
}

pub async fn update_traits(context: &Context, id: Uuid, traits: Value) -> DomainResult<Identity> {
    let mut identity = get_identity(context, id).await?;
    let schema = schema_for(context, &identity.schema_id)?;
    let extracted = extract(&schema, &traits)?;
    let now = context.clock.now();
    identity.verifiable_addresses = addresses_from(
        &extracted.addresses,
        &identity.verifiable_addresses,
        &[],
        now,
    );
    identity.traits = extracted.traits;
    identity.identifiers = extracted.identifiers;
    identity.updated_at = now;
    let updated = context
        .stores
        .identities
        .update_identity(&identity)
        .await
        .map_err(name_collision)?;
    if !updated {
        return Err(DomainError::IdentityNotFound);
    }
    tracing::info!(identity_id = %identity.id, "identity traits updated");
    Ok(identity)
}

pub async fn delete_identity(context: &Context, id: Uuid) -> DomainResult<()> {
    if !context.stores.identities.delete_identity(id).await? {
        return Err(DomainError::IdentityNotFound);
    }
    tracing::info!(identity_id = %id, "identity deleted");
    Ok(())
}

/// The identity's code address in trait `via`: the trait must be a code identifier in the
/// identity's schema (else `ViaTraitUnknown`) and hold a value (else `ViaTraitEmpty`).
pub fn code_address_via(
    settings: &Settings,
    identity: &Identity,
    via: &str,
) -> DomainResult<Identifier> {
    let is_code_trait = settings
        .schemas
        .get(&identity.schema_id)
        .is_some_and(|schema| {
            schema
                .code_traits()
                .any(|markers| markers.trait_name == via)
        });
    if !is_code_trait {
        return Err(DomainError::ViaTraitUnknown(via.to_owned()));
    }
    identity
        .code_addresses()
        .find(|address| address.trait_name == via)
        .cloned()
        .ok_or_else(|| DomainError::ViaTraitEmpty(via.to_owned()))
}

/// Brings a typed identifier to the stored form: emails lower-cased, phone numbers in E.164.
pub fn normalise_identifier(input: &str) -> String {
    let trimmed = input.trim();
    if trimmed.contains('@') {
        return trimmed.to_lowercase();
    }
    if trimmed.starts_with('+')
        && let Ok(number) = phonenumber::parse(None, trimmed)
    {
        return number.format().mode(phonenumber::Mode::E164).to_string();
    }
    trimmed.to_owned()
}

async fn find_by_any_identifier(
    context: &Context,
    identifier: &str,
) -> DomainResult<Option<Identity>> {
    let value = normalise_identifier(identifier);
    for kind in [CredentialKind::Password, CredentialKind::Code] {
        if let Some(identity) = context
            .stores
            .identities
            .find_by_identifier(kind, &value)
            .await?
        {
            return Ok(Some(identity));
        }
    }
    Ok(None)
}
