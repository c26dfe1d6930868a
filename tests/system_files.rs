//! The files a package installs: the systemd unit passes `systemd-analyze
//! verify` without a warning, and says what the daemon relies on.

use std::path::Path;
use std::process::Command;

fn unit_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/meshnode.service"))
        .unwrap()
}

#[test]
fn systemd_unit_verifies_cleanly() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP systemd_unit_verifies_cleanly: systemd-analyze is not installed here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart binaries exist: point them at the built one
    let unit = unit_text().replace("/usr/bin/meshnode", env!("CARGO_BIN_EXE_meshnode"));
    let path = dir.path().join("meshnode.service");
    std::fs::write(&path, unit).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("meshnode.service"))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze warned about the unit:\n{err}"
    );
}

#[test]
fn systemd_unit_has_what_the_daemon_relies_on() {
    let u = unit_text();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus=78",
        "StateDirectory=meshnode",
        "RuntimeDirectory=meshnode",
        "User=meshnode",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(u.lines().any(|l| l.trim() == line), "missing: {line}");
    }
    // the stop timeout leaves room for the daemon's drain
    let stop: u64 = u
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        stop >= (meshnode::daemon::GRACE + meshnode::daemon::TASK_GRACE).as_secs() + 3,
        "drain + task stop + store close must fit"
    );
}
