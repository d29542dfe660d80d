//! Application state, the router, and the server loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hirewire_store::Store;
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::auth::SignInLimiter;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::{api, integration_pages, pages};

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Store,
    pub keyring: Keyring,
    pub clock: Arc<dyn Clock>,
    pub sign_in_limiter: SignInLimiter,
    /// The one HTTP client for provider calls.
    pub provider_http: hirewire_providers::HttpClient,
    /// The Scheduler's free/busy cache.
    pub scheduler: crate::scheduling::BusyCache,
    /// Paces every provider call of this instance (per mailbox and per provider).
    pub pacer: hirewire_providers::Pacer,
    /// Prometheus metrics (`/metrics`).
    pub metrics: crate::metrics::Metrics,
    /// Verifies Gmail's Pub/Sub push tokens (when Gmail push is configured).
    pub pubsub: Option<hirewire_providers::push::PubSubVerifier>,
    /// Feature flags read recently (short TTL, see `crate::flags`).
    pub flags: crate::flags::FlagCache,
    /// Rung when a push makes a sync step due now, so an idle sync worker of this instance claims it at
    /// once instead of at its next `sync.poll_interval` (other instances still find it by polling).
    pub sync_wake: Arc<tokio::sync::Notify>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: Config, store: Store, keyring: Keyring, clock: Arc<dyn Clock>) -> Self {
        let sign_in_limiter = SignInLimiter::new(config.sign_in_limits);
        // reqwest is built without a default TLS provider: choose ring once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider_http =
            hirewire_providers::HttpClient::new(hirewire_providers::HttpConfig::default())
                .expect("build the provider HTTP client");
        let pacer = hirewire_providers::Pacer::with_parts(
            config.pacing.clone(),
            Arc::new(crate::pace::AppPaceClock::new(clock.clone())),
            Arc::new(hirewire_providers::pacing::RandomJitter),
        )
        .expect("the pacing settings are valid (checked when the configuration is read)");
        let pubsub = crate::push_hooks::pubsub_verifier(&config, &provider_http, clock.clone());
        Self(Arc::new(Inner {
            pubsub,
            pacer,
            metrics: crate::metrics::Metrics::new(),
            config,
            store,
            keyring,
            clock,
            sign_in_limiter,
            provider_http,
            scheduler: Default::default(),
            flags: Default::default(),
            sync_wake: Arc::new(tokio::sync::Notify::new()),
        }))
    }

    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(pages::routes())
        .merge(integration_pages::routes())
        .merge(crate::timeline::routes())
        .merge(crate::booking_pages::routes())
        .merge(crate::scheduler_pages::routes())
        .merge(crate::compose_pages::routes())
        .merge(crate::flag_admin::routes())
        .merge(crate::health::routes())
        .merge(crate::metrics::routes())
        .merge(crate::push_hooks::routes())
        .nest(
            "/api/v1",
            api::routes()
                .merge(crate::scheduling_api::routes())
                .merge(crate::compose_pages::api_routes())
                .merge(crate::flag_admin::api_routes()),
        )
        .route("/api/openapi.json", get(api::openapi_json))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/assets/app.css", get(stylesheet))
        .fallback(pages::not_found)
        // Spans carry the method and path only: query strings can hold OAuth
        // codes and states, which must not reach the logs.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            tracing::info_span!("http", method = %req.method(), path = %loggable_path(req.uri().path()))
        }))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .with_state(state)
}

/// The path as logged: a scheduling link's token (a candidate's credential)
/// is replaced by `…`, in the booking pages and the booking API alike.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    for prefix in ["/book/", "/api/v1/booking/"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let tail = rest.find('/').map_or("", |i| &rest[i..]);
            return format!("{prefix}…{tail}").into();
        }
    }
    path.into()
}

/// Serves `state` on `listener` until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut sync_workers = crate::sync::spawn_workers(state.clone(), state.config.sync.workers);
    // Every instance serving booking pages keeps its own busy-time cache fresh.
    sync_workers.push(crate::scheduling::spawn_calendar_refresh(state.clone()));
    if state.config.sync.workers > 0 {
        sync_workers.push(crate::scheduling::spawn_worker(state.clone()));
        sync_workers.push(crate::push_hooks::spawn(state.clone()));
        sync_workers.push(crate::outbox::spawn_worker(state.clone()));
    }
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    sync_workers.iter().for_each(tokio::task::JoinHandle::abort);
    served
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The process can reach its database.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../assets/app.css"),
    )
}

#[cfg(test)]
mod tests {
    use super::loggable_path;

    #[test]
    fn booking_tokens_never_reach_the_logs() {
        assert_eq!(loggable_path("/book/SECRETtoken"), "/book/…");
        assert_eq!(
            loggable_path("/book/SECRETtoken/invite.ics"),
            "/book/…/invite.ics"
        );
        assert_eq!(
            loggable_path("/api/v1/booking/SECRETtoken/slots"),
            "/api/v1/booking/…/slots"
        );
        assert_eq!(loggable_path("/candidates/7"), "/candidates/7");
    }
}
