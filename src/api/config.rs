//! `ConfigService` (admin listener): the configuration and identity schemas at run time.
use super::convert::timestamp;
use super::error::invalid_field;
use crate::domain::configuration::{self, Format};
use crate::domain::{Context, DomainError};
use crate::proto::v1;
use crate::proto::v1::config_service_server::ConfigService;
use tonic::{Request, Response, Status};

pub struct ConfigApi {
    context: Context,
}

impl ConfigApi {
    pub fn new(context: Context) -> Self {
        Self { context }
    }
}

fn format_from_proto(value: i32) -> Result<Format, Status> {
    match v1::ConfigFormat::try_from(value) {
        Ok(v1::ConfigFormat::Json) => Ok(Format::Json),
        Ok(v1::ConfigFormat::Yaml | v1::ConfigFormat::Unspecified) => Ok(Format::Yaml),
        Err(_) => Err(invalid_field("format", "is not a known format")),
    }
}

fn schema_to_proto(id: String, raw: &serde_json::Value, is_default: bool) -> v1::IdentitySchema {
    v1::IdentitySchema {
        id,
        schema_json: raw.to_string(),
        is_default,
    }
}

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn get_config(
        &self,
        request: Request<v1::GetConfigRequest>,
    ) -> Result<Response<v1::GetConfigResponse>, Status> {
        let format = format_from_proto(request.get_ref().format)?;
        let view = configuration::get_config(&self.context, format)?;
        Ok(Response::new(v1::GetConfigResponse {
            document: view.document,
            format: match format {
                Format::Yaml => v1::ConfigFormat::Yaml,
                Format::Json => v1::ConfigFormat::Json,
            } as i32,
            version: view.version,
            etag: view.etag,
        }))
    }

    async fn validate_config(
        &self,
        request: Request<v1::ValidateConfigRequest>,
    ) -> Result<Response<v1::ValidateConfigResponse>, Status> {
        // JSON is YAML, so one parser reads both formats.
        format_from_proto(request.get_ref().format)?;
        let problems = configuration::validate_config(&self.context, &request.get_ref().document);
        Ok(Response::new(v1::ValidateConfigResponse {
            valid: problems.is_empty(),
            problems: problems
                .into_iter()
                .map(|problem| v1::ConfigProblem {
                    key: problem.field,
                    message: problem.description,
                })
                .collect(),
        }))
    }

    async fn update_config(
        &self,
        request: Request<v1::UpdateConfigRequest>,
    ) -> Result<Response<v1::UpdateConfigResponse>, Status> {
        let request = request.into_inner();
        format_from_proto(request.format)?;
        let view =
            configuration::update_config(&self.context, &request.document, &request.expected_etag)
                .await?;
        Ok(Response::new(v1::UpdateConfigResponse {
            version: view.version,
            etag: view.etag,
        }))
    }

    async fn list_config_versions(
        &self,
        _request: Request<v1::ListConfigVersionsRequest>,
    ) -> Result<Response<v1::ListConfigVersionsResponse>, Status> {
        let current = self.context.settings().version;
        let versions = configuration::list_versions(&self.context).await?;
        Ok(Response::new(v1::ListConfigVersionsResponse {
            versions: versions
                .into_iter()
                .map(|version| v1::ConfigVersion {
                    version: version.version,
                    etag: version.etag,
                    created_at: Some(timestamp(version.created_at)),
                    current: version.version == current,
                })
                .collect(),
        }))
    }

    async fn rollback_config(
        &self,
        request: Request<v1::RollbackConfigRequest>,
    ) -> Result<Response<v1::RollbackConfigResponse>, Status> {
        let view = configuration::rollback(&self.context, request.get_ref().version).await?;
        Ok(Response::new(v1::RollbackConfigResponse {
            version: view.version,
            etag: view.etag,
        }))
    }

    async fn list_identity_schemas(
        &self,
        _request: Request<v1::ListIdentitySchemasRequest>,
    ) -> Result<Response<v1::ListIdentitySchemasResponse>, Status> {
        Ok(Response::new(v1::ListIdentitySchemasResponse {
            schemas: configuration::list_schemas(&self.context)
                .into_iter()
                .map(|(id, raw, is_default)| schema_to_proto(id, &raw, is_default))
                .collect(),
        }))
    }

    async fn get_identity_schema(
        &self,
        request: Request<v1::GetIdentitySchemaRequest>,
    ) -> Result<Response<v1::GetIdentitySchemaResponse>, Status> {
        let id = &request.get_ref().id;
        let (id, raw, is_default) = configuration::list_schemas(&self.context)
            .into_iter()
            .find(|(schema_id, _, _)| schema_id == id)
            .ok_or_else(|| Status::from(DomainError::SchemaNotFound(id.clone())))?;
        Ok(Response::new(v1::GetIdentitySchemaResponse {
            schema: Some(schema_to_proto(id, &raw, is_default)),
        }))
    }

    async fn put_identity_schema(
        &self,
        request: Request<v1::PutIdentitySchemaRequest>,
    ) -> Result<Response<v1::PutIdentitySchemaResponse>, Status> {
        let request = request.into_inner();
        configuration::put_schema(
            &self.context,
            &request.id,
            &request.schema_json,
            request.make_default,
        )
        .await?;
        let (id, raw, is_default) = configuration::list_schemas(&self.context)
            .into_iter()
            .find(|(schema_id, _, _)| *schema_id == request.id)
            .ok_or_else(|| Status::from(DomainError::SchemaNotFound(request.id.clone())))?;
        Ok(Response::new(v1::PutIdentitySchemaResponse {
            schema: Some(schema_to_proto(id, &raw, is_default)),
        }))
    }
}
