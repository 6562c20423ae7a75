//! An offline proxy's pages ([`crate::offline`]): a project page lists only the files whose
//! bytes the store holds, and the root only the projects that have one.

use std::collections::BTreeSet;

use airlock_types::Digest;

use super::{ProjectPage, UPSTREAM_JSON, fetch_project, normalize, sha256_hex};
use crate::{Origin, PackageError};

/// The sha256 a file of a page is served under, when it has a usable one.
fn digest_of(file: &super::DistFile) -> Option<Digest> {
    let hex = file.hashes.get("sha256").and_then(|h| sha256_hex(h))?;
    Digest::sha256_hex(&hex).ok()
}

/// Leaves in `page` only the files the store holds. PEP 700's `versions` goes too: it
/// would name versions no file here provides (the page becomes API version 1.0).
pub(super) async fn keep_held(origin: &Origin, page: &mut ProjectPage) -> Result<(), PackageError> {
    let held = origin.held(page.files.iter().filter_map(digest_of)).await?;
    page.files
        .retain(|file| digest_of(file).is_some_and(|digest| held.contains(&digest)));
    page.versions = None;
    Ok(())
}

/// The projects with a cached page that lists at least one held file, as the root renders
/// them (name, normalized name), in name order. Nothing cached is an empty root.
pub(super) async fn held_projects(origin: &Origin) -> Result<Vec<(String, String)>, PackageError> {
    // Page keys are `simple/<project>/#<representation>`; the root's is `simple/#…`.
    let projects: BTreeSet<String> = origin
        .cached_under("simple/")
        .await?
        .iter()
        .filter_map(|key| key.strip_prefix("simple/")?.split_once("/#"))
        .filter_map(|(project, _)| normalize(project).ok().filter(|n| n == project))
        .collect();
    let mut listed = Vec::new();
    for project in projects {
        let page = match fetch_project(origin, &project, &UPSTREAM_JSON).await {
            Ok((page, _)) => page,
            // A page that no longer parses lists nothing; the others still do.
            Err(error) => {
                tracing::warn!(target: "airlock::packages", proxy = %origin.config().name,
                    project, %error, "offline root: left out a project whose page cannot be read");
                continue;
            }
        };
        let held = origin.held(page.files.iter().filter_map(digest_of)).await?;
        if !held.is_empty() {
            listed.push((project.clone(), project));
        }
    }
    Ok(listed)
}
