//! Relay behaviour against real sockets: half-close both ways, idle timeout, maximum
//! lifetime, connection caps and shutdown, each checked from both ends of the tunnel.

use std::time::{Duration, Instant};

use airlock_egress::{Egress, StaticResolver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    LOOPBACK, Proxy, bounded, config, duration, echo_server, exchange, manual_server, open_tunnel,
};

fn resolver() -> StaticResolver {
    StaticResolver::new().with("allowed.test", &[LOOPBACK])
}

async fn proxy_to(port: u16, tweak: impl FnOnce(&mut Egress)) -> Proxy {
    Proxy::start(
        |_| {
            let mut cfg = config(&["allowed.test"], &[port], true);
            tweak(&mut cfg);
            cfg
        },
        resolver(),
    )
    .await
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("EOF in time")
        .expect("clean EOF");
    out
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 2 s");
}

#[tokio::test]
async fn client_half_close_reaches_upstream_and_the_reply_still_flows() {
    bounded(30, async {
        let (upstream, mut accepted) = manual_server().await;
        let proxy = proxy_to(upstream.port(), |_| {}).await;
        let mut client =
            open_tunnel(proxy.addr, &format!("allowed.test:{}", upstream.port())).await;
        let mut server = accepted.recv().await.unwrap();

        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        // The upstream sees the bytes, then EOF: the FIN went through.
        assert_eq!(read_to_end(&mut server).await, b"request");
        // The upstream keeps talking after the client's half-close.
        server.write_all(b"reply after your FIN").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut client).await, b"reply after your FIN");
        wait_for(|| proxy.policy.metrics().active_tunnels() == 0).await;
        assert_eq!(proxy.policy.metrics().bytes_up(), 7);
        assert_eq!(proxy.policy.metrics().bytes_down(), 20);
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn upstream_half_close_reaches_client_and_the_client_can_still_send() {
    bounded(30, async {
        let (upstream, mut accepted) = manual_server().await;
        let proxy = proxy_to(upstream.port(), |_| {}).await;
        let mut client =
            open_tunnel(proxy.addr, &format!("allowed.test:{}", upstream.port())).await;
        let mut server = accepted.recv().await.unwrap();

        server.write_all(b"banner").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut client).await, b"banner");
        client.write_all(b"late words").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut server).await, b"late words");
        wait_for(|| proxy.policy.metrics().active_tunnels() == 0).await;
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn early_data_after_the_request_is_forwarded() {
    bounded(30, async {
        let echo = echo_server().await;
        let proxy = proxy_to(echo.port(), |_| {}).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        let target = format!("allowed.test:{}", echo.port());
        client
            .write_all(
                format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nearly").as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(crate::support::read_head(&mut client).await.status, 200);
        client.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut client).await, b"early");
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn idle_tunnels_are_closed_on_both_sides() {
    bounded(30, async {
        let (upstream, mut accepted) = manual_server().await;
        let proxy = proxy_to(upstream.port(), |c| {
            c.idle_timeout = Some(duration("300ms"));
        })
        .await;
        let mut client =
            open_tunnel(proxy.addr, &format!("allowed.test:{}", upstream.port())).await;
        let mut server = accepted.recv().await.unwrap();
        let started = Instant::now();
        // Neither end is left waiting on a socket the proxy forgot (no CLOSE_WAIT).
        assert_eq!(read_to_end(&mut client).await, b"");
        assert_eq!(read_to_end(&mut server).await, b"");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        wait_for(|| proxy.policy.metrics().active_tunnels() == 0).await;
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn traffic_keeps_a_tunnel_alive_until_idle() {
    bounded(30, async {
        let echo = echo_server().await;
        let proxy = proxy_to(echo.port(), |c| c.idle_timeout = Some(duration("400ms"))).await;
        let mut client = open_tunnel(proxy.addr, &format!("allowed.test:{}", echo.port())).await;
        let mut buf = [0u8; 4];
        // Twelve round trips 100 ms apart outlive the idle timeout three times over.
        for _ in 0..12 {
            client.write_all(b"tick").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(read_to_end(&mut client).await, b"");
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn busy_tunnels_end_at_max_lifetime() {
    bounded(30, async {
        let echo = echo_server().await;
        let proxy = proxy_to(echo.port(), |c| c.max_lifetime = Some(duration("500ms"))).await;
        let mut client = open_tunnel(proxy.addr, &format!("allowed.test:{}", echo.port())).await;
        let started = Instant::now();
        let mut buf = [0u8; 4];
        let mut round_trips = 0;
        while round_trips < 100 {
            if client.write_all(b"tick").await.is_err()
                || client.read_exact(&mut buf).await.is_err()
            {
                break;
            }
            round_trips += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let lived = started.elapsed();
        assert!(round_trips < 100, "tunnel outlived max_lifetime");
        assert!(
            lived >= Duration::from_millis(400) && lived < Duration::from_secs(3),
            "{lived:?}"
        );
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn global_connection_cap() {
    bounded(30, async {
        let echo = echo_server().await;
        let proxy = proxy_to(echo.port(), |c| c.max_connections = Some(2)).await;
        let target = format!("allowed.test:{}", echo.port());
        let first = open_tunnel(proxy.addr, &target).await;
        let _second = open_tunnel(proxy.addr, &target).await;
        let reply = exchange(
            proxy.addr,
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(
            (reply.status, reply.reason.as_deref(), reply.closed),
            (503, Some("too_many_connections"), true)
        );
        drop(first);
        wait_for(|| proxy.policy.metrics().active_tunnels() == 1).await;
        let _third = open_tunnel(proxy.addr, &target).await;
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn per_client_connection_cap_counts_unfinished_requests() {
    bounded(30, async {
        let echo = echo_server().await;
        let proxy = proxy_to(echo.port(), |c| c.max_connections_per_client = Some(2)).await;
        let target = format!("allowed.test:{}", echo.port());
        let _tunnel = open_tunnel(proxy.addr, &target).await;
        // A connection that has not sent its request yet holds a slot too.
        let silent = TcpStream::connect(proxy.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = exchange(
            proxy.addr,
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(
            (reply.status, reply.reason.as_deref(), reply.closed),
            (429, Some("too_many_client_connections"), true)
        );
        drop(silent);
        let mut retried = None;
        for _ in 0..50 {
            let reply = exchange(proxy.addr, b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n").await;
            if reply.status == 403 {
                retried = Some(reply);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(retried.is_some(), "the slot was not released");
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_drains_then_closes_tunnels_and_stops_accepting() {
    bounded(30, async {
        let (upstream, mut accepted) = manual_server().await;
        let proxy = proxy_to(upstream.port(), |c| {
            c.drain_timeout = Some(duration("300ms"));
        })
        .await;
        let addr = proxy.addr;
        let mut client = open_tunnel(addr, &format!("allowed.test:{}", upstream.port())).await;
        let mut server = accepted.recv().await.unwrap();
        let started = Instant::now();
        let stopping = tokio::spawn(proxy.stop());
        // During the drain period the tunnel still works.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(b"still here").await.unwrap();
        let mut buf = [0u8; 10];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still here");
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still accepting after shutdown"
        );
        // Then it is closed on both sides and serve returns.
        assert_eq!(read_to_end(&mut client).await, b"");
        assert_eq!(read_to_end(&mut server).await, b"");
        stopping.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
    })
    .await;
}

#[tokio::test]
async fn upstream_gone_and_client_silent_is_reaped_by_the_idle_timeout() {
    bounded(30, async {
        let (upstream, mut accepted) = manual_server().await;
        let proxy = proxy_to(upstream.port(), |c| {
            c.idle_timeout = Some(duration("300ms"));
        })
        .await;
        let mut client =
            open_tunnel(proxy.addr, &format!("allowed.test:{}", upstream.port())).await;
        let mut server = accepted.recv().await.unwrap();
        server.write_all(b"last words").await.unwrap();
        drop(server);
        assert_eq!(read_to_end(&mut client).await, b"last words");
        // The client neither writes nor closes; the proxy still lets go of both sockets.
        wait_for(|| proxy.policy.metrics().active_tunnels() == 0).await;
        drop(client);
        proxy.stop().await;
    })
    .await;
}
