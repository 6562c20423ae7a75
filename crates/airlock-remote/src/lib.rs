//! Running commands and placing files on the site's hosts.
//!
//! Every stage of `airlock deploy` and every check of `airlock preflight` talks to a host
//! through an [`Executor`]: [`ssh::Ssh`] (the system OpenSSH client with connection
//! multiplexing, so `~/.ssh/config`, keys, agents and jump hosts keep working),
//! [`local::Local`] (`ansible_connection: local`), and [`fake::Fake`] for unit tests.
//!
//! Commands are `sh -c` scripts; privilege escalation (`ansible_become`) wraps them in
//! `sudo`. Files are written to a temporary name next to the target, then renamed, so a
//! dropped connection never leaves half a file where a service reads it.

pub mod fake;
pub mod local;
pub mod ssh;

use std::fmt;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use airlock_ansible::connection::Become;

/// What a finished command left behind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Exit status; `-1` when the command was killed by a signal.
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last `lines` lines of stderr and stdout, for an error message.
    pub fn tail(&self, lines: usize) -> String {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        );
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Bytes fed to a command's standard input.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    None,
    Bytes(&'a [u8]),
    /// A local file, streamed (binaries are tens of MiB).
    File(&'a Path),
}

/// Why a command could not be run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The host could not be reached (ssh exit 255, connection refused, auth failure).
    #[error("{host}: cannot connect: {message}")]
    Unreachable { host: String, message: String },
    /// The local program (ssh, sh) could not be started, or local I/O failed.
    #[error("{host}: {message}")]
    Local { host: String, message: String },
    /// The command ran and exited non-zero.
    #[error("{host}: `{command}` exited with status {status}{}", tail_block(.tail))]
    Failed {
        host: String,
        command: String,
        status: i32,
        tail: String,
    },
}

fn tail_block(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n{}", indent(tail))
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Permission bits of a placed file (`chmod` octal, including setuid/setgid/sticky).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Who may read a placed file: its mode and, when it matters, its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Perms {
    pub mode: Mode,
    /// `user:group` as `chown` takes it; `None` leaves the owner to whoever writes.
    pub owner: Option<String>,
}

impl Perms {
    pub fn mode(mode: u32) -> Self {
        Self {
            mode: Mode(mode),
            owner: None,
        }
    }

    pub fn owned(mode: u32, owner: &str) -> Self {
        Self {
            mode: Mode(mode),
            owner: Some(owner.to_owned()),
        }
    }
}

/// A regular file as found on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    pub mode: Mode,
    /// `user:group`.
    pub owner: String,
}

/// One host, reached one way.
pub trait Executor: Send + Sync {
    /// The inventory name of the host (what reports and errors show).
    fn host(&self) -> &str;

    /// Run `script` with `sh -c` on the host (as root when the host becomes root), feeding
    /// `input` to its standard input. A non-zero exit is an `Ok(Output)`; only transport
    /// problems are errors.
    fn exec(&self, script: &str, input: Input<'_>) -> Result<Output, ExecError>;

    /// Run `script`, turning a non-zero exit into [`ExecError::Failed`] with the last lines
    /// of its output. Returns standard output.
    fn run(&self, script: &str) -> Result<String, ExecError> {
        let output = self.exec(script, Input::None)?;
        if output.success() {
            Ok(output.stdout_text())
        } else {
            Err(ExecError::Failed {
                host: self.host().to_owned(),
                command: script.to_owned(),
                status: output.status,
                tail: output.tail(20),
            })
        }
    }

    /// The file's sha256 (lowercase hex), or `None` when it does not exist.
    fn sha256(&self, path: &str) -> Result<Option<String>, ExecError> {
        let p = quote(path);
        let out = self.run(&format!(
            "if [ -f {p} ]; then sha256sum < {p}; else echo absent; fi"
        ))?;
        let word = out.split_whitespace().next().unwrap_or_default();
        Ok((word != "absent").then(|| word.to_owned()))
    }

    /// Content hash, mode and owner of the file at `path`, or `None` when there is none. A
    /// symlink is reported with its own mode (0777), so it never passes for the file it
    /// points to and is replaced rather than written through.
    fn stat(&self, path: &str) -> Result<Option<FileState>, ExecError> {
        let p = quote(path);
        let out = self.run(&format!(
            "if [ -L {p} ] || [ -f {p} ]; then stat -c '%a %U:%G' {p}; sha256sum < {p}; else echo absent; fi"
        ))?;
        parse_stat(&out).map_err(|message| ExecError::Local {
            host: self.host().to_owned(),
            message: format!("stat {path}: {message}"),
        })
    }

    /// The file's content, or `None` when it does not exist.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ExecError> {
        let p = quote(path);
        let output = self.exec(
            &format!("if [ -f {p} ]; then cat {p}; else exit 3; fi"),
            Input::None,
        )?;
        match output.status {
            0 => Ok(Some(output.stdout)),
            3 => Ok(None),
            status => Err(ExecError::Failed {
                host: self.host().to_owned(),
                command: format!("cat {p}"),
                status,
                tail: output.tail(20),
            }),
        }
    }

    /// Write `input` to `path` (parents created, `perms` set before the content is visible)
    /// through a fresh temporary file and a rename.
    fn write(&self, path: &str, input: Input<'_>, perms: &Perms) -> Result<(), ExecError> {
        let script = write_script(path, perms);
        let output = self.exec(&script, input)?;
        if output.success() {
            Ok(())
        } else {
            Err(ExecError::Failed {
                host: self.host().to_owned(),
                command: format!("write {path}"),
                status: output.status,
                tail: output.tail(20),
            })
        }
    }
}

/// The shell script [`Executor::write`] runs: stdin into a temporary file, then a rename.
///
/// The temporary comes from `mktemp` (random name, `O_EXCL`, 0600), so nothing planted at a
/// predictable name next to the target is followed; owner and mode are set before the
/// rename, so the target never shows the content with other permissions. A failure removes
/// the temporary.
pub fn write_script(path: &str, perms: &Perms) -> String {
    let target = Path::new(path);
    let dir = target
        .parent()
        .map_or_else(|| "/".to_owned(), |d| d.display().to_string());
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let template = quote(&format!(
        "{}/.{name}.airlock-XXXXXX",
        dir.trim_end_matches('/')
    ));
    let chown = perms
        .owner
        .as_deref()
        .map(|owner| format!(" chown {} \"$tmp\";", quote(owner)))
        .unwrap_or_default();
    format!(
        "set -e; mkdir -p {dir}; tmp=$(mktemp {template}); trap 'rm -f \"$tmp\"' EXIT; \
cat > \"$tmp\"; chmod {mode} \"$tmp\";{chown} mv -f \"$tmp\" {target}; trap - EXIT",
        dir = quote(&dir),
        mode = perms.mode,
        target = quote(path),
    )
}

/// Parse what [`Executor::stat`]'s script prints.
fn parse_stat(out: &str) -> Result<Option<FileState>, String> {
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default().trim();
    if first == "absent" {
        return Ok(None);
    }
    let (mode, owner) = first
        .split_once(' ')
        .ok_or_else(|| format!("unexpected output {out:?}"))?;
    let mode = u32::from_str_radix(mode, 8).map_err(|_| format!("unexpected mode {mode:?}"))?;
    let sha256 = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .filter(|h| h.len() == 64)
        .ok_or_else(|| format!("no sha256 in {out:?}"))?;
    Ok(Some(FileState {
        sha256: sha256.to_owned(),
        mode: Mode(mode),
        owner: owner.to_owned(),
    }))
}

/// The remote shell command line running `script`, as root through `sudo` when the host
/// becomes and is not root already; and the password line `sudo -S` reads first, if any.
pub fn escalated(
    script: &str,
    escalate: Option<&Become>,
    already_root: bool,
) -> (String, Option<Vec<u8>>) {
    let plain = format!("sh -c {}", quote(script));
    let Some(escalate) = escalate else {
        return (plain, None);
    };
    if already_root && escalate.user == "root" {
        return (plain, None);
    }
    let user = quote(&escalate.user);
    match &escalate.password {
        Some(password) => (
            format!("sudo -H -S -p '' -u {user} -- {plain}"),
            Some(format!("{}\n", password.expose()).into_bytes()),
        ),
        None => (format!("sudo -H -n -u {user} -- {plain}"), None),
    }
}

/// `argv` for running `script` locally (see [`escalated`]).
pub(crate) fn command_line(
    script: &str,
    escalate: Option<&Become>,
    already_root: bool,
) -> (Vec<String>, Option<Vec<u8>>) {
    let (line, password) = escalated(script, escalate, already_root);
    (vec!["sh".to_owned(), "-c".to_owned(), line], password)
}

/// Feeds a child's standard input from a thread (so a full stdout pipe never deadlocks).
pub(crate) struct Feeder(JoinHandle<io::Result<()>>);

/// Start writing `password` then `input` to `stdin`, closing it at the end.
pub(crate) fn feed(
    mut stdin: std::process::ChildStdin,
    password: Option<Vec<u8>>,
    input: Input<'_>,
) -> Feeder {
    enum Owned {
        None,
        Bytes(Vec<u8>),
        File(std::path::PathBuf),
    }
    let owned = match input {
        Input::None => Owned::None,
        Input::Bytes(b) => Owned::Bytes(b.to_vec()),
        Input::File(p) => Owned::File(p.to_owned()),
    };
    Feeder(std::thread::spawn(move || {
        if let Some(password) = password {
            stdin.write_all(&password)?;
        }
        match owned {
            Owned::None => {}
            Owned::Bytes(bytes) => stdin.write_all(&bytes)?,
            Owned::File(path) => {
                let mut file = std::fs::File::open(&path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                io::copy(&mut file, &mut stdin)?;
            }
        }
        stdin.flush()
    }))
}

impl Feeder {
    /// Wait for the writer. A command that exits without reading all its input is not an
    /// error here (its exit status says what happened); a local file that cannot be read is.
    pub(crate) fn join(self, host: &str) -> Result<(), ExecError> {
        match self.0.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Ok(Err(e)) => Err(ExecError::Local {
                host: host.to_owned(),
                message: format!("feeding the command: {e}"),
            }),
            Err(_) => Err(ExecError::Local {
                host: host.to_owned(),
                message: "the input writer panicked".to_owned(),
            }),
        }
    }
}

/// Quote `text` for a POSIX shell (single quotes).
pub fn quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:@,".contains(&b))
    {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The executor for `machine`: [`local::Local`] for `ansible_connection: local`, else
/// [`ssh::Ssh`] with its master connection's socket in `control_dir`.
pub fn connect(
    machine: &airlock_ansible::connection::Machine,
    control_dir: &Path,
) -> Box<dyn Executor> {
    if machine.is_local() {
        Box::new(local::Local::new(&machine.name, machine.escalate.clone()))
    } else {
        Box::new(ssh::Ssh::new(machine, control_dir))
    }
}

/// One executor per host for a whole run, opened on first use and shared by every stage
/// (so each ssh host keeps one master connection). Dropping it closes them.
pub struct Connections<'a> {
    control_dir: &'a Path,
    open: Mutex<Vec<(String, Arc<dyn Executor>)>>,
}

impl<'a> Connections<'a> {
    /// Executors whose ssh control sockets live in `control_dir`.
    pub fn new(control_dir: &'a Path) -> Self {
        Self {
            control_dir,
            open: Mutex::default(),
        }
    }

    /// The executor for `machine`, the same one every time for the same host name.
    pub fn get(&self, machine: &airlock_ansible::connection::Machine) -> Arc<dyn Executor> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, e)) = open.iter().find(|(n, _)| *n == machine.name) {
            return e.clone();
        }
        let e: Arc<dyn Executor> = Arc::from(connect(machine, self.control_dir));
        open.push((machine.name.clone(), e.clone()));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_open_one_executor_per_host() {
        let local = |name: &str| airlock_ansible::connection::Machine {
            name: name.to_owned(),
            address: name.to_owned(),
            user: None,
            port: 22,
            connection: "local".to_owned(),
            escalate: None,
            ssh_args: Vec::new(),
            private_key: None,
        };
        let dir = Path::new("/nonexistent");
        let connections = Connections::new(dir);
        let a = connections.get(&local("a"));
        assert!(Arc::ptr_eq(&a, &connections.get(&local("a"))));
        let b = connections.get(&local("b"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!((a.host(), b.host()), ("a", "b"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/etc/rancher/k3s"), "/etc/rancher/k3s");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn stat_output_is_parsed() {
        let sha = "a".repeat(64);
        assert_eq!(parse_stat("absent\n").unwrap(), None);
        assert_eq!(
            parse_stat(&format!("4755 root:wheel\n{sha}  -\n")).unwrap(),
            Some(FileState {
                sha256: sha,
                mode: Mode(0o4755),
                owner: "root:wheel".to_owned(),
            })
        );
        assert!(parse_stat("644 root:root\n").is_err());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let output = Output {
            status: 1,
            stdout: b"one\ntwo\n".to_vec(),
            stderr: b"three\n\nfour\n".to_vec(),
        };
        assert_eq!(output.tail(2), "three\nfour");
    }
}
