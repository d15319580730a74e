//! `meridian-bench` as a user runs it (this also makes `cargo test` build the binary the
//! workspace's integration tests start as a real process).

use std::process::Command;

#[test]
fn every_subcommand_has_help() {
    for sub in [&[][..], &["run"], &["mock-openai"], &["impair"], &["suite"]] {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: meridian-bench"),
            "{args:?}"
        );
    }
}

#[test]
fn run_without_a_target_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian-bench"))
        .args(["run", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give a target"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
