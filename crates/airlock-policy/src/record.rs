//! The one place a policy decision is recorded, for the registry and the package proxies
//! alike: a log line on target `airlock::policy`, and a `policy` line in the audit trail of
//! the request being served (its [`airlock_audit::Context`]; outside one, the log only).

use airlock_audit::{Context, Kind, Record};

use crate::{Finding, Mode};

/// What was decided about which request.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    pub proxy: &'a str,
    /// What the request was for: `library/evil:1`, `requests 2.31.0`.
    pub item: &'a str,
    pub digest: Option<&'a str>,
    pub finding: &'a Finding<'a>,
    /// `Enforce`: the request was denied; `Log`: a log-mode rule matched and it went on.
    pub mode: Mode,
}

/// Records a denial or a log-mode match.
pub fn record(decision: &Decision<'_>) {
    let Decision {
        proxy,
        item,
        digest,
        finding,
        mode,
    } = *decision;
    let result = match mode {
        Mode::Enforce => "deny",
        Mode::Log => "log",
    };
    tracing::warn!(
        target: "airlock::policy",
        proxy,
        item,
        digest,
        rule = finding.rule,
        mode = mode.as_str(),
        reason = %finding.reason,
        "{}",
        match mode {
            Mode::Enforce => "request denied by policy",
            Mode::Log => "policy rule in log mode matched; request let through",
        }
    );
    let Some(context) = Context::current() else {
        return;
    };
    let mut line = Record::new(Kind::Policy, result).in_context();
    line.proxy = Some(proxy.to_owned());
    line.item = Some(item.to_owned());
    line.digest = digest.map(str::to_owned);
    line.rule = Some(finding.rule.to_owned());
    line.reason = Some(finding.reason.clone());
    if mode == Mode::Enforce {
        line.status = Some(403);
    }
    context.audit.record(line);
}
