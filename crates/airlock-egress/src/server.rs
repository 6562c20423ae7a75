//! The accept loop and the per-connection steps: admit the client, read the request,
//! check it, resolve and check the addresses, dial, relay, record.
//!
//! Refusals write one short response and close; the connection is then drained briefly so
//! that the client reads the response instead of a reset.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};

use crate::chain::UpstreamChain;
use crate::decision::{CloseReason, Decision, Reason};
use crate::host::HostName;
use crate::policy::EgressPolicy;
use crate::request::read_request;
use crate::tunnel::{TunnelLimits, relay};

/// How long a refused client gets to read its response before the socket is dropped.
const LINGER: Duration = Duration::from_secs(1);
/// At most this much is read (and discarded) from a refused client while lingering.
const LINGER_BYTES: usize = 64 * 1024;
/// After the drain period and the stop signal, how long tunnels get to unwind.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Run the proxy on `listener` until `shutdown` completes. Then stop accepting, let open
/// tunnels continue for the drain timeout, close the rest, and return.
pub async fn serve(
    policy: Arc<EgressPolicy>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let listen = listener.local_addr()?;
    tracing::info!(
        target: "airlock::egress",
        listen = %listen,
        allow = policy.allowlist().entries().len(),
        allowlist_digest = %policy.allowlist_digest(),
        "egress proxy listening"
    );
    let slots = Arc::new(Slots::new(&policy));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = Connection {
                        policy: Arc::clone(&policy),
                        slots: Arc::clone(&slots),
                        listen,
                        stop: stop_rx.clone(),
                    };
                    tasks.spawn(conn.handle(stream, peer));
                }
                Err(err) => {
                    // Usually out of file descriptors; back off instead of spinning.
                    tracing::warn!(target: "airlock::egress", error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!(target: "airlock::egress", open = tasks.len(), "egress proxy draining");
    let _ = timeout(policy.limits().drain_timeout, drain(&mut tasks)).await;
    let _ = stop_tx.send(true);
    if timeout(STOP_GRACE, drain(&mut tasks)).await.is_err() {
        tasks.abort_all();
        drain(&mut tasks).await;
    }
    tracing::info!(target: "airlock::egress", "egress proxy stopped");
    Ok(())
}

async fn drain(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// Global and per-client connection caps.
#[derive(Debug)]
struct Slots {
    global: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    per_client_max: usize,
}

impl Slots {
    fn new(policy: &EgressPolicy) -> Self {
        Self {
            global: Arc::new(Semaphore::new(policy.limits().max_connections)),
            per_client: Mutex::new(HashMap::new()),
            per_client_max: policy.limits().max_connections_per_client,
        }
    }

    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Reason> {
        let permit = Arc::clone(&self.global)
            .try_acquire_owned()
            .map_err(|_| Reason::TooManyConnections)?;
        let mut map = self
            .per_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = map.entry(ip).or_insert(0);
        if *count >= self.per_client_max {
            return Err(Reason::TooManyClientConnections);
        }
        *count += 1;
        Ok(Slot {
            _permit: permit,
            slots: Arc::clone(self),
            ip,
        })
    }
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .slots
            .per_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// What one connection task needs from the server.
struct Connection {
    policy: Arc<EgressPolicy>,
    slots: Arc<Slots>,
    listen: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn handle(self, mut client: TcpStream, peer: SocketAddr) {
        let started = Instant::now();
        let mut decision = Decision::new(peer, SystemTime::now());
        match self.admit_and_check(&mut client, peer, &mut decision).await {
            Ok(opened) => self.tunnel(client, opened, &mut decision).await,
            Err(reason) => self.refuse(client, reason, &mut decision).await,
        }
        decision.emit(started.elapsed());
        self.policy.audit().record(decision.audit_record());
    }

    /// Every step up to a dialed upstream socket. Holds the connection slot in `Opened`.
    async fn admit_and_check(
        &self,
        client: &mut TcpStream,
        peer: SocketAddr,
        decision: &mut Decision,
    ) -> Result<Opened, Reason> {
        let limits = self.policy.limits();
        self.policy.check_client(peer.ip())?;
        let slot = self.slots.acquire(peer.ip().to_canonical())?;
        let deadline = Instant::now() + limits.header_timeout;
        let (request, early) = read_request(client, deadline).await.map_err(|rejection| {
            decision.raw_target = rejection.raw_target;
            rejection.reason
        })?;
        decision.raw_target = Some(request.raw_target);
        decision.host = Some(request.host.to_string());
        decision.port = Some(request.port);
        self.policy.check_target(&request.host, request.port)?;

        // On a wildcard listener, the address this client reached is one of the gateway's.
        let mut own = vec![self.listen];
        if self.listen.ip().is_unspecified()
            && let Ok(local) = client.local_addr()
        {
            own.push(local);
        }
        let dialed = match self.policy.chain_for(&request.host) {
            Some(chain) => {
                decision.via = "upstream_proxy";
                self.dial_chained(chain, &request.host, request.port, &own)
                    .await
            }
            None => self
                .dial(&request.host, request.port, &own)
                .await
                .map(|(stream, ip)| (stream, ip, Vec::new())),
        };
        let (upstream, ip, greeting) = dialed.map_err(|(reason, ip)| {
            decision.ip = ip;
            reason
        })?;
        decision.ip = Some(ip);
        Ok(Opened {
            upstream,
            early,
            greeting,
            _slot: slot,
        })
    }

    /// Through the site's proxy: the local answers checked when the local resolver has
    /// any (given half the connect time), then the tunnel asked of the site proxy by name.
    async fn dial_chained(
        &self,
        chain: &UpstreamChain,
        host: &HostName,
        port: u16,
        own: &[SocketAddr],
    ) -> Result<(TcpStream, IpAddr, Vec<u8>), (Reason, Option<IpAddr>)> {
        let connect = self.policy.limits().connect_timeout;
        let deadline = Instant::now() + connect;
        let lookup = timeout(connect / 2, self.policy.resolver().resolve(host.as_str())).await;
        if let Ok(Ok(ips)) = lookup {
            for ip in &ips {
                self.policy
                    .check_address(*ip, port, own)
                    .map_err(|reason| (reason, Some(*ip)))?;
            }
        }
        let (stream, greeting) = chain
            .open(host, port, deadline)
            .await
            .map_err(|reason| (reason, None))?;
        let proxy = stream
            .peer_addr()
            .map_err(|_| (Reason::UpstreamProxyUnreachable, None))?;
        Ok((stream, proxy.ip(), greeting))
    }

    /// Resolve once, check every answer, dial only checked addresses.
    async fn dial(
        &self,
        host: &HostName,
        port: u16,
        own: &[SocketAddr],
    ) -> Result<(TcpStream, IpAddr), (Reason, Option<IpAddr>)> {
        let deadline = Instant::now() + self.policy.limits().connect_timeout;
        let ips = match timeout_at(deadline, self.policy.resolver().resolve(host.as_str())).await {
            Ok(Ok(ips)) if !ips.is_empty() => ips,
            _ => return Err((Reason::ResolveFailed, None)),
        };
        for ip in &ips {
            self.policy
                .check_address(*ip, port, own)
                .map_err(|reason| (reason, Some(*ip)))?;
        }
        let mut failure = (Reason::ConnectFailed, None);
        for ip in ips {
            match timeout_at(deadline, TcpStream::connect((ip, port))).await {
                Ok(Ok(stream)) => return Ok((stream, ip)),
                Ok(Err(_)) => failure = (Reason::ConnectFailed, Some(ip)),
                Err(_) => return Err((Reason::ConnectTimeout, Some(ip))),
            }
        }
        Err(failure)
    }

    async fn tunnel(&self, mut client: TcpStream, opened: Opened, decision: &mut Decision) {
        let metrics = self.policy.metrics();
        let Opened {
            mut upstream,
            early,
            greeting,
            _slot,
        } = opened;
        metrics.record(Reason::Allowed);
        decision.set_reason(Reason::Allowed);
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let established = async {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            client.write_all(&greeting).await
        };
        if established.await.is_err() {
            decision.close = CloseReason::ClientError.as_str();
            return;
        }
        metrics.add_down(greeting.len() as u64);
        if !early.is_empty() {
            if upstream.write_all(&early).await.is_err() {
                decision.close = CloseReason::UpstreamError.as_str();
                return;
            }
            metrics.add_up(early.len() as u64);
        }
        let _active = metrics.tunnel_opened();
        let limits = self.policy.limits();
        let outcome = relay(
            client,
            upstream,
            TunnelLimits {
                idle_timeout: limits.idle_timeout,
                max_lifetime: limits.max_lifetime,
            },
            metrics,
            self.stop.clone(),
        )
        .await;
        decision.bytes_up = outcome.bytes_up + early.len() as u64;
        decision.bytes_down = outcome.bytes_down + greeting.len() as u64;
        decision.close = outcome.close.as_str();
    }

    async fn refuse(&self, mut client: TcpStream, reason: Reason, decision: &mut Decision) {
        self.policy.metrics().record(reason);
        decision.set_reason(reason);
        decision.close = CloseReason::Refused.as_str();
        if reason.status() == 0 {
            return;
        }
        let response = refusal_response(reason);
        let linger = async {
            client.write_all(response.as_bytes()).await?;
            client.shutdown().await?;
            // Read what the client still sends so that closing does not turn into a reset
            // that destroys the response before the client reads it.
            let mut sink = [0u8; 4096];
            let mut drained = 0;
            while drained < LINGER_BYTES {
                let n = client.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                drained += n;
            }
            io::Result::Ok(())
        };
        let _ = timeout(LINGER, linger).await;
    }
}

/// A dialed upstream, the bytes the client sent early and those the upstream sent with the
/// site proxy's answer, plus the connection slot.
struct Opened {
    upstream: TcpStream,
    early: Vec<u8>,
    greeting: Vec<u8>,
    _slot: Slot,
}

fn refusal_response(reason: Reason) -> String {
    let status = reason.status();
    let body = format!("airlock egress: {}\n", reason.message());
    let allow = if reason == Reason::MethodNotAllowed {
        "Allow: CONNECT\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\nX-Airlock-Reason: {}\r\n{allow}\r\n{body}",
        phrase(status),
        body.len(),
        reason.as_str(),
    )
}

fn phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_a_phrase_and_a_complete_response() {
        for reason in Reason::ALL.iter().filter(|r| r.status() >= 400) {
            assert_ne!(phrase(reason.status()), "Error", "{reason:?}");
            let response = refusal_response(*reason);
            let (head, body) = response.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            assert!(head.contains(&format!("X-Airlock-Reason: {}", reason.as_str())));
        }
    }
}
