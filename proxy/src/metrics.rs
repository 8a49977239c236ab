//! Prometheus metrics and the small HTTP endpoint that serves them with a health check.
//! Not for: recording the metrics (callers use the `metrics` macros with the names below) or the
//! access log (see `audit`). The endpoint speaks just enough HTTP/1.1: `GET /metrics`, `GET /health`,
//! 404 for anything else, one request per connection, bounded request size and read time.
//!
//! Metric names (use these constants so that names stay consistent):
//! - `maschera_connections_total` (counter): client connections accepted.
//! - `maschera_sessions_active` (gauge): client sessions open now.
//! - `maschera_auth_total` (counter, label `result` = `ok` | `failed` | `locked`): authentications.
//! - `maschera_lockouts_total` (counter): locks started by the lockout (user or address).
//! - `maschera_statements_total` (counter): statements forwarded upstream.
//! - `maschera_statement_errors_total` (counter): statements that ended in an ErrorResponse.
//! - `maschera_refusals_total` (counter, label `reason`; refused statements also `role` and
//!   `sqlstate`): requests refused by the proxy.
//! - `maschera_cancels_total` (counter): CancelRequests forwarded.
//! - `maschera_bytes_total` (counter, label `direction` = `client_to_server` | `server_to_client`).
//! - `maschera_statement_duration_seconds` (histogram): from a statement's arrival to its completion.
//! - `maschera_pool_connections` (gauge, labels `login`, `state` = `idle` | `in_use`): pooled
//!   upstream connections of transaction mode.
//! - `maschera_pool_waiting` (gauge, label `login`): clients waiting for a pooled connection.
//! - `maschera_pool_wait_seconds` (histogram): how long clients waited for a pooled connection.
//! - `maschera_pool_pins_total` (counter, label `reason`): sessions pinned to their connection.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub const CONNECTIONS_TOTAL: &str = "maschera_connections_total";
pub const SESSIONS_ACTIVE: &str = "maschera_sessions_active";
pub const AUTH_TOTAL: &str = "maschera_auth_total";
pub const LOCKOUTS_TOTAL: &str = "maschera_lockouts_total";
pub const STATEMENTS_TOTAL: &str = "maschera_statements_total";
pub const STATEMENT_ERRORS_TOTAL: &str = "maschera_statement_errors_total";
pub const REFUSALS_TOTAL: &str = "maschera_refusals_total";
pub const CANCELS_TOTAL: &str = "maschera_cancels_total";
pub const BYTES_TOTAL: &str = "maschera_bytes_total";
pub const STATEMENT_DURATION_SECONDS: &str = "maschera_statement_duration_seconds";
pub const POOL_CONNECTIONS: &str = "maschera_pool_connections";
pub const POOL_WAITING: &str = "maschera_pool_waiting";
pub const POOL_WAIT_SECONDS: &str = "maschera_pool_wait_seconds";
pub const POOL_PINS_TOTAL: &str = "maschera_pool_pins_total";
/// Label of the pool metrics: the upstream login.
pub const LABEL_LOGIN: &str = "login";
/// Label of [`POOL_CONNECTIONS`]: `idle` or `in_use`.
pub const LABEL_STATE: &str = "state";

/// Label of [`AUTH_TOTAL`], with the three values below.
pub const LABEL_RESULT: &str = "result";
pub const RESULT_OK: &str = "ok";
pub const RESULT_FAILED: &str = "failed";
pub const RESULT_LOCKED: &str = "locked";
/// Label of [`REFUSALS_TOTAL`]: a short reason such as `auth_timeout` or `max_connections`.
pub const LABEL_REASON: &str = "reason";
/// [`LABEL_REASON`] of a refused statement (with [`LABEL_ROLE`] and [`LABEL_SQLSTATE`]).
pub const REASON_STATEMENT: &str = "statement";
/// The role of the session a statement was refused in.
pub const LABEL_ROLE: &str = "role";
/// The SQLSTATE a statement was refused with.
pub const LABEL_SQLSTATE: &str = "sqlstate";
/// Label of [`BYTES_TOTAL`], with the two values below.
pub const LABEL_DIRECTION: &str = "direction";
pub const DIRECTION_CLIENT_TO_SERVER: &str = "client_to_server";
pub const DIRECTION_SERVER_TO_CLIENT: &str = "server_to_client";

/// Histogram buckets (seconds) for every latency histogram: 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Longest request head accepted (request line and headers).
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the health probe has to answer before the upstream counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served at once; more wait for a slot.
const MAX_CONCURRENT: usize = 32;
/// How often histograms are drained into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's global `metrics` recorder (once; later calls
/// return the same handle) and describes the metrics above.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder is already installed; /metrics stays empty"
                );
            }
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_INTERVAL);
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(CONNECTIONS_TOTAL, "Client connections accepted");
    describe_gauge!(SESSIONS_ACTIVE, "Client sessions open now");
    describe_counter!(
        AUTH_TOTAL,
        "Authentications, by result (ok, failed, locked)"
    );
    describe_counter!(LOCKOUTS_TOTAL, "Locks started after too many failed logins");
    describe_counter!(STATEMENTS_TOTAL, "Statements forwarded upstream");
    describe_counter!(STATEMENT_ERRORS_TOTAL, "Statements that ended in an error");
    describe_counter!(REFUSALS_TOTAL, "Requests refused by the proxy");
    describe_counter!(CANCELS_TOTAL, "Cancel requests forwarded");
    describe_counter!(BYTES_TOTAL, Unit::Bytes, "Bytes relayed, by direction");
    describe_histogram!(
        STATEMENT_DURATION_SECONDS,
        Unit::Seconds,
        "Time from a statement's arrival to its completion"
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Pooled upstream connections (transaction mode), by login and state"
    );
    describe_gauge!(POOL_WAITING, "Clients waiting for a pooled connection");
    describe_histogram!(
        POOL_WAIT_SECONDS,
        Unit::Seconds,
        "Time clients waited for a pooled connection"
    );
    describe_counter!(
        POOL_PINS_TOTAL,
        "Sessions of transaction mode pinned to their upstream connection, by reason"
    );
}

/// Serves `/metrics` and `/health` on a bound listener until the task is dropped. `health_probe`
/// tells whether the upstream is reachable (it gets [`PROBE_TIMEOUT`]; slower counts as unreachable).
pub async fn serve_listener<P, F>(
    listener: TcpListener,
    handle: PrometheusHandle,
    health_probe: P,
) -> std::io::Result<()>
where
    P: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = bool> + Send + 'static,
{
    let probe = Arc::new(health_probe);
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Per-connection errors (e.g. the peer reset before accept) must not stop the endpoint.
                tracing::debug!(error = %err, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (handle, probe) = (handle.clone(), probe.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(err) = answer(stream, &handle, probe.as_ref()).await {
                tracing::debug!(error = %err, "metrics endpoint: connection failed");
            }
        });
    }
}

/// Reads one request and writes its response.
async fn answer<P, F>(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    probe: &P,
) -> std::io::Result<()>
where
    P: Fn() -> F,
    F: Future<Output = bool>,
{
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "Request Timeout", "request timeout\n"),
        Ok(Err(err)) => return Err(err),
        Ok(Ok(None)) => Response::text(431, "Request Header Fields Too Large", "too large\n"),
        Ok(Ok(Some(head))) => route(&head, handle, probe).await,
    };
    stream.write_all(&response.into_bytes()).await?;
    stream.shutdown().await
}

/// The request head up to the blank line, or `None` when it exceeds [`MAX_REQUEST_BYTES`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST_BYTES {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    if head.len() > MAX_REQUEST_BYTES {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn route<P, F>(head: &str, handle: &PrometheusHandle, probe: &P) -> Response
where
    P: Fn() -> F,
    F: Future<Output = bool>,
{
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|t| t.split('?').next().unwrap_or(t));
    match (method, path) {
        (Some("GET"), Some("/metrics")) => Response {
            status: 200,
            reason: "OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: handle.render(),
        },
        (Some("GET"), Some("/health")) => {
            let reachable = tokio::time::timeout(PROBE_TIMEOUT, probe())
                .await
                .unwrap_or(false);
            let (status, reason, body) = if reachable {
                (200, "OK", r#"{"status":"ok","upstream":"reachable"}"#)
            } else {
                (
                    503,
                    "Service Unavailable",
                    r#"{"status":"unavailable","upstream":"unreachable"}"#,
                )
            };
            Response {
                status,
                reason,
                content_type: "application/json",
                body: format!("{body}\n"),
            }
        }
        _ => Response::text(404, "Not Found", "not found\n"),
    }
}

struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.to_string(),
        }
    }

    fn into_bytes(self) -> Vec<u8> {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        [head.into_bytes(), self.body.into_bytes()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Sends `request` over a plain TCP connection and returns the whole response.
    async fn request(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        request(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
    }

    #[tokio::test]
    async fn serves_metrics_health_and_404() {
        let handle = install();
        metrics::counter!(CONNECTIONS_TOTAL).increment(3);
        metrics::counter!(BYTES_TOTAL, LABEL_DIRECTION => DIRECTION_SERVER_TO_CLIENT).increment(10);
        metrics::histogram!(STATEMENT_DURATION_SECONDS).record(0.003);

        let upstream_up = Arc::new(AtomicBool::new(true));
        let flag = upstream_up.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_listener(listener, handle, move || {
            let up = flag.load(Ordering::SeqCst);
            async move { up }
        }));

        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
        assert!(
            metrics.contains("maschera_connections_total 3"),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"maschera_bytes_total{direction="server_to_client"} 10"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"maschera_statement_duration_seconds_bucket{le="0.005"} 1"#),
            "{metrics}"
        );

        let health = get(addr, "/health").await;
        assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
        assert!(
            health.ends_with("{\"status\":\"ok\",\"upstream\":\"reachable\"}\n"),
            "{health}"
        );

        upstream_up.store(false, Ordering::SeqCst);
        let health = get(addr, "/health").await;
        assert!(health.starts_with("HTTP/1.1 503 "), "{health}");
        assert!(health.contains("\"upstream\":\"unreachable\""), "{health}");

        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404 "));
        let post = request(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 404 "), "{post}");
        let huge = request(addr, &[b'a'; MAX_REQUEST_BYTES + 1]).await;
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
        assert!(
            get(addr, "/metrics").await.starts_with("HTTP/1.1 200 "),
            "still serving"
        );
        server.abort();
    }
}
