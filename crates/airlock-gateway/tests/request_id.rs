//! Every response carries `X-Request-Id`, the access log line of the request carries the same
//! id, the request's span carries it and the upstream fetch's span nests in that span. A
//! plain token from the client is kept; anything else is replaced, never echoed or logged.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use airlock_testkit::FakeFiles;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// Fields of a span or event as ` name=value` text (Debug values, so strings are quoted).
#[derive(Clone, Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

#[derive(Default)]
struct Captured {
    /// The fields of each `airlock::access` event.
    access: Vec<String>,
    /// For each `upstream` span: the fields of the `request` span it nests in, and its own.
    upstream: Vec<(String, String)>,
}

/// A layer recording access-log events and upstream spans with their request span.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Captured>>);

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let span = ctx.span(id).expect("a new span is registered");
        if attrs.metadata().name() == "upstream" {
            let request = span
                .scope()
                .skip(1)
                .find(|s| s.name() == "request")
                .and_then(|s| s.extensions().get::<Fields>().map(|f| f.0.clone()))
                .unwrap_or_default();
            self.0
                .lock()
                .unwrap()
                .upstream
                .push((request, fields.0.clone()));
        }
        span.extensions_mut().insert(fields);
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "airlock::access" {
            let mut fields = Fields::default();
            event.record(&mut fields);
            self.0.lock().unwrap().access.push(fields.0);
        }
    }
}

/// What the `fmt` layer writes (the text and JSON access-log formats of `airlock serve`).
#[derive(Clone, Default)]
struct Written(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Written {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Written {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The `X-Request-Id` of a response written by hand (see [`common::raw_get`]).
fn raw_request_id(answer: &str) -> String {
    answer
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("x-request-id")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no X-Request-Id in {answer:?}"))
}

fn is_fresh(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn every_response_carries_the_request_id_of_its_log_line_and_spans() {
    let capture = Capture::default();
    let (text, json) = (Written::default(), Written::default());
    let (text_writer, json_writer) = (text.clone(), json.clone());
    let subscriber = tracing_subscriber::registry()
        .with(capture.clone())
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || text_writer.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(move || json_writer.clone()),
        );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let files = FakeFiles::start().await;
    files.put("base/ok.txt", "text/plain", b"fine");
    let dir = tempfile::tempdir().unwrap();
    let addr = common::start(
        dir.path(),
        &format!(
            "[[proxy]]\nname = \"raw-proxy\"\nformat = \"raw\"\nupstream = \"{}base/\"\n",
            files.url()
        ),
    )
    .await;
    let client = common::client();
    let id_of = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    // A 200 fetched from the upstream, a 404 of a route and of no route, a refused path.
    let ok = client
        .get(format!("http://{addr}/repository/raw-proxy/ok.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok_id = id_of(&ok);
    let unknown_proxy = common::get(&format!("http://{addr}/repository/nowhere/x")).await;
    assert_eq!(unknown_proxy.status(), 404);
    let no_route = common::get(&format!("http://{addr}/no/such/page")).await;
    assert_eq!(no_route.status(), 404);
    let refused = common::raw_get(addr, "/repository/raw-proxy/http:a:99999/x").await;
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    let refused_id = raw_request_id(&refused);

    // A plain token from a load balancer is kept; hostile ones are replaced.
    let sent = "lb-7.req_0042";
    let kept = client
        .get(format!("http://{addr}/healthz"))
        .header("x-request-id", sent)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200);
    assert_eq!(id_of(&kept), sent);
    let hostile = [
        "evil\" status=500 path=\"/forged".to_owned(),
        "a".repeat(65),
        "x=1".to_owned(),
    ];
    let mut replaced = Vec::new();
    for value in &hostile {
        let response = client
            .get(format!("http://{addr}/healthz"))
            .header("x-request-id", value.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let id = id_of(&response);
        assert!(is_fresh(&id), "{value:?} came back as {id:?}");
        replaced.push(id);
    }

    let mut ids = vec![
        ok_id.clone(),
        id_of(&unknown_proxy),
        id_of(&no_route),
        refused_id,
    ];
    ids.extend(replaced);
    assert!(ids.iter().all(|id| is_fresh(id)), "{ids:?}");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{ids:?}"
    );
    ids.push(sent.to_owned());

    let captured = capture.0.lock().unwrap();
    let paths = [
        "/repository/raw-proxy/ok.txt",
        "/repository/nowhere/x",
        "/no/such/page",
        "/repository/raw-proxy/http:a:99999/x",
        "/healthz",
        "/healthz",
        "/healthz",
        "/healthz",
    ];
    for (id, path) in ids.iter().zip(paths) {
        let lines: Vec<_> = captured
            .access
            .iter()
            .filter(|line| line.contains(&format!(" request_id={id:?} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{id}: {:#?}", captured.access);
        assert!(lines[0].contains(&format!(" path={path:?} ")), "{lines:?}");
    }
    // The upstream fetch ran in a span of its own inside the span of the request it served.
    let fetches: Vec<_> = captured
        .upstream
        .iter()
        .filter(|(request, _)| request.contains(&format!(" request_id={ok_id:?}")))
        .collect();
    assert_eq!(fetches.len(), 1, "{:#?}", captured.upstream);
    let (request, upstream) = fetches[0];
    assert!(
        request.contains(" path=\"/repository/raw-proxy/ok.txt\""),
        "{request}"
    );
    assert!(upstream.contains(" upstream=\"raw-proxy\""), "{upstream}");
    assert!(upstream.contains("/base/ok.txt"), "{upstream}");

    // Both log formats carry the id; no hostile value reached any line.
    let text = text.lines();
    let json = json.lines();
    for id in &ids {
        assert!(
            text.iter()
                .any(|l| l.contains("airlock::access")
                    && l.contains(&format!("request_id=\"{id}\""))),
            "{id}: {text:#?}"
        );
        assert!(
            json.iter().any(|l| l.contains("\"airlock::access\"")
                && l.contains(&format!("\"request_id\":\"{id}\""))),
            "{id}: {json:#?}"
        );
    }
    for value in &hostile {
        for line in text.iter().chain(&json).chain(&captured.access) {
            assert!(
                !line.contains(value.as_str()),
                "{value:?} was logged: {line}"
            );
        }
    }
    assert!(
        json.iter()
            .any(|l| l.contains("\"upstream\":\"raw-proxy\"") && l.contains(&ok_id)),
        "the upstream span's events and the request's id: {json:#?}"
    );
}
