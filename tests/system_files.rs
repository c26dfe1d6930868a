//! The files a package installs: the systemd unit passes `systemd-analyze
//! verify` without a warning, and says what the daemon relies on; the D-Bus
//! policy (its behaviour on a real bus is tested in tests/dbus.rs).

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

/// What the D-Bus policy grants, read from the file (tests/dbus.rs checks
/// the same on a real bus, as root): only root and the unit's user own the
/// name, and the
/// default context may only introspect, ping, read properties and call the
/// read-only methods.
#[test]
fn dbus_policy_grants_only_reads_to_everyone() {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/dbus-1/system.d/org.meshnode.Node.conf");
    let text = std::fs::read_to_string(&p).unwrap();
    let policy = |head: &str| -> String {
        let start = text.find(head).unwrap_or_else(|| panic!("no {head}"));
        let end = start + text[start..].find("</policy>").unwrap();
        text[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        text.matches("own=").count(),
        2,
        "root and the unit's user own the name"
    );
    assert!(policy(r#"<policy user="root">"#).contains(r#"<allow own="org.meshnode.Node"/>"#));
    // the user systemd/meshnode.service runs the daemon as
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/meshnode.service"
    ))
    .unwrap();
    assert!(unit.contains("\nUser=meshnode\n"), "{unit}");
    assert_eq!(
        policy(r#"<policy user="meshnode">"#),
        r#"<policy user="meshnode"> <allow own="org.meshnode.Node"/>"#,
        "meshnode may own the name and nothing more"
    );
    assert!(
        policy(r#"<policy group="meshadmin">"#)
            .contains(r#"<allow send_destination="org.meshnode.Node"/>"#)
    );
    let default = policy(r#"<policy context="default">"#);
    assert!(!default.contains("deny"), "the bus's own default denies");
    let allows: Vec<&str> = default.split("<allow").skip(1).collect();
    for a in &allows {
        assert!(a.contains(r#"send_destination="org.meshnode.Node""#), "{a}");
        let ok = a.contains("org.freedesktop.DBus.Introspectable")
            || a.contains("org.freedesktop.DBus.Peer")
            || (a.contains("org.freedesktop.DBus.Properties")
                && (a.contains(r#"send_member="Get""#) || a.contains(r#"send_member="GetAll""#)))
            || (a.contains("org.meshnode.Node1")
                && (a.contains(r#"send_member="Status""#) || a.contains(r#"send_member="Peers""#)));
        assert!(ok, "the default context may only read: {a}");
    }
    assert_eq!(allows.len(), 6);
}
