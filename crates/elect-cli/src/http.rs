//! `elect run --http ADDR`: health, readiness, the leader and metrics over HTTP.
//!
//! - `GET /healthz`: 200 while the coordinator answers within the lease (or this host leads),
//!   503 otherwise; the body is the elector's health as JSON.
//! - `GET /readyz`: like `/healthz` with `--ready-when any` (the default); with `--ready-when
//!   leader`, 200 only while this host leads (for load balancers that send to the leader).
//! - `GET /leader`: who leads, as `elect status --json` prints it, plus `"self"`.
//! - `GET /metrics`: every metric of `elect_core::metrics` in the Prometheus text format.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use elect::{Elector, Leadership};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::status::leader_json;
use crate::Failure;

/// When `/readyz` says ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReadyWhen {
    /// Whenever the host is healthy (leading or following).
    Any,
    /// Only while this host leads.
    Leader,
}

/// Request-duration buckets, in seconds: loopback to a slow WAN.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the Prometheus recorder (process-wide) and keeps its histograms drained.
pub(crate) fn install_recorder() -> Result<PrometheusHandle, Failure> {
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| Failure::config(format!("--http: the metrics recorder: {e}")))?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Binds `addr` and serves the endpoints until the returned task is aborted.
pub(crate) async fn serve(
    addr: SocketAddr,
    elector: Elector,
    ready_when: ReadyWhen,
    metrics: PrometheusHandle,
) -> Result<JoinHandle<()>, Failure> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::config(format!("--http {addr}: {e}")))?;
    debug!(addr = %listener.local_addr().map_or(addr, |a| a), "serving health and metrics");
    Ok(tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "--http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (elector, metrics) = (elector.clone(), metrics.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = respond(&request, &elector, ready_when, &metrics);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(5))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = connection.await {
                    debug!(%peer, error = %e, "--http: connection ended");
                }
            });
        }
    }))
}

fn respond(
    request: &Request<Incoming>,
    elector: &Elector,
    ready_when: ReadyWhen,
    metrics: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let health = elector.health();
    let healthy = !health.stopped && (health.leading || health.reachable);
    match request.uri().path() {
        "/healthz" => status_json(healthy, health_json(&health)),
        "/readyz" => {
            let ready = match ready_when {
                ReadyWhen::Any => healthy,
                ReadyWhen::Leader => health.leading,
            };
            status_json(ready, health_json(&health))
        }
        "/leader" => {
            let election = elector.election().as_str();
            let mut json = match elector.leadership() {
                Leadership::Leader(guard) if guard.is_leading() => {
                    let info = elect::LeaderInfo {
                        holder: elector.candidate().clone(),
                        term: guard.term(),
                        remaining: guard
                            .deadline()
                            .saturating_duration_since(tokio::time::Instant::now()),
                        value: guard.lease().value.clone(),
                    };
                    leader_json(election, Some(&info))
                }
                Leadership::Follower { leader } => leader_json(election, leader.as_ref()),
                _ => leader_json(election, None),
            };
            json["self"] = serde_json::Value::Bool(health.leading);
            status_json(true, json)
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn health_json(h: &elect::Health) -> serde_json::Value {
    serde_json::json!({
        "leading": h.leading,
        "term": h.term.map(|t| t.0),
        "reachable": h.reachable,
        "last_reply_ms": h.last_reply.map(|d| d.as_millis() as u64),
        "consecutive_failures": h.consecutive_failures,
        "callbacks_abandoned": h.callbacks_abandoned,
        "stopped": h.stopped,
    })
}

fn status_json(ok: bool, json: serde_json::Value) -> Response<Full<Bytes>> {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, "application/json", format!("{json}\n"))
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, content_type.parse().expect("a valid header"));
    response
}

/// The address `--http` takes: `HOST:PORT` (a port alone means 127.0.0.1:PORT).
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not HOST:PORT (an IP address and a port) or a port"))
}
