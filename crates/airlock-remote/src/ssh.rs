//! The system OpenSSH client, one multiplexed connection per host.
//!
//! Every command is one `ssh` process; the first opens a master connection
//! (`ControlMaster=auto`) that later commands share for `ControlPersist` (60 s), so a deploy's
//! hundreds of commands cost one handshake per host. `~/.ssh/config`, agents, jump hosts and
//! `known_hosts` keep working because airlock runs the user's own client and never passes `-F`.
//!
//! The command line, in this order (ssh keeps the first value it sees for an option):
//!
//! ```text
//! ssh -o BatchMode=yes -o ControlMaster=auto -o ControlPath=<dir>/<name hash>-%C -o ControlPersist=60s
//!     [-p <ansible_port>] [-l <ansible_user>] [-i <private key>]
//!     <ansible_ssh_common_args> <ansible_ssh_extra_args>
//!     -o ConnectTimeout=10 -o LogLevel=ERROR
//!     -- <address> 'sudo -H -n -u root -- sh -c '\''<script>'\'''
//! ```
//!
//! Batch mode and the multiplexing options come first, so nothing turns prompts back on;
//! the inventory's arguments come before the connect timeout and log level, so an inventory
//! can change those. `-p` is left out for port 22 so that a `Port` in `~/.ssh/config` still
//! applies. Exit status 255 is ssh's own failure (refused, timed out, key rejected):
//! [`ExecError::Unreachable`] with the last lines ssh printed.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ExecError, Executor, Input, Output};
use airlock_ansible::connection::Machine;

/// Seconds ssh waits for the TCP connection.
pub const CONNECT_TIMEOUT_SECS: u32 = 10;

/// How long an idle master connection stays open.
pub const CONTROL_PERSIST: &str = "60s";

/// ssh's exit status for its own errors.
const SSH_FAILED: i32 = 255;

/// One host reached through the system `ssh`.
#[derive(Debug)]
pub struct Ssh {
    machine: Machine,
    control_path: PathBuf,
}

impl Ssh {
    /// A host whose master connection's socket goes into `control_dir` (see [`ControlDir`]).
    /// Nothing connects until the first command.
    pub fn new(machine: &Machine, control_dir: &Path) -> Self {
        Self {
            machine: machine.clone(),
            control_path: control_dir.join(socket_name(&machine.name)),
        }
    }

    /// The options that name the connection: everything before `--`.
    fn options(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut option = |text: &str| {
            args.push("-o".into());
            args.push(text.into());
        };
        option("BatchMode=yes");
        option("ControlMaster=auto");
        let mut path = OsString::from("ControlPath=");
        path.push(self.control_path.as_os_str());
        args.push("-o".into());
        args.push(path);
        args.push("-o".into());
        args.push(format!("ControlPersist={CONTROL_PERSIST}").into());
        if self.machine.port != 22 {
            args.push("-p".into());
            args.push(self.machine.port.to_string().into());
        }
        if let Some(user) = &self.machine.user {
            args.push("-l".into());
            args.push(user.into());
        }
        if let Some(key) = &self.machine.private_key {
            args.push("-i".into());
            args.push(key.into());
        }
        args.extend(self.machine.ssh_args.iter().map(OsString::from));
        for text in [
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            "LogLevel=ERROR".to_owned(),
        ] {
            args.push("-o".into());
            args.push(text.into());
        }
        args
    }

    /// The full `ssh` argument list (without `ssh`) running `script`, and the sudo password
    /// line to feed first, if any.
    pub fn command_line(&self, script: &str) -> (Vec<OsString>, Option<Vec<u8>>) {
        let already_root = self.machine.user.as_deref() == Some("root");
        let (remote, password) =
            super::escalated(script, self.machine.escalate.as_ref(), already_root);
        let mut args = self.options();
        args.push("--".into());
        args.push(self.machine.address.clone().into());
        args.push(remote.into());
        (args, password)
    }

    /// Whether a master connection is open for this host (`ssh -O check`).
    pub fn is_connected(&self) -> bool {
        self.control("check").is_ok_and(|status| status.success())
    }

    /// Close the master connection, if one is open (`ssh -O exit`). Also done on drop.
    pub fn close(&self) {
        let _ = self.control("exit");
    }

    fn control(&self, command: &str) -> io::Result<std::process::ExitStatus> {
        Command::new("ssh")
            .args(self.options())
            .args(["-O", command, "--", &self.machine.address])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    }
}

/// `<8 hex digits of the inventory name>-%C`: `%C` (a hash of address, port and user) alone
/// would let two inventory names for one machine share, and close, one master.
fn socket_name(host: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(host.as_bytes());
    format!("{}-%C", &hex::encode(digest)[..8])
}

impl Drop for Ssh {
    fn drop(&mut self) {
        self.close();
    }
}

impl Executor for Ssh {
    fn host(&self) -> &str {
        &self.machine.name
    }

    fn exec(&self, script: &str, input: Input<'_>) -> Result<Output, ExecError> {
        let (args, password) = self.command_line(script);
        let mut child = Command::new("ssh")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ExecError::Local {
                host: self.machine.name.clone(),
                message: format!(
                    "cannot start ssh: {e} (install the OpenSSH client, e.g. `openssh-clients` or `openssh-client`)"
                ),
            })?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let feeder = super::feed(stdin, password, input);
        let output = child.wait_with_output().map_err(|e| ExecError::Local {
            host: self.machine.name.clone(),
            message: format!("waiting for ssh: {e}"),
        })?;
        feeder.join(&self.machine.name)?;
        let status = output.status.code().unwrap_or(-1);
        if status == SSH_FAILED {
            return Err(ExecError::Unreachable {
                host: self.machine.name.clone(),
                message: unreachable_message(&self.machine, &output.stderr),
            });
        }
        Ok(Output {
            status,
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

/// The last lines ssh printed, or a sentence when it printed nothing.
fn unreachable_message(machine: &Machine, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        format!(
            "ssh to {} port {} exited with status 255 and printed nothing",
            machine.address, machine.port
        )
    } else {
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// A private directory for master connection sockets, removed on drop.
///
/// It lives directly under `/tmp` with a short name: a unix socket path must fit in about
/// 100 bytes, and `%C` adds 40.
#[derive(Debug)]
pub struct ControlDir {
    path: PathBuf,
}

impl ControlDir {
    /// Create `/tmp/airlock-ssh-<random>` with mode 0700.
    pub fn create() -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        loop {
            let path = PathBuf::from(format!("/tmp/airlock-ssh-{:08x}", rand::random::<u32>()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", path.display()),
                    ));
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mode, Perms};
    use airlock_ansible::connection::Become;
    use airlock_testkit::sshd::Sshd;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn machine(sshd: &Sshd) -> Machine {
        Machine {
            name: "node-1".to_owned(),
            address: "127.0.0.1".to_owned(),
            user: Some(sshd.user.clone()),
            port: sshd.port,
            connection: "ssh".to_owned(),
            escalate: None,
            ssh_args: sshd.client_options(),
            private_key: Some(sshd.client_key_path.display().to_string()),
        }
    }

    fn words(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn command_line_shape() {
        let machine = Machine {
            name: "leader.example.edu".to_owned(),
            address: "10.0.0.7".to_owned(),
            user: Some("admin".to_owned()),
            port: 2222,
            connection: "ssh".to_owned(),
            escalate: Some(Become {
                user: "root".to_owned(),
                password: None,
            }),
            ssh_args: vec!["-o".to_owned(), "ProxyJump=bastion".to_owned()],
            private_key: Some("/keys/id".to_owned()),
        };
        let ssh = Ssh::new(&machine, Path::new("/tmp/cd"));
        let (args, password) = ssh.command_line("echo 'hi'");
        assert_eq!(password, None);
        assert_eq!(
            words(&args).join(" "),
            format!(
                "-o BatchMode=yes -o ControlMaster=auto -o ControlPath=/tmp/cd/{}-%C \
                 -o ControlPersist=60s -p 2222 -l admin -i /keys/id -o ProxyJump=bastion \
                 -o ConnectTimeout=10 -o LogLevel=ERROR -- 10.0.0.7 \
                 sudo -H -n -u root -- sh -c 'echo '\\''hi'\\'''",
                &socket_name("leader.example.edu")[..8]
            )
        );

        // Port 22 and no user: ~/.ssh/config decides; root needs no sudo.
        let plain = Machine {
            port: 22,
            user: Some("root".to_owned()),
            private_key: None,
            ssh_args: Vec::new(),
            ..machine
        };
        let (args, _) = Ssh::new(&plain, Path::new("/tmp/cd")).command_line("true");
        let args = words(&args);
        assert!(!args.contains(&"-p".to_owned()), "{args:?}");
        assert_eq!(args[args.len() - 3..], ["--", "10.0.0.7", "sh -c true"]);
    }

    #[test]
    fn runs_commands_and_places_files_over_ssh() {
        let dir = tempfile::tempdir().unwrap();
        let sshd = Sshd::start(dir.path(), LOOPBACK);
        let control = ControlDir::create().unwrap();
        let ssh = Ssh::new(&machine(&sshd), control.path());

        assert_eq!(ssh.run("echo hello; echo quiet >&2").unwrap(), "hello\n");
        let output = ssh
            .exec("echo out; echo broken >&2; exit 7", Input::None)
            .unwrap();
        assert_eq!(output.status, 7);
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr, b"broken\n");
        let text = ssh
            .run("echo first >&2; echo last >&2; exit 4")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("node-1") && text.contains("status 4") && text.contains("last"),
            "{text}"
        );
        let echoed = ssh.exec("cat", Input::Bytes(b"through stdin")).unwrap();
        assert_eq!(echoed.stdout, b"through stdin");

        let target = dir.path().join("remote dir/it's.conf");
        let target = target.to_str().unwrap();
        assert_eq!(ssh.read(target).unwrap(), None);
        assert_eq!(ssh.sha256(target).unwrap(), None);
        ssh.write(target, Input::Bytes(b"content\n"), &Perms::mode(0o600))
            .unwrap();
        assert_eq!(ssh.read(target).unwrap().unwrap(), b"content\n");
        assert_eq!(
            ssh.sha256(target).unwrap().unwrap(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"content\n"))
        );
        let mode = std::fs::metadata(target).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let state = ssh.stat(target).unwrap().unwrap();
        assert_eq!(state.mode, Mode(0o600));
        assert_eq!(
            state.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"content\n"))
        );
        assert_eq!(ssh.stat(&format!("{target}.missing")).unwrap(), None);
    }

    #[test]
    fn streams_a_multi_mib_file_byte_exact() {
        let dir = tempfile::tempdir().unwrap();
        let sshd = Sshd::start(dir.path(), LOOPBACK);
        let control = ControlDir::create().unwrap();
        let ssh = Ssh::new(&machine(&sshd), control.path());
        let source = dir.path().join("k3s");
        let data: Vec<u8> = (0..12_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&source, &data).unwrap();
        let target = dir.path().join("usr/local/bin/k3s");
        ssh.write(
            target.to_str().unwrap(),
            Input::File(&source),
            &Perms::mode(0o755),
        )
        .unwrap();
        assert!(std::fs::read(&target).unwrap() == data, "content differs");
        assert_eq!(
            ssh.sha256(target.to_str().unwrap()).unwrap().unwrap(),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data))
        );
        let missing = dir.path().join("not-there");
        let err = ssh
            .write(
                target.to_str().unwrap(),
                Input::File(&missing),
                &Perms::mode(0o755),
            )
            .unwrap_err();
        assert!(matches!(err, ExecError::Local { .. }), "{err}");
    }

    #[test]
    fn later_commands_reuse_the_master_connection() {
        let dir = tempfile::tempdir().unwrap();
        let sshd = Sshd::start(dir.path(), LOOPBACK);
        let control = ControlDir::create().unwrap();
        let ssh = Ssh::new(&machine(&sshd), control.path());
        assert!(!ssh.is_connected());

        ssh.run("true").unwrap();
        assert!(
            ssh.is_connected(),
            "no master connection after the first command"
        );
        let sockets = std::fs::read_dir(control.path()).unwrap().count();
        assert_eq!(sockets, 1, "one control socket per host");

        for _ in 0..5 {
            ssh.run("true").unwrap();
        }
        // sshd saw exactly one login: every later command was a session on it. (Timing the
        // commands instead made this test fail on a loaded machine.)
        assert_eq!(sshd.logins(), 1, "{}", sshd.log());

        ssh.close();
        assert!(!ssh.is_connected());
        assert_eq!(std::fs::read_dir(control.path()).unwrap().count(), 0);
    }

    #[test]
    fn closed_port_is_unreachable_with_ssh_message() {
        let listener = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let control = ControlDir::create().unwrap();
        let machine = Machine {
            name: "gone".to_owned(),
            address: "127.0.0.1".to_owned(),
            user: None,
            port,
            connection: "ssh".to_owned(),
            escalate: None,
            ssh_args: Vec::new(),
            private_key: None,
        };
        let ssh = Ssh::new(&machine, control.path());
        let started = Instant::now();
        let err = ssh.run("true").unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(CONNECT_TIMEOUT_SECS.into()));
        let ExecError::Unreachable { host, message } = &err else {
            panic!("expected Unreachable, got {err}");
        };
        assert_eq!(host, "gone");
        assert!(message.contains("Connection refused"), "{message}");
        assert!(message.contains(&port.to_string()), "{message}");
        assert!(
            err.to_string().starts_with("gone: cannot connect: "),
            "{err}"
        );
    }

    #[test]
    fn rejected_key_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let sshd = Sshd::start(dir.path(), LOOPBACK);
        let control = ControlDir::create().unwrap();
        let mut machine = machine(&sshd);
        machine.private_key = Some(dir.path().join("no-such-key").display().to_string());
        machine.ssh_args.extend([
            "-o".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            "-o".to_owned(),
            "IdentityAgent=none".to_owned(),
        ]);
        let err = Ssh::new(&machine, control.path()).run("true").unwrap_err();
        let ExecError::Unreachable { message, .. } = &err else {
            panic!("expected Unreachable, got {err}");
        };
        assert!(message.contains("Permission denied"), "{message}");
    }

    #[test]
    fn becomes_another_user_with_sudo() {
        airlock_testkit::require_tool("sudo", "sudo");
        let dir = tempfile::tempdir().unwrap();
        let sshd = Sshd::start(dir.path(), LOOPBACK);
        assert_eq!(
            sshd.user, "root",
            "this test logs in as root and becomes `nobody` with `sudo -n`; run it as root"
        );
        let control = ControlDir::create().unwrap();
        let mut machine = machine(&sshd);
        machine.escalate = Some(Become {
            user: "nobody".to_owned(),
            password: None,
        });
        let ssh = Ssh::new(&machine, control.path());
        assert_eq!(ssh.run("id -un").unwrap(), "nobody\n");
        assert_eq!(
            ssh.exec("cat", Input::Bytes(b"fed")).unwrap().stdout,
            b"fed"
        );

        // Becoming root as root runs the script directly.
        machine.escalate = Some(Become {
            user: "root".to_owned(),
            password: None,
        });
        let ssh = Ssh::new(&machine, control.path());
        let (args, _) = ssh.command_line("id -un");
        assert_eq!(words(&args).last().unwrap(), "sh -c 'id -un'");
        assert_eq!(ssh.run("id -un").unwrap(), "root\n");
    }
}
