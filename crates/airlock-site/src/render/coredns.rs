//! The `coredns-custom` `ConfigMap` K3s's `CoreDNS` imports (`*.override` into its main
//! server block, `*.server` as more server blocks), in three layers as Scout renders it:
//!
//! 1. `air_gapped`: `airgap.override` answers NXDOMAIN for every name the cluster does not
//!    serve itself, and `airgap.server` keeps `cluster.local` and reverse lookups working;
//! 2. `coredns_forward_map`: `forward-domains.server`, one block per destination;
//! 3. `coredns_extra_server_blocks`: `<name>.server`, the inventory's text as it is.
//!
//! `airlock deploy` writes it as a manifest into K3s's auto-deploy directory on the servers.

use std::fmt::Write as _;

use crate::site::Site;

/// The deny-all layer: NXDOMAIN, with an SOA so resolvers cache the denial for a minute.
const AIRGAP_OVERRIDE: &str = "log {
  class denial
}
template ANY ANY {
  rcode NXDOMAIN
  authority \". 60 IN SOA ns.denied. hostmaster.denied. (1 60 60 60 60)\"
}
";

/// What the cluster still answers itself when everything else is denied.
const AIRGAP_SERVER: &str = "cluster.local:53 {
  kubernetes cluster.local {
    pods insecure
  }
  cache 30
}
in-addr.arpa ip6.arpa:53 {
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
  }
  cache 30
}
";

/// The `ConfigMap`'s data, key by key; empty when the site needs no customization.
pub fn coredns_custom_data(site: &Site) -> Vec<(String, String)> {
    let mut data = Vec::new();
    if site.air_gapped {
        data.push(("airgap.override".to_owned(), AIRGAP_OVERRIDE.to_owned()));
        data.push(("airgap.server".to_owned(), AIRGAP_SERVER.to_owned()));
    }
    if !site.coredns.forward.is_empty() {
        let mut blocks = String::new();
        for (destination, domains) in &site.coredns.forward {
            let _ = write!(
                blocks,
                "{}:53 {{\n  forward . {destination}\n  cache 300\n}}\n",
                domains.join(" ")
            );
        }
        data.push(("forward-domains.server".to_owned(), blocks));
    }
    for (name, text) in &site.coredns.extra_server_blocks {
        data.push((format!("{name}.server"), text.clone()));
    }
    data
}

/// The `coredns-custom` `ConfigMap` as a manifest, or `None` when the site needs none.
pub fn coredns_custom(site: &Site) -> Option<String> {
    let data = coredns_custom_data(site);
    if data.is_empty() {
        return None;
    }
    let mut out = String::from(
        "# Written by `airlock deploy` from the inventory; K3s applies it. Edit the inventory, not this file.\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: coredns-custom\n  namespace: kube-system\n\
         \x20 labels:\n    app.kubernetes.io/managed-by: airlock\n\
         data:\n",
    );
    for (key, value) in &data {
        let _ = writeln!(out, "  {key}: {}", block_scalar(value));
    }
    Some(out)
}

/// `value` as a YAML literal block scalar at indentation 4: the header (with a chomping
/// indicator that keeps the trailing newlines exactly, and an indentation indicator when
/// the text starts with a space) and the indented lines.
fn block_scalar(value: &str) -> String {
    let body = value.trim_end_matches('\n');
    let chomp = match value.len() - body.len() {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let indent = if body.starts_with(' ') { "2" } else { "" };
    let mut out = format!("|{indent}{chomp}");
    for line in value.strip_suffix('\n').unwrap_or(value).split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str("    ");
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::site::CoreDns;
    use airlock_ansible::yaml::parse_str;

    fn site(air_gapped: bool, coredns: CoreDns) -> Site {
        let mut site = crate::testing::site();
        site.air_gapped = air_gapped;
        site.coredns = coredns;
        site
    }

    /// The manifest's `data`, parsed back with the YAML loader inventories use.
    fn parsed(manifest: &str) -> Vec<(String, String)> {
        let doc = parse_str(manifest, Path::new("coredns-custom.yaml")).unwrap();
        assert_eq!(doc.get("kind").and_then(|k| k.as_str()), Some("ConfigMap"));
        doc.get("data")
            .and_then(|d| d.as_map())
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_owned(),
                    v.as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    const HEAD: &str = "# Written by `airlock deploy` from the inventory; K3s applies it. Edit the inventory, not this file.
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns-custom
  namespace: kube-system
  labels:
    app.kubernetes.io/managed-by: airlock
data:
";

    #[test]
    fn nothing_to_customize_is_no_configmap() {
        assert_eq!(coredns_custom(&site(false, CoreDns::default())), None);
    }

    #[test]
    fn air_gap_layer() {
        let manifest = coredns_custom(&site(true, CoreDns::default())).unwrap();
        let expected = format!(
            "{HEAD}  airgap.override: |
    log {{
      class denial
    }}
    template ANY ANY {{
      rcode NXDOMAIN
      authority \". 60 IN SOA ns.denied. hostmaster.denied. (1 60 60 60 60)\"
    }}
  airgap.server: |
    cluster.local:53 {{
      kubernetes cluster.local {{
        pods insecure
      }}
      cache 30
    }}
    in-addr.arpa ip6.arpa:53 {{
      kubernetes cluster.local in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
      }}
      cache 30
    }}
"
        );
        assert_eq!(manifest, expected);
        let data = parsed(&manifest);
        assert_eq!(data[0], ("airgap.override".into(), AIRGAP_OVERRIDE.into()));
        assert_eq!(data[1], ("airgap.server".into(), AIRGAP_SERVER.into()));
    }

    #[test]
    fn forward_layer() {
        let coredns = CoreDns {
            forward: vec![
                ("/etc/resolv.conf".into(), vec!["example.edu".into()]),
                (
                    "100.100.100.100".into(),
                    vec!["ts.net".into(), "tail.example.net".into()],
                ),
            ],
            extra_server_blocks: Vec::new(),
        };
        let manifest = coredns_custom(&site(false, coredns)).unwrap();
        let expected = format!(
            "{HEAD}  forward-domains.server: |
    example.edu:53 {{
      forward . /etc/resolv.conf
      cache 300
    }}
    ts.net tail.example.net:53 {{
      forward . 100.100.100.100
      cache 300
    }}
"
        );
        assert_eq!(manifest, expected);
        assert_eq!(parsed(&manifest).len(), 1);
    }

    #[test]
    fn extra_server_blocks_layer_keeps_the_text_exactly() {
        let block = "app.example.com:53 {\n  template IN A app.example.com {\n    answer \"{{ .Name }} 60 IN A 198.51.100.10\"\n  }\n}\n";
        let coredns = CoreDns {
            forward: Vec::new(),
            extra_server_blocks: vec![
                ("scout-override".into(), block.into()),
                ("no-newline".into(), "x:53 {\n  whoami\n}".into()),
                ("indented".into(), "  y:53 {\n  whoami\n  }\n\n".into()),
            ],
        };
        let manifest = coredns_custom(&site(false, coredns)).unwrap();
        let expected = format!(
            "{HEAD}  scout-override.server: |
    app.example.com:53 {{
      template IN A app.example.com {{
        answer \"{{{{ .Name }}}} 60 IN A 198.51.100.10\"
      }}
    }}
  no-newline.server: |-
    x:53 {{
      whoami
    }}
  indented.server: |2+
      y:53 {{
      whoami
      }}

"
        );
        assert_eq!(manifest, expected);
        assert_eq!(
            parsed(&manifest),
            [
                ("scout-override.server".to_owned(), block.to_owned()),
                (
                    "no-newline.server".to_owned(),
                    "x:53 {\n  whoami\n}".to_owned()
                ),
                (
                    "indented.server".to_owned(),
                    "  y:53 {\n  whoami\n  }\n\n".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn layers_come_in_scouts_order() {
        let coredns = CoreDns {
            forward: vec![("10.0.0.53".into(), vec!["example.edu".into()])],
            extra_server_blocks: vec![("extra".into(), "z:53 {\n  whoami\n}\n".into())],
        };
        let keys: Vec<String> = parsed(&coredns_custom(&site(true, coredns)).unwrap())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "airgap.override",
                "airgap.server",
                "forward-domains.server",
                "extra.server"
            ]
        );
    }
}
