//! `twofold identities create|get|list|delete` through IdentityService.
use super::{Admin, Failure, Outcome, print, print_json, read_file, view};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use twofold::api::convert::json_to_struct;
use twofold::proto::v1;
use twofold::proto::v1::identity_service_client::IdentityServiceClient;

#[derive(Subcommand, Debug)]
pub enum IdentitiesCommand {
    /// Create an identity and print it as JSON.
    Create(CreateArgs),
    /// Print one identity as JSON.
    Get {
        /// Identity id.
        id: String,
    },
    /// List identities, oldest first, a page at a time.
    List {
        /// Page size, 1..500 (the server's default when omitted).
        #[arg(long)]
        page_size: Option<u32>,
        /// `next_page_token` of the previous page.
        #[arg(long)]
        page_token: Option<String>,
        /// Only the identity with this identifier (email, phone number).
        #[arg(long)]
        identifier: Option<String>,
    },
    /// Delete an identity with its credentials, addresses and sessions.
    Delete {
        /// Identity id.
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    source: TraitsSource,
    /// Identity schema id; the default schema when omitted.
    #[arg(long)]
    schema: Option<String>,
    /// Read a password from the first line of stdin (never from the command line, where other
    /// users could see it).
    #[arg(long)]
    password_stdin: bool,
}

/// Exactly one of the two; a struct of its own so clap checks that, not our code.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct TraitsSource {
    /// Traits as a JSON object.
    #[arg(long)]
    traits: Option<String>,
    /// File holding the traits as a JSON object.
    #[arg(long)]
    traits_file: Option<PathBuf>,
}

type Client = IdentityServiceClient<tonic::transport::Channel>;

pub async fn run(admin: Admin, command: IdentitiesCommand) -> Outcome {
    let mut client = IdentityServiceClient::new(admin.channel());
    match command {
        IdentitiesCommand::Create(args) => create(&admin, &mut client, args).await,
        IdentitiesCommand::Get { id } => {
            let response = client
                .get_identity(admin.request(v1::GetIdentityRequest { identity_id: id }))
                .await?
                .into_inner();
            print_json(&view::identity(response.identity.unwrap_or_default()))
        }
        IdentitiesCommand::List {
            page_size,
            page_token,
            identifier,
        } => {
            let response = client
                .list_identities(admin.request(v1::ListIdentitiesRequest {
                    page_size: page_size.unwrap_or(0),
                    page_token: page_token.unwrap_or_default(),
                    identifier: identifier.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            print_json(&list_view(response))
        }
        IdentitiesCommand::Delete { id } => {
            client
                .delete_identity(admin.request(v1::DeleteIdentityRequest {
                    identity_id: id.clone(),
                }))
                .await?;
            print(&format!("deleted identity {id}"))
        }
    }
}

async fn create(admin: &Admin, client: &mut Client, args: CreateArgs) -> Outcome {
    let traits = read_traits(&args)?;
    let password = if args.password_stdin {
        read_password()?
    } else {
        String::new()
    };
    let response = client
        .create_identity(admin.request(v1::CreateIdentityRequest {
            schema_id: args.schema.unwrap_or_default(),
            traits: Some(json_to_struct(&traits)),
            password,
            verified_addresses: Vec::new(),
        }))
        .await?
        .into_inner();
    print_json(&view::identity(response.identity.unwrap_or_default()))
}

fn read_traits(args: &CreateArgs) -> Result<serde_json::Value, Failure> {
    let (text, origin) = match (&args.source.traits, &args.source.traits_file) {
        (Some(text), _) => (text.clone(), "--traits".to_owned()),
        (None, Some(path)) => (read_file(path)?, path.display().to_string()),
        // clap requires exactly one of them.
        (None, None) => {
            return Err(Failure::Usage(
                "--traits or --traits-file is required".into(),
            ));
        }
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| Failure::Usage(format!("{origin} is not JSON: {error}")))?;
    if !value.is_object() {
        return Err(Failure::Usage(format!("{origin} must be a JSON object")));
    }
    Ok(value)
}

fn read_password() -> Result<String, Failure> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|error| Failure::Usage(format!("cannot read the password from stdin: {error}")))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Failure::Usage(
            "--password-stdin: stdin held no password".into(),
        ));
    }
    Ok(password.to_owned())
}

/// The next page token is only present when there is a next page, so scripts can loop on it.
fn list_view(response: v1::ListIdentitiesResponse) -> serde_json::Value {
    let mut view = serde_json::Map::new();
    view.insert(
        "identities".into(),
        response
            .identities
            .into_iter()
            .map(view::identity)
            .collect(),
    );
    if !response.next_page_token.is_empty() {
        view.insert("next_page_token".into(), response.next_page_token.into());
    }
    serde_json::Value::Object(view)
}
