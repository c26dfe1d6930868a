//! `meshnode`: the daemon. Runs in the foreground (systemd `Type=notify`,
//! procd); SIGTERM/SIGINT stop it gracefully, SIGHUP reloads its config.
//!
//! Exit codes: 0 after a clean stop, 78 (EX_CONFIG) for a bad config file,
//! 1 for any other failure to start or run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use meshnode::{config, daemon, telemetry};
use tokio::signal::unix::{SignalKind, signal};

/// EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus=78 stops restart loops on it.
const EXIT_CONFIG: u8 = 78;

/// Community mesh HTTP node daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Validate the configuration and exit (0 if valid, 78 if not).
    #[arg(long)]
    check_config: bool,
    /// Development override: keep state and the control socket in DIR
    /// (<DIR>/control.sock) instead of the configured places.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut cfg = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check_config {
        println!(
            "{}: configuration is valid ({})",
            args.config.display(),
            cfg.node_name()
        );
        return ExitCode::SUCCESS;
    }
    let state_dir_override = args
        .state_dir
        .as_ref()
        .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()));
    if let Some(dir) = &state_dir_override {
        cfg.override_state_dir(dir);
    }
    telemetry::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let source = daemon::Source {
        path: Some(args.config.clone()),
        state_dir_override,
    };
    match rt.block_on(serve(cfg, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("meshnode: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: config::Config, source: daemon::Source) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (hup_tx, hup_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if hup_tx.try_send(()).is_err() {
                tracing::debug!("a reload is already queued");
            }
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    };
    daemon::run(cfg, source, shutdown, hup_rx).await
}
