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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use airlock_audit::{Audit, Filter, Settings};

    use super::*;

    #[test]
    fn denials_and_log_matches_are_audit_lines_of_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            path: dir.path().join("audit.jsonl"),
            max_size: 1 << 20,
            keep: 1,
        };
        let audit = Audit::open(&settings).unwrap();
        let finding = Finding {
            rule: "no-evil",
            reason: "library/evil:1 matches deny entry \"library/evil*\"".to_owned(),
        };
        let decision = |mode| Decision {
            proxy: "hub",
            item: "library/evil:1",
            digest: None,
            finding: &finding,
            mode,
        };
        // Outside a request nothing is written (and nothing fails).
        record(&decision(Mode::Enforce));
        let context = Context {
            client: IpAddr::V4(Ipv4Addr::new(10, 20, 1, 7)),
            request_id: "abc123".to_owned(),
            audit: audit.clone(),
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(context.scope(async {
                record(&decision(Mode::Enforce));
                record(&decision(Mode::Log));
            }));
        let (lines, bad) =
            airlock_audit::read_last(&settings.path, &Filter::default(), usize::MAX).unwrap();
        assert!(bad.is_empty());
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (line, (result, status)) in lines.iter().zip([("deny", Some(403)), ("log", None)]) {
            assert_eq!(line.kind, Kind::Policy);
            assert_eq!(line.result, result);
            assert_eq!(line.status, status);
            assert_eq!(line.rule.as_deref(), Some("no-evil"));
            assert_eq!(line.reason.as_deref(), Some(finding.reason.as_str()));
            assert_eq!(line.item.as_deref(), Some("library/evil:1"));
            assert_eq!(line.proxy.as_deref(), Some("hub"));
            assert_eq!(line.client.as_deref(), Some("10.20.1.7"));
            assert_eq!(line.request_id.as_deref(), Some("abc123"));
        }
    }
}
