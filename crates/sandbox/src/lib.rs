#![doc = include_str!("../README.md")]
//!
//! Start it in-process with [`Sandbox::start`] (tests, the demo), or run it until Ctrl-C with [`run`]
//! (`hirewire sandbox`). One listener serves every provider host at its real paths:
//!
//! | host it stands in for | paths |
//! |---|---|
//! | `login.microsoftonline.com` | `/{tenant}/oauth2/v2.0/authorize`, `/{tenant}/oauth2/v2.0/token`, `/{tenant}/v2.0/adminconsent` |
//! | `graph.microsoft.com` | `/v1.0/...` (also `/v1.0/$batch`) |
//! | `accounts.google.com` | `/o/oauth2/v2/auth` |
//! | `oauth2.googleapis.com` | `/token`, `/revoke`, `/tokeninfo` |
//! | `gmail.googleapis.com` | `/gmail/v1/...` |
//! | `www.googleapis.com` | `/calendar/v3/...`, `/batch/calendar/v3`, `/oauth2/v3/certs` (push JWT keys) |
//! | (the sandbox itself) | `/_sandbox/...` control API and sign-in form targets |

// Handlers return a ready `Response` as their error: that is the axum idiom, and the size does not matter here.
#![allow(clippy::result_large_err)]

pub mod apis;
pub mod app;
pub mod calendar;
pub mod calendar_api;
pub mod calendar_control;
pub mod clock;
pub mod control;
pub mod faults;
pub mod flow;
pub mod google_identity;
pub mod graph_batch;
pub mod jwt;
pub mod mail_api;
pub mod mail_control;
pub mod mailbox;
pub mod mailgen;
pub mod mailview;
pub mod ms_identity;
pub mod pages;
pub mod push;
pub mod push_api;
pub mod push_control;
pub mod quota;
pub mod scenario;
pub mod scopes;
pub mod send_api;
pub mod state;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;

pub use app::App;
pub use clock::{Clock, ManualClock, SystemClock};
pub use faults::{Fault, FaultSpec, GrantFailure};
pub use scenario::{
    DEFAULT_ACME_TENANT_ID, DEFAULT_GOOGLE_CLIENT_ID, DEFAULT_GOOGLE_CLIENT_SECRET,
    DEFAULT_INITECH_TENANT_ID, DEFAULT_MS_CLIENT_ID, DEFAULT_MS_CLIENT_SECRET, Provider, Scenario,
    Settings,
};
pub use state::State;

/// Name of the state file inside the state dir.
pub const STATE_FILE: &str = "sandbox-state.json";

/// Why the sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Binding or file I/O failed.
    #[error("sandbox I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The scenario or state file is not valid.
    #[error("sandbox scenario: {0}")]
    Scenario(String),
}

/// How to start a sandbox.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Address to listen on; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Who exists; the built-in scenario when `None`. Ignored when the state dir already holds a state file.
    pub scenario: Option<Scenario>,
    /// Where the state is kept across restarts; memory only when `None`.
    pub state_dir: Option<PathBuf>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            scenario: None,
            state_dir: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("bind", &self.bind)
            .field("scenario", &self.scenario.is_some())
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Entry point.
pub struct Sandbox;

/// A running sandbox. Dropping it leaves the server running until the runtime ends; call
/// [`SandboxHandle::shutdown`] to stop it.
pub struct SandboxHandle {
    addr: SocketAddr,
    app: App,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// Reads a scenario file (JSON).
pub fn load_scenario(path: &Path) -> Result<Scenario, SandboxError> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text)
        .map_err(|e| SandboxError::Scenario(format!("{}: {e}", path.display())))
}

fn initial_state(cfg: &SandboxConfig) -> Result<(State, Option<PathBuf>), SandboxError> {
    let file = cfg.state_dir.as_ref().map(|d| d.join(STATE_FILE));
    if let Some(f) = &file
        && f.exists()
    {
        let text = std::fs::read_to_string(f)?;
        let st: State = serde_json::from_str(&text)
            .map_err(|e| SandboxError::Scenario(format!("{}: {e}", f.display())))?;
        return Ok((st, file));
    }
    let scenario = cfg.scenario.clone().unwrap_or_else(Scenario::builtin);
    let st = State::from_scenario(&scenario).map_err(SandboxError::Scenario)?;
    Ok((st, file))
}

/// The router with every surface, before path normalization.
pub fn router(app: App) -> Router {
    Router::new()
        .merge(ms_identity::routes())
        .merge(google_identity::routes())
        .merge(apis::routes())
        .merge(mail_api::routes())
        .merge(calendar_api::routes())
        .merge(calendar_control::routes())
        .merge(control::routes())
        .merge(mail_control::routes())
        .merge(push_api::routes())
        .merge(graph_batch::routes())
        .merge(push_control::routes())
        .merge(flow::routes())
        .merge(send_api::routes())
        .fallback(apis::fallback)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            send_api::release_layer,
        ))
        .with_state(app)
}

/// Rewrites Graph OData path forms (`mailFolders('inbox')`, `delta()`) before routing.
pub(crate) fn normalize(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.starts_with("/v1.0/") && (path.contains('(') || path.contains("%28")) {
        let decoded = path.replace("%28", "(").replace("%29", ")");
        let new_path = wire::normalize_graph_path(&decoded);
        let pq = match req.uri().query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(p) = pq.parse() {
            parts.path_and_query = Some(p);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

impl Sandbox {
    /// Binds, builds the state (state file, else scenario, else built-in) and starts serving.
    pub async fn start(cfg: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
        let (state, file) = initial_state(&cfg)?;
        let app = App::new(state, cfg.clock.clone(), file.clone());
        if let Some(f) = &file
            && !f.exists()
        {
            app.write(|_| ());
        }
        let listener = tokio::net::TcpListener::bind(cfg.bind).await?;
        let addr = listener.local_addr()?;
        let dispatcher = push::spawn_dispatcher(app.clone());
        let svc = router(app.clone()).map_request(normalize);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                axum::ServiceExt::<Request>::into_make_service(svc),
            )
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
            dispatcher.abort();
            served
        });
        tracing::info!(%addr, "sandbox listening");
        Ok(SandboxHandle {
            addr,
            app,
            stop: Some(tx),
            task: Some(task),
        })
    }
}

impl SandboxHandle {
    /// `http://127.0.0.1:PORT`: the base URL for every provider host.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Direct access to state, faults and counters.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Reads the state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        self.app.read(f)
    }

    /// Changes the state (and writes the state file).
    pub fn write<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.app.write(f)
    }

    /// Arms a fault; returns its id.
    pub fn add_fault(&self, spec: FaultSpec) -> u64 {
        self.app.rt(|rt| rt.faults.add(spec)).id
    }

    /// Stops serving and waits for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Arguments of `hirewire sandbox`.
#[derive(Debug, Clone)]
pub struct SandboxCliArgs {
    /// Interface to bind (default 127.0.0.1).
    pub host: IpAddr,
    /// Port (default 8081).
    pub port: u16,
    /// Scenario file (JSON); the built-in scenario when absent.
    pub scenario: Option<PathBuf>,
    /// State dir; memory only when absent.
    pub state_dir: Option<PathBuf>,
}

impl Default for SandboxCliArgs {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8081,
            scenario: None,
            state_dir: None,
        }
    }
}

/// Runs the sandbox until Ctrl-C (what `hirewire sandbox` calls).
pub async fn run(args: SandboxCliArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(p) => Some(load_scenario(p)?),
        None => None,
    };
    let handle = Sandbox::start(SandboxConfig {
        bind: SocketAddr::new(args.host, args.port),
        scenario,
        state_dir: args.state_dir.clone(),
        clock: Arc::new(SystemClock),
    })
    .await?;
    println!("hirewire sandbox listening on {}", handle.base_url());
    println!(
        "  Microsoft: {}/organizations/oauth2/v2.0/authorize  Graph: {}/v1.0",
        handle.base_url(),
        handle.base_url()
    );
    println!(
        "  Google:    {}/o/oauth2/v2/auth  token: {}/token  Gmail: {}/gmail/v1  Calendar: {}/calendar/v3",
        handle.base_url(),
        handle.base_url(),
        handle.base_url(),
        handle.base_url()
    );
    println!(
        "  control:   {}/_sandbox/  (see docs/sandbox.md)",
        handle.base_url()
    );
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(())
}
