//! Identity schemas: JSON Schema validation of traits and the `ory.sh/kratos` extension that
//! marks traits as password identifiers, code addresses (`via: email | sms`), and verification /
//! recovery addresses. Schemas are the ones Kratos users already have, so the extension is read
//! the Kratos way and unknown extension keys are tolerated.
use super::aal::Channel;
use super::error::FieldViolation;
use super::identity::{CredentialKind, Identifier};
use jsonschema::error::ValidationErrorKind;
use jsonschema::{Retrieve, Uri, ValidationError, Validator};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Id of the built-in schema used when the configuration names none.
pub const DEFAULT_SCHEMA_ID: &str = "default";

/// The seed's identity schema (email + phone), used when `identity.schemas` is empty.
pub const DEFAULT_SCHEMA_JSON: &str = include_str!("default_identity.schema.json");

const EXTENSION_KEY: &str = "ory.sh/kratos";

const INVALID_PHONE: &str = "must be a valid phone number in international format (+4915112345678)";

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

impl TraitMarkers {
    fn is_empty(&self) -> bool {
        !self.password_identifier
            && !self.webauthn_identifier
            && !self.totp_account_name
            && self.code_via.is_none()
            && self.recovery_via.is_none()
            && self.verification_via.is_none()
    }

    /// The channel any address marker gives this trait, code first.
    fn channel(&self) -> Option<Channel> {
        self.code_via
            .or(self.verification_via)
            .or(self.recovery_via)
    }
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

/// How a trait's value is brought to one canonical form before comparison and storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Normalisation {
    Email,
    Phone,
}

#[derive(Debug)]
pub struct IdentitySchema {
    id: String,
    raw: Value,
    markers: Vec<TraitMarkers>,
    normalisations: Vec<(String, Normalisation)>,
    validator: Validator,
}

impl IdentitySchema {
    /// Compiles a schema document; problems are reported with JSON pointers into the document.
    pub fn compile(id: &str, raw: Value) -> Result<Self, Vec<FieldViolation>> {
        if !raw.is_object() {
            return Err(vec![FieldViolation::new(
                "",
                "an identity schema must be a json object",
            )]);
        }
        let validator = build_validator(&raw).map_err(|error| vec![schema_error(&error)])?;
        let traits = traits_properties(&raw)?;
        let mut walk = MarkerWalk::default();
        walk.visit_properties(traits, "", "/properties/traits/properties");
        if !walk.violations.is_empty() {
            return Err(walk.violations);
        }
        Ok(Self {
            id: id.to_string(),
            raw,
            markers: walk.markers,
            normalisations: walk.normalisations,
            validator,
        })
    }

    /// The built-in schema of the seed (email + phone) with id `default`.
    pub fn builtin() -> Result<Self, Vec<FieldViolation>> {
        let raw: Value = serde_json::from_str(DEFAULT_SCHEMA_JSON).map_err(|_| {
            vec![FieldViolation::new(
                "",
                "the built-in identity schema is not json",
            )]
        })?;
        Self::compile(DEFAULT_SCHEMA_ID, raw)
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

    /// The markers of one trait by dotted name, if the extension says anything about it.
    pub fn trait_markers(&self, trait_name: &str) -> Option<&TraitMarkers> {
        self.markers.iter().find(|m| m.trait_name == trait_name)
    }

    /// Traits marked as code identifiers: where one-time codes may go.
    pub fn code_traits(&self) -> impl Iterator<Item = &TraitMarkers> {
        self.markers.iter().filter(|m| m.code_via.is_some())
    }

    /// Validates `traits` against the schema and derives identifiers and addresses. Field
    /// violations name the field as `traits.<path>`.
    pub fn extract(&self, traits: &Value) -> Result<ExtractedTraits, Vec<FieldViolation>> {
        let mut traits = traits.clone();
        let mut violations = self.normalise(&mut traits);
        // Kratos validates the whole identity document, so schemas address `properties.traits`.
        let document = serde_json::json!({ "traits": traits });
        for error in self.validator.iter_errors(&document) {
            for violation in instance_violations(&error) {
                if !violations.iter().any(|v| v.field == violation.field) {
                    violations.push(violation);
                }
            }
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        let traits = match document {
            Value::Object(mut map) => map.remove("traits").unwrap_or(Value::Null),
            other => other,
        };
        Ok(ExtractedTraits {
            identifiers: self.identifiers(&traits),
            addresses: self.addresses(&traits),
            traits,
        })
    }

    /// Lower-cases emails and rewrites phones to E.164 in place; refuses phones that are not
    /// valid international numbers.
    fn normalise(&self, traits: &mut Value) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        for (trait_name, normalisation) in &self.normalisations {
            let Some(Value::String(value)) = trait_value_mut(traits, trait_name) else {
                continue;
            };
            match normalisation {
                Normalisation::Email => *value = value.trim().to_lowercase(),
                Normalisation::Phone => {
                    if value.trim().is_empty() {
                        continue;
                    }
                    match normalise_phone(value) {
                        Some(e164) => *value = e164,
                        None => violations.push(FieldViolation::new(
                            format!("traits.{trait_name}"),
                            INVALID_PHONE,
                        )),
                    }
                }
            }
        }
        violations
    }

    fn identifiers(&self, traits: &Value) -> Vec<Identifier> {
        let mut identifiers = Vec::new();
        for markers in &self.markers {
            let Some(value) = trait_string(traits, &markers.trait_name) else {
                continue;
            };
            if markers.password_identifier {
                identifiers.push(Identifier {
                    kind: CredentialKind::Password,
                    value: value.to_string(),
                    trait_name: markers.trait_name.clone(),
                    channel: None,
                });
            }
            if let Some(channel) = markers.code_via {
                identifiers.push(Identifier {
                    kind: CredentialKind::Code,
                    value: value.to_string(),
                    trait_name: markers.trait_name.clone(),
                    channel: Some(channel),
                });
            }
        }
        identifiers
    }

    fn addresses(&self, traits: &Value) -> Vec<AddressCandidate> {
        let mut addresses: Vec<AddressCandidate> = Vec::new();
        for markers in &self.markers {
            let Some(value) = trait_string(traits, &markers.trait_name) else {
                continue;
            };
            for channel in [markers.verification_via, markers.code_via]
                .into_iter()
                .flatten()
            {
                let known = addresses
                    .iter()
                    .any(|a| a.value == value && a.channel == channel);
                if !known {
                    addresses.push(AddressCandidate {
                        trait_name: markers.trait_name.clone(),
                        value: value.to_string(),
                        channel,
                    });
                }
            }
        }
        addresses
    }
}

/// Refuses every remote or file reference: a schema must be self-contained, and compiling one
/// must never reach the network.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("external references are not supported ({})", uri.as_str()).into())
    }
}

fn build_validator(raw: &Value) -> Result<Validator, ValidationError<'static>> {
    jsonschema::options()
        .should_validate_formats(true)
        // Phones are checked with libphonenumber during normalisation, not by the validator.
        .with_format("tel", |_: &str| true)
        .with_retriever(NoRetrieval)
        .build(raw)
}

fn schema_error(error: &ValidationError<'_>) -> FieldViolation {
    let pointer = error.instance_path().as_str().to_string();
    FieldViolation::new(pointer, lowercase_first(&error.to_string()))
}

fn traits_properties(raw: &Value) -> Result<&Map<String, Value>, Vec<FieldViolation>> {
    let traits = raw.pointer("/properties/traits").ok_or_else(|| {
        vec![FieldViolation::new(
            "/properties/traits",
            "an identity schema must define properties.traits",
        )]
    })?;
    let is_object_type = match traits.get("type") {
        Some(Value::String(kind)) => kind == "object",
        _ => false,
    };
    if !is_object_type {
        return Err(vec![FieldViolation::new(
            "/properties/traits/type",
            "properties.traits must be of type object",
        )]);
    }
    match traits.get("properties") {
        None => Ok(EMPTY_MAP.get_or_init(Map::new)),
        Some(Value::Object(properties)) => Ok(properties),
        Some(_) => Err(vec![FieldViolation::new(
            "/properties/traits/properties",
            "properties.traits.properties must be an object",
        )]),
    }
}

static EMPTY_MAP: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();

/// Collects markers and normalisations from `properties.traits.properties`, recursively.
#[derive(Default)]
struct MarkerWalk {
    markers: Vec<TraitMarkers>,
    normalisations: Vec<(String, Normalisation)>,
    violations: Vec<FieldViolation>,
}

impl MarkerWalk {
    fn visit_properties(&mut self, properties: &Map<String, Value>, prefix: &str, pointer: &str) {
        for (name, property) in properties {
            let trait_name = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let property_pointer = format!("{pointer}/{}", escape_pointer(name));
            self.visit_property(property, &trait_name, &property_pointer);
        }
    }

    fn visit_property(&mut self, property: &Value, trait_name: &str, pointer: &str) {
        let markers = match property.get(EXTENSION_KEY) {
            Some(extension) => {
                let extension_pointer = format!("{pointer}/{}", escape_pointer(EXTENSION_KEY));
                self.read_extension(extension, trait_name, &extension_pointer)
            }
            None => TraitMarkers::default(),
        };
        let normalisation = match property.get("format").and_then(Value::as_str) {
            Some("email") => Some(Normalisation::Email),
            Some("tel") => Some(Normalisation::Phone),
            _ => markers.channel().map(|channel| match channel {
                Channel::Email => Normalisation::Email,
                Channel::Sms => Normalisation::Phone,
            }),
        };
        if let Some(normalisation) = normalisation {
            self.normalisations
                .push((trait_name.to_string(), normalisation));
        }
        if !markers.is_empty() {
            self.markers.push(TraitMarkers {
                trait_name: trait_name.to_string(),
                ..markers
            });
        }
        if let Some(Value::Object(nested)) = property.get("properties") {
            self.visit_properties(nested, trait_name, &format!("{pointer}/properties"));
        }
    }

    fn read_extension(
        &mut self,
        extension: &Value,
        trait_name: &str,
        pointer: &str,
    ) -> TraitMarkers {
        let flag = |path: &str| {
            extension
                .pointer(path)
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let mut markers = TraitMarkers {
            trait_name: trait_name.to_string(),
            password_identifier: flag("/credentials/password/identifier"),
            webauthn_identifier: flag("/credentials/webauthn/identifier"),
            totp_account_name: flag("/credentials/totp/account_name"),
            ..TraitMarkers::default()
        };
        if flag("/credentials/code/identifier") {
            markers.code_via = self.channel_at(extension, pointer, "/credentials/code/via", true);
        }
        markers.recovery_via = self.channel_at(extension, pointer, "/recovery/via", false);
        markers.verification_via = self.channel_at(extension, pointer, "/verification/via", false);
        markers
    }

    /// Reads a `via`; a missing one is an error only where the marker needs it.
    fn channel_at(
        &mut self,
        extension: &Value,
        pointer: &str,
        path: &str,
        required: bool,
    ) -> Option<Channel> {
        let value = extension.pointer(path);
        if value.is_none() && !required {
            return None;
        }
        let channel = value.and_then(Value::as_str).and_then(Channel::parse);
        if channel.is_none() {
            self.violations.push(FieldViolation::new(
                format!("{pointer}{path}"),
                "via must be \"email\" or \"sms\"",
            ));
        }
        channel
    }
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn unescape_pointer(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

/// `/traits/name/first` → `traits.name.first`; array indexes become `[n]`.
fn pointer_to_field(pointer: &str) -> String {
    let mut field = String::new();
    // A pointer starts with `/`; the text before it is not a segment.
    for segment in pointer
        .strip_prefix('/')
        .into_iter()
        .flat_map(|rest| rest.split('/'))
    {
        if !field.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) && !segment.is_empty() {
            field.push_str(&format!("[{segment}]"));
            continue;
        }
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(&unescape_pointer(segment));
    }
    if field.is_empty() {
        "traits".into()
    } else {
        field
    }
}

fn child_field(parent: &str, name: &str) -> String {
    format!("{parent}.{name}")
}

/// Turns one validation error into field violations whose text never repeats the value (it may
/// be a phone number or an email address).
fn instance_violations(error: &ValidationError<'_>) -> Vec<FieldViolation> {
    let field = pointer_to_field(error.instance_path().as_str());
    let violation = |description: String| vec![FieldViolation::new(field.clone(), description)];
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_string);
            vec![FieldViolation::new(
                child_field(&field, &name),
                "is required",
            )]
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => unexpected
            .iter()
            .map(|name| FieldViolation::new(child_field(&field, name), "is not allowed"))
            .collect(),
        ValidationErrorKind::Format { format } if format == "email" => {
            violation("must be a valid email address".into())
        }
        ValidationErrorKind::Format { format } => violation(format!("must be a valid {format}")),
        ValidationErrorKind::Type { kind } => {
            violation(format!("must be of type {}", type_name(kind)))
        }
        ValidationErrorKind::MinLength { limit } => {
            violation(format!("must be at least {limit} characters long"))
        }
        ValidationErrorKind::MaxLength { limit } => {
            violation(format!("must be at most {limit} characters long"))
        }
        ValidationErrorKind::Minimum { limit }
        | ValidationErrorKind::ExclusiveMinimum { limit } => {
            violation(format!("must not be less than {limit}"))
        }
        ValidationErrorKind::Maximum { limit }
        | ValidationErrorKind::ExclusiveMaximum { limit } => {
            violation(format!("must not be more than {limit}"))
        }
        ValidationErrorKind::MinItems { limit } => {
            violation(format!("must have at least {limit} items"))
        }
        ValidationErrorKind::MaxItems { limit } => {
            violation(format!("must have at most {limit} items"))
        }
        ValidationErrorKind::Pattern { .. } => {
            violation("does not match the required pattern".into())
        }
        ValidationErrorKind::Enum { .. } | ValidationErrorKind::Constant { .. } => {
            violation("is not one of the allowed values".into())
        }
        ValidationErrorKind::UniqueItems => violation("must not contain duplicates".into()),
        _ => violation("is invalid".into()),
    }
}

fn type_name(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(one) => one.as_str().to_string(),
        jsonschema::error::TypeKind::Multiple(set) => set
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn normalise_phone(value: &str) -> Option<String> {
    let trimmed = value.trim();
    // Without a default region only the international form is unambiguous.
    if !trimmed.starts_with('+') {
        return None;
    }
    let number = phonenumber::parse(None, trimmed).ok()?;
    if !number.is_valid() {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

fn trait_value_mut<'a>(traits: &'a mut Value, trait_name: &str) -> Option<&'a mut Value> {
    trait_name.split('.').try_fold(traits, |value, segment| {
        value.as_object_mut()?.get_mut(segment)
    })
}

fn trait_string<'a>(traits: &'a Value, trait_name: &str) -> Option<&'a str> {
    let value = trait_name
        .split('.')
        .try_fold(traits, |value, segment| value.as_object()?.get(segment))?
        .as_str()?;
    if value.is_empty() { None } else { Some(value) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed() -> IdentitySchema {
        IdentitySchema::builtin().expect("the seed schema compiles")
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn seed_schema_markers() {
        let schema = seed();
        assert_eq!(schema.id(), DEFAULT_SCHEMA_ID);
        let email = schema.trait_markers("email").expect("email markers");
        assert!(email.password_identifier);
        assert!(email.webauthn_identifier);
        assert!(email.totp_account_name);
        assert_eq!(email.code_via, Some(Channel::Email));
        assert_eq!(email.recovery_via, Some(Channel::Email));
        assert_eq!(email.verification_via, Some(Channel::Email));
        let phone = schema.trait_markers("phone").expect("phone markers");
        assert_eq!(
            phone,
            &TraitMarkers {
                trait_name: "phone".into(),
                code_via: Some(Channel::Sms),
                ..TraitMarkers::default()
            }
        );
        let code: Vec<&str> = schema
            .code_traits()
            .map(|m| m.trait_name.as_str())
            .collect();
        assert_eq!(code, ["email", "phone"]);
    }

    #[test]
    fn extract_normalises_and_derives() {
        let extracted = seed()
            .extract(&json!({"email": " Jane@Example.COM", "phone": "+49 151 12345678"}))
            .expect("valid traits");
        assert_eq!(
            extracted.traits,
            json!({"email": "jane@example.com", "phone": "+4915112345678"})
        );
        let identifier = |kind, value: &str, trait_name: &str, channel| Identifier {
            kind,
            value: value.into(),
            trait_name: trait_name.into(),
            channel,
        };
        assert_eq!(
            extracted.identifiers,
            vec![
                identifier(CredentialKind::Password, "jane@example.com", "email", None),
                identifier(
                    CredentialKind::Code,
                    "jane@example.com",
                    "email",
                    Some(Channel::Email)
                ),
                identifier(
                    CredentialKind::Code,
                    "+4915112345678",
                    "phone",
                    Some(Channel::Sms)
                ),
            ]
        );
        assert_eq!(
            extracted.addresses,
            vec![
                AddressCandidate {
                    trait_name: "email".into(),
                    value: "jane@example.com".into(),
                    channel: Channel::Email,
                },
                AddressCandidate {
                    trait_name: "phone".into(),
                    value: "+4915112345678".into(),
                    channel: Channel::Sms,
                },
            ]
        );
    }

    #[test]
    fn missing_required_trait_is_named() {
        let violations = seed()
            .extract(&json!({"phone": "+4915112345678"}))
            .unwrap_err();
        assert_eq!(fields(&violations), ["traits.email"]);
    }

    #[test]
    fn extra_property_is_named() {
        let violations = seed()
            .extract(&json!({"email": "a@example.com", "nickname": "jj"}))
            .unwrap_err();
        assert_eq!(fields(&violations), ["traits.nickname"]);
    }

    #[test]
    fn bad_email_is_refused_without_echoing_it() {
        let violations = seed()
            .extract(&json!({"email": "not-an-email"}))
            .unwrap_err();
        assert_eq!(fields(&violations), ["traits.email"]);
        assert!(!violations[0].description.contains("not-an-email"));
    }

    #[test]
    fn invalid_phone_is_refused_without_echoing_it() {
        for phone in ["+1 555", "015112345678", "+49 abc"] {
            let violations = seed()
                .extract(&json!({"email": "a@example.com", "phone": phone}))
                .unwrap_err();
            assert_eq!(
                violations,
                vec![FieldViolation::new("traits.phone", INVALID_PHONE)]
            );
        }
    }

    #[test]
    fn wrong_type_is_reported() {
        let violations = seed().extract(&json!({"email": 5})).unwrap_err();
        assert_eq!(violations[0].field, "traits.email");
        assert_eq!(violations[0].description, "must be of type string");
        let violations = seed().extract(&json!("nope")).unwrap_err();
        assert_eq!(violations[0].field, "traits");
    }

    #[test]
    fn not_a_json_schema_is_refused() {
        let result = IdentitySchema::compile("x", json!({"type": 12}));
        assert!(result.is_err());
        assert!(IdentitySchema::compile("x", json!([1])).is_err());
    }

    #[test]
    fn schema_without_object_traits_is_refused() {
        let violations = IdentitySchema::compile("x", json!({"type": "object"})).unwrap_err();
        assert_eq!(fields(&violations), ["/properties/traits"]);
        let violations =
            IdentitySchema::compile("x", json!({"properties": {"traits": {"type": "string"}}}))
                .unwrap_err();
        assert_eq!(fields(&violations), ["/properties/traits/type"]);
    }

    #[test]
    fn code_identifier_needs_a_known_via() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"traits": {"type": "object", "properties": {
                "phone": {"type": "string", "ory.sh/kratos": {
                    "credentials": {"code": {"identifier": true, "via": "pigeon"}}
                }}
            }}}
        });
        let violations = IdentitySchema::compile("x", schema).unwrap_err();
        assert_eq!(
            fields(&violations),
            ["/properties/traits/properties/phone/ory.sh~1kratos/credentials/code/via"]
        );
    }

    #[test]
    fn nested_traits_get_dotted_names_and_2020_12_works() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"traits": {"type": "object", "properties": {
                "contact": {"type": "object", "properties": {
                    "email": {"type": "string", "format": "email", "ory.sh/kratos": {
                        "verification": {"via": "email"}
                    }}
                }, "required": ["email"]}
            }}}
        });
        let schema = IdentitySchema::compile("nested", schema).expect("compiles");
        assert!(schema.trait_markers("contact.email").is_some());
        let extracted = schema
            .extract(&json!({"contact": {"email": "Bob@Example.com"}}))
            .expect("valid");
        assert_eq!(extracted.addresses[0].value, "bob@example.com");
        assert!(extracted.identifiers.is_empty());
        let violations = schema.extract(&json!({"contact": {}})).unwrap_err();
        assert_eq!(fields(&violations), ["traits.contact.email"]);
    }

    #[test]
    fn remote_references_are_not_fetched() {
        let schema = json!({
            "type": "object",
            "properties": {"traits": {"type": "object", "properties": {
                "x": {"$ref": "https://example.com/never.json"}
            }}}
        });
        assert!(IdentitySchema::compile("remote", schema).is_err());
    }
}
