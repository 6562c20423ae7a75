//! The site an Ansible inventory describes, and everything rendered from it.
//!
//! - [`site`]: the deployment an inventory describes, as typed settings; [`catalog`]: what
//!   Scout's sites mirror.
//! - [`check`]: `airlock inventory check`: every problem, and a summary.
//! - [`render`]: the gateway config and every client config, from one inventory.
//! - [`explain`]: which endpoint and path a node pulls an image from.
//! - [`load`]: an inventory file (and `-e` variables) read into a site and its diagnostics.

pub mod catalog;
pub mod check;
pub mod explain;
pub mod load;
pub mod render;
pub mod site;

#[cfg(test)]
pub(crate) mod testing {
    //! A small air-gapped site for unit tests.

    use std::path::Path;

    use airlock_ansible::inventory::Inventory;

    use crate::site::Site;

    use airlock_testkit::inventory::SMALL_SITE as INVENTORY;

    pub(crate) fn site() -> Site {
        let inventory = Inventory::parse_str(INVENTORY, Path::new("inventory.yaml")).unwrap();
        let (site, diagnostics) = Site::read(&inventory, None);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        site
    }
}
