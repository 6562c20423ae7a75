//! The strict, bounded `CONNECT` request parser.
//!
//! Only `CONNECT host:port HTTP/1.x` in authority form is accepted (RFC 9112 §3.2.3), with
//! CRLF line endings, a bounded request line and header block, and a deadline for the
//! whole head. Anything else maps to one [`Reason`]; nothing here allocates more than the
//! caps allow or waits longer than the deadline.

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, timeout_at};

use crate::decision::Reason;
use crate::host::{HostError, HostName, canonicalize};

/// Longest request line accepted; a valid one is under 300 bytes.
pub const MAX_REQUEST_LINE: usize = 1024;
/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8192;
/// Most header fields accepted.
pub const MAX_HEADERS: usize = 64;
/// Bytes asked for per read of the request head.
const READ_CHUNK: usize = 2048;
/// Longest raw target kept for the decision log.
const LOGGED_TARGET: usize = 300;

/// A request that passed the parser: a canonical name and a port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The target as sent, for the log.
    pub raw_target: String,
    pub host: HostName,
    pub port: u16,
}

/// A refused request, with the raw target when one was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub raw_target: Option<String>,
}

impl From<Reason> for Rejection {
    fn from(reason: Reason) -> Self {
        Self {
            reason,
            raw_target: None,
        }
    }
}

/// Read one request head from `stream`, then parse it. Returns the request and any bytes
/// the client sent after the head (early tunnel data, forwarded once the tunnel opens).
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Instant,
) -> Result<(ConnectRequest, Vec<u8>), Rejection> {
    // On the heap, not in the connection's future, which lives as long as the tunnel.
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut scan = Scanner::default();
    loop {
        let start = buf.len();
        // The scanner refuses heads over MAX_HEAD, so this stays bounded.
        buf.reserve(READ_CHUNK);
        let n = match timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => return Err(Reason::HeaderTimeout.into()),
            Ok(Err(_)) => return Err(Reason::ClientGone.into()),
            Ok(Ok(0)) if start == 0 => return Err(Reason::ClientGone.into()),
            Ok(Ok(0)) => return Err(Reason::BadRequest.into()),
            Ok(Ok(n)) => n,
        };
        debug_assert_eq!(buf.len(), start + n);
        if let Some(end) = scan.feed(&buf, start)? {
            let leftover = buf.split_off(end);
            return parse_head(&buf).map(|req| (req, leftover));
        }
    }
}

/// Incremental checks on the bytes as they arrive, so that garbage, bare LFs and oversized
/// heads are refused at once instead of at the deadline.
#[derive(Debug, Default)]
struct Scanner {
    /// End of the request line (index of its CR), once seen.
    line_end: Option<usize>,
}

impl Scanner {
    /// Check `buf[from..]`; return the end of the head (just past CRLFCRLF) when complete.
    fn feed(&mut self, buf: &[u8], from: usize) -> Result<Option<usize>, Reason> {
        for i in from..buf.len() {
            let b = buf[i];
            let prev = i.checked_sub(1).map(|p| buf[p]);
            match b {
                b'\n' if prev != Some(b'\r') => return Err(Reason::BadRequest),
                b'\n' => {
                    if self.line_end.is_none() {
                        self.line_end = Some(i - 1);
                    } else if i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n" {
                        return Ok(Some(i + 1));
                    }
                }
                _ if prev == Some(b'\r') => return Err(Reason::BadRequest),
                b'\t' if self.line_end.is_some() => {}
                // Non-ASCII bytes reach the parser only in the request line, where they
                // are reported as a non-ASCII host.
                0x80.. if self.line_end.is_none() => {}
                b'\r' | 0x20..=0x7e => {}
                _ => return Err(Reason::BadRequest),
            }
            if self.line_end.is_none() && i >= MAX_REQUEST_LINE {
                return Err(Reason::RequestLineTooLong);
            }
            if i >= MAX_HEAD {
                return Err(Reason::HeadersTooLarge);
            }
        }
        Ok(None)
    }
}

/// Parse a complete head, `request-line CRLF *(field-line CRLF) CRLF`.
pub fn parse_head(head: &[u8]) -> Result<ConnectRequest, Rejection> {
    let body = head.strip_suffix(b"\r\n\r\n").ok_or(Reason::BadRequest)?;
    let text = std::str::from_utf8(body).map_err(|_| Reason::BadRequest)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let (method, rest) = request_line.split_once(' ').ok_or(Reason::BadRequest)?;
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(Reason::BadRequest.into());
    }
    if method != "CONNECT" {
        return Err(Reason::MethodNotAllowed.into());
    }
    let (raw_target, version) = rest.split_once(' ').ok_or(Reason::BadRequest)?;
    let logged: String = raw_target.chars().take(LOGGED_TARGET).collect();
    let reject = |reason: Reason| Rejection {
        reason,
        raw_target: Some(logged.clone()),
    };
    if raw_target.is_empty() || version.contains(' ') {
        return Err(reject(Reason::BadRequest));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(reject(Reason::BadVersion));
    }
    let (host, port) = parse_authority(raw_target).map_err(reject)?;

    let mut header_count = 0;
    let mut seen_host = false;
    let mut seen_length = false;
    for line in lines {
        header_count += 1;
        if header_count > MAX_HEADERS {
            return Err(reject(Reason::HeadersTooLarge));
        }
        if line.starts_with([' ', '\t']) {
            return Err(reject(Reason::BadRequest)); // obs-fold, RFC 9112 §5.2
        }
        let (name, value) = line.split_once(':').ok_or(reject(Reason::BadRequest))?;
        if name.is_empty() || !name.bytes().all(is_tchar) || !value.is_ascii() {
            return Err(reject(Reason::BadRequest));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("host") {
            if seen_host || !host_header_matches(value, &host, port) {
                return Err(reject(Reason::HostMismatch));
            }
            seen_host = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            if seen_length || value != "0" {
                return Err(reject(Reason::BodyNotAllowed));
            }
            seen_length = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(reject(Reason::BodyNotAllowed));
        }
    }
    Ok(ConnectRequest {
        raw_target: logged,
        host,
        port,
    })
}

/// `host:port`, strictly.
fn parse_authority(target: &str) -> Result<(HostName, u16), Reason> {
    if target.starts_with('[') {
        return Err(Reason::IpLiteral);
    }
    if target.contains('@') {
        return Err(Reason::Userinfo);
    }
    if target.contains('%') {
        return Err(Reason::PercentEncoding);
    }
    if target.contains('/') || target.contains('?') || target.contains('#') {
        return Err(Reason::BadTarget);
    }
    let (host, port) = target.rsplit_once(':').ok_or(Reason::MissingPort)?;
    let port = parse_port(port)?;
    let host = canonicalize(host).map_err(|e| match e {
        HostError::Empty => Reason::BadTarget,
        HostError::NonAscii => Reason::NonAscii,
        HostError::PercentEncoded => Reason::PercentEncoding,
        HostError::Userinfo => Reason::Userinfo,
        HostError::IpLiteral => Reason::IpLiteral,
        _ => Reason::BadHost,
    })?;
    Ok((host, port))
}

/// 1–65535, decimal digits only, no sign, no leading zero.
fn parse_port(port: &str) -> Result<u16, Reason> {
    if port.is_empty() {
        return Err(Reason::MissingPort);
    }
    if port.len() > 5 || port.starts_with('0') || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reason::BadPort);
    }
    port.parse().map_err(|_| Reason::BadPort)
}

/// A `Host` header must name the same target (the port may be omitted).
fn host_header_matches(value: &str, host: &HostName, port: u16) -> bool {
    let (name, header_port) = match value.rsplit_once(':') {
        Some((name, p)) => match parse_port(p) {
            Ok(p) => (name, Some(p)),
            Err(_) => return false,
        },
        None => (value, None),
    };
    canonicalize(name).is_ok_and(|n| &n == host) && header_port.is_none_or(|p| p == port)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<ConnectRequest, Reason> {
        parse_head(s.as_bytes()).map_err(|r| r.reason)
    }

    fn connect(target: &str) -> Result<ConnectRequest, Reason> {
        parse(&format!(
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
        ))
    }

    #[test]
    fn accepts_what_real_clients_send() {
        let curl = "CONNECT login.example.com:443 HTTP/1.1\r\nHost: login.example.com:443\r\n\
                    User-Agent: curl/8.5.0\r\nProxy-Connection: Keep-Alive\r\n\r\n";
        let req = parse(curl).unwrap();
        assert_eq!((req.host.as_str(), req.port), ("login.example.com", 443));
        let python = "CONNECT Login.Example.COM.:443 HTTP/1.0\r\n\r\n";
        assert_eq!(parse(python).unwrap().host.as_str(), "login.example.com");
        let zero_length = "CONNECT a.example.com:443 HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert!(parse(zero_length).is_ok());
    }

    #[test]
    fn refuses_each_shape_with_its_reason() {
        let cases: &[(&str, Reason)] = &[
            ("127.0.0.1:443", Reason::IpLiteral),
            ("[::1]:443", Reason::IpLiteral),
            ("::1:443", Reason::IpLiteral),
            ("u@a.example.com:443", Reason::Userinfo),
            ("a%2eexample.com:443", Reason::PercentEncoding),
            ("a.example.com", Reason::MissingPort),
            ("a.example.com:", Reason::MissingPort),
            ("a.example.com:0443", Reason::BadPort),
            ("a.example.com:+443", Reason::BadPort),
            ("a.example.com:65536", Reason::BadPort),
            ("a.example.com:0", Reason::BadPort),
            ("a.example.com:443:443", Reason::IpLiteral),
            ("https://a.example.com:443", Reason::BadTarget),
            (":443", Reason::BadTarget),
            ("a_b.example.com:443", Reason::BadHost),
        ];
        for (target, want) in cases {
            assert_eq!(connect(target).map(|_| ()), Err(*want), "{target}");
        }
        let heads: &[(&str, Reason)] = &[
            (
                "GET http://a.example.com/ HTTP/1.1\r\n\r\n",
                Reason::MethodNotAllowed,
            ),
            (
                "connect a.example.com:443 HTTP/1.1\r\n\r\n",
                Reason::MethodNotAllowed,
            ),
            (
                "CONNECT a.example.com:443 HTTP/2.0\r\n\r\n",
                Reason::BadVersion,
            ),
            ("CONNECT a.example.com:443\r\n\r\n", Reason::BadRequest),
            (
                "CONNECT  a.example.com:443 HTTP/1.1\r\n\r\n",
                Reason::BadRequest,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1 \r\n\r\n",
                Reason::BadRequest,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1\r\nHost: a.example.com\r\nHost: a.example.com\r\n\r\n",
                Reason::HostMismatch,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1\r\nHost: b.example.com:443\r\n\r\n",
                Reason::HostMismatch,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1\r\nHost: a.example.com:80\r\n\r\n",
                Reason::HostMismatch,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1\r\nContent-Length: 4\r\n\r\n",
                Reason::BodyNotAllowed,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Reason::BodyNotAllowed,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1\r\nX: y\r\n z\r\n\r\n",
                Reason::BadRequest,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1\r\nHost : a.example.com\r\n\r\n",
                Reason::BadRequest,
            ),
            (
                "CONNECT a.example.com:443 HTTP/1.1\r\nnocolon\r\n\r\n",
                Reason::BadRequest,
            ),
        ];
        for (head, want) in heads {
            assert_eq!(parse(head).map(|_| ()), Err(*want), "{head:?}");
        }
        let many = format!(
            "CONNECT a.example.com:443 HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(&many).map(|_| ()), Err(Reason::HeadersTooLarge));
    }

    #[tokio::test]
    async fn reader_refuses_early_and_keeps_leftover() {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let read = |bytes: &'static [u8]| async move {
            let mut s = bytes;
            read_request(&mut s, deadline).await.map_err(|r| r.reason)
        };
        let (req, rest) = read(b"CONNECT a.example.com:443 HTTP/1.1\r\n\r\n\x16\x03\x01")
            .await
            .unwrap();
        assert_eq!(req.port, 443);
        assert_eq!(rest, b"\x16\x03\x01");
        assert_eq!(
            read(b"CONNECT a.example.com:443 HTTP/1.1\n\n")
                .await
                .unwrap_err(),
            Reason::BadRequest
        );
        assert_eq!(
            read(b"\x16\x03\x01\x02\x00\x01\x00").await.unwrap_err(),
            Reason::BadRequest
        );
        assert_eq!(read(b"").await.unwrap_err(), Reason::ClientGone);
        assert_eq!(
            read(b"CONNECT a.example.com:443 HTTP/1.1\r\n")
                .await
                .unwrap_err(),
            Reason::BadRequest
        );
        let long: &'static [u8] = Box::leak(
            format!("CONNECT {} HTTP/1.1\r\n\r\n", "a".repeat(2000))
                .into_bytes()
                .into_boxed_slice(),
        );
        assert_eq!(read(long).await.unwrap_err(), Reason::RequestLineTooLong);
        let big: &'static [u8] = Box::leak(
            format!(
                "CONNECT a.example.com:443 HTTP/1.1\r\nX: {}\r\n\r\n",
                "y".repeat(MAX_HEAD)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        assert_eq!(read(big).await.unwrap_err(), Reason::HeadersTooLarge);
        assert_eq!(
            read("CONNECT \u{430}.example.com:443 HTTP/1.1\r\n\r\n".as_bytes())
                .await
                .unwrap_err(),
            Reason::NonAscii
        );
    }

    /// A client that sends its bytes in the given pieces, one per read.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(mut piece) = self.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.push_front(piece.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// `read_request` over `bytes` cut at `cuts`: the request (or refusal), and every byte
    /// after the head (what came with it, then what was left unread).
    fn read_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<(ConnectRequest, Vec<u8>), Reason> {
        let mut at = 0;
        let mut pieces = std::collections::VecDeque::new();
        for &cut in cuts.iter().chain([&bytes.len()]) {
            let cut = cut.clamp(at, bytes.len());
            if cut > at {
                pieces.push_back(bytes[at..cut].to_vec());
            }
            at = cut;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = Pieces(pieces);
            let deadline = Instant::now() + std::time::Duration::from_secs(5);
            let (request, mut after) = read_request(&mut client, deadline)
                .await
                .map_err(|r| r.reason)?;
            after.extend(client.0.into_iter().flatten());
            Ok((request, after))
        })
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z][a-zA-Z0-9-]{0,8}[a-zA-Z]"
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes);
            let mut scan = Scanner::default();
            let _ = scan.feed(&bytes, 0);
        }

        #[test]
        fn never_panics_on_near_valid_requests(target in "[a-zA-Z0-9.:@%\\[\\]/+-]{0,40}", version in "HTTP/[0-9.]{1,4}") {
            let head = format!("CONNECT {target} {version}\r\nHost: {target}\r\n\r\n");
            if let Ok(req) = parse_head(head.as_bytes()) {
                // Whatever passes is a canonical name with a real port.
                prop_assert_eq!(canonicalize(req.host.as_str()).unwrap(), req.host.clone());
                prop_assert!(req.port > 0);
                prop_assert!(!target.contains('@') && !target.contains('%') && !target.contains('['));
            }
        }

        #[test]
        fn valid_requests_parse_canonically(labels in proptest::collection::vec(label(), 2..5), port in 1u16..) {
            let name = labels.join(".");
            let req = parse_head(format!("CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\n\r\n").as_bytes()).unwrap();
            prop_assert_eq!(req.host.as_str(), name.to_ascii_lowercase());
            prop_assert_eq!(req.port, port);
        }

        #[test]
        fn a_head_read_in_pieces_is_the_head_read_whole(
            labels in proptest::collection::vec(label(), 2..4),
            junk in proptest::collection::vec(any::<u8>(), 0..80),
            headers in proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,30}", 0..5),
            cuts in proptest::collection::vec(0usize..400, 0..12),
            valid in any::<bool>(),
        ) {
            let mut bytes = if valid {
                let name = labels.join(".");
                let mut head = format!("CONNECT {name}:443 HTTP/1.1\r\n");
                for h in &headers {
                    head += h;
                    head += "\r\n";
                }
                (head + "\r\n").into_bytes()
            } else {
                Vec::new()
            };
            bytes.extend(&junk);
            let whole = read_in_pieces(&bytes, &[]);
            let mut sorted = cuts.clone();
            sorted.sort_unstable();
            prop_assert_eq!(read_in_pieces(&bytes, &sorted), whole.clone());
            match whole {
                Ok((request, after)) => {
                    prop_assert!(valid);
                    prop_assert_eq!(request.host.as_str(), labels.join(".").to_ascii_lowercase());
                    prop_assert_eq!(after, junk);
                }
                // A generated header may be refused; a bare request line never is.
                Err(_) => prop_assert!(!valid || !headers.is_empty()),
            }
        }

        #[test]
        fn numeric_hosts_are_never_names(a in 0u32.., short in any::<bool>()) {
            let host = if short { format!("{}.{}", a >> 24, a & 0xff_ffff) } else { format!("0x{a:x}") };
            prop_assert_eq!(parse(&format!("CONNECT {host}:443 HTTP/1.1\r\n\r\n")).map(|_| ()), Err(Reason::IpLiteral));
        }
    }
}
