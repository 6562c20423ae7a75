use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;

fn settings(dir: &Path, max_size: u64, keep: u32) -> Settings {
    Settings {
        path: dir.join("log/audit.jsonl"),
        max_size,
        keep,
    }
}

fn fetch(item: &str) -> Record {
    let mut r = Record::new(Kind::Fetch, "ok");
    r.proxy = Some("hub".into());
    r.item = Some(item.into());
    r.client = Some("10.0.0.5".into());
    r
}

fn all(path: &Path) -> (Vec<Record>, Vec<BadLine>) {
    read_last(path, &Filter::default(), usize::MAX).unwrap()
}

#[test]
fn lines_round_trip_with_a_time_and_without_empty_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 2);
    let audit = Audit::open(&s).unwrap();
    audit.record(fetch("/v2/library/alpine/manifests/3.20"));
    let text = std::fs::read_to_string(&s.path).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(!text.contains("null"), "{text}");
    assert!(!text.contains("\"user\""), "{text}");
    let (records, bad) = all(&s.path);
    assert!(bad.is_empty());
    assert_eq!(records.len(), 1);
    assert!(humantime::parse_rfc3339(&records[0].time).is_ok());
    assert_eq!(
        records[0].item.as_deref(),
        Some("/v2/library/alpine/manifests/3.20")
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&s.path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn rotation_keeps_the_newest_files_and_loses_no_line_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 400, 2);
    let audit = Audit::open(&s).unwrap();
    for n in 0..40 {
        audit.record(fetch(&format!("/item/{n:03}")));
    }
    assert!(rotated(&s.path, 1).exists() && rotated(&s.path, 2).exists());
    assert!(
        !rotated(&s.path, 3).exists(),
        "only `keep` rotated files stay"
    );
    for file in files(&s.path) {
        assert!(
            std::fs::metadata(&file).unwrap().len() <= 400,
            "{}",
            file.display()
        );
    }
    let (records, bad) = all(&s.path);
    assert!(bad.is_empty());
    // Oldest first, contiguous, ending at the last one written.
    let items: Vec<String> = records.iter().map(|r| r.item.clone().unwrap()).collect();
    assert_eq!(items.last().unwrap(), "/item/039");
    let first: usize = items[0][6..].parse().unwrap();
    let expected: Vec<String> = (first..40).map(|n| format!("/item/{n:03}")).collect();
    assert_eq!(items, expected);
    assert!(first > 0, "older lines were rotated away");
}

#[test]
fn keep_zero_starts_afresh_and_a_reopened_trail_appends() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 200, 0);
    {
        let audit = Audit::open(&s).unwrap();
        for n in 0..10 {
            audit.record(fetch(&format!("/a/{n}")));
        }
    }
    assert!(!rotated(&s.path, 1).exists());
    let before = all(&s.path).0.len();
    Audit::open(&s).unwrap().record(fetch("/again"));
    let (records, _) = all(&s.path);
    assert!(records.len() == before + 1 || records.len() == 1);
    assert_eq!(records.last().unwrap().item.as_deref(), Some("/again"));
}

#[test]
fn an_unwritable_path_fails_at_open_and_a_lost_file_does_not_stop_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("log"), b"a file, not a directory").unwrap();
    assert!(Audit::open(&settings(dir.path(), 100, 1)).is_err());

    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 100, 1);
    let audit = Audit::open(&s).unwrap();
    // The directory disappears under the gateway: rotation fails, records are counted
    // as failures, and nothing panics.
    std::fs::remove_dir_all(dir.path().join("log")).unwrap();
    for n in 0..5 {
        audit.record(fetch(&format!("/b/{n}")));
    }
    assert!(audit.write_errors() > 0);
}

#[test]
fn filters_select_by_kind_proxy_client_item_user_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 1);
    let audit = Audit::open(&s).unwrap();
    let mut old = fetch("/v2/library/alpine/blobs/sha256:aa");
    old.time = "2020-01-01T00:00:00.000Z".into();
    audit.record(old);
    audit.record(fetch("/v2/library/postgres/manifests/15"));
    let mut login = Record::new(Kind::Login, "refused");
    login.user = Some("admin".into());
    login.client = Some("10.0.0.9".into());
    audit.record(login);

    let count = |filter: Filter| read_last(&s.path, &filter, 100).unwrap().0.len();
    assert_eq!(count(Filter::default()), 3);
    assert_eq!(
        count(Filter {
            kind: Some(Kind::Fetch),
            ..Filter::default()
        }),
        2
    );
    assert_eq!(
        count(Filter {
            item: Some("postgres".into()),
            ..Filter::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            client: Some("10.0.0.9".into()),
            ..Filter::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            user: Some("admin".into()),
            ..Filter::default()
        }),
        1
    );
    assert_eq!(
        count(Filter {
            proxy: Some("other".into()),
            ..Filter::default()
        }),
        0
    );
    let now = SystemTime::now();
    let since = Filter::parse_since("1h", now).unwrap();
    assert_eq!(
        count(Filter {
            since: Some(since),
            ..Filter::default()
        }),
        2
    );
    let since = Filter::parse_since("2019-12-31T00:00:00Z", now).unwrap();
    assert_eq!(
        count(Filter {
            since: Some(since),
            ..Filter::default()
        }),
        3
    );
    assert!(Filter::parse_since("yesterday", now).is_err());
    assert_eq!(
        read_last(&s.path, &Filter::default(), 1).unwrap().0[0].kind,
        Kind::Login
    );
}

#[test]
fn bad_lines_are_reported_with_their_place_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 1);
    Audit::open(&s).unwrap().record(fetch("/first"));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&s.path)
        .unwrap();
    file.write_all(b"{\"kind\": \"fetch\", \"result\": \n")
        .unwrap();
    file.write_all(b"\n   \n").unwrap();
    file.write_all(&vec![b'x'; MAX_LINE * 3]).unwrap();
    file.write_all(b"\n{\"kind\": \"teleport\", \"result\": \"ok\"}\n\xff\xfe\n")
        .unwrap();
    drop(file);
    Audit::open(&s).unwrap().record(fetch("/last"));
    let (records, bad) = all(&s.path);
    let items: Vec<_> = records.iter().map(|r| r.item.clone().unwrap()).collect();
    assert_eq!(items, ["/first", "/last"]);
    let lines: Vec<u64> = bad.iter().map(|b| b.line).collect();
    assert_eq!(lines, [2, 5, 6, 7], "{bad:?}");
    assert!(bad[1].reason.contains("longer than"), "{}", bad[1]);
}

#[test]
fn a_missing_trail_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(all(&dir.path().join("none.jsonl")).0.len(), 0);
}

#[tokio::test]
async fn the_context_follows_the_request_and_what_it_hands_on() {
    let context = Context {
        client: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        request_id: "r-1".into(),
        audit: Audit::disabled(),
    };
    assert!(Context::current().is_none());
    let (inside, spawned) = context
        .scope(async {
            let inside = Record::new(Kind::Fetch, "ok").in_context();
            let spawned = tokio::spawn(Context::carry(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Record::new(Kind::Fetch, "ok").in_context()
            }))
            .await
            .unwrap();
            (inside, spawned)
        })
        .await;
    for r in [inside, spawned] {
        assert_eq!(r.client.as_deref(), Some("10.1.2.3"));
        assert_eq!(r.request_id.as_deref(), Some("r-1"));
    }
    assert!(Record::new(Kind::Fetch, "ok").in_context().client.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Whatever bytes a trail file holds, reading it ends, reports instead of panicking, and
    /// keeps the records that are whole.
    #[test]
    fn hostile_files_never_panic(junk in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 1 << 20, 1);
        std::fs::create_dir_all(s.path.parent().unwrap()).unwrap();
        std::fs::write(&s.path, &junk).unwrap();
        Audit::open(&s).unwrap().record(fetch("/whole"));
        let (records, _) = all(&s.path);
        prop_assert_eq!(records.last().and_then(|r| r.item.as_deref()), Some("/whole"));
    }
}
