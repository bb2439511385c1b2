//! The `csp-ledger` binary: parses the command line and runs one subcommand. The only place
//! where `anyhow` is used.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use csp_ledger::api::history::{write_history, HistoryFilter, Until};
use csp_ledger::store::log::{Log, LogOptions};
use csp_ledger::writer::pipeline::apply_lines;
use csp_ledger::writer::Ledger;
use csp_ledger_schemas::event::StreamId;
use uuid::Uuid;

/// Event-sourced relationship ledger for a Cloud Solution Provider partner program.
#[derive(Debug, Parser)]
#[command(name = "csp-ledger", version, about)]
struct Cli {
    /// Directory of the log (created when missing by `apply` and `serve`; `verify`, `history`
    /// and `erase-personal-data` need an existing ledger).
    #[arg(
        long,
        global = true,
        env = "CSP_LEDGER_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
    /// fdatasync sled's data file after every group commit (turn off only for throwaway data).
    #[arg(long, global = true, env = "CSP_LEDGER_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
    /// First line of every signed checkpoint (default `csp-ledger/<hostname>`).
    #[arg(long, global = true, env = "CSP_LEDGER_ORIGIN")]
    origin: Option<String>,
    /// Ed25519 key that signs checkpoints, `PRIVATE+KEY+<name>+<id>+<base64>` (created, mode
    /// 0600, when missing). Default `<data-dir>/signing.key`; only a key outside the data
    /// directory lets start-up trust the projection checkpoint.
    #[arg(long, global = true, env = "CSP_LEDGER_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Keep the latest signed checkpoint in this file (replaced atomically), and refuse to
    /// start (exit 4, rollback_detected) on a log it shows rolled back or forked. Put it on
    /// another disk or machine.
    #[arg(long, global = true, env = "CSP_LEDGER_WITNESS_FILE")]
    witness_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Apply command JSON lines; print one outcome line per input line.
    Apply {
        /// File of JSON lines, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Print event envelopes as JSON lines.
    History {
        /// Only this stream (partner-<id>, customer-<id>, relationship-<provider>-<reseller>).
        #[arg(long)]
        stream: Option<String>,
        /// First position to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Last position, or an RFC 3339 time matched against recorded_at.
        #[arg(long)]
        until: Option<String>,
    },
    /// Walk the hash chain; exit 0 when intact, 2 when not.
    Verify,
    /// Answer a read path of the API (as over HTTP), e.g. `/v1/partners/ID?as_of=12`.
    Query {
        /// Path and query string.
        path: String,
    },
    /// Serve the HTTP API (and, without --kafka, accept commands at POST /v1/commands).
    Serve {
        /// Address to listen on; port 0 picks a free port (the bound address is printed).
        #[arg(long, env = "CSP_LEDGER_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
        /// Kafka bootstrap servers to consume commands from.
        #[arg(long, env = "CSP_LEDGER_KAFKA")]
        kafka: Option<String>,
        #[command(flatten)]
        topics: TopicArgs,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        tls: TlsArgs,
        /// Largest request body accepted (bytes); larger ones get 413 payload_too_large.
        #[arg(long, env = "CSP_LEDGER_MAX_BODY_BYTES", default_value_t = csp_ledger::app::COMMAND_BODY_BYTES_MAX)]
        max_body_bytes: usize,
        /// Most expensive reads (/v1/audit/verify, answers that read over 10,000 events) run at
        /// once, off the threads that serve the cheap reads; more get 429 busy.
        #[arg(long, env = "CSP_LEDGER_EXPENSIVE_READS_MAX", default_value_t = csp_ledger::api::http::EXPENSIVE_READS_MAX, value_parser = clap::value_parser!(u16).range(1..))]
        expensive_reads_max: u16,
        #[command(flatten)]
        connections: ConnectionArgs,
        /// Longest wait of a read with min_position before it answers 503 (ms).
        #[arg(long, env = "CSP_LEDGER_READ_WAIT_MS", default_value_t = 2_000)]
        read_wait_ms: u64,
        /// Sign a checkpoint at least this often while the log grows (ms).
        #[arg(long, env = "CSP_LEDGER_CHECKPOINT_INTERVAL_MS", default_value_t = csp_ledger::notary::CHECKPOINT_INTERVAL_MS)]
        checkpoint_interval_ms: u64,
    },
    /// Send command lines to the commands topic (keyed by partner id); with --wait, print the
    /// outcome of each line from the results topic.
    Submit {
        /// File of JSON lines, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Kafka bootstrap servers.
        #[arg(long, env = "CSP_LEDGER_KAFKA")]
        kafka: String,
        /// Wait up to this many seconds for every outcome and print them.
        #[arg(long)]
        wait: Option<u64>,
        /// Sign every message as this principal (with --hmac-key-file); without both, messages
        /// go unsigned, which only an --insecure-no-auth ledger accepts.
        #[arg(long, env = "CSP_LEDGER_PRINCIPAL", requires = "hmac_key_file")]
        principal: Option<String>,
        /// The principal's Kafka HMAC key: the file's bytes, one trailing newline removed, at
        /// least 32 bytes.
        #[arg(long, env = "CSP_LEDGER_HMAC_KEY_FILE", requires = "principal")]
        hmac_key_file: Option<PathBuf>,
        #[command(flatten)]
        topics: TopicArgs,
    },
    /// Refold the read models from position 1 and compare them with the checkpoint.
    Rebuild {
        /// Replace the checkpoint with the rebuilt state (at the head).
        #[arg(long)]
        write: bool,
    },
    /// Make a new principal: print its entry for the principals file on stdout and its API key
    /// (shown once) on stderr; with --kafka-key-file, also write a new Kafka signing key.
    NewPrincipal {
        /// Opaque id: letters, digits, '.', '_', '-'.
        #[arg(long)]
        id: String,
        /// Actor claims allowed: operator, partner:*, partner:<uuid>, customer:*, customer:<uuid>.
        #[arg(long = "act-as")]
        act_as: Vec<String>,
        /// Read grants: models, personal.
        #[arg(long)]
        read: Vec<String>,
        /// Write a new random HMAC key for signing Kafka messages here (mode 0600).
        #[arg(long)]
        kafka_key_file: Option<PathBuf>,
    },
    /// Signed checkpoints and Merkle proofs for auditors (SPEC.md section 12).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Erase the personal data (e-mail addresses) of a partner or customer; hashes stay valid.
    ErasePersonalData {
        /// Partner or customer id.
        subject: Uuid,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the verifier key of the signing key (`<name>+<hex id>+<base64>`).
    Key,
    /// Print the latest signed checkpoint, or the one signed at --tree-size.
    Checkpoint {
        #[arg(long)]
        tree_size: Option<String>,
    },
    /// Print the inclusion proof of the event at --position (in the tree of --tree-size events,
    /// default the head).
    Prove {
        #[arg(long)]
        position: String,
        #[arg(long)]
        tree_size: Option<String>,
    },
    /// Print the consistency proof from the tree of --from events to that of --to (default the
    /// head).
    Consistency {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: Option<String>,
    },
}

/// Who may call `serve` (SPEC.md section 10). Without `--principals` and `--jwks`, the
/// embedded default: one administrator whose key is in `<data-dir>/admin.key`.
#[derive(Debug, Clone, clap::Args)]
struct AccessArgs {
    /// Principals file (TOML); re-read on SIGHUP.
    #[arg(long, env = "CSP_LEDGER_PRINCIPALS")]
    principals: Option<PathBuf>,
    /// JSON Web Key Set whose EdDSA, ES256 or RS256 keys sign accepted JWT bearer tokens.
    #[arg(long, env = "CSP_LEDGER_JWKS")]
    jwks: Option<PathBuf>,
    /// The `aud` a JWT must carry.
    #[arg(long, env = "CSP_LEDGER_JWT_AUDIENCE", default_value = csp_ledger::auth::jwt::DEFAULT_AUDIENCE)]
    jwt_audience: String,
    /// Turn authentication off (every caller is an administrator); refused unless the listen
    /// address is a loopback address.
    #[arg(long, conflicts_with_all = ["principals", "jwks"])]
    insecure_no_auth: bool,
}

/// Connection limits of `serve` (SPEC.md section 11).
#[derive(Debug, Clone, clap::Args)]
struct ConnectionArgs {
    /// Connections served at once; further ones wait in the listen backlog.
    #[arg(long, env = "CSP_LEDGER_MAX_CONNECTIONS", default_value_t = csp_ledger::api::serve::CONNECTIONS_MAX)]
    max_connections: usize,
    /// Time for a request's headers, from connecting or from the previous response (ms).
    #[arg(long, env = "CSP_LEDGER_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Time for a command body once its headers are in (ms); then 408 request_timeout.
    #[arg(long, env = "CSP_LEDGER_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// A connection that neither reads nor writes for this long is closed (ms).
    #[arg(long, env = "CSP_LEDGER_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    idle_timeout_ms: u64,
}

impl ConnectionArgs {
    fn limits(&self) -> csp_ledger::api::serve::ConnectionLimits {
        use std::time::Duration;
        csp_ledger::api::serve::ConnectionLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

/// HTTPS for `serve` (SPEC.md section 10): both flags or neither.
#[derive(Debug, Clone, clap::Args)]
struct TlsArgs {
    /// Serve HTTPS only, with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, env = "CSP_LEDGER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert; needs --tls-cert.
    #[arg(long, env = "CSP_LEDGER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> Option<csp_ledger::api::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(csp_ledger::api::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            // clap refuses one without the other.
            _ => None,
        }
    }
}

/// Kafka client settings, topic names and creation settings.
#[derive(Debug, Clone, clap::Args)]
struct TopicArgs {
    /// librdkafka settings for every Kafka client (Java-style properties: security.protocol,
    /// sasl.mechanism, sasl.username, sasl.password, ssl.ca.location, ...). Keys the ledger
    /// sets itself (bootstrap.servers, group.id, ...) are refused.
    #[arg(long, env = "CSP_LEDGER_KAFKA_CONFIG")]
    kafka_config: Option<PathBuf>,
    #[arg(long, env = "CSP_LEDGER_KAFKA_GROUP", default_value = "csp-ledger")]
    kafka_group: String,
    #[arg(
        long,
        env = "CSP_LEDGER_COMMANDS_TOPIC",
        default_value = "csp.commands"
    )]
    commands_topic: String,
    #[arg(
        long,
        env = "CSP_LEDGER_RESULTS_TOPIC",
        default_value = "csp.command-results"
    )]
    results_topic: String,
    #[arg(long, env = "CSP_LEDGER_EVENTS_TOPIC", default_value = "csp.events")]
    events_topic: String,
    #[arg(long, env = "CSP_LEDGER_DLQ_TOPIC", default_value = "csp.commands.dlq")]
    dlq_topic: String,
    /// Partitions of the topics the ledger creates when they are missing.
    #[arg(long, env = "CSP_LEDGER_TOPIC_PARTITIONS", default_value_t = 1)]
    topic_partitions: i32,
    /// Replication factor of the topics the ledger creates.
    #[arg(long, env = "CSP_LEDGER_TOPIC_REPLICATION", default_value_t = 1)]
    topic_replication: i32,
    /// Most commands consumed into one group commit.
    #[arg(long, env = "CSP_LEDGER_KAFKA_BATCH_COMMANDS", default_value_t = csp_ledger::writer::SUBMIT_BATCH_COMMANDS_MAX)]
    kafka_batch_commands: usize,
    /// Single-partition topic that elects the writer among the instances of the group.
    #[arg(
        long,
        env = "CSP_LEDGER_LEADER_TOPIC",
        default_value = "csp.ledger.leader"
    )]
    leader_topic: String,
    /// How long a leader may be silent before a standby of the group takes over.
    #[arg(long, env = "CSP_LEDGER_LEASE_TIMEOUT_MS", default_value_t = 6000)]
    lease_timeout_ms: u64,
    /// Single-partition topic of the signed checkpoints, read before a standby leads.
    #[arg(
        long,
        env = "CSP_LEDGER_CHECKPOINTS_TOPIC",
        default_value = "csp.checkpoints"
    )]
    checkpoints_topic: String,
}

fn kafka_options(
    brokers: &str,
    topics: &TopicArgs,
) -> anyhow::Result<csp_ledger::ingest::KafkaOptions> {
    let client_settings = match &topics.kafka_config {
        Some(path) => csp_ledger::ingest::ClientSettings::load(path)?,
        None => csp_ledger::ingest::ClientSettings::default(),
    };
    Ok(csp_ledger::ingest::KafkaOptions {
        brokers: brokers.to_string(),
        group_id: topics.kafka_group.clone(),
        commands_topic: topics.commands_topic.clone(),
        results_topic: topics.results_topic.clone(),
        events_topic: topics.events_topic.clone(),
        dlq_topic: topics.dlq_topic.clone(),
        partitions: topics.topic_partitions,
        replication: topics.topic_replication,
        batch_commands_max: topics
            .kafka_batch_commands
            .clamp(1, csp_ledger::writer::SUBMIT_BATCH_COMMANDS_MAX),
        leader_topic: topics.leader_topic.clone(),
        lease_timeout: std::time::Duration::from_millis(topics.lease_timeout_ms.max(500)),
        checkpoints_topic: topics.checkpoints_topic.clone(),
        client_settings,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CSP_LEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        // A reader that stopped early (`history | head`) is not a failure of the ledger.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) if is_rollback(&error) => {
            eprintln!(
                "{}",
                serde_json::json!({"code": "rollback_detected", "message": format!("{error:#}")})
            );
            ExitCode::from(4)
        }
        Err(error) => {
            eprintln!("csp-ledger: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A log that a witnessed or published checkpoint shows rolled back or forked, or a witness
/// this ledger's key did not sign: exit 4.
fn is_rollback(error: &anyhow::Error) -> bool {
    use csp_ledger::notary::NotaryError;
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<NotaryError>(),
            Some(NotaryError::Rollback { .. } | NotaryError::Foreign { .. })
        )
    })
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes one line to stdout and flushes it. Errors are returned, never a panic: a reader that
/// closed the pipe (`query ... | head -c 10`) ends the command cleanly through `main`.
fn print_line(line: impl std::fmt::Display) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let options = LogOptions { fsync: cli.fsync };
    let dir = cli.data_dir.as_path();
    let notary = csp_ledger::notary::NotarySettings {
        key_file: cli.signing_key.clone(),
        origin: cli.origin.clone(),
        witness: cli.witness_file.clone(),
    };
    match cli.command {
        Commands::Apply { file } => apply(dir, options, &notary, &file),
        Commands::History {
            stream,
            from,
            until,
        } => history(dir, options, stream, from, until),
        Commands::Verify => verify(dir, options),
        Commands::Query { path } => query(dir, options, &notary, &path),
        Commands::Audit { command } => audit(dir, options, &notary, command),
        Commands::Submit {
            file,
            kafka,
            wait,
            principal,
            hmac_key_file,
            topics,
        } => {
            let signer = match (principal, hmac_key_file) {
                (Some(principal), Some(key_file)) => Some(csp_ledger::ingest::Signer {
                    principal: principal
                        .parse()
                        .map_err(|reason| anyhow::anyhow!("--principal: {reason}"))?,
                    key: csp_ledger::auth::KafkaKey::read(&key_file)?,
                }),
                _ => None,
            };
            submit(
                &file,
                &kafka_options(&kafka, &topics)?,
                signer.as_ref(),
                wait,
            )
        }
        Commands::Serve {
            http,
            kafka,
            topics,
            access,
            tls,
            max_body_bytes,
            expensive_reads_max,
            connections,
            checkpoint_interval_ms,
            read_wait_ms,
        } => serve(
            dir,
            options,
            (&notary, checkpoint_interval_ms),
            &http,
            kafka
                .map(|brokers| kafka_options(&brokers, &topics))
                .transpose()?,
            &access,
            tls.files(),
            (
                max_body_bytes,
                usize::from(expensive_reads_max),
                read_wait_ms,
            ),
            connections.limits(),
        ),
        Commands::Rebuild { write } => {
            let key = existing_checkpoint_key(dir, &notary)?;
            let log = open_log(dir, options)?;
            let report = csp_ledger::store::rebuild::rebuild(&log, write, &key)?;
            print_line(serde_json::to_string(&report)?)?;
            Ok(if report.equal != Some(false) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Commands::NewPrincipal {
            id,
            act_as,
            read,
            kafka_key_file,
        } => new_principal(&id, &act_as, &read, kafka_key_file.as_deref()),
        Commands::ErasePersonalData { subject } => {
            let log = Log::open_existing(dir, options)
                .with_context(|| format!("opening the log in {}", dir.display()))?;
            let erased = log.erase_subject(subject)?;
            print_line(serde_json::json!({"subject": subject, "erased_values": erased}))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_ledger(
    dir: &Path,
    options: LogOptions,
    key: csp_ledger::store::checkpoint::MacKey,
) -> anyhow::Result<Ledger> {
    Ledger::open_keyed(dir, options, key)
        .with_context(|| format!("opening the ledger in {}", dir.display()))
}

/// The notary of `dir`: its signing key, created when missing.
fn load_notary(
    dir: &Path,
    settings: &csp_ledger::notary::NotarySettings,
) -> anyhow::Result<csp_ledger::notary::Notary> {
    let (notary, _created) = csp_ledger::notary::Notary::load_or_create(dir, settings)?;
    Ok(notary)
}

/// The projection checkpoint's key for a command that must not create a signing key: without
/// one, a random key (nothing verifies: the state is refolded), never a known one.
fn existing_checkpoint_key(
    dir: &Path,
    settings: &csp_ledger::notary::NotarySettings,
) -> anyhow::Result<csp_ledger::store::checkpoint::MacKey> {
    let key_file = settings
        .key_file
        .clone()
        .unwrap_or_else(|| dir.join(csp_ledger::notary::SIGNING_KEY_FILE));
    if key_file.exists() {
        return Ok(load_notary(dir, settings)?.checkpoint_key());
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(csp_ledger::store::checkpoint::MacKey::new(random, false))
}

/// `audit key|checkpoint|prove|consistency`: the same JSON (and note) as over HTTP.
fn audit(
    dir: &Path,
    options: LogOptions,
    settings: &csp_ledger::notary::NotarySettings,
    command: AuditCommand,
) -> anyhow::Result<ExitCode> {
    use csp_ledger::api::proof;
    if let AuditCommand::Key = command {
        print_line(load_notary(dir, settings)?.verifier())?;
        return Ok(ExitCode::SUCCESS);
    }
    let log = open_log(dir, options)?;
    let answer = match &command {
        AuditCommand::Key => unreachable!("answered above"),
        AuditCommand::Checkpoint { tree_size } => proof::checkpoint(&log, tree_size.as_deref())
            .map(|note| {
                print!("{note}");
            }),
        AuditCommand::Prove {
            position,
            tree_size,
        } => proof::inclusion(&log, Some(position), tree_size.as_deref())
            .map(|body| println!("{body}")),
        AuditCommand::Consistency { from, to } => {
            proof::consistency(&log, Some(from), to.as_deref()).map(|body| println!("{body}"))
        }
    };
    std::io::stdout().flush()?;
    match answer {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            let mut body = error.body();
            body["status"] = serde_json::json!(error.status());
            print_line(body)?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn open_log(dir: &Path, options: LogOptions) -> anyhow::Result<Log> {
    Log::open(dir, options).with_context(|| format!("opening the log in {}", dir.display()))
}

fn apply(
    dir: &Path,
    options: LogOptions,
    settings: &csp_ledger::notary::NotarySettings,
    file: &str,
) -> anyhow::Result<ExitCode> {
    let notary = load_notary(dir, settings)?;
    let ledger = open_ledger(dir, options, notary.checkpoint_key())?;
    notary.check_witness(ledger.log())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // The writer writes a checkpoint when one is due, before it returns the ledger.
    let (stats, ledger) = if file == "-" {
        apply_lines(ledger, std::io::stdin(), &mut out)
    } else {
        let input = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
        apply_lines(ledger, input, &mut out)
    }
    .context("applying commands")?;
    // One checkpoint at the end, never per command.
    notary.sign(ledger.log())?;
    tracing::info!(
        message = "Applied.",
        commands = stats.commands,
        accepted = stats.accepted,
        rejected = stats.rejected,
        duplicates = stats.duplicates,
        events = stats.events
    );
    Ok(ExitCode::SUCCESS)
}

fn history(
    dir: &Path,
    options: LogOptions,
    stream: Option<String>,
    from: u64,
    until: Option<String>,
) -> anyhow::Result<ExitCode> {
    let stream = stream
        .map(|s| s.parse::<StreamId>())
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let until = until
        .map(|u| u.parse::<Until>())
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let log = Log::open_existing(dir, options)
        .with_context(|| format!("opening the log in {}", dir.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_history(
        &log,
        &HistoryFilter {
            stream,
            from,
            until,
        },
        &mut out,
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &Path, options: LogOptions) -> anyhow::Result<ExitCode> {
    // Only an existing ledger: a mistyped or deleted one is `no_ledger`, never created.
    let report = match Log::open_existing(dir, options) {
        Ok(log) => csp_ledger::store::audit::verify(&log),
        Err(error @ csp_ledger::store::log::LogError::NoLedger { .. }) => {
            csp_ledger::store::audit::VerifyReport::no_ledger(error.to_string())
        }
        // A damaged personal-data store is a damaged ledger: reported, exit 2.
        Err(csp_ledger::store::log::LogError::Personal(error)) if error.is_damage() => {
            csp_ledger::store::audit::VerifyReport {
                ok: false,
                events: 0,
                head_hash: String::new(),
                first_bad_position: None,
                reason: Some(error.to_string()),
                code: None,
            }
        }
        Err(csp_ledger::store::log::LogError::Corrupt { position, reason }) => {
            csp_ledger::store::audit::VerifyReport {
                ok: false,
                events: 0,
                head_hash: String::new(),
                // Only a position the damage names: none when sled cannot read its files.
                first_bad_position: position,
                reason: Some(reason),
                code: None,
            }
        }
        Err(error) => return Err(error).context("opening the log"),
    };
    print_line(serde_json::to_string(&report)?)?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn query(
    dir: &Path,
    options: LogOptions,
    settings: &csp_ledger::notary::NotarySettings,
    path: &str,
) -> anyhow::Result<ExitCode> {
    if !csp_ledger::store::log::holds_ledger(dir) {
        // A read never creates a ledger.
        return Err(csp_ledger::store::log::LogError::NoLedger {
            path: dir.to_path_buf(),
        }
        .into());
    }
    let ledger = open_ledger(dir, options, existing_checkpoint_key(dir, settings)?)?;
    let request = csp_ledger::api::query::Request::parse(path);
    let view = csp_ledger::api::query::ReadView {
        personal: true,
        state: ledger.state(),
        log: ledger.log(),
        budget: None,
        verified: None,
    };
    match csp_ledger::api::query::answer(view, &request) {
        Ok(body) => {
            print_line(body)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            let mut body = error.body();
            body["status"] = serde_json::json!(error.status());
            print_line(body)?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn submit(
    file: &str,
    options: &csp_ledger::ingest::KafkaOptions,
    signer: Option<&csp_ledger::ingest::Signer>,
    wait: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let outcomes = csp_ledger::ingest::submit_lines(
        options,
        &lines,
        signer,
        wait.map(std::time::Duration::from_secs),
    )?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for outcome in outcomes {
        writeln!(out, "{outcome}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `new-principal`: a principals-file entry and its new API key.
fn new_principal(
    id: &str,
    act_as: &[String],
    read: &[String],
    kafka_key_file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use csp_ledger::auth::directory::{api_key_sha256, new_api_key, write_secret};
    use csp_ledger::auth::{ActorGrant, PrincipalId, ReadGrants};
    let id: PrincipalId = id.parse().map_err(anyhow::Error::msg)?;
    for grant in act_as {
        grant.parse::<ActorGrant>().map_err(anyhow::Error::msg)?;
    }
    ReadGrants::parse(read.iter().map(String::as_str)).map_err(anyhow::Error::msg)?;
    let key = new_api_key();
    let quoted = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut entry = format!(
        "[[principal]]\nid = \"{id}\"\napi_key_sha256 = \"{}\"\n",
        hex::encode(api_key_sha256(&key))
    );
    if let Some(file) = kafka_key_file {
        // 32 random bytes as 64 hex characters: printable, and 64 bytes of HMAC key.
        let secret = new_api_key();
        write_secret(file, secret.trim_start_matches("csp_").as_bytes())?;
        entry.push_str(&format!(
            "kafka_hmac_key_file = {:?}\n",
            file.display().to_string()
        ));
    }
    entry.push_str(&format!(
        "act_as = [{}]\nread = [{}]\n",
        quoted(act_as),
        quoted(read)
    ));
    print!("{entry}");
    std::io::stdout().flush()?;
    eprintln!(
        "API key of principal {id} (shown only this once; the file keeps its SHA-256): {key}"
    );
    Ok(ExitCode::SUCCESS)
}

/// The authenticator `serve` runs with.
fn authenticator(
    dir: &Path,
    access: &AccessArgs,
) -> anyhow::Result<csp_ledger::auth::Authenticator> {
    use csp_ledger::auth::{jwt::JwtVerifier, Authenticator, Directory};
    if access.insecure_no_auth {
        tracing::warn!(
            message =
                "Authentication is off (--insecure-no-auth): every caller is an administrator."
        );
        return Ok(Authenticator::insecure());
    }
    let jwt = access
        .jwks
        .as_deref()
        .map(|path| JwtVerifier::from_jwks_file(path, &access.jwt_audience))
        .transpose()?;
    if let Some(path) = &access.principals {
        return Ok(Authenticator::from_file(path.clone(), jwt)?);
    }
    if jwt.is_some() {
        return Ok(Authenticator::fixed(Directory::default(), jwt));
    }
    let (directory, created) = Directory::embedded(dir)?;
    if let Some(key) = created {
        // Shown once, on the terminal of whoever started the ledger; never logged.
        let file = dir.join(csp_ledger::auth::directory::ADMIN_KEY_FILE);
        print_line(serde_json::json!({
            "admin_key": key,
            "admin_key_file": file.display().to_string(),
            "note": "the administrator's API key (Authorization: Bearer <key>); shown only this once"
        }))?;
    }
    Ok(Authenticator::fixed(directory, None))
}

fn serve(
    dir: &Path,
    options: LogOptions,
    (settings, checkpoint_interval_ms): (&csp_ledger::notary::NotarySettings, u64),
    http: &str,
    kafka: Option<csp_ledger::ingest::KafkaOptions>,
    access: &AccessArgs,
    tls: Option<csp_ledger::api::tls::TlsFiles>,
    (max_body_bytes, expensive_reads_max, read_wait_ms): (usize, usize, u64),
    limits: csp_ledger::api::serve::ConnectionLimits,
) -> anyhow::Result<ExitCode> {
    let auth = std::sync::Arc::new(authenticator(dir, access)?);
    let notary = std::sync::Arc::new(load_notary(dir, settings)?);
    loop {
        let ledger = open_ledger(dir, options, notary.checkpoint_key())?;
        if kafka.is_none() {
            // In Kafka mode the standby checks before it leads (its log may be catching up).
            notary.check_witness(ledger.log())?;
        }
        let mut serve_options = csp_ledger::app::ServeOptions::new(std::sync::Arc::clone(&auth));
        serve_options.tls = tls.clone();
        serve_options.max_body_bytes = max_body_bytes;
        serve_options.expensive_reads_max = expensive_reads_max;
        serve_options.limits = limits;
        serve_options.read_wait_max = std::time::Duration::from_millis(read_wait_ms);
        serve_options.notary = Some(std::sync::Arc::clone(&notary));
        serve_options.checkpoint_interval =
            std::time::Duration::from_millis(checkpoint_interval_ms.max(10));
        let (server, addr) =
            csp_ledger::app::Server::bind_with_kafka(ledger, http, serve_options, kafka.clone())?;
        print_line(serde_json::json!({"listening": addr.to_string()}))?;
        match server.run() {
            Ok(()) => return Ok(ExitCode::SUCCESS),
            Err(csp_ledger::app::ServerError::Forked { position }) => {
                // Events this instance decided but never published, overtaken by another
                // leader: keep them for inspection, rebuild from the topic.
                let aside = dir.with_extension(format!(
                    "forked-{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S")
                ));
                tracing::warn!(message = "The local log forked; moving it aside and rebuilding from the events topic.", position, aside = %aside.display());
                std::fs::rename(dir, &aside)
                    .with_context(|| format!("moving {} aside", dir.display()))?;
            }
            Err(csp_ledger::app::ServerError::Notary(error)) => return Err(error.into()),
            Err(error @ csp_ledger::app::ServerError::LostLease(_)) => {
                eprintln!("csp-ledger: {error}");
                return Ok(ExitCode::from(3));
            }
            Err(error) => return Err(error.into()),
        }
    }
}
