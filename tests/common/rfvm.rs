//! The Linux kernel AX.25 stack as a test peer: Debian's stock kernel in a
//! small QEMU VM (software emulation) whose second serial port is a TCP
//! client of a KISS TNC, e.g. a station of [`rf::RfChannel`]. The guest
//! attaches it with `kissattach` as AX.25 port `radio` (interface `ax0`,
//! callsign [`GUEST_CALL`]) and runs a test script; its console comes back as
//! text. The build machines' kernels have no AX.25 (`socket(AF_AX25)` fails
//! with EAFNOSUPPORT), and a VM needs no privileges.
//!
//! Self-contained; include it with
//!
//! ```ignore
//! #[path = "common/rfvm.rs"]
//! mod rfvm;
//!
//! if rfvm::skip_unless_available("my_test") { return; }
//! let out = rfvm::AxVm::run(dir.path(), "beacon -s radio hi", &[], kiss_addr, Duration::from_secs(60));
//! assert_eq!(out.script_exit, Some(0), "{}", out.console);
//! ```
//!
//! The image: `tests/rf/vm/mkinitrd.sh` downloads (`apt-get download`) the
//! kernel that `linux-image-amd64` depends on, busybox-static, ax25-tools
//! and libax25 into [`cache_dir`], and builds a 2 MB busybox initramfs from
//! them (~10 s, once); every run appends a small second archive with the
//! test script and its extra binaries (static ones: the guest has only the
//! libc that ax25-tools needs; see [`static_rust_binary`]).
//!
//! Facts this is built on (measured on the build machines):
//! - `/dev/kvm` there is kvm-pvm, which cannot run a stock kernel: with
//!   `-cpu host`/`max` QEMU aborts (MSR 0x10a), with other CPU models the
//!   guest hangs after "Probing EDD". So always `-accel tcg`, and always
//!   under `timeout`.
//! - TCG boots to userspace in about 2.5 s of guest time; a whole VM run with
//!   an exchange over the radio channel takes 10-20 s of wall time.
//! - 256 MB of RAM and one vCPU are enough.
#![allow(dead_code, missing_docs, missing_debug_implementations)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Callsign of the guest's AX.25 port `radio` (interface `ax0`).
pub const GUEST_CALL: &str = "N0VM";
/// Exit status of `mkinitrd.sh` when the packages cannot be downloaded.
const UNAVAILABLE: i32 = 75;

fn vm_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rf/vm")
}

/// Where the downloaded packages, the base image and built guest binaries
/// are kept between runs: `target/tmp/rfvm-cache` (`CARGO_TARGET_TMPDIR`).
pub fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("rfvm-cache")
}

fn find_tool(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// True (after printing `SKIP <test>: <reason>`) when the VM cannot run
/// here: a host tool is missing, or the packages cannot be downloaded.
/// Otherwise the base image is ready in [`cache_dir`] when it returns
/// (built on first use: about 10 s and a 72 MB download).
pub fn skip_unless_available(test: &str) -> bool {
    let tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("gzip", "gzip"),
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
        ("flock", "util-linux"),
        ("timeout", "coreutils"),
        ("rustc", "rustup"),
    ];
    let missing: Vec<(&str, &str)> = tools.into_iter().filter(|(t, _)| !find_tool(t)).collect();
    if !missing.is_empty() {
        let tools: Vec<&str> = missing.iter().map(|m| m.0).collect();
        let pkgs: Vec<&str> = missing.iter().map(|m| m.1).collect();
        println!(
            "SKIP {test}: needs {} (Debian packages: {})",
            tools.join(", "),
            pkgs.join(" ")
        );
        return true;
    }
    let cache = cache_dir();
    let out = Command::new(vm_dir().join("mkinitrd.sh"))
        .arg("--base")
        .arg(&cache)
        .stdin(Stdio::null())
        .output()
        .expect("run mkinitrd.sh");
    match out.status.code() {
        Some(0) => false,
        Some(UNAVAILABLE) => {
            println!(
                "SKIP {test}: the VM's Debian packages cannot be downloaded: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            true
        }
        _ => panic!(
            "mkinitrd.sh --base {} failed ({}):\n{}{}",
            cache.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Compiles a standalone Rust source file into a static (static-pie,
/// glibc) executable for the guest, cached in [`cache_dir`] by the hash of
/// the source and of `rustc -V`. The recipe is
/// `rustc --edition 2024 -O -C strip=symbols -C target-feature=+crt-static`.
pub fn static_rust_binary(src: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let code = std::fs::read(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let version = Command::new("rustc").arg("-V").output().expect("rustc -V");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    code.hash(&mut h);
    version.stdout.hash(&mut h);
    let stem = src.file_stem().unwrap().to_string_lossy();
    // bin/<hash>/<stem>: the guest gets the binary under its own name
    let dir = cache_dir().join("bin").join(format!("{:016x}", h.finish()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(&*stem);
    if out.is_file() {
        return out;
    }
    let tmp = dir.join(format!(".{stem}-{}", std::process::id()));
    let res = Command::new("rustc")
        .args(["--edition", "2024", "-O", "-C", "strip=symbols"])
        .args(["-C", "target-feature=+crt-static", "-o"])
        .arg(&tmp)
        .arg(src)
        .output()
        .expect("run rustc");
    assert!(
        res.status.success(),
        "rustc {}: {}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Builds a small cargo package (e.g. `tests/rf/guest`, meshnode's RF
/// driver sources with only the crates they use) into a static (static-pie,
/// glibc) executable for the guest and returns its path. The recipe:
/// `RUSTFLAGS="-C target-feature=+crt-static -C strip=debuginfo" cargo
/// build --locked --target x86_64-unknown-linux-gnu`, with the explicit
/// target so that the flags do not reach build scripts and proc-macros,
/// into `CARGO_TARGET_TMPDIR/<package dir name>` (cargo rebuilds only what
/// changed). Returns the path and how long the build took.
pub fn static_cargo_binary(package: &Path, bin: &str) -> (PathBuf, Duration) {
    let name = package.file_name().unwrap().to_string_lossy();
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let t0 = Instant::now();
    let res = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--bin",
            bin,
        ])
        .arg("--manifest-path")
        .arg(package.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=debuginfo",
        )
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build");
    assert!(
        res.status.success(),
        "cargo build {}: {}",
        package.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    let out = target_dir.join("x86_64-unknown-linux-gnu/debug").join(bin);
    (out, t0.elapsed())
}

/// Whether `path` is an ELF executable without a program interpreter (a
/// static or static-pie binary that needs no shared library).
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false; // not a 64-bit ELF
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        // PT_INTERP = 3
        b.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// What a VM run left behind.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// Everything the guest wrote to its console (kernel messages are
    /// quiet; the guest's /init prints `GUEST: ...` lines).
    pub console: String,
    /// Exit status of the test script (`None`: it never finished, e.g. ax0
    /// did not come up or the VM was killed).
    pub script_exit: Option<i32>,
    /// The VM was killed after the timeout.
    pub timed_out: bool,
    /// Wall time from QEMU start to exit.
    pub elapsed: Duration,
}

impl GuestOutput {
    /// The lines of the console that start with `prefix` (after trimming).
    pub fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.console
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }
}

/// A running VM; killed (its whole process group) on drop.
pub struct AxVm {
    child: Option<Child>,
    pgid: u32,
    console: PathBuf,
    qemu_log: PathBuf,
    started: Instant,
    deadline: Instant,
}

impl AxVm {
    /// Boots the VM and returns at once. `guest_script` (busybox `sh`) runs
    /// once `ax0` is up; `extra_static_bins` are copied to the guest's /bin;
    /// the guest's ttyS1 connects to the KISS TNC at `kiss_tcp` (which must
    /// be listening). QEMU is killed after `timeout`. Call
    /// [`skip_unless_available`] first.
    pub fn start(
        work_dir: &Path,
        guest_script: &str,
        extra_static_bins: &[&Path],
        kiss_tcp: SocketAddr,
        timeout: Duration,
    ) -> AxVm {
        for b in extra_static_bins {
            assert!(
                is_static_elf(b),
                "{} is not a static executable: the guest has no shared libraries for it",
                b.display()
            );
        }
        std::fs::create_dir_all(work_dir).unwrap();
        let script = work_dir.join("test.sh");
        std::fs::write(&script, guest_script).unwrap();
        let out = Command::new(vm_dir().join("mkinitrd.sh"))
            .arg(cache_dir())
            .arg(work_dir)
            .arg(&script)
            .args(extra_static_bins)
            .stdin(Stdio::null())
            .output()
            .expect("run mkinitrd.sh");
        assert!(
            out.status.success(),
            "mkinitrd.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );

        let console = work_dir.join("console.log");
        let qemu_log = work_dir.join("qemu.log");
        let mut cmd = Command::new("timeout");
        // KILL: QEMU may not react to TERM when the guest is stuck.
        cmd.args(["-s", "KILL", &format!("{}", timeout.as_secs().max(1))])
            .arg("qemu-system-x86_64")
            // Never -accel kvm here (kvm-pvm: hangs or aborts, see above).
            .args(["-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1"])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(work_dir.join("kernel"))
            .arg("-initrd")
            .arg(work_dir.join("initrd.gz"))
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            // ttyS0: the console, on QEMU's stdout; ttyS1: the TNC.
            .args(["-serial", "stdio", "-serial"])
            .arg(format!("tcp:{kiss_tcp},nodelay"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&console).unwrap())
            .stderr(std::fs::File::create(&qemu_log).unwrap())
            .process_group(0);
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn timeout qemu-system-x86_64");
        let pgid = child.id();
        AxVm {
            child: Some(child),
            pgid,
            console,
            qemu_log,
            started,
            deadline: started + timeout + Duration::from_secs(5),
        }
    }

    /// [`AxVm::start`], then [`AxVm::finish`].
    pub fn run(
        work_dir: &Path,
        guest_script: &str,
        extra_static_bins: &[&Path],
        kiss_tcp: SocketAddr,
        timeout: Duration,
    ) -> GuestOutput {
        Self::start(work_dir, guest_script, extra_static_bins, kiss_tcp, timeout).finish()
    }

    /// The console output so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Waits until the console shows `needle` and returns the console;
    /// panics (with the console) when the VM exits first or `within` passes.
    pub fn wait_console(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let c = self.console();
            if c.contains(needle) {
                return c;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|ch| ch.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                panic!(
                    "the guest console never showed {needle:?} ({}); console:\n{c}\nqemu:\n{}",
                    if exited { "VM exited" } else { "timeout" },
                    std::fs::read_to_string(&self.qemu_log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the VM to power off (or be killed at its timeout) and
    /// returns what it printed.
    pub fn finish(mut self) -> GuestOutput {
        let mut child = self.child.take().expect("VM running");
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for qemu") {
                break Some(st);
            }
            if Instant::now() > self.deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let elapsed = self.started.elapsed();
        kill_group(self.pgid);
        let console = self.console();
        let script_exit = console
            .lines()
            .find_map(|l| l.trim().strip_prefix("GUEST: test.sh exit="))
            .and_then(|v| v.trim().parse().ok());
        // timeout(1) exits 137 (128 + KILL) when it had to kill QEMU.
        let timed_out = status.is_none_or(|s| s.code() == Some(137) || s.code().is_none());
        let qemu = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        let console = if qemu.trim().is_empty() {
            console
        } else {
            format!("{console}\n[qemu stderr]\n{qemu}")
        };
        GuestOutput {
            console,
            script_exit,
            timed_out,
            elapsed,
        }
    }
}

impl Drop for AxVm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("---- guest console ----\n{}", self.console());
            }
            kill_group(self.pgid);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGKILL to process group `pgid` (`timeout` and QEMU).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}
