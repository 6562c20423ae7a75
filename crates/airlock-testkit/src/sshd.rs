//! A real OpenSSH server for tests: generated host and client keys, one listening address,
//! the logged-in user is whoever runs the test. Optionally started behind a command prefix
//! (`ip netns exec <ns>`) so it can serve inside a network namespace.

use std::io::{BufRead as _, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A running `sshd`, stopped on drop.
#[derive(Debug)]
pub struct Sshd {
    pub address: IpAddr,
    pub port: u16,
    /// The private key `authorized_keys` accepts (no passphrase).
    pub client_key_path: PathBuf,
    /// The user clients log in as: the one running the test.
    pub user: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Sshd {
    /// Start sshd on `listen` (a free port) with its keys and config in `dir`.
    pub fn start(dir: &Path, listen: IpAddr) -> Self {
        let port = free_port(listen);
        Self::start_with_prefix(dir, listen, port, &[])
    }

    /// Start `<prefix…> sshd …` on `listen:port`, e.g. with `["ip", "netns", "exec", "ns1"]`.
    pub fn start_with_prefix(dir: &Path, listen: IpAddr, port: u16, prefix: &[&str]) -> Self {
        let sshd = sshd_path();
        crate::require_tool("ssh-keygen", "openssh-client");
        let host_key = dir.join("sshd_host_key");
        let client_key_path = dir.join("client_key");
        for key in [&host_key, &client_key_path] {
            if !key.exists() {
                keygen(key);
            }
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client_key_path.with_extension("pub"), &authorized).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {listen}\n\
                 Port {port}\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized}\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PidFile none\n\
                 MaxSessions 100\n\
                 MaxStartups 100\n\
                 LogLevel INFO\n",
                host_key = host_key.display(),
                authorized = authorized.display(),
            ),
        )
        .unwrap();
        let user = current_user();
        if user == "root" {
            // sshd's privilege separation directory; a service manager makes it on real hosts.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }

        let mut argv: Vec<String> = prefix.iter().map(|s| (*s).to_owned()).collect();
        argv.push(sshd.display().to_string());
        argv.extend(["-D", "-e", "-f"].map(str::to_owned));
        argv.push(config.display().to_string());
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));

        // sshd -e logs to stderr; "Server listening" means it accepts connections.
        let log = Arc::new(Mutex::new(String::new()));
        let (ready, listening) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("Server listening on") {
                    let _ = ready.send(());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        if listening.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sshd did not start: {argv:?}\n{}", log.lock().unwrap());
        }
        Self {
            address: listen,
            port,
            client_key_path,
            user,
            child,
            log,
        }
    }

    /// Client options for a throwaway server (what an inventory's `ansible_ssh_common_args`
    /// would hold): its host key is new every run.
    pub fn client_options(&self) -> Vec<String> {
        [
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Everything sshd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// How many logins sshd accepted so far.
    pub fn logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sshd must be started by its absolute path (it re-executes itself).
fn sshd_path() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("sshd"));
    on_path
        .chain([PathBuf::from("/usr/sbin/sshd")])
        .find(|p| p.is_absolute() && p.is_file())
        .unwrap_or_else(|| {
            panic!("`sshd` is not installed: apt-get install openssh-server (run scripts/test.sh)")
        })
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "airlock-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().unwrap();
    assert!(output.status.success(), "`id -un` failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn free_port(address: IpAddr) -> u16 {
    std::net::TcpListener::bind((address, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
