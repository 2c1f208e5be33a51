//! `conclave serve`: HTTP API, WebSocket signaling, the media loop around the SFU, and storage.
//!
//! The server relays media and signaling; it holds no media keys and never decodes a frame.

pub mod accounts;
mod config;
mod delivery;
pub mod gate;
mod http;
mod hub;
mod ice_tcp;
pub mod invitation;
mod media;
mod metrics;
pub mod password;
mod policy;
mod ratelimit;
mod shared_port;
mod signaling;
mod storage;
#[cfg(feature = "insecure-test-hooks")]
pub mod test_lie;
mod tls;
pub mod turn_relay;
mod udp_batch;
mod web_app;
pub mod web_bundle;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{
    ConfigError, MediaTap, MediaTcp, MeetingCreation, ServerConfig, TlsFiles, TurnConfig,
};
pub use ice_tcp::{TcpRefusal, TcpStats};
pub use metrics::Metrics;
pub use storage::{
    AuditRecord, Ban, InvitationRecord, MeetingRecord, Storage, StorageError, UserRecord,
};
pub use web_app::WebAppSource;
pub use web_bundle::{BundleError, ReleaseKey, WebBundle};

use hub::Hub;
use media::MediaHandle;
use tokio::sync::watch;
use tracing::info;

/// What every request handler and session shares.
pub(crate) struct AppContext {
    pub storage: Storage,
    pub hub: Arc<Hub>,
    pub media: MediaHandle,
    pub metrics: Arc<Metrics>,
    pub base_url: String,
    pub shutdown: watch::Receiver<bool>,
    /// The checks every `hello` passes before the lobby, with their rate limits.
    pub gate: gate::Gate,
    /// Who may create meetings.
    pub meeting_creation: MeetingCreation,
    /// Serving HTTPS: cookies are `Secure` and HSTS is sent.
    pub tls: bool,
    /// Failed-login limits.
    pub logins: accounts::LoginThrottle,
    /// The web app found at start, hashed (and checked against the release key).
    pub web_bundle: Option<Arc<WebBundle>>,
    /// TURN servers and their credentials for admitted participants.
    pub turn: Option<turn_relay::TurnOffer>,
    #[cfg(feature = "insecure-test-hooks")]
    pub test_lie: Option<Arc<test_lie::TestLie>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    MediaBind(#[from] media::MediaBindError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Turn(#[from] turn_relay::TurnStartError),
    #[error("web app: {0}")]
    WebBundle(#[from] BundleError),
}

/// A running server.
pub struct Server {
    pub http_addr: SocketAddr,
    /// The media UDP socket's address.
    pub media_addr: SocketAddr,
    /// The ICE-TCP listener's address, if ICE-TCP is on.
    pub media_tcp_addr: Option<SocketAddr>,
    /// The built-in TURN relay's TLS address and certificate fingerprint, if it runs.
    pub turn_relay: Option<(SocketAddr, String)>,
    pub base_url: String,
    /// The web app this server hands out (None: not built).
    pub web_bundle: Option<Arc<WebBundle>>,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Validates the config, opens the database, binds both sockets and starts serving.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let tls = match &config.tls {
            Some(files) => Some(tls::load(files).await?),
            None => None,
        };
        tls::warn_if_plaintext(config.listen, tls.is_some());
        let web_bundle = web_app::load_bundle(&config.web_app, config.web_release_key)?;
        let storage = Storage::open(&config.data_dir).await?;
        // Computed now, so that even the first unknown-meeting knock takes a wrong passcode's time.
        let _ = tokio::task::spawn_blocking(password::decoy_hash).await;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "HTTP",
                addr: config.listen,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(ServerError::Http)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let hub = Arc::new(Hub::default());
        let metrics = Arc::new(Metrics::default());
        let sockets = media::MediaSockets {
            udp: SocketAddr::new(config.media_bind_ip, config.media_port),
            tcp: config
                .media_tcp_port()
                .map(|port| SocketAddr::new(config.media_bind_ip, port)),
            public_ip: config.public_ip,
        };
        let (media, bound, media_task) = media::start(
            sockets,
            config.media_tap.clone(),
            config.downlink_estimation,
            hub.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        let (media_addr, media_tcp_addr) = (bound.udp, bound.tcp);
        let base_url = config.base_url(http_addr);
        let (turn_offer, relay) =
            turn_relay::start(&config, media_addr, http_addr, shutdown_rx.clone()).await?;
        let turn_relay = relay.as_ref().map(|r| (r.addr, r.fingerprint.clone()));
        let relay_route = relay.as_ref().and_then(|r| r.route.clone());
        if let Some(relay) = &relay {
            metrics.set_turn_stats(relay.stats.clone());
        }
        let ctx = Arc::new(AppContext {
            storage: storage.clone(),
            hub: hub.clone(),
            media,
            metrics: metrics.clone(),
            base_url: base_url.clone(),
            shutdown: shutdown_rx.clone(),
            gate: gate::Gate::new(),
            meeting_creation: config.meeting_creation,
            tls: config.tls.is_some(),
            logins: accounts::LoginThrottle::default(),
            web_bundle: web_bundle.clone(),
            turn: turn_offer,
            #[cfg(feature = "insecure-test-hooks")]
            test_lie: config.test_lie.clone(),
        });
        let app = http::router(ctx);
        let mut stop = shutdown_rx;
        let task = tokio::spawn(async move {
            let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
            let served = match tls {
                None => {
                    axum::serve(listener, make_service)
                        .with_graceful_shutdown(async move {
                            let _ = stop.changed().await;
                        })
                        .await
                }
                Some(rustls) => {
                    let handle = axum_server::Handle::new();
                    let stopping = handle.clone();
                    tokio::spawn(async move {
                        let _ = stop.changed().await;
                        // Sessions close themselves on shutdown; this bounds stragglers.
                        stopping.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
                    });
                    let acceptor = shared_port::SharedPortAcceptor {
                        https: rustls.get_inner(),
                        relay: relay_route,
                    };
                    match listener.into_std() {
                        Ok(std_listener) => {
                            axum_server::from_tcp(std_listener)
                                .acceptor(acceptor)
                                .handle(handle)
                                .serve(make_service)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            media_task.stopped().await;
            drop(relay);
            storage.close().await;
            info!("server stopped");
            served.map_err(ServerError::Http)
        });
        Ok(Server {
            http_addr,
            media_addr,
            media_tcp_addr,
            turn_relay,
            base_url,
            web_bundle,
            metrics,
            shutdown,
            task,
        })
    }

    /// The line `conclave serve` prints at start: `web bundle sha256: <hex>`, or that no web app
    /// is built.
    pub fn web_bundle_line(&self) -> String {
        match &self.web_bundle {
            Some(bundle) => format!("web bundle sha256: {}", bundle.sha256_hex()),
            None => "web bundle sha256: none (web app not built)".to_owned(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Tells every participant, closes every session and socket, and flushes the database.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Http(std::io::Error::other(e))),
        }
    }

    /// A handle that stops the server when told to.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}
