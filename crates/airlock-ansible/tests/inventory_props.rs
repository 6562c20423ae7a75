//! Property tests of the YAML inventory reader: a generated inventory reads back to its
//! groups, hosts and variables; arbitrary, cut and mutated inventories never panic; and
//! documents built to exhaust memory or the stack are refused at the stated bounds
//! (`airlock_ansible::yaml::{MAX_DEPTH, MAX_NODES, MAX_TEXT}`).
//!
//! `PROPTEST_CASES` raises the case count (scripts/fuzz.sh).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use airlock_ansible::inventory::Inventory;
use airlock_ansible::yaml;
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// group → host → (variable → value); every host in one group.
type Layout = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

fn layout() -> impl Strategy<Value = Layout> {
    let vars = proptest::collection::btree_map("v_[a-z0-9_]{0,8}", "[ -~]{0,20}", 0..4);
    let hosts = proptest::collection::btree_map("h[a-z0-9-]{0,8}", vars, 1..4);
    proptest::collection::btree_map("g_[a-z0-9_]{0,8}", hosts, 1..4).prop_map(|groups| {
        // A host name appears in one group only.
        let mut seen = std::collections::HashSet::new();
        groups
            .into_iter()
            .map(|(g, hosts)| {
                let hosts = hosts
                    .into_iter()
                    .filter(|(h, _)| seen.insert(h.clone()))
                    .collect();
                (g, hosts)
            })
            .collect()
    })
}

/// A YAML double-quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn render(layout: &Layout) -> String {
    let mut out = String::from("all:\n  children:\n");
    for (group, hosts) in layout {
        let _ = writeln!(out, "    {group}:\n      hosts:");
        for (host, vars) in hosts {
            if vars.is_empty() {
                let _ = writeln!(out, "        {host}:");
            } else {
                let _ = writeln!(out, "        {host}:");
                for (name, value) in vars {
                    let _ = writeln!(out, "          {name}: {}", quoted(value));
                }
            }
        }
        let _ = writeln!(out, "      vars:\n        v_group: {}", quoted(group));
    }
    out
}

fn mutate(text: &str, at: prop::sample::Index, insert: &str, cut: bool) -> String {
    let mut text = text.to_owned();
    let mut at = at.index(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    if cut {
        text.truncate(at);
    } else {
        text.insert_str(at, insert);
    }
    text
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("<<: *a\n".to_owned()),
        Just("- ".to_owned()),
        Just(": ".to_owned()),
        Just("\n  ".to_owned()),
        Just("\t".to_owned()),
        Just("!vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n".to_owned()),
        Just("{".to_owned()),
        Just("---\n".to_owned()),
        "\\PC{0,8}",
    ]
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn a_generated_inventory_reads_back(layout in layout()) {
        let inventory = Inventory::parse_str(&render(&layout), Path::new("inventory.yml")).unwrap();
        for (group, hosts) in &layout {
            let mut listed = inventory.hosts_of(group);
            listed.sort_unstable();
            prop_assert_eq!(listed, hosts.keys().map(String::as_str).collect::<Vec<_>>());
            for (host, vars) in hosts {
                let all = inventory.vars_of(host);
                for (name, value) in vars {
                    let text = all.get(name).unwrap().text(None).unwrap();
                    prop_assert_eq!(text.unwrap_or_default(), value.clone());
                }
                let group_var = all.get("v_group").unwrap().text(None).unwrap();
                prop_assert_eq!(group_var.as_deref(), Some(group.as_str()));
            }
        }
    }

    #[test]
    fn a_mutated_inventory_never_panics(layout in layout(), at in any::<prop::sample::Index>(), insert in fragment(), cut in any::<bool>()) {
        let text = mutate(&render(&layout), at, &insert, cut);
        if let Ok(inventory) = Inventory::parse_str(&text, Path::new("inventory.yml")) {
            for host in inventory.hosts() {
                let vars = inventory.vars_of(&host.name);
                for name in vars.names() {
                    let _ = vars.get(name).map(|v| v.text(None));
                }
            }
        }
    }

    #[test]
    fn arbitrary_yaml_never_panics(text in prop_oneof!["\\PC{0,300}", "[-:&*!|>{}\\[\\], \\n a-z0-9#'\"]{0,200}"]) {
        let _ = yaml::parse_str(&text, Path::new("x.yml"));
        let _ = Inventory::parse_str(&text, Path::new("x.yml"));
    }
}

#[test]
fn nesting_past_the_bound_is_refused_not_overflowed() {
    for nested in [
        "[".repeat(yaml::MAX_DEPTH + 1) + &"]".repeat(yaml::MAX_DEPTH + 1),
        "{a: ".repeat(yaml::MAX_DEPTH + 1) + "x" + &"}".repeat(yaml::MAX_DEPTH + 1),
        (0..=yaml::MAX_DEPTH).fold(String::new(), |mut out, depth| {
            let _ = writeln!(out, "{}k:", " ".repeat(depth));
            out
        }),
    ] {
        let error = yaml::parse_str(&nested, Path::new("deep.yml")).unwrap_err();
        assert!(error.to_string().contains("deeper than"), "{error}");
    }
}

#[test]
fn an_alias_bomb_in_an_inventory_is_refused() {
    // Ten levels of ten aliases: 10^10 nodes from a few hundred bytes.
    let mut bomb = String::from("all:\n  vars:\n    l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        let _ = writeln!(bomb, "    l{i}: &l{i} [{refs}]");
    }
    let error = Inventory::parse_str(&bomb, Path::new("bomb.yml")).unwrap_err();
    assert!(error.to_string().contains("alias bomb"), "{error}");
}
