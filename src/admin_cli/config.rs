//! `twofold config get|update|validate|versions|rollback`: the `ory get identity-config` /
//! `ory update identity-config` round trip against ConfigService.
use super::{Admin, Failure, Outcome, print, read_file, view};
use clap::{Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use twofold::proto::v1;
use twofold::proto::v1::config_service_client::ConfigServiceClient;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print the configuration in force (secrets redacted); version and etag go to stderr.
    Get {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Yaml)]
        format: Format,
    },
    /// Validate, store and apply a configuration document.
    Update {
        /// The document.
        #[arg(long)]
        file: PathBuf,
        /// Document format; by default from the file extension, else YAML.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Etag read with `config get`; without it the current etag is fetched first.
        #[arg(long)]
        etag: Option<String>,
    },
    /// Check a document and print every problem; exit code 1 when it is invalid.
    Validate {
        /// The document.
        #[arg(long)]
        file: PathBuf,
        /// Document format; by default from the file extension, else YAML.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// List stored configuration versions, newest first.
    Versions,
    /// Make an earlier version current again (stored as a new version).
    Rollback {
        /// The version to restore.
        version: u64,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    fn to_proto(self) -> v1::ConfigFormat {
        match self {
            Format::Yaml => v1::ConfigFormat::Yaml,
            Format::Json => v1::ConfigFormat::Json,
        }
    }

    /// `.json` means JSON; anything else is read as YAML, which also accepts JSON.
    fn of_file(path: &Path, given: Option<Format>) -> Format {
        given.unwrap_or_else(|| {
            let json = path
                .extension()
                .and_then(|extension| extension.to_str())
                .is_some_and(|extension| extension.eq_ignore_ascii_case("json"));
            if json { Format::Json } else { Format::Yaml }
        })
    }
}

pub async fn run(admin: Admin, command: ConfigCommand) -> Outcome {
    let mut client = ConfigServiceClient::new(admin.channel());
    match command {
        ConfigCommand::Get { format } => get(&admin, &mut client, format).await,
        ConfigCommand::Update { file, format, etag } => {
            update(
                &admin,
                &mut client,
                &file,
                Format::of_file(&file, format),
                etag,
            )
            .await
        }
        ConfigCommand::Validate { file, format } => {
            validate(&admin, &mut client, &file, Format::of_file(&file, format)).await
        }
        ConfigCommand::Versions => versions(&admin, &mut client).await,
        ConfigCommand::Rollback { version } => rollback(&admin, &mut client, version).await,
    }
}

type Client = ConfigServiceClient<tonic::transport::Channel>;

/// stdout carries only the document so `> config.yaml` yields a file `update` accepts as is.
async fn get(admin: &Admin, client: &mut Client, format: Format) -> Outcome {
    let response = client
        .get_config(admin.request(v1::GetConfigRequest {
            format: format.to_proto().into(),
        }))
        .await?
        .into_inner();
    eprintln!("# version {} etag {}", response.version, response.etag);
    print(&response.document)
}

async fn update(
    admin: &Admin,
    client: &mut Client,
    file: &Path,
    format: Format,
    etag: Option<String>,
) -> Outcome {
    let document = read_file(file)?;
    let expected_etag = match etag {
        Some(etag) => etag,
        None => current_etag(admin, client).await?,
    };
    let response = client
        .update_config(admin.request(v1::UpdateConfigRequest {
            document,
            format: format.to_proto().into(),
            expected_etag,
        }))
        .await?
        .into_inner();
    eprintln!("# version {} etag {}", response.version, response.etag);
    print(&format!("updated to version {}", response.version))
}

/// Read-modify-write as the Ory docs do it: the update is refused if someone changed the
/// configuration after this read.
async fn current_etag(admin: &Admin, client: &mut Client) -> Result<String, Failure> {
    let response = client
        .get_config(admin.request(v1::GetConfigRequest {
            format: v1::ConfigFormat::Yaml.into(),
        }))
        .await?
        .into_inner();
    Ok(response.etag)
}

async fn validate(admin: &Admin, client: &mut Client, file: &Path, format: Format) -> Outcome {
    let document = read_file(file)?;
    let response = client
        .validate_config(admin.request(v1::ValidateConfigRequest {
            document,
            format: format.to_proto().into(),
        }))
        .await?
        .into_inner();
    if response.valid && response.problems.is_empty() {
        return print("valid");
    }
    let lines: String = response
        .problems
        .iter()
        .map(|problem| format!("{}: {}\n", problem.key, problem.message))
        .collect();
    print(&lines)?;
    Err(Failure::Invalid)
}

async fn versions(admin: &Admin, client: &mut Client) -> Outcome {
    let response = client
        .list_config_versions(admin.request(v1::ListConfigVersionsRequest {}))
        .await?
        .into_inner();
    let mut rows = vec![vec![
        "VERSION".to_owned(),
        "ETAG".to_owned(),
        "CREATED_AT".to_owned(),
        "CURRENT".to_owned(),
    ]];
    rows.extend(response.versions.iter().map(|version| {
        vec![
            version.version.to_string(),
            version.etag.clone(),
            view::timestamp_text(version.created_at.as_ref()),
            if version.current { "*" } else { "" }.to_owned(),
        ]
    }));
    print(&view::table(&rows))
}

async fn rollback(admin: &Admin, client: &mut Client, version: u64) -> Outcome {
    let response = client
        .rollback_config(admin.request(v1::RollbackConfigRequest { version }))
        .await?
        .into_inner();
    eprintln!("# version {} etag {}", response.version, response.etag);
    print(&format!(
        "restored version {version} as version {}",
        response.version
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension_unless_given() {
        assert_eq!(Format::of_file(Path::new("c.json"), None), Format::Json);
        assert_eq!(Format::of_file(Path::new("c.JSON"), None), Format::Json);
        assert_eq!(Format::of_file(Path::new("c.yml"), None), Format::Yaml);
        assert_eq!(Format::of_file(Path::new("config"), None), Format::Yaml);
        assert_eq!(
            Format::of_file(Path::new("c.json"), Some(Format::Yaml)),
            Format::Yaml
        );
    }
}
