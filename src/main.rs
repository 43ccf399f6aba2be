//! The `tern` command: run the broker, check a config file, manage the
//! password file (`tern passwd`), make development certificates (`tern certs dev`),
//! or print shell completions and the man page (`tern completions`, `tern manpage`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use tern::{Server, Settings};

#[derive(Parser)]
#[command(
    name = "tern",
    // TERN_GIT_COMMIT comes from build.rs ("unknown" outside a git checkout).
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TERN_GIT_COMMIT"), ")"),
    about = "Tern: MQTT and STOMP IoT message broker",
    after_long_help = AFTER_LONG_HELP
)]
struct Cli {
    /// Config file (TOML); built-in defaults when absent.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The end of `tern --help` and of the man page (`tern manpage`).
const AFTER_LONG_HELP: &str = "\
Settings: built-in defaults, then the --config file, then TERN_<SECTION>__<KEY> \
environment variables (TERN_MQTT__BIND=0.0.0.0:1883). As a service (the Debian \
package) the file is /etc/tern/tern.toml, the data /var/lib/tern, and logs go to \
the journal (journalctl -u tern).

Signals: SIGHUP reloads the configuration (systemctl reload tern): ACL rules, \
the log level, limits, certificates and the password file. SIGTERM or SIGINT \
shut down gracefully.";

#[derive(Subcommand)]
enum Command {
    /// Run the broker (the default).
    Serve,
    /// Validate a config file and print the effective settings.
    CheckConfig,
    /// Add a user or change their password (prompted twice on a terminal,
    /// otherwise one line read from stdin); `--delete` removes the user.
    Passwd {
        /// The password file (created if absent; written atomically, mode 0600).
        file: PathBuf,
        user: String,
        /// Remove the user instead.
        #[arg(long)]
        delete: bool,
    },
    /// Certificates for TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Print the shell completion script for `shell` to stdout
    /// (e.g. `tern completions bash > /usr/share/bash-completion/completions/tern`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (`tern manpage | man -l -`).
    Manpage,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write a development CA, a server certificate for localhost and a client
    /// certificate (ca.pem/.key, server.pem/.key, client.pem/.key). Not for production.
    Dev {
        /// Directory to write into (created if needed).
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Common name of the client certificate (the username with cert_username = "cn").
        #[arg(long, default_value = tern::certs::DEFAULT_CLIENT_CN)]
        client_cn: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // These work on files named on the command line, without the broker's config.
    match cli.command {
        Some(Command::Passwd { file, user, delete }) => return exit(passwd(&file, &user, delete)),
        Some(Command::Certs(CertsCommand::Dev {
            out,
            force,
            client_cn,
        })) => return exit(certs_dev(&out, force, &client_cn)),
        Some(Command::Completions { shell }) => {
            // Into a buffer first: clap_complete panics when its writer fails
            // (a closed pipe), and this way the error is ours to report.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "tern", &mut script);
            return exit(write_stdout(&script).context("cannot write the completions"));
        }
        Some(Command::Manpage) => {
            let page = clap_mangen::Man::new(Cli::command());
            return exit(
                page.render(&mut std::io::stdout().lock())
                    .context("cannot write the man page"),
            );
        }
        _ => {}
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("tern: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match toml_summary(&settings) {
            Ok(text) => print_out(&format!("configuration OK\n{text}")),
            Err(e) => {
                eprintln!("tern: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Serve => match serve(settings, cli.config.clone()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tern: {e:#}");
                // A cluster that cannot be joined is a configuration problem, as a bad
                // setting is: exit 2 (a bad `cluster.nats_urls`, NATS unreachable).
                let cluster = matches!(
                    e.downcast_ref::<tern::server::ServerError>(),
                    Some(tern::server::ServerError::Cluster(_))
                );
                std::process::ExitCode::from(if cluster { 2 } else { 1 })
            }
        },
        Command::Passwd { .. }
        | Command::Certs(_)
        | Command::Completions { .. }
        | Command::Manpage => std::process::ExitCode::FAILURE,
    }
}

fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn passwd(file: &std::path::Path, user: &str, delete: bool) -> anyhow::Result<()> {
    use tern::auth::password::{self, Change, Outcome};
    if let Err(reason) = password::check_username(user) {
        anyhow::bail!("invalid username {user:?}: {reason}");
    }
    let secret;
    let change = if delete {
        Change::Delete
    } else {
        secret = read_new_password()?;
        Change::Set(&secret)
    };
    match password::update_file(file, user, change)? {
        Outcome::Added => eprintln!("added {user} to {}", file.display()),
        Outcome::Changed => eprintln!("changed the password of {user} in {}", file.display()),
        Outcome::Deleted => eprintln!("deleted {user} from {}", file.display()),
        Outcome::NotFound => anyhow::bail!("no user {user:?} in {}", file.display()),
    }
    Ok(())
}

/// Prompts twice on a terminal; otherwise reads one line from stdin (for scripts).
fn read_new_password() -> anyhow::Result<Vec<u8>> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Ok(tern::auth::password::read_password_line(
            &mut std::io::stdin().lock(),
        )?);
    }
    let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
    let second = rpassword::prompt_password("Again: ").context("cannot read the password")?;
    if first != second {
        anyhow::bail!("the passwords do not match");
    }
    if first.is_empty() {
        anyhow::bail!("the password must not be empty");
    }
    Ok(first.into_bytes())
}

/// Writes `text` to stdout. A reader that went away (`tern check-config |
/// head -1`) is not an error: it took what it wanted. (`println!` panics there.)
fn print_out(text: &str) -> std::process::ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern: cannot write to stdout: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn certs_dev(out: &std::path::Path, force: bool, client_cn: &str) -> anyhow::Result<()> {
    let paths = tern::certs::write_dev(out, force, client_cn)?;
    for path in paths {
        println!("{}", path.display());
    }
    eprintln!(
        "development certificates written to {} (see certs/README.md); do not use them in production",
        out.display()
    );
    Ok(())
}

/// One worker per core the process may run on (`taskset` and cgroup limits
/// count). Given a single core, the single-threaded runtime: no work-stealing
/// hand-offs between a worker and the driver, which measured p99 latency at 5,000
/// msg/s ~35% lower (330 vs 520 µs) and throughput equal or better.
fn runtime_for_available_cores() -> tokio::runtime::Builder {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

fn toml_summary(settings: &Settings) -> anyhow::Result<String> {
    serde_json::to_string_pretty(&settings.redacted()).context("cannot render settings")
}

fn serve(settings: Settings, config_file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let set_log_level = init_logging(&settings.log.level);
    let reloader = tern::server::Reloader::new(config_file, settings.clone(), set_log_level);
    let runtime = runtime_for_available_cores()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Handlers first: a signal that arrives just after the banner must shut down cleanly.
        let signals = Signals::install().context("cannot install signal handlers")?;
        let server = Server::start_with(settings.clone(), Some(reloader)).await?;
        let addrs = server.addrs();
        let listeners: Vec<String> = [
            ("mqtt", addrs.mqtt),
            ("stomp", addrs.stomp),
            ("mqtt_tls", addrs.mqtt_tls),
            ("stomp_tls", addrs.stomp_tls),
            ("ws", addrs.ws),
            ("wss", addrs.websocket_tls),
            ("http", addrs.http),
        ]
        .into_iter()
        .filter_map(|(name, addr)| addr.map(|addr| format!("{name}={addr}")))
        .collect();
        // The banner is for people and for test harnesses that wait for the ports.
        println!(
            "tern {} listening: {} data={}",
            env!("CARGO_PKG_VERSION"),
            listeners.join(" "),
            settings.storage.data_dir.display()
        );
        tern::systemd::ready(&format!("listening: {}", listeners.join(" ")));
        signals.wait().await;
        tracing::info!("shutting down");
        tern::systemd::stopping();
        server.shutdown(Duration::from_secs(10)).await;
        anyhow::Ok(())
    })
}

/// SIGTERM and SIGINT, registered before the broker starts.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Logs to stderr with `level` (RUST_LOG wins when set); returns how to change
/// the level later (config reload). Under systemd, stderr goes to the journal
/// (JOURNAL_STREAM is set), which stamps each line itself: no timestamps then.
/// Colours only on a terminal.
fn init_logging(level: &str) -> tern::reload::SetLogLevel {
    use std::io::IsTerminal as _;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| log_filter(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let to_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    if to_journal {
        registry.with(lines.without_time()).init();
    } else {
        registry.with(lines).init();
    }
    Box::new(move |level: &str| {
        let filter = log_filter(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}

/// `level` as a filter. The NATS client (cluster mode) logs every connection
/// event at info, one per dropped message when a subscription is slow: it is
/// held to warnings unless `level` names it (Tern logs those events itself, once).
fn log_filter(
    level: &str,
) -> Result<tracing_subscriber::EnvFilter, tracing_subscriber::filter::ParseError> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    if level.contains("async_nats") {
        return Ok(filter);
    }
    Ok(filter.add_directive("async_nats=warn".parse()?))
}

/// See Cargo.toml: messages cross threads, and mimalloc frees them cheaply.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
