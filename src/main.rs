//! The `tern` command: run the broker, or check a config file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tern::{Server, Settings};

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "Tern: MQTT and STOMP IoT message broker"
)]
struct Cli {
    /// Config file (TOML); built-in defaults when absent.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (the default).
    Serve,
    /// Validate a config file and print the effective settings.
    CheckConfig,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("tern: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match toml_summary(&settings) {
            Ok(text) => {
                println!("configuration OK\n{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tern: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Serve => match serve(settings) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tern: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

fn toml_summary(settings: &Settings) -> anyhow::Result<String> {
    serde_json::to_string_pretty(settings).context("cannot render settings")
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    init_logging(&settings.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = Server::start(settings.clone()).await?;
        let mut listeners = Vec::new();
        if let Some(addr) = server.mqtt_addr() {
            listeners.push(format!("mqtt={addr}"));
        }
        // The banner is for people and for test harnesses that wait for the ports.
        println!(
            "tern {} listening: {} data={}",
            env!("CARGO_PKG_VERSION"),
            listeners.join(" "),
            settings.storage.data_dir.display()
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown(Duration::from_secs(10)).await;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
