//! `twofold schema list|get|put`: identity schemas through ConfigService.
use super::{Admin, Failure, Outcome, print, print_json, read_file, view};
use clap::Subcommand;
use std::path::PathBuf;
use twofold::proto::v1;
use twofold::proto::v1::config_service_client::ConfigServiceClient;

#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// List identity schemas; `*` marks the default.
    List,
    /// Print one identity schema as JSON.
    Get {
        /// Schema id.
        id: String,
    },
    /// Add or replace an identity schema.
    Put {
        /// Schema id.
        id: String,
        /// The JSON Schema file.
        #[arg(long)]
        file: PathBuf,
        /// Make it `identity.default_schema_id`.
        #[arg(long)]
        default: bool,
    },
}

pub async fn run(admin: Admin, command: SchemaCommand) -> Outcome {
    let mut client = ConfigServiceClient::new(admin.channel());
    match command {
        SchemaCommand::List => {
            let response = client
                .list_identity_schemas(admin.request(v1::ListIdentitySchemasRequest {}))
                .await?
                .into_inner();
            let mut rows = vec![vec!["ID".to_owned(), "DEFAULT".to_owned()]];
            rows.extend(response.schemas.iter().map(|schema| {
                vec![
                    schema.id.clone(),
                    if schema.is_default { "*" } else { "" }.to_owned(),
                ]
            }));
            print(&view::table(&rows))
        }
        SchemaCommand::Get { id } => {
            let response = client
                .get_identity_schema(admin.request(v1::GetIdentitySchemaRequest { id }))
                .await?
                .into_inner();
            let schema = response.schema.unwrap_or_default();
            print_schema(&schema.schema_json)
        }
        SchemaCommand::Put { id, file, default } => {
            let schema_json = read_file(&file)?;
            // A local parse gives a line and column; the server would only say "invalid".
            serde_json::from_str::<serde_json::Value>(&schema_json).map_err(|error| {
                Failure::Usage(format!("{} is not JSON: {error}", file.display()))
            })?;
            let response = client
                .put_identity_schema(admin.request(v1::PutIdentitySchemaRequest {
                    id: id.clone(),
                    schema_json,
                    make_default: default,
                }))
                .await?
                .into_inner();
            let is_default = response.schema.is_some_and(|schema| schema.is_default);
            let suffix = if is_default { " (default)" } else { "" };
            print(&format!("stored schema {id}{suffix}"))
        }
    }
}

/// Pretty-printed when it parses; otherwise as the server sent it rather than not at all.
fn print_schema(text: &str) -> Outcome {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => print_json(&value),
        Err(_) => print(text),
    }
}
