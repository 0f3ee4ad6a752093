//! Runs the built `dm-switch` binary: help texts, usage errors and user
//! errors must give the documented exit codes and messages, never a panic.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dm-switch"))
        .args(args)
        .output()
        .expect("cannot run the dm-switch binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_texts_carry_examples_and_the_mapping_format() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.contains("Mapping file format"), "{s}");
    assert!(s.contains("FIRST-LAST PATH"), "{s}");
    assert!(s.contains("Exit codes"), "{s}");
    assert!(s.contains("dm-switch upload sw0 --round-robin"), "{s}");
    for sub in ["upload", "status"] {
        let out = run(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        let s = text(&out.stdout);
        assert!(s.contains("Examples:"), "{sub}: {s}");
        assert!(s.contains(&format!("dm-switch {sub} ")), "{sub}: {s}");
    }
}

#[test]
fn usage_errors_exit_1() {
    for args in [
        &[][..],
        &["upload", "sw0"][..],
        &["upload", "sw0", "--round-robin", "--free-chunk", "1"][..],
        &["upload", "sw0", "--round-robin", "--userland", "1"][..],
        &["upload", "sw0", "--round-robin", "--pte-bits", "300"][..],
        &["upload", "sw0", "--free-chunk", "-1"][..],
        &["frobnicate"][..],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains("panicked"), "{args:?}");
    }
}

#[test]
fn user_errors_exit_1_with_a_message() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["upload", "no-such-switch-device", "--round-robin"],
            "dm-switch: no device-mapper device named `no-such-switch-device`",
        ),
        (
            &["status", "/dev/null"],
            "dm-switch: /dev/null is not a block device",
        ),
        (
            &["status", "/nonexistent/dev", "--json"],
            "dm-switch: cannot stat /nonexistent/dev",
        ),
        (
            &["upload", "4095:1048575", "--file", "-"],
            "is not a device-mapper device",
        ),
    ];
    for (args, want) in cases {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
