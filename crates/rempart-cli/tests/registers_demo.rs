//! `rempart demo registers` as a person runs it: small numbers, files kept
//! with --data; it must end on its checks and exit 0, and a register file it
//! leaves must pass `rempart events verify` on its own.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_rempart");

fn rempart(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_small_run_ends_on_its_checks_and_keeps_files_that_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("run");
    let data_arg = data.display().to_string();
    let out = rempart(&[
        "demo",
        "registers",
        "--stores",
        "2",
        "--registers-per-store",
        "2",
        "--tickets",
        "24",
        "--seed",
        "7",
        "--data",
        &data_arg,
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: Vec<&str> = stdout.lines().rev().take(7).collect();
    assert_eq!(last[0], "all checks hold", "{all}");
    assert!(
        last[1].starts_with("a tampered copy fails verify at that record: OK"),
        "{all}"
    );
    assert!(
        last[2].contains("verify on the copy: Altered at stream ticket-"),
        "{all}"
    );
    assert!(
        stdout.contains("central holds each event exactly once"),
        "{all}"
    );
    assert!(
        stdout
            .contains("the projection's totals equal the registers' day closures to the cent: OK"),
        "{all}"
    );
    assert!(stdout.contains("concurrent: ticket-"), "{all}");
    assert!(!stdout.contains("FAILED"), "{all}");

    // The kept files: central and one per register, each a store on its own.
    assert!(data.join("central.sqlite").is_file());
    let register = data.join("m2-caisse1.sqlite");
    assert!(register.is_file(), "{all}");
    let v = rempart(&["events", "verify", &register.display().to_string()]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("intact"),
        "{}",
        text(&v)
    );

    // The same directory again is refused: it would mix two runs.
    let again = rempart(&["demo", "registers", "--tickets", "2", "--data", &data_arg]);
    assert_eq!(again.status.code(), Some(64), "{}", text(&again));
    assert!(text(&again).contains("earlier run"));
}
