//! `ci/<robot>/config.json`: each robot's login for CI runners inside the site, in the file
//! format `docker login` writes, which skopeo, podman, buildah and docker all read
//! (`REGISTRY_AUTH_FILE`, `--authfile`, `DOCKER_CONFIG`); and `ci/<robot>/README.txt`, how a
//! job uses it. One directory per robot, so `DOCKER_CONFIG` can name it as it is.
//!
//! The login is for the primary staging host under the registry name nodes pull from: hosted
//! projects live in one gateway's index, and an image reference names the registry the same
//! way in the cluster and in CI. The gateway listens on 443, so the name has no port.

use std::fmt::Write as _;
use std::path::PathBuf;

use base64::Engine as _;

use super::clients::client_ca;
use super::header;
use crate::site::{Robot, Site, Staging};

/// The robot's `config.json` (holding its secret: the caller writes it 0600) and its
/// `README.txt`, each with its path.
pub(super) fn robot_files(
    site: &Site,
    staging: &Staging,
    robot: &Robot,
) -> ((PathBuf, String), (PathBuf, String)) {
    let dir = PathBuf::from("ci").join(&robot.name);
    let registry = &staging.registry_host;
    (
        (dir.join("config.json"), auth_file(registry, robot)),
        (dir.join("README.txt"), readme(site, registry, robot)),
    )
}

/// `{"auths": {"<registry>": {"auth": base64("<name>:<secret>")}}}`.
fn auth_file(registry: &str, robot: &Robot) -> String {
    let login = format!("{}:{}", robot.name, robot.secret.0);
    let auth = base64::engine::general_purpose::STANDARD.encode(login);
    let file = serde_json::json!({ "auths": { registry: { "auth": auth } } });
    let mut text = serde_json::to_string_pretty(&file).expect("JSON values always serialize");
    text.push('\n');
    text
}

fn readme(site: &Site, registry: &str, robot: &Robot) -> String {
    let name = &robot.name;
    let mut out = header(site, "#");
    let _ = writeln!(
        out,
        "\nconfig.json beside this file is robot `{name}`'s login for the gateway's registry\n\
         {registry}, as `docker login` writes it (skopeo, podman, buildah and docker\n\
         all read it). It holds the robot's secret: copy it (mode 0600) only to the CI runners\n\
         that log in as `{name}`, never into a repository.\n"
    );
    let scopes = |globs: &[String]| {
        if globs.is_empty() {
            "nothing".to_owned()
        } else {
            globs.join(", ")
        }
    };
    let _ = writeln!(out, "push (and pull): {}", scopes(&robot.push));
    let _ = writeln!(out, "pull:            {}\n", scopes(&robot.pull));
    let example = robot
        .push
        .first()
        .and_then(|glob| glob.split_once('/'))
        .map_or("<project>", |(project, _)| project);
    let image = format!("{registry}/{example}/app:1.0");
    let _ = writeln!(
        out,
        "# skopeo, podman, buildah: the file itself\n\
         REGISTRY_AUTH_FILE=/path/to/config.json skopeo copy oci:./build:1.0 docker://{image}\n\
         podman push --authfile /path/to/config.json {image}\n\
         # docker: the directory holding config.json\n\
         DOCKER_CONFIG=/path/to/dir docker push {image}"
    );
    if let Some(ca) = client_ca(site) {
        let _ = writeln!(
            out,
            "\nThe gateway's certificate is self-signed: give runners its CA (on the nodes:\n\
             {ca}) as /etc/containers/certs.d/{registry}/ca.crt\n\
             (skopeo, podman, buildah) or /etc/docker/certs.d/{registry}/ca.crt (docker)."
        );
    }
    out
}
