//! The HTTP server with the protections a service on a shared port needs: a cap on open
//! connections (shedding idle ones first, so a flood of stalled sockets cannot lock out
//! agents or the health check), a deadline for request headers, an idle timeout between
//! requests, and (in the handlers) a deadline and size cap for bodies.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Open connections at most; beyond it the longest-idle connection is closed to make
    /// room, or the new one if none is idle.
    pub max_connections: usize,
    /// A client must send a request's headers within this.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A request body must arrive within this.
    pub body_read_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// Three quarters of the process's open-file limit, leaving room for the store, the
/// container engine socket and outgoing connections.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur as usize
    } else {
        1024
    };
    (soft.saturating_mul(3) / 4).clamp(64, 65_536)
}

/// Raises the soft open-file limit to the hard one (servers hold many sockets).
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

struct Conn {
    id: u64,
    in_flight: Arc<AtomicUsize>,
    /// Milliseconds since the table's epoch when the last request ended (or the
    /// connection opened).
    last_active: Arc<AtomicU64>,
    close: Arc<Notify>,
}

/// The open connections, for the cap and for shedding.
struct Table {
    epoch: Instant,
    conns: Mutex<Vec<Conn>>,
    next_id: AtomicU64,
}

impl Table {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Makes room for one more connection; false if every connection is busy.
    fn admit(&self, max: usize) -> bool {
        let conns = self.conns.lock().expect("connections");
        if conns.len() < max {
            return true;
        }
        let idle = conns
            .iter()
            .filter(|c| c.in_flight.load(Ordering::SeqCst) == 0)
            .min_by_key(|c| c.last_active.load(Ordering::SeqCst));
        match idle {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }

    fn add(&self) -> (u64, Arc<AtomicUsize>, Arc<AtomicU64>, Arc<Notify>) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let conn = Conn {
            id,
            in_flight: Arc::new(AtomicUsize::new(0)),
            last_active: Arc::new(AtomicU64::new(self.now_ms())),
            close: Arc::new(Notify::new()),
        };
        let handles = (
            id,
            Arc::clone(&conn.in_flight),
            Arc::clone(&conn.last_active),
            Arc::clone(&conn.close),
        );
        self.conns.lock().expect("connections").push(conn);
        handles
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .expect("connections")
            .retain(|c| c.id != id);
    }

    fn len(&self) -> usize {
        self.conns.lock().expect("connections").len()
    }
}

/// Counts a request as in flight on its connection while it is being handled.
struct InFlight {
    in_flight: Arc<AtomicUsize>,
    last_active: Arc<AtomicU64>,
    table: Arc<Table>,
}

impl InFlight {
    fn new(in_flight: &Arc<AtomicUsize>, last_active: &Arc<AtomicU64>, table: &Arc<Table>) -> Self {
        in_flight.fetch_add(1, Ordering::SeqCst);
        Self {
            in_flight: Arc::clone(in_flight),
            last_active: Arc::clone(last_active),
            table: Arc::clone(table),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.last_active
            .store(self.table.now_ms(), Ordering::SeqCst);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one connection's driver needs from the accept loop.
struct ConnDriver<'a> {
    limits: &'a ServerLimits,
    table: &'a Arc<Table>,
    in_flight: &'a Arc<AtomicUsize>,
    last_active: &'a Arc<AtomicU64>,
    close: &'a Arc<Notify>,
    stop: &'a Arc<Notify>,
}

impl ConnDriver<'_> {
    /// Serves HTTP/1.1 on `io` until the client leaves, it idles out, it is shed, or the
    /// server stops (the last three close it gracefully).
    async fn drive<I, S>(&self, io: I, service: S)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::HttpService<Incoming> + Send,
        S::Future: Send + 'static,
        S::ResBody: Send + 'static,
        <S::ResBody as hyper::body::Body>::Data: Send,
        <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limits = self.limits;
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let idle = async {
            loop {
                tokio::time::sleep(limits.idle_timeout / 4).await;
                let quiet = self
                    .table
                    .now_ms()
                    .saturating_sub(self.last_active.load(Ordering::SeqCst));
                if self.in_flight.load(Ordering::SeqCst) == 0
                    && quiet >= limits.idle_timeout.as_millis() as u64
                {
                    return;
                }
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = self.close.notified() => {}
            _ = idle => {}
            _ = self.stop.notified() => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_tls(listener, router, limits, None, shutdown).await
}

/// As [`serve`]; with `tls`, every connection is a TLS one (the handshake must finish
/// within the header deadline; a connection still in its handshake is idle, so shed first).
pub async fn serve_with_tls(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let table = Arc::new(Table {
        epoch: Instant::now(),
        conns: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(0),
    });
    let stop = Arc::new(Notify::new());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if !table.admit(limits.max_connections) {
            tracing::warn!(
                open = table.len(),
                "connection limit reached with every connection busy; refusing one"
            );
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (id, in_flight, last_active, close) = table.add();
        let table = Arc::clone(&table);
        let router = router.clone();
        let limits = limits.clone();
        let stop = Arc::clone(&stop);
        let tls = tls.clone();
        tasks.spawn(async move {
            let service = {
                let (in_flight, last_active, table) = (
                    Arc::clone(&in_flight),
                    Arc::clone(&last_active),
                    Arc::clone(&table),
                );
                hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let guard = InFlight::new(&in_flight, &last_active, &table);
                    let router = router.clone();
                    async move {
                        let response = router.oneshot(req.map(axum::body::Body::new)).await;
                        drop(guard);
                        Ok::<_, Infallible>(response.unwrap_or_else(|e| match e {}))
                    }
                })
            };
            let conn = ConnDriver {
                limits: &limits,
                table: &table,
                in_flight: &in_flight,
                last_active: &last_active,
                close: &close,
                stop: &stop,
            };
            match &tls {
                None => conn.drive(stream, service).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream));
                    // Shedding and shutdown end a handshake in progress too.
                    let accepted = tokio::select! {
                        r = handshake => r,
                        _ = close.notified() => return table.remove(id),
                        _ = stop.notified() => return table.remove(id),
                    };
                    match accepted {
                        Ok(Ok(stream)) => conn.drive(stream, service).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake not finished in time"),
                    }
                }
            }
            table.remove(id);
        });
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    stop.notify_waiters();
    while tasks.join_next().await.is_some() {}
    Ok(())
}
