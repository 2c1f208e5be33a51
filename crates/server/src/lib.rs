//! `conclave serve`: HTTP API, WebSocket signaling, the media loop around the SFU, and storage.
//!
//! The server relays media and signaling; it holds no media keys and never decodes a frame.

mod config;
mod delivery;
mod http;
mod hub;
mod media;
mod metrics;
mod signaling;
mod storage;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{ConfigError, MediaTap, ServerConfig};
pub use metrics::Metrics;
pub use storage::{Storage, StorageError};

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
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// A running server.
pub struct Server {
    pub http_addr: SocketAddr,
    pub media_addr: SocketAddr,
    pub base_url: String,
    metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Server {
    /// Validates the config, opens the database, binds both sockets and starts serving.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let storage = Storage::open(&config.data_dir).await?;
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
        let media_bind = SocketAddr::new(config.media_bind_ip, config.media_port);
        let (media, media_addr, media_task) = media::start(
            media_bind,
            config.public_ip,
            config.media_tap.clone(),
            hub.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
        )
        .await
        .map_err(|source| ServerError::Bind {
            what: "media UDP",
            addr: media_bind,
            source,
        })?;
        let base_url = config.base_url(http_addr);
        let ctx = Arc::new(AppContext {
            storage: storage.clone(),
            hub: hub.clone(),
            media,
            metrics: metrics.clone(),
            base_url: base_url.clone(),
            shutdown: shutdown_rx.clone(),
        });
        let app = http::router(ctx);
        let mut stop = shutdown_rx;
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
            let _ = media_task.await;
            storage.close().await;
            info!("server stopped");
            served.map_err(ServerError::Http)
        });
        Ok(Server {
            http_addr,
            media_addr,
            base_url,
            metrics,
            shutdown,
            task,
        })
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
