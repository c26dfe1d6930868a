//! The binaries as a user runs them: `meshnode --check-config`, signals, and
//! every `meshctl` command with its exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Proc, data};

fn meshctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_accepts_the_shipped_example_and_pinpoints_errors() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/meshnode.toml");
    let o = Command::new(env!("CARGO_BIN_EXE_meshnode"))
        .arg("--config")
        .arg(&example)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("N0CALL-home"));

    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "[node]\ncallsign = \"N0CALL\"\nlabel = \"x\"\nfoo = 1\n",
            ":4:1: unknown field `foo`",
        ),
        (
            "[node]\ncallsign = \"NOCALL\"\n",
            ":2:12: invalid callsign \"NOCALL\"",
        ),
        (
            "[node]\ncallsign = \"N0CALL\"\n[http]\nlisten = [\"nowhere\"]\n",
            ":4:11:",
        ),
        (
            "[node]\ncallsign = \"N0CALL\"\n[store]\nmax_bytes = true\n",
            ":4:13:",
        ),
        ("[node\n", ":1:"),
    ] {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_meshnode"))
            .arg("--config")
            .arg(&p)
            .arg("--check-config")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(78), "{text}");
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!("{}{want}", p.display())),
            "{text:?} gave {err}"
        );
    }
    let o = Command::new(env!("CARGO_BIN_EXE_meshnode"))
        .args(["--config", "/nonexistent/meshnode.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("/nonexistent/meshnode.toml: cannot read"));
}

#[test]
fn meshctl_without_a_daemon_says_so_with_exit_69() {
    let o = meshctl(Path::new("/nonexistent/control.sock"), &["status"]);
    assert_eq!(o.status.code(), Some(69));
    assert_eq!(
        stderr(&o).trim(),
        "meshctl: meshnode is not running (no daemon at /nonexistent/control.sock)"
    );
    let o = meshctl(Path::new("/x"), &["content", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "bad arguments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshctl_publish_get_ls_pin_rm_verify_reload_and_signals() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Proc::spawn(dir.path(), "").await;
    let sock = d.socket.clone();
    let file = dir.path().join("page.html");
    let body = data(400_000, 42);
    std::fs::write(&file, &body).unwrap();

    let o = meshctl(
        &sock,
        &[
            "content",
            "publish",
            file.to_str().unwrap(),
            "--path",
            "/news/today.html",
            "--priority",
            "essential",
            "--tag",
            "news",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o)
            .starts_with("published http://n0call.radio/news/today.html (400000 bytes, version 1"),
        "{}",
        stdout(&o)
    );

    let out = dir.path().join("back.html");
    let o = meshctl(
        &sock,
        &[
            "content",
            "get",
            "http://n0call.radio/news/today.html",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&out).unwrap() == body, "byte for byte");
    let o = meshctl(&sock, &["content", "get", "/news/today.html"]); // own station shorthand, to stdout
    assert!(o.stdout == body);

    let o = meshctl(&sock, &["--json", "content", "ls"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["total"], 1);
    assert_eq!(v["entries"][0]["priority"], 1);
    let o = meshctl(&sock, &["content", "ls"]);
    assert!(
        stdout(&o).contains("http://n0call.radio/news/today.html"),
        "{}",
        stdout(&o)
    );

    let o = meshctl(&sock, &["content", "pin", "/news/today.html"]);
    assert_eq!(stdout(&o), "pinned http://n0call.radio/news/today.html\n");
    let o = meshctl(&sock, &["--json", "content", "verify"]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["checked"], 1);

    let o = meshctl(&sock, &["status"]);
    assert!(
        stdout(&o).contains("node:      N0CALL-test (callsign N0CALL)"),
        "{}",
        stdout(&o)
    );
    // the published item has a signed record in the mesh catalog
    assert!(
        stdout(&o).contains("mesh:      1 records (digest 1-"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("silent (address not shared)"),
        "{}",
        stdout(&o)
    );
    let o = meshctl(&sock, &["peers"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("NAME "), "{}", stdout(&o));
    assert!(
        stdout(&o).ends_with("0 peers, 0 neighbours\n"),
        "{}",
        stdout(&o)
    );
    let o = meshctl(&sock, &["--json", "peers"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["total"].clone(), v["peers"].clone()),
        (0.into(), serde_json::json!([]))
    );

    // daemon-side refusals exit 1 with the daemon's reason
    let o = meshctl(&sock, &["content", "get", "http://n0call.radio/missing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = meshctl(
        &sock,
        &[
            "content",
            "publish",
            file.to_str().unwrap(),
            "--path",
            "/x",
            "--priority",
            "urgent",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid priority \"urgent\""),
        "{}",
        stderr(&o)
    );
    let o = meshctl(
        &sock,
        &["content", "publish", "/nonexistent/file", "--path", "/x"],
    );
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));

    // meshctl reload and SIGHUP both apply a valid change
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{cfg}[store]\nmax_bytes = \"3GiB\"\n")).unwrap();
    let o = meshctl(&sock, &["reload"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("applied: store.max_bytes = 3GiB"),
        "{}",
        stdout(&o)
    );
    std::fs::write(&d.config, format!("{cfg}[store]\nmax_bytes = \"5GiB\"\n")).unwrap();
    d.signal("HUP");
    let mut max = 0;
    for _ in 0..200 {
        let o = meshctl(&sock, &["--json", "status"]);
        max = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["store"]["max_bytes"]
            .as_u64()
            .unwrap();
        if max == 5 << 30 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(max, 5 << 30, "SIGHUP reloaded the file");
    // a broken file is refused and the daemon keeps running with the old one
    std::fs::write(&d.config, format!("{cfg}[store]\nmax_bytes = \"oops\"\n")).unwrap();
    let o = meshctl(&sock, &["reload"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid size \"oops\""),
        "{}",
        stderr(&o)
    );

    // an unprivileged user is refused (socket mode 0660 in a private folder)
    if nix_is_root() && Command::new("setpriv").arg("--version").output().is_ok() {
        let o = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_meshctl"),
                "--socket",
            ])
            .arg(&sock)
            .arg("status")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
        assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
    } else {
        eprintln!("SKIP permission-denied check: needs root and setpriv");
    }

    let o = meshctl(&sock, &["content", "rm", "/news/today.html"]);
    assert_eq!(stdout(&o), "removed http://n0call.radio/news/today.html\n");

    // SIGTERM: clean exit 0, socket removed
    d.signal("TERM");
    assert_eq!(d.wait_exit(std::time::Duration::from_secs(15)), Some(0));
    assert!(!sock.exists());
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("store closed"), "{log}");
    assert!(!log.contains('\x1b'), "no colour codes in a log file");
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
