//! An unreliable link in front of an upstream: a reverse proxy on loopback that answers a
//! share of requests with 503 and leaves another share hanging, and forwards the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::TryStreamExt;
use http::StatusCode;

/// How a [`Chaos`] link misbehaves: shares of requests, between 0 and 1.
#[derive(Debug, Clone, Copy)]
pub struct Odds {
    /// Answered 503 at once.
    pub fail: f64,
    /// Never answered: the connection stays open and silent for `stall`.
    pub stall: f64,
    pub stall_for: Duration,
}

struct Link {
    target: String,
    odds: Odds,
    http: reqwest::Client,
    failed: AtomicU64,
    stalled: AtomicU64,
    forwarded: AtomicU64,
}

/// A running unreliable link; stops when dropped.
pub struct Chaos {
    link: Arc<Link>,
    addr: std::net::SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Chaos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chaos({} -> {})", self.addr, self.link.target)
    }
}

impl Chaos {
    /// A link to `target` (`http://host:port`) with `odds`.
    pub async fn start(target: &str, odds: Odds) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let link = Arc::new(Link {
            target: target.trim_end_matches('/').to_owned(),
            odds,
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            failed: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let app = Router::new().fallback(forward).with_state(link.clone());
        let tx = crate::serve::spawn(listener, app);
        Self {
            link,
            addr,
            _shutdown: tx,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered 503, left hanging, and forwarded so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.link.failed.load(Ordering::Relaxed),
            self.link.stalled.load(Ordering::Relaxed),
            self.link.forwarded.load(Ordering::Relaxed),
        )
    }
}

async fn forward(State(link): State<Arc<Link>>, request: Request) -> Response {
    let roll: f64 = rand::random();
    if roll < link.odds.fail {
        link.failed.fetch_add(1, Ordering::Relaxed);
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }
    if roll < link.odds.fail + link.odds.stall {
        link.stalled.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(link.odds.stall_for).await;
        return status(StatusCode::GATEWAY_TIMEOUT);
    }
    link.forwarded.fetch_add(1, Ordering::Relaxed);
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut upstream = link
        .http
        .request(request.method().clone(), format!("{}{path}", link.target));
    for (name, value) in request.headers() {
        if name != http::header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), 16 << 20).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(answer) = upstream.body(body).send().await else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response.body(Body::from_stream(stream)).unwrap()
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}
