//! PEP 691 JSON (with PEP 700's `versions`, `size` and `upload-time`): typed parsing, so a
//! page with a wrong type anywhere is an error, and the renderer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DistFile, ProjectPage};

#[derive(Deserialize)]
struct RootIn {
    projects: Vec<NameIn>,
}

#[derive(Deserialize)]
struct NameIn {
    name: String,
}

#[derive(Deserialize)]
struct ProjectIn {
    #[serde(default)]
    versions: Option<Vec<String>>,
    files: Vec<FileIn>,
}

#[derive(Deserialize)]
struct FileIn {
    filename: String,
    url: String,
    hashes: BTreeMap<String, String>,
    #[serde(default, rename = "requires-python")]
    requires_python: Option<String>,
    #[serde(default)]
    yanked: Option<Flag>,
    #[serde(default, rename = "core-metadata")]
    core_metadata: Option<Metadata>,
    #[serde(default, rename = "dist-info-metadata")]
    dist_info_metadata: Option<Metadata>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default, rename = "upload-time")]
    upload_time: Option<String>,
}

/// `yanked`: a boolean or a reason.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum Flag {
    Yes(bool),
    Reason(String),
}

/// `core-metadata`: a boolean or the metadata file's hashes.
#[derive(Deserialize)]
#[serde(untagged)]
enum Metadata {
    Present(bool),
    Hashes(BTreeMap<String, String>),
}

impl Metadata {
    fn into_hashes(self) -> Option<BTreeMap<String, String>> {
        match self {
            Metadata::Present(false) => None,
            Metadata::Present(true) => Some(BTreeMap::new()),
            Metadata::Hashes(hashes) => Some(hashes),
        }
    }
}

pub(super) fn parse_project(bytes: &[u8]) -> Result<ProjectPage, String> {
    let page: ProjectIn =
        serde_json::from_slice(bytes).map_err(|e| format!("not a PEP 691 project page: {e}"))?;
    let files = page
        .files
        .into_iter()
        .map(|f| DistFile {
            filename: f.filename,
            url: f.url,
            hashes: f.hashes,
            requires_python: f.requires_python,
            yanked: match f.yanked {
                None | Some(Flag::Yes(false)) => None,
                Some(Flag::Yes(true)) => Some(String::new()),
                Some(Flag::Reason(reason)) => Some(reason),
            },
            metadata: f
                .core_metadata
                .or(f.dist_info_metadata)
                .and_then(Metadata::into_hashes),
            size: f.size,
            upload_time: f.upload_time,
        })
        .collect();
    Ok(ProjectPage {
        versions: page.versions,
        files,
    })
}

pub(super) fn parse_root(bytes: &[u8]) -> Result<Vec<String>, String> {
    let root: RootIn =
        serde_json::from_slice(bytes).map_err(|e| format!("not a PEP 691 root index: {e}"))?;
    Ok(root.projects.into_iter().map(|p| p.name).collect())
}

#[derive(Serialize)]
struct Meta {
    #[serde(rename = "api-version")]
    api_version: &'static str,
}

#[derive(Serialize)]
struct ProjectOut<'a> {
    meta: Meta,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<&'a [String]>,
    files: Vec<FileOut<'a>>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    filename: &'a str,
    url: &'a str,
    hashes: &'a BTreeMap<String, String>,
    #[serde(rename = "requires-python", skip_serializing_if = "Option::is_none")]
    requires_python: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    yanked: Option<Flag>,
    #[serde(rename = "core-metadata", skip_serializing_if = "Option::is_none")]
    core_metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(rename = "dist-info-metadata", skip_serializing_if = "Option::is_none")]
    dist_info_metadata: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(rename = "upload-time", skip_serializing_if = "Option::is_none")]
    upload_time: Option<&'a str>,
}

pub(super) fn render_project(project: &str, page: &ProjectPage) -> String {
    let files = page
        .files
        .iter()
        .map(|f| FileOut {
            filename: &f.filename,
            url: &f.url,
            hashes: &f.hashes,
            requires_python: f.requires_python.as_deref(),
            yanked: f.yanked.as_ref().map(|reason| {
                if reason.is_empty() {
                    Flag::Yes(true)
                } else {
                    Flag::Reason(reason.clone())
                }
            }),
            core_metadata: f.metadata.as_ref(),
            dist_info_metadata: f.metadata.as_ref(),
            size: f.size,
            upload_time: f.upload_time.as_deref(),
        })
        .collect();
    let out = ProjectOut {
        meta: Meta {
            api_version: if page.versions.is_some() {
                "1.1"
            } else {
                "1.0"
            },
        },
        name: project,
        versions: page.versions.as_deref(),
        files,
    };
    serde_json::to_string(&out).expect("strings and maps serialize")
}

pub(super) fn render_root(projects: &[(String, String)]) -> String {
    #[derive(Serialize)]
    struct Root<'a> {
        meta: Meta,
        projects: Vec<Name<'a>>,
    }
    #[derive(Serialize)]
    struct Name<'a> {
        name: &'a str,
    }
    let out = Root {
        meta: Meta { api_version: "1.0" },
        projects: projects.iter().map(|(name, _)| Name { name }).collect(),
    };
    serde_json::to_string(&out).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_pep_691_and_700() {
        let page = br#"{"meta":{"api-version":"1.1"},"name":"a","versions":["1.0"],"files":[
            {"filename":"a-1.0-py3-none-any.whl","url":"https://f.example/a.whl",
             "hashes":{"sha256":"ab","blake2b_256":"cd"},"requires-python":">=3.8",
             "yanked":"broken","core-metadata":{"sha256":"ef"},"size":12,
             "upload-time":"2024-01-01T00:00:00.000000Z","extra":1}]}"#;
        let parsed = parse_project(page).unwrap();
        let file = &parsed.files[0];
        assert_eq!(file.yanked.as_deref(), Some("broken"));
        assert_eq!(file.metadata.as_ref().unwrap()["sha256"], "ef");
        let out: serde_json::Value = serde_json::from_str(&render_project("a", &parsed)).unwrap();
        let f = &out["files"][0];
        assert_eq!(out["versions"][0], "1.0");
        assert_eq!(out["meta"]["api-version"], "1.1");
        assert_eq!(f["hashes"]["blake2b_256"], "cd");
        assert_eq!(f["size"], 12);
        assert_eq!(f["upload-time"], "2024-01-01T00:00:00.000000Z");
        assert_eq!(f["yanked"], "broken");
        assert_eq!(f["dist-info-metadata"]["sha256"], "ef");
        assert_eq!(f["requires-python"], ">=3.8");
    }

    #[test]
    fn wrong_types_are_errors() {
        for bad in [
            &br#"{"files":"x"}"#[..],
            br#"{"files":[{"filename":1,"url":"u","hashes":{}}]}"#,
            br#"{"files":[{"filename":"f","url":"u","hashes":{"sha256":5}}]}"#,
            br#"{"files":[{"filename":"f","url":"u","hashes":{},"size":-1}]}"#,
            b"{",
        ] {
            assert!(
                parse_project(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
