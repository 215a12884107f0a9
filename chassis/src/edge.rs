//! A service's HTTP edge, the same in every service: bind the listener, add the routes every
//! service has (`/metrics`, `/livez`, `/readyz` and their aliases), and on shutdown stop
//! accepting, turn not ready, and give in-flight requests a bounded time to finish.

use std::{future::IntoFuture, io, net::SocketAddr, time::Duration};

use axum::Router;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::health::Readiness;

/// The readiness check every edge adds: failed from the moment shutdown starts, so load
/// balancers stop sending requests while the ones already in flight drain.
const READY_NOT_STOPPING: &str = "not shutting down";

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("HTTP server on {addr} failed: {source}")]
    Serve { addr: SocketAddr, source: io::Error },
}

/// A bound listener, not yet serving (binding first lets a service fail fast on a taken port
/// and lets tests learn the port of `127.0.0.1:0`).
pub struct Edge {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Edge {
    pub async fn bind(addr: SocketAddr) -> Result<Edge, EdgeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EdgeError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Edge { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `app` with the common routes until `shutdown`, then lets open requests finish
    /// for at most `drain`; past it, serving returns and connections still open (a stream
    /// that did not end, a client holding a request) end with the process.
    pub async fn serve(
        self,
        app: Router,
        readiness: Readiness,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> Result<(), EdgeError> {
        let addr = self.addr;
        readiness.pass(READY_NOT_STOPPING);
        let app = app
            .merge(crate::metrics::router())
            .merge(crate::health::router(readiness.clone()));
        let stopping = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                readiness.fail(READY_NOT_STOPPING, "shutting down");
            }
        };
        let serving = axum::serve(self.listener, app)
            .with_graceful_shutdown(stopping)
            .into_future();
        tokio::pin!(serving);
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        };
        tokio::select! {
            served = &mut serving => served.map_err(|source| EdgeError::Serve { addr, source }),
            () = deadline => {
                warn!(%addr, ?drain, "open requests did not finish within the drain deadline; dropped");
                Ok(())
            }
        }
    }

    /// [`Edge::serve`] on a task of its own, for a side listener (db-writer's metrics and
    /// health) that must outlive the main work's shutdown: it stops when `stop` is cancelled,
    /// and the caller joins it.
    pub fn spawn(
        self,
        app: Router,
        readiness: Readiness,
        stop: CancellationToken,
        drain: Duration,
    ) -> Serving {
        let addr = self.addr;
        info!(%addr, "listening");
        Serving {
            task: tokio::spawn(self.serve(app, readiness, stop, drain)),
        }
    }
}

/// A spawned edge; [`Serving::join`] waits for it after its stop token was cancelled.
pub struct Serving {
    task: JoinHandle<Result<(), EdgeError>>,
}

impl Serving {
    pub async fn join(self) {
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "HTTP edge stopped with an error"),
            Err(e) => warn!(error = %e, "HTTP edge task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        sync::{mpsc, Notify},
    };

    use super::*;

    async fn get_status(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    /// A route whose requests say when they started and finish when `release` is notified.
    fn held(release: Arc<Notify>) -> (Router, mpsc::Receiver<()>) {
        let (started, entered) = mpsc::channel(4);
        let app = Router::new().route(
            "/held",
            get(move || async move {
                let _ = started.send(()).await;
                release.notified().await;
                "done"
            }),
        );
        (app, entered)
    }

    #[tokio::test]
    async fn common_routes_answer_and_open_requests_finish_while_not_ready() {
        let edge = Edge::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = edge.local_addr();
        let shutdown = CancellationToken::new();
        let release = Arc::new(Notify::new());
        let (app, mut entered) = held(release.clone());
        let readiness = Readiness::new(&[]);
        let served = tokio::spawn(edge.serve(
            app,
            readiness.clone(),
            shutdown.clone(),
            Duration::from_secs(30),
        ));
        for path in [
            "/livez",
            "/readyz",
            "/health/live",
            "/health/ready",
            "/metrics",
        ] {
            assert!(get_status(addr, path).await.contains("200"), "{path}");
        }
        let open = tokio::spawn(get_status(addr, "/held"));
        entered.recv().await.unwrap();
        shutdown.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while readiness.is_ready() {
            assert!(tokio::time::Instant::now() < deadline, "still ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.notify_waiters();
        assert!(
            open.await.unwrap().contains("200"),
            "the open request finished"
        );
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn serving_ends_at_the_drain_deadline_whatever_is_still_open() {
        let edge = Edge::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = edge.local_addr();
        let shutdown = CancellationToken::new();
        let (app, mut entered) = held(Arc::new(Notify::new()));
        let served = tokio::spawn(edge.serve(
            app,
            Readiness::new(&[]),
            shutdown.clone(),
            Duration::from_millis(200),
        ));
        let stuck = tokio::spawn(get_status(addr, "/held"));
        entered.recv().await.unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("serve returns after the drain deadline")
            .unwrap()
            .unwrap();
        stuck.abort();
    }
}
