//! What the bundle command tests share: the images they carry and running the airlock
//! binary.

// Each test binary uses part of it.
#![allow(dead_code)]

pub mod gateway;
pub mod packages;
pub mod registry;

use std::path::Path;
use std::process::{Command, Output};

use airlock_testkit::{Image, Index, Platform, tar_layer};

pub const AMD64: Platform = Platform {
    os: "linux",
    arch: "amd64",
};
pub const ARM64: Platform = Platform {
    os: "linux",
    arch: "arm64",
};
pub const SINGLE: &str = "docker.io/library/app:1";
pub const MULTI: &str = "ghcr.io/org/multi:2";
pub const FILE_PATH: &str = "k3s-io/k3s/releases/download/v1.31.4%2Bk3s1/k3s";

pub fn airlock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .output()
        .expect("run airlock")
}

pub fn succeeds(args: &[&str]) -> String {
    let output = airlock(args);
    assert!(
        output.status.success(),
        "airlock {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn fails(args: &[&str]) -> String {
    let output = airlock(args);
    assert!(
        !output.status.success(),
        "airlock {args:?} should have failed:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

pub fn run(cmd: &mut Command) -> Vec<u8> {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub struct Fixture {
    pub single: Image,
    pub multi: Index,
    pub file: Vec<u8>,
}

pub fn fixture() -> Fixture {
    Fixture {
        single: Image::from_layers(
            vec![tar_layer("hello.txt", b"hello from a bundle\n")],
            AMD64,
        ),
        multi: Index::new(vec![
            (
                AMD64,
                Image::from_layers(vec![tar_layer("arch", b"amd64\n")], AMD64),
            ),
            (
                ARM64,
                Image::from_layers(vec![tar_layer("arch", b"arm64\n")], ARM64),
            ),
        ]),
        file: (0..20_000u32).map(|i| (i * 31 % 256) as u8).collect(),
    }
}
