//! The gateway's `[[policy]]`: which images, blobs and package files may pass.
//!
//! Rules are tried in order and the first one that matches a request decides; a request no
//! rule matches is allowed. Within a rule the checks run in this order, the first that
//! applies deciding:
//!
//! 1. a `deny` entry names the request → deny;
//! 2. `require_cosign` names the repository of a manifest → verify ([`Verdict::Verify`]:
//!    the registry checks the signature; signed → allow, not → deny);
//! 3. a blob is larger than `max_blob_size`, or its size is unknown → deny;
//! 4. an `allow` entry names the request → allow.
//!
//! A rule with `mode = "log"` never decides: what it would deny is recorded
//! ([`Evaluation::logged`]) and the next rule is tried.
//!
//! Evaluation is pure: [`Policy::evaluate`] takes what a request is about ([`Subject`]) and
//! answers; the registry and package proxies do the I/O (sizes, signatures) and the
//! answering, and hand each denial and log-mode match to [`record`], the one place
//! decisions reach the log and the audit trail.

mod glob;
mod pattern;
mod record;
mod rule;

pub use glob::Glob;
pub use pattern::{FilePattern, Pattern, PypiPattern, RepoPattern};
pub use record::{Decision, record};
pub use rule::{CosignTable, Family, Mode, RequireCosign, Rule, RuleError, RuleTable};

/// What a request is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A manifest by tag (`tag: Some`) or by digest (`None`).
    Manifest {
        proxy: &'a str,
        repository: &'a str,
        tag: Option<&'a str>,
    },
    /// A repository as a whole (its tag list).
    Repository { proxy: &'a str, repository: &'a str },
    /// A blob, with its size when the caller knows it.
    Blob {
        proxy: &'a str,
        repository: &'a str,
        size: Option<u64>,
    },
    /// A package file: its project or package name and version.
    Package {
        proxy: &'a str,
        family: Family,
        name: &'a str,
        version: &'a str,
    },
}

impl Subject<'_> {
    pub fn proxy(&self) -> &str {
        match self {
            Subject::Manifest { proxy, .. }
            | Subject::Repository { proxy, .. }
            | Subject::Blob { proxy, .. }
            | Subject::Package { proxy, .. } => proxy,
        }
    }

    /// How the subject reads in a denial and the audit trail: `library/evil:1`,
    /// `requests 2.31.0`.
    pub fn describe(&self) -> String {
        match self {
            Subject::Manifest {
                repository,
                tag: Some(tag),
                ..
            } => format!("{repository}:{tag}"),
            Subject::Manifest { repository, .. }
            | Subject::Repository { repository, .. }
            | Subject::Blob { repository, .. } => (*repository).to_owned(),
            Subject::Package { name, version, .. } => format!("{name} {version}"),
        }
    }
}

/// A rule that matched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding<'p> {
    pub rule: &'p str,
    pub reason: String,
}

/// The answer for one request.
#[derive(Debug, Clone)]
pub enum Verdict<'p> {
    Allow,
    Deny(Finding<'p>),
    /// Rule `index` requires a cosign signature: the caller verifies it, and on success the
    /// request is allowed (by an enforcing rule). A failure denies it (enforce) or is
    /// recorded and evaluation resumes at `index + 1` (log).
    Verify {
        rule: &'p Rule,
        index: usize,
    },
}

/// A verdict and the log-mode rules that matched on the way to it.
#[derive(Debug, Clone)]
pub struct Evaluation<'p> {
    pub logged: Vec<Finding<'p>>,
    pub verdict: Verdict<'p>,
}

/// The `[[policy]]` rules in order.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// What one rule says about a subject.
enum Effect {
    Deny(String),
    Verify,
    Allow,
}

impl Policy {
    /// Resolves the tables in order; rule names must be unique.
    pub fn resolve(
        tables: &[RuleTable],
        family_of: impl Fn(&str) -> Option<Family>,
    ) -> Result<Self, RuleError> {
        let mut rules: Vec<Rule> = Vec::with_capacity(tables.len());
        for table in tables {
            let rule = Rule::resolve(table, &family_of)?;
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(RuleError::Duplicate { name: rule.name });
            }
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule limits blob sizes on `proxy` (callers learn a blob's size only then).
    pub fn limits_blob_size(&self, proxy: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.max_blob_size.is_some() && applies_to(r, proxy))
    }

    pub fn evaluate(&self, subject: &Subject<'_>) -> Evaluation<'_> {
        self.evaluate_from(subject, 0)
    }

    /// Evaluation starting at rule `start` (after a log-mode signature check).
    pub fn evaluate_from(&self, subject: &Subject<'_>, start: usize) -> Evaluation<'_> {
        let mut logged = Vec::new();
        for (index, rule) in self.rules.iter().enumerate().skip(start) {
            if !applies_to(rule, subject.proxy()) {
                continue;
            }
            match (effect(rule, subject), rule.mode) {
                (None, _) | (Some(Effect::Allow), Mode::Log) => {}
                (Some(Effect::Verify), _) => {
                    return Evaluation {
                        logged,
                        verdict: Verdict::Verify { rule, index },
                    };
                }
                (Some(Effect::Deny(reason)), Mode::Log) => logged.push(Finding {
                    rule: &rule.name,
                    reason,
                }),
                (Some(Effect::Deny(reason)), Mode::Enforce) => {
                    return Evaluation {
                        logged,
                        verdict: Verdict::Deny(Finding {
                            rule: &rule.name,
                            reason,
                        }),
                    };
                }
                (Some(Effect::Allow), Mode::Enforce) => {
                    return Evaluation {
                        logged,
                        verdict: Verdict::Allow,
                    };
                }
            }
        }
        Evaluation {
            logged,
            verdict: Verdict::Allow,
        }
    }
}

fn applies_to(rule: &Rule, proxy: &str) -> bool {
    rule.proxy.as_deref().is_none_or(|p| p == proxy)
}

/// The first check of `rule` that applies to `subject` (see the crate docs for the order).
fn effect(rule: &Rule, subject: &Subject<'_>) -> Option<Effect> {
    if let Some(pattern) = rule.deny.iter().find(|p| names(rule, p, subject)) {
        return Some(Effect::Deny(format!(
            "{} matches deny entry {pattern}",
            subject.describe()
        )));
    }
    if let (Some(cosign), Subject::Manifest { repository, .. }) = (&rule.require_cosign, subject) {
        if cosign.repositories.iter().any(|g| g.matches(repository)) {
            return Some(Effect::Verify);
        }
    }
    if let (Some(max), Subject::Blob { size, .. }) = (rule.max_blob_size, subject) {
        match size {
            Some(size) if *size > max.0 => {
                return Some(Effect::Deny(format!(
                    "blob of {} in {} is larger than max_blob_size {max}",
                    airlock_types::ByteSize(*size),
                    subject.describe()
                )));
            }
            // A limit nobody can check is not waved through: the gate fails closed.
            None => {
                return Some(Effect::Deny(format!(
                    "the size of a blob in {} is unknown (the upstream announced none), so \
                     max_blob_size {max} cannot be checked",
                    subject.describe()
                )));
            }
            Some(_) => {}
        }
    }
    rule.allow
        .iter()
        .any(|p| names(rule, p, subject))
        .then_some(Effect::Allow)
}

/// Whether a `deny`/`allow` entry of `rule` names the subject.
fn names(rule: &Rule, pattern: &Pattern, subject: &Subject<'_>) -> bool {
    match *subject {
        Subject::Manifest {
            repository, tag, ..
        } => {
            let tag_ok =
                rule.tags.is_empty() || tag.is_some_and(|t| rule.tags.iter().any(|g| g.matches(t)));
            tag_ok
                && pattern
                    .oci
                    .as_ref()
                    .is_some_and(|p| p.matches(repository, tag))
        }
        // A blob or tag list has no tag: only entries for whole repositories name it.
        Subject::Blob { repository, .. } | Subject::Repository { repository, .. } => {
            rule.tags.is_empty()
                && pattern
                    .oci
                    .as_ref()
                    .is_some_and(|p| p.tag.is_none() && p.matches(repository, None))
        }
        Subject::Package {
            family: Family::Pypi,
            name,
            version,
            ..
        } => pattern
            .pypi
            .as_ref()
            .is_some_and(|p| p.matches(name, version)),
        Subject::Package { name, version, .. } => pattern
            .file
            .as_ref()
            .is_some_and(|p| p.matches(name, version)),
    }
}

#[cfg(test)]
mod tests;
