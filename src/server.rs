//! Listeners, services and shutdown. `run` takes already-bound listeners so the binary and the
//! tests share one code path and tests can use ephemeral ports.
//!
//! Two listeners, as in Kratos: the public one (flows and the caller's own session, gRPC and
//! grpc-web with a CORS allow-list) and the admin one (identities, sessions of others, codes,
//! configuration, courier; gRPC only and guarded by the admin API key). Health and reflection
//! are served on both without credentials, so probes and `grpcurl describe` work. With
//! `serve.public.static_dir` the public listener also serves the sign-in page's files.
mod handled_time;
mod static_ui;
mod whole_writes;

pub use handled_time::HANDLED_TIME_HEADER;

use crate::api::auth::AdminKeyCheck;
use crate::api::code::CodeApi;
use crate::api::config::ConfigApi;
use crate::api::courier::CourierApi;
use crate::api::flow::FlowApi;
use crate::api::identity::IdentityApi;
use crate::api::session::SessionApi;
use crate::config::CorsConfig;
use crate::domain::Context;
use crate::proto::{self, v1};
use http::{HeaderName, HeaderValue, Method};
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Metadata larger than this is refused before any handler runs.
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Streams one client connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("listener failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("listener task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The bound sockets the server answers on.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

/// Serves both listeners until `shutdown` completes, then drains in-flight calls and returns.
pub async fn run(
    listeners: Listeners,
    context: Context,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (stop_sender, stop_receiver) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_sender.send(true);
    });
    let stopped = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };

    let public = tokio::spawn(serve_public(
        listeners.public,
        context.clone(),
        stopped(stop_receiver.clone()),
    )?);
    let admin = tokio::spawn(serve_admin(
        listeners.admin,
        context,
        stopped(stop_receiver),
    )?);
    let (public, admin) = tokio::try_join!(public, admin)?;
    public?;
    admin?;
    tracing::info!("server stopped");
    Ok(())
}

async fn health_service()
-> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    // The overall status ("") is what load balancers usually probe.
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    for name in [
        "twofold.v1.FlowService",
        "twofold.v1.SessionService",
        "twofold.v1.SessionAdminService",
        "twofold.v1.IdentityService",
        "twofold.v1.CodeService",
        "twofold.v1.ConfigService",
        "twofold.v1.CourierService",
    ] {
        reporter
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    service
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

fn cors_layer(cors: &CorsConfig) -> CorsLayer {
    // Only exact origins from the allow-list get a grant; with CORS disabled the list is empty
    // and browsers on other origins cannot read any answer.
    let origins: Vec<HeaderValue> = if cors.enabled {
        cors.allowed_origins
            .iter()
            .filter_map(|origin| HeaderValue::from_str(origin).ok())
            .collect()
    } else {
        Vec::new()
    };
    let header = HeaderName::from_static;
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            header("content-type"),
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("authorization"),
            header("x-session-token"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(600))
}

fn serve_public(
    listener: TcpListener,
    context: Context,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), ServerError>>, ServerError> {
    let settings = context.settings();
    let public = &settings.config.serve.public;
    let limit = public.max_message_size;
    let flows = v1::flow_service_server::FlowServiceServer::new(FlowApi::new(context.clone()))
        .max_decoding_message_size(limit);
    let sessions = v1::session_service_server::SessionServiceServer::new(SessionApi::new(context))
        .max_decoding_message_size(limit);
    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    let mut router = Server::builder()
        .accept_http1(true)
        .timeout(public.request_timeout)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        // Outermost: page files are same-origin and never grpc-web, so CORS has no say in them.
        .layer(static_ui::StaticUiLayer::new(public.static_dir.as_deref()))
        .layer(cors_layer(&public.cors))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(handled_time::HandledTimeLayer::for_this_build());
    Ok(async move {
        router
            .add_service(health_service().await)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(flows)
            .add_service(sessions)
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await?;
        Ok(())
    })
}

fn serve_admin(
    listener: TcpListener,
    context: Context,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), ServerError>>, ServerError> {
    let settings = context.settings();
    let admin = &settings.config.serve.admin;
    let limit = admin.max_message_size;
    let check = AdminKeyCheck::new(admin.api_keys.clone());
    let identities = InterceptedService::new(
        v1::identity_service_server::IdentityServiceServer::new(IdentityApi::new(context.clone()))
            .max_decoding_message_size(limit),
        check.clone(),
    );
    let sessions = InterceptedService::new(
        v1::session_admin_service_server::SessionAdminServiceServer::new(SessionApi::new(
            context.clone(),
        ))
        .max_decoding_message_size(limit),
        check.clone(),
    );
    let codes = InterceptedService::new(
        v1::code_service_server::CodeServiceServer::new(CodeApi::new(context.clone()))
            .max_decoding_message_size(limit),
        check.clone(),
    );
    let configs = InterceptedService::new(
        v1::config_service_server::ConfigServiceServer::new(ConfigApi::new(context.clone()))
            .max_decoding_message_size(limit),
        check.clone(),
    );
    let courier = InterceptedService::new(
        v1::courier_service_server::CourierServiceServer::new(CourierApi::new(context.clone()))
            .max_decoding_message_size(limit),
        check.clone(),
    );
    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    let builder = Server::builder()
        .timeout(admin.request_timeout)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .layer(handled_time::HandledTimeLayer::for_this_build());
    Ok(async move {
        let mut builder = builder;
        builder
            .add_service(health_service().await)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(identities)
            .add_service(sessions)
            .add_service(codes)
            .add_service(configs)
            .add_service(courier)
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await?;
        Ok(())
    })
}

/// Accepted connections with Nagle's algorithm off. A gRPC answer is a few small frames; with
/// Nagle on, each waited for the peer's delayed ACK, a flat ~40 ms on every call over loopback.
/// (tonic's `Server::tcp_nodelay` applies only to listeners tonic binds itself.) Each is written
/// without vectored writes, so an answer goes out in one write (see `whole_writes`).
fn incoming(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<whole_writes::WholeWrites<TcpStream>>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|accepted| accepted.map(whole_writes::WholeWrites))
}
