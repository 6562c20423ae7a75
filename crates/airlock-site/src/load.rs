//! An inventory file read into a [`Site`]: the inventory and its `group_vars/`/`host_vars/`,
//! `-e KEY=VALUE` variables above them (a warning where one changes what a file says), the
//! site settings, and every problem found on the way, sorted by file and line.

use std::path::Path;

use airlock_ansible::inventory::{Diagnostic, Inventory, InventoryError, sort_diagnostics};
use airlock_ansible::vault::VaultSecret;

use crate::site::Site;

/// The inventory, the site read from it, and the inventory's and the site's diagnostics.
#[derive(Debug)]
pub struct Loaded {
    pub inventory: Inventory,
    pub site: Site,
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// How many diagnostics are errors: a site with any is not fit to render or deploy.
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// An `-e KEY=VALUE` whose value is not YAML.
    #[error("-e {name}=…")]
    Extra {
        name: String,
        #[source]
        source: InventoryError,
    },
}

/// Read `path` and its variable files (decrypting with `secret`), set `extra` variables
/// above theirs, and read the site. Bad settings are diagnostics in [`Loaded`], not errors.
pub fn load(
    path: &Path,
    secret: Option<&VaultSecret>,
    extra: &[(String, String)],
) -> Result<Loaded, LoadError> {
    let mut inventory = Inventory::load(path, secret)?;
    for (name, value) in extra {
        inventory
            .set_extra(name, value)
            .map_err(|source| LoadError::Extra {
                name: name.clone(),
                source,
            })?;
    }
    let (site, mut diagnostics) = Site::read(&inventory, secret);
    diagnostics.extend(inventory.diagnostics.iter().cloned());
    diagnostics.extend(inventory.extra_overrides());
    sort_diagnostics(&mut diagnostics);
    Ok(Loaded {
        inventory,
        site,
        diagnostics,
    })
}
