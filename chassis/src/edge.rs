//! A service's HTTP edge, the same in every service: bind the listener, add the routes every
//! service has (`/metrics`, `/livez`, `/readyz` and their aliases), and on shutdown stop
//! accepting, turn not ready, and give in-flight requests a bounded time to finish.

use std::{io, net::SocketAddr, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpSocket},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::health::Readiness;

/// The readiness check every edge adds: failed from the moment shutdown starts, so load
/// balancers stop sending requests while the ones already in flight drain.
const READY_NOT_STOPPING: &str = "not shutting down";

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// A bound listener, not yet serving (binding first lets a service fail fast on a taken port
/// and lets tests learn the port of `127.0.0.1:0`).
pub struct Edge {
    listener: TcpListener,
    addr: SocketAddr,
    header_timeout: Duration,
    /// Where `/metrics` and the health routes are served instead, if not here.
    ops: Option<Box<Edge>>,
}

/// Default for [`Edge::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Connections the kernel completes before the service accepts them (it caps this at
/// `net.core.somaxconn`, 4096 on current kernels). Tokio's `TcpListener::bind` asks for 128:
/// 256 clients connecting at once overflowed it, and each connection whose handshake was
/// dropped waited for the client's SYN retry, a full second (`loadgen --concurrency 256`:
/// 95 listen overflows, request max 1.1 s). A fleet reconnecting after a deploy does that.
pub const LISTEN_BACKLOG: u32 = 4096;

impl Edge {
    pub async fn bind(addr: SocketAddr) -> Result<Edge, EdgeError> {
        let listener = listen(addr).map_err(|source| EdgeError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Edge {
            listener,
            addr,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            ops: None,
        })
    }

    /// Binds `ops`, if given, as the listener of `/metrics`, `/livez` and `/readyz`, which
    /// then are not served on this one: with authentication on, the API can face callers
    /// while probes and scrapes stay on an address only the cluster reaches.
    pub async fn with_ops_listener(mut self, ops: Option<SocketAddr>) -> Result<Edge, EdgeError> {
        if let Some(addr) = ops {
            let ops = Edge::bind(addr).await?.header_timeout(self.header_timeout);
            self.ops = Some(Box::new(ops));
        }
        Ok(self)
    }

    /// The address of the `/metrics` and health listener (this one unless
    /// [`Edge::with_ops_listener`] gave another).
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.as_ref().map_or(self.addr, |ops| ops.addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How long a client may take to send a request's headers before the connection is
    /// closed (slow-loris). Default [`DEFAULT_HEADER_TIMEOUT`].
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        if let Some(ops) = self.ops.take() {
            self.ops = Some(Box::new(ops.header_timeout(timeout)));
        }
        self
    }

    /// Serves `app` with the common routes (or them on the ops listener) until `shutdown`, then lets open requests finish
    /// for at most `drain`; past it, serving returns and connections still open (a stream
    /// that did not end, a client holding a request) end with the process.
    pub async fn serve(
        self,
        app: Router,
        readiness: Readiness,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> Result<(), EdgeError> {
        readiness.pass(READY_NOT_STOPPING);
        let common = || {
            Router::new()
                .merge(crate::metrics::router())
                .merge(crate::health::router(readiness.clone()))
        };
        let (app, ops) = match self.ops {
            None => (with_problem_fallbacks(app.merge(common())), None),
            Some(ops) => {
                info!(addr = %ops.addr, "metrics and health listening");
                let ops = tokio::spawn(accept(
                    *ops,
                    with_problem_fallbacks(common()),
                    readiness.clone(),
                    shutdown.clone(),
                    drain,
                ));
                (with_problem_fallbacks(app), Some(ops))
            }
        };
        let listener = Edge { ops: None, ..self };
        let served = accept(listener, app, readiness, shutdown, drain).await;
        if let Some(ops) = ops {
            (Serving { task: ops }).join().await;
        }
        served
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

/// Every error answer is problem+json, also the ones axum makes itself: an unknown path and
/// a method a route does not take (the latter keeps axum's `Allow` header). Set on the
/// finished router: the method fallback reaches only the routes added before it.
fn with_problem_fallbacks(app: Router) -> Router {
    app.fallback(crate::problem::no_route)
        .method_not_allowed_fallback(crate::problem::method_not_allowed)
}

/// A listener on `addr` with [`LISTEN_BACKLOG`], address reuse on as tokio's own `bind` sets
/// it (a restarted service binds while the old connections linger in `TIME_WAIT`).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts connections on `edge` and serves `app` on them until `shutdown`; then turns not
/// ready and lets open requests finish for at most `drain`.
async fn accept(
    edge: Edge,
    app: Router,
    readiness: Readiness,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<(), EdgeError> {
    let addr = edge.addr;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(edge.header_timeout);
    let connections = GracefulShutdown::new();
    loop {
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = edge.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the listener stays, and
                    // accepting resumes once connections close.
                    warn!(%addr, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Small answers (202s, pages) go out at once instead of waiting for Nagle.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }
    readiness.fail(READY_NOT_STOPPING, "shutting down");
    drop(edge.listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(drain) => {
            warn!(%addr, ?drain, "open requests did not finish within the drain deadline; dropped");
        }
    }
    Ok(())
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

    #[tokio::test]
    async fn a_burst_of_connections_is_queued_before_the_service_accepts_them() {
        // Not serving yet: every connection waits in the kernel's accept queue. Beyond the
        // backlog the kernel drops the handshake and a client waits for its SYN retry
        // (a second, then more); the timeout only ends that failure.
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok());
        if let Some(cap) = somaxconn.filter(|cap| *cap < 512) {
            // Kernels before 5.4 cap every backlog at 128: nothing a service can ask for.
            eprintln!("skipped: net.core.somaxconn = {cap} caps the backlog below this burst");
            return;
        }
        let edge = Edge::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = edge.local_addr();
        let mut streams = Vec::with_capacity(512);
        for n in 0..512 {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => streams.push(stream),
                Ok(Err(e)) => panic!("connection {n} refused: {e}"),
                Err(_) => panic!("connection {n} not queued within 5 s"),
            }
        }
        drop(edge);
    }

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
    async fn an_ops_listener_takes_metrics_and_health_off_the_api() {
        let edge = Edge::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap()
            .with_ops_listener(Some(SocketAddr::from(([127, 0, 0, 1], 0))))
            .await
            .unwrap();
        let (api, ops) = (edge.local_addr(), edge.ops_addr());
        assert_ne!(api, ops);
        let shutdown = CancellationToken::new();
        let app = Router::new().route("/api", get(|| async { "api" }));
        let served = tokio::spawn(edge.serve(
            app,
            Readiness::new(&[]),
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        for path in ["/metrics", "/livez", "/readyz"] {
            assert!(get_status(ops, path).await.contains("200"), "{path}");
            assert!(get_status(api, path).await.contains("404"), "{path}");
        }
        assert!(get_status(api, "/api").await.contains("200"));
        assert!(get_status(ops, "/api").await.contains("404"));
        shutdown.cancel();
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_cut_off() {
        let edge = Edge::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap()
            .header_timeout(Duration::from_millis(300));
        let addr = edge.local_addr();
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(edge.serve(
            Router::new(),
            Readiness::new(&[]),
            shutdown.clone(),
            Duration::from_secs(1),
        ));
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server closed the connection");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Others are served meanwhile and after.
        assert!(get_status(addr, "/livez").await.contains("200"));
        shutdown.cancel();
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
