//! Identity schemas: JSON Schema validation of traits and the `ory.sh/kratos` extension that
//! marks traits as password identifiers, code addresses (`via: email | sms`), and verification /
//! recovery addresses. STUB: filled in by the config/schema work.
use super::aal::Channel;
use super::error::FieldViolation;
use super::identity::Identifier;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the `ory.sh/kratos` extension says about one trait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraitMarkers {
    /// Dotted path under `traits` (`email`, `name.first`).
    pub trait_name: String,
    pub password_identifier: bool,
    pub webauthn_identifier: bool,
    pub totp_account_name: bool,
    /// `credentials.code.identifier: true` with its `via`.
    pub code_via: Option<Channel>,
    pub recovery_via: Option<Channel>,
    pub verification_via: Option<Channel>,
}

/// An address that can be verified, found in the traits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressCandidate {
    pub trait_name: String,
    pub value: String,
    pub channel: Channel,
}

/// Traits after validation and normalisation, with what the extension derives from them.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractedTraits {
    /// The traits with identifier values normalised in place (lower-cased emails, E.164 phones).
    pub traits: Value,
    pub identifiers: Vec<Identifier>,
    /// Addresses marked for verification or as code identifiers, deduplicated.
    pub addresses: Vec<AddressCandidate>,
}

#[derive(Debug)]
pub struct IdentitySchema {
    id: String,
    raw: Value,
    markers: Vec<TraitMarkers>,
}

impl IdentitySchema {
    /// Compiles a schema document; problems are reported with JSON pointers into the document.
    pub fn compile(id: &str, raw: Value) -> Result<Self, Vec<FieldViolation>> {
        let _ = (id, raw);
        unimplemented!("schema compile")
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    pub fn markers(&self) -> &[TraitMarkers] {
        &self.markers
    }

    /// Validates `traits` against the schema and derives identifiers and addresses. Field
    /// violations name the field as `traits.<path>`.
    pub fn extract(&self, traits: &Value) -> Result<ExtractedTraits, Vec<FieldViolation>> {
        let _ = traits;
        unimplemented!("schema extract")
    }
}

/// Every configured schema by id, with the default.
#[derive(Debug, Clone)]
pub struct SchemaRegistry {
    schemas: BTreeMap<String, Arc<IdentitySchema>>,
    default_id: String,
}

impl SchemaRegistry {
    pub fn new(schemas: Vec<IdentitySchema>, default_id: String) -> Self {
        let schemas = schemas
            .into_iter()
            .map(|schema| (schema.id.clone(), Arc::new(schema)))
            .collect();
        Self {
            schemas,
            default_id,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<IdentitySchema>> {
        self.schemas.get(id).cloned()
    }

    /// The schema for `id`, or the default schema when `id` is empty.
    pub fn resolve(&self, id: &str) -> Option<Arc<IdentitySchema>> {
        if id.is_empty() {
            self.get(&self.default_id)
        } else {
            self.get(id)
        }
    }

    pub fn default_id(&self) -> &str {
        &self.default_id
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<IdentitySchema>> {
        self.schemas.values()
    }
}
