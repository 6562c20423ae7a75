//! The decision log (one event per request on `airlock::egress`, rendered here as JSON
//! lines) and the Prometheus counters, checked after real requests.

use std::io::Write;
use std::sync::{Arc, Mutex};

use airlock_egress::StaticResolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{LOOPBACK, Proxy, bounded, config, echo_server, exchange, open_tunnel};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }
}

// current_thread runtime: the proxy's tasks run on this thread, under this subscriber.
#[tokio::test]
async fn one_json_decision_line_per_request() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    bounded(30, async {
        let echo = echo_server().await;
        let port = echo.port();
        let proxy = Proxy::start(
            |_| config(&["allowed.test"], &[port], true),
            StaticResolver::new().with("allowed.test", &[LOOPBACK]),
        )
        .await;
        let mut tunnel = open_tunnel(proxy.addr, &format!("allowed.test:{port}")).await;
        tunnel.write_all(b"0123456789").await.unwrap();
        tunnel.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        tunnel.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, b"0123456789");
        let denied = exchange(proxy.addr, b"CONNECT Evil.Test.:443 HTTP/1.1\r\n\r\n").await;
        assert_eq!(denied.status, 403);
        let literal = exchange(proxy.addr, b"CONNECT 127.1:443 HTTP/1.1\r\n\r\n").await;
        assert_eq!(literal.status, 403);

        let metrics = proxy.prometheus();
        proxy.stop().await;

        let lines = capture.lines();
        let start = lines
            .iter()
            .find(|l| l["message"] == "egress proxy listening")
            .expect("start-up line");
        assert!(
            start["allowlist_digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        let decisions: Vec<_> = lines
            .iter()
            .filter(|l| l["message"] == "egress decision")
            .collect();
        assert_eq!(decisions.len(), 3, "{lines:#?}");
        for d in &decisions {
            assert_eq!(d["target"], "airlock::egress");
            for field in [
                "request_id",
                "time",
                "client",
                "raw_target",
                "host",
                "port",
                "ip",
                "decision",
                "reason",
                "status",
                "bytes_up",
                "bytes_down",
                "duration_ms",
                "close",
            ] {
                assert!(d.get(field).is_some(), "missing {field}: {d}");
            }
        }
        let ids: std::collections::HashSet<_> = decisions
            .iter()
            .map(|d| d["request_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 3, "one id per connection: {ids:?}");
        let allowed = decisions.iter().find(|d| d["decision"] == "allow").unwrap();
        assert_eq!(allowed["host"], "allowed.test");
        assert_eq!(allowed["port"], u64::from(port));
        assert_eq!(allowed["ip"], "127.0.0.1");
        assert_eq!(allowed["bytes_up"], 10);
        assert_eq!(allowed["bytes_down"], 10);
        assert_eq!(allowed["close"], "client_closed");
        let off_list = decisions
            .iter()
            .find(|d| d["reason"] == "not_allowlisted")
            .unwrap();
        assert_eq!(off_list["host"], "evil.test");
        assert_eq!(off_list["status"], 403);
        assert_eq!(off_list["close"], "refused");
        let literal = decisions
            .iter()
            .find(|d| d["reason"] == "ip_literal")
            .unwrap();
        assert_eq!(literal["host"], "");

        for line in [
            "airlock_egress_requests_total{decision=\"allow\",reason=\"allowed\"} 1\n",
            "airlock_egress_requests_total{decision=\"deny\",reason=\"not_allowlisted\"} 1\n",
            "airlock_egress_requests_total{decision=\"deny\",reason=\"ip_literal\"} 1\n",
            "airlock_egress_active_tunnels 0\n",
            "airlock_egress_bytes_total{direction=\"up\"} 10\n",
            "airlock_egress_bytes_total{direction=\"down\"} 10\n",
        ] {
            assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
        }
    })
    .await;
}

/// Every decision is also an audit line: the tunnel with its bytes, the refusal with its
/// reason, each with the client and the decision log's request id and time.
#[tokio::test]
async fn each_decision_is_one_audit_line() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = airlock_audit::Audit::open(&airlock_audit::Settings {
            path: path.clone(),
            max_size: 1 << 20,
            keep: 1,
        })
        .unwrap();
        let echo = echo_server().await;
        let port = echo.port();
        let proxy = Proxy::start_with(
            |_| config(&["allowed.test"], &[port], true),
            StaticResolver::new().with("allowed.test", &[LOOPBACK]),
            None,
            audit,
        )
        .await;
        let mut tunnel = open_tunnel(proxy.addr, &format!("allowed.test:{port}")).await;
        tunnel.write_all(b"0123456789").await.unwrap();
        tunnel.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        tunnel.read_to_end(&mut echoed).await.unwrap();
        let denied = exchange(proxy.addr, b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n").await;
        assert_eq!(denied.status, 403);
        proxy.stop().await;

        let (records, bad) =
            airlock_audit::read_last(&path, &airlock_audit::Filter::default(), 10).unwrap();
        assert!(bad.is_empty());
        assert_eq!(records.len(), 2, "{records:#?}");
        assert!(records.iter().all(|r| r.kind == airlock_audit::Kind::Egress
            && r.client.as_deref() == Some("127.0.0.1")
            && r.request_id.is_some()
            && !r.time.is_empty()));
        let allowed = records.iter().find(|r| r.result == "allow").unwrap();
        assert_eq!(
            allowed.item.as_deref(),
            Some(format!("allowed.test:{port}").as_str())
        );
        assert_eq!(allowed.bytes, Some(20));
        let refused = records.iter().find(|r| r.result == "deny").unwrap();
        assert_eq!(refused.item.as_deref(), Some("evil.test:443"));
        assert_eq!(refused.reason.as_deref(), Some("not_allowlisted"));
        assert_eq!(refused.status, Some(403));
    })
    .await;
}
