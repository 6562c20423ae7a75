//! A real forward proxy for tests of a site's outbound proxy: `tinyproxy` on a loopback
//! port with its own config and log, so a test can tell which requests went through it.
//! It stops when the handle is dropped.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::require_tool;

/// A running `tinyproxy`.
pub struct Tinyproxy {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Tinyproxy {
    /// Starts tinyproxy on a free loopback port, its files under `dir`; with `basic_auth`,
    /// only requests with those credentials pass. Every port may be tunnelled to (CONNECT).
    pub fn start(dir: &Path, basic_auth: Option<(&str, &str)>) -> Self {
        Self::start_with_hosts(dir, basic_auth, &[])
    }

    /// [`Tinyproxy::start`], resolving `hosts` as given: it runs in a mount namespace of its
    /// own whose `/etc/hosts` names them (as a site proxy resolves names the staging node's
    /// DNS does not know). Needs root, as the namespace tests do.
    pub fn start_with_hosts(
        dir: &Path,
        basic_auth: Option<(&str, &str)>,
        hosts: &[(&str, std::net::IpAddr)],
    ) -> Self {
        let binary = require_tool("tinyproxy", "tinyproxy");
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("tinyproxy.log");
        std::fs::write(&log, "").unwrap();
        // Running as root, tinyproxy drops to `nobody` after binding: let it write its log.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        let port = free_port();
        let auth = basic_auth.map_or_else(String::new, |(u, p)| format!("BasicAuth {u} {p}\n"));
        let config = dir.join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 30\n\
                 LogFile \"{}\"\nLogLevel Info\nMaxClients 50\nAllow 127.0.0.1\n\
                 DisableViaHeader Yes\n{auth}",
                log.display()
            ),
        )
        .unwrap();
        let mut command = if hosts.is_empty() {
            Command::new(binary)
        } else {
            let unshare = require_tool("unshare", "util-linux");
            let hosts_file = dir.join("hosts");
            let mut lines = String::from("127.0.0.1 localhost\n");
            for (name, ip) in hosts {
                let _ = writeln!(lines, "{ip} {name}");
            }
            std::fs::write(&hosts_file, lines).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&hosts_file, std::fs::Permissions::from_mode(0o644))
                    .unwrap();
            }
            let mut command = Command::new(unshare);
            command
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"")
                .arg("sh")
                .arg(&hosts_file)
                .arg(binary);
            command
        };
        let child = command
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr, log }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What tinyproxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The request lines it received (`GET http://…`, `CONNECT host:port`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|line| line.split_once("): ").map(|(_, r)| r))
            .filter(|r| {
                ["GET ", "HEAD ", "CONNECT ", "POST "]
                    .iter()
                    .any(|m| r.starts_with(m))
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
