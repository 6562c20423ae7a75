//! Stage 5, `nodes`, and the order it takes the nodes in.
//!
//! A fresh cluster installs in waves: the first server, then the other servers, then the
//! agents, each wave in parallel. A version change on an installed cluster rolls: servers
//! one at a time, then agents `--batch` at a time, each step re-running the installer with the
//! verified new files and waiting until its nodes are Ready at the new version before the
//! next step starts. The first failure stops the rollout with the remaining nodes untouched,
//! and the error says which nodes were upgraded and how to resume: running the same deploy
//! again leaves the upgraded nodes alone and goes on where it stopped.

use std::path::Path;

use super::nodes::{self, Role};
use super::{DeployError, Mode, Run, flags, node_ca, node_roles, parallel};

/// The order of one run: steps run one after another, the nodes of a step in parallel.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub steps: Vec<Vec<usize>>,
    /// A version change on installed nodes: each step waits for its nodes at the new version.
    pub rolling: bool,
}

/// The steps for nodes with these roles, installed versions (from their markers) and wanted
/// versions (`None`: not known, check mode before the files were fetched).
pub(super) fn plan(
    roles: &[Role],
    installed: &[Option<String>],
    wanted: &[Option<&str>],
    batch: usize,
) -> Plan {
    let rolling = installed
        .iter()
        .zip(wanted)
        .any(|(old, new)| matches!((old, new), (Some(old), Some(new)) if old != new));
    let of =
        |role: Role| -> Vec<usize> { (0..roles.len()).filter(|&i| roles[i] == role).collect() };
    let (first, servers, agents) = (of(Role::FirstServer), of(Role::Server), of(Role::Agent));
    let steps: Vec<Vec<usize>> = if rolling {
        first
            .into_iter()
            .chain(servers)
            .map(|i| vec![i])
            .chain(agents.chunks(batch.max(1)).map(<[usize]>::to_vec))
            .collect()
    } else {
        vec![first, servers, agents]
    };
    Plan {
        steps: steps.into_iter().filter(|s| !s.is_empty()).collect(),
        rolling,
    }
}

/// Where a stopped rollout stands, and how to go on.
fn resume_hint(names: &[&str], plan: &Plan, stopped: usize, version: &str) -> String {
    let list = |steps: &[Vec<usize>]| -> String {
        let hosts: Vec<&str> = steps.iter().flatten().map(|&i| names[i]).collect();
        if hosts.is_empty() {
            "none".to_owned()
        } else {
            hosts.join(", ")
        }
    };
    format!(
        "the rollout stopped at step {} of {}. Upgraded to {version} and Ready: {}. Stopped at: {}. \
         Not touched: {}. Fix the cause, then run the same deploy again: nodes already at {version} \
         are left as they are and the rollout resumes where it stopped",
        stopped + 1,
        plan.steps.len(),
        list(&plan.steps[..stopped]),
        list(&plan.steps[stopped..=stopped]),
        list(&plan.steps[stopped + 1..]),
    )
}

/// Stage 5: K3s on the nodes in the [`plan`]'s order; then (applying) every node Ready, and
/// the servers' kubeconfig readable by `kubeconfig_group`.
pub(super) fn stage_nodes(run: &mut Run<'_>, mode: Mode) -> Result<(), DeployError> {
    if run.nodes.is_empty() {
        return Ok(());
    }
    let (site, report) = (run.site, run.report);
    report.stage("nodes", "K3s files, installer, registry config");
    let token = site
        .k3s
        .token
        .as_ref()
        .map(|t| t.expose().to_owned())
        .unwrap_or_default();
    let registries = run
        .rendered
        .get("nodes/registries.yaml")
        .unwrap_or_default();
    let ca = node_ca(site, run.gateway.as_ref());
    let ca = ca.as_ref().map(|(path, pem)| (path.as_str(), pem.as_str()));
    let first_server = site.servers.first().ok_or_else(|| {
        DeployError::local(
            "nodes",
            "the inventory has no `server` host",
            "add the K3s server under `server: hosts:`",
        )
    })?;
    let server_url = format!("https://{}:6443", first_server.address);
    let unknown_version = site
        .k3s
        .version
        .clone()
        .unwrap_or_else(|| "(unknown)".to_owned());
    let not_fetched = (Path::new(""), "(not fetched)");
    let cluster_size = node_roles(site).len();
    let installs: Vec<flags::NodeInstall> = run
        .nodes
        .iter()
        .map(|(m, role)| flags::node_install(site, m, *role, cluster_size))
        .collect();
    let coredns = airlock_site::render::coredns_custom(site);
    let files: Vec<_> = run
        .arches
        .iter()
        .map(|arch| {
            run.fetched
                .iter()
                .find(|(a, _)| a == arch)
                .expect("fetched every arch")
                .1
                .as_ref()
        })
        .collect();
    let run_node = |i: usize| -> Result<bool, DeployError> {
        let files = files[i];
        let inputs = nodes::Inputs {
            version: files.map_or(unknown_version.as_str(), |f| &f.version),
            binary: files.map_or(not_fetched, |f| (&f.binary.path, &f.binary.sha256)),
            script: files.map_or(not_fetched, |f| {
                (&f.install_script.path, &f.install_script.sha256)
            }),
            ca,
            registries,
            token: &token,
            server_url: &server_url,
            install: &installs[i],
            base_dir: &site.install.base_dir,
            coredns: coredns.as_deref(),
        };
        nodes::run(run.execs[i].as_ref(), run.nodes[i].1, &inputs, mode, report)
    };

    let indices: Vec<usize> = (0..run.nodes.len()).collect();
    let installed = parallel(&indices, |&i| {
        nodes::installed_version(run.execs[i].as_ref())
            .map_err(|e| DeployError::host("nodes", run.execs[i].host(), e))
    })?;
    let wanted: Vec<Option<&str>> = files
        .iter()
        .map(|f| f.map(|f| f.version.as_str()))
        .collect();
    let roles: Vec<Role> = run.nodes.iter().map(|(_, role)| *role).collect();
    let plan = plan(&roles, &installed, &wanted, run.options.batch);
    let names: Vec<&str> = run.nodes.iter().map(|(m, _)| m.name.as_str()).collect();
    let server = (run.connect)(first_server);
    let version = wanted.iter().flatten().next().copied().unwrap_or_default();
    if plan.rolling {
        report.note(&format!(
            "rolling upgrade to {version}: servers one at a time, then agents {} at a time, each Ready at {version} before the next",
            run.options.batch.max(1)
        ));
    }
    let mut coredns_changed = false;
    for (n, step) in plan.steps.iter().enumerate() {
        let done = parallel(step, |&i| run_node(i)).and_then(|changed| {
            coredns_changed |= changed.contains(&true);
            if plan.rolling && mode == Mode::Apply {
                let step_names: Vec<String> = step.iter().map(|&i| names[i].to_owned()).collect();
                nodes::wait_ready(
                    server.as_ref(),
                    &step_names,
                    Some(version),
                    run.options.wait_timeout,
                    report,
                )
            } else {
                Ok(())
            }
        });
        if let Err(mut error) = done {
            if plan.rolling {
                error.hint = resume_hint(&names, &plan, n, version);
            }
            return Err(error);
        }
    }
    if mode == Mode::Apply {
        let all_names: Vec<String> = node_roles(site)
            .iter()
            .map(|(m, _)| m.name.clone())
            .collect();
        nodes::wait_ready(
            server.as_ref(),
            &all_names,
            None,
            run.options.wait_timeout,
            report,
        )?;
    }
    if coredns_changed && !flags::disables_coredns(&site.install.extra_args) {
        if mode == Mode::Apply {
            nodes::restart_coredns(
                server.as_ref(),
                coredns.as_deref(),
                run.options.wait_timeout,
                report,
            )?;
        } else {
            report.changed(
                &first_server.name,
                "restart CoreDNS (its coredns-custom configuration changed)",
                None,
            );
        }
    }
    let servers: Vec<usize> = (0..run.nodes.len())
        .filter(|&i| run.nodes[i].1 != Role::Agent)
        .collect();
    parallel(&servers, |&i| {
        nodes::kubeconfig_perms(
            run.execs[i].as_ref(),
            &site.install.kubeconfig,
            &site.install.kubeconfig_group,
            mode == Mode::Apply,
            mode,
            report,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "v1.31.4+k3s1";
    const NEW: &str = "v1.32.0+k3s1";

    fn roles() -> Vec<Role> {
        vec![
            Role::FirstServer,
            Role::Server,
            Role::Server,
            Role::Agent,
            Role::Agent,
            Role::Agent,
        ]
    }

    #[test]
    fn a_fresh_cluster_installs_in_waves() {
        let installed = vec![None; 6];
        let plan = plan(&roles(), &installed, &[Some(NEW); 6], 1);
        assert!(!plan.rolling);
        assert_eq!(plan.steps, [vec![0], vec![1, 2], vec![3, 4, 5]]);
    }

    #[test]
    fn the_same_version_keeps_waves() {
        let installed = vec![Some(NEW.to_owned()); 6];
        assert!(!plan(&roles(), &installed, &[Some(NEW); 6], 1).rolling);
        // Check mode before anything was fetched: the wanted version is unknown.
        let installed = vec![Some(OLD.to_owned()); 6];
        assert!(!plan(&roles(), &installed, &[None; 6], 1).rolling);
    }

    #[test]
    fn an_upgrade_rolls_servers_alone_then_agents_in_batches() {
        let installed = vec![Some(OLD.to_owned()); 6];
        let wanted = [Some(NEW); 6];
        let one = plan(&roles(), &installed, &wanted, 1);
        assert!(one.rolling);
        let singles: Vec<Vec<usize>> = (0..6).map(|i| vec![i]).collect();
        assert_eq!(one.steps, singles);
        let two = plan(&roles(), &installed, &wanted, 2);
        assert_eq!(two.steps, [vec![0], vec![1], vec![2], vec![3, 4], vec![5]]);
        // A batch of 0 is taken as 1 rather than looping forever.
        assert_eq!(plan(&roles(), &installed, &wanted, 0).steps, singles);
    }

    #[test]
    fn one_node_behind_is_enough_to_roll() {
        let mut installed = vec![Some(NEW.to_owned()); 6];
        installed[4] = Some(OLD.to_owned());
        installed[5] = None;
        assert!(plan(&roles(), &installed, &[Some(NEW); 6], 1).rolling);
    }

    #[test]
    fn the_resume_hint_says_what_was_done_and_what_was_not() {
        let installed = vec![Some(OLD.to_owned()); 4];
        let roles = [Role::FirstServer, Role::Agent, Role::Agent, Role::Agent];
        let plan = plan(&roles, &installed, &[Some(NEW); 4], 1);
        let hint = resume_hint(&["s1", "a1", "a2", "a3"], &plan, 2, NEW);
        assert!(hint.contains("step 3 of 4"), "{hint}");
        assert!(
            hint.contains(&format!("Upgraded to {NEW} and Ready: s1, a1.")),
            "{hint}"
        );
        assert!(hint.contains("Stopped at: a2."), "{hint}");
        assert!(hint.contains("Not touched: a3."), "{hint}");
        assert!(hint.contains("run the same deploy again"), "{hint}");
        let last = resume_hint(&["s1", "a1", "a2", "a3"], &plan, 3, NEW);
        assert!(last.contains("Not touched: none."), "{last}");
    }
}
