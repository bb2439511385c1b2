//! `csp-ledger-tools`: the benchmarks, load generator and workload generator of csp-ledger,
//! kept out of the service binary and library. Every subcommand prints a JSON report (or
//! command lines) on standard output.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use csp_ledger::store::log::LogOptions;
use csp_ledger_testkit::workload::Generator;

mod http_bench;

/// Benchmarks and generators for csp-ledger.
#[derive(Debug, Parser)]
#[command(name = "csp-ledger-tools", version, about)]
struct Cli {
    /// Directory under which benchmarks create their fresh logs.
    #[arg(
        long,
        global = true,
        env = "CSP_LEDGER_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
    /// fdatasync sled's data file after every group commit.
    #[arg(long, global = true, env = "CSP_LEDGER_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Print a generated, realistic command stream as JSON lines.
    Generate {
        #[arg(long, default_value_t = 10_000)]
        commands: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `full` (a year of revenue per reseller, direct-bill paths) or `lean` (many partners,
        /// few events each).
        #[arg(long, default_value = "full")]
        profile: String,
    },
    /// Load generator: GET paths from a file at a fixed rate over HTTP keep-alive, and report
    /// latency percentiles measured from each request's scheduled time.
    Loadgen {
        /// host:port of the server.
        #[arg(long)]
        target: String,
        /// File of request paths, one per line (used round-robin).
        #[arg(long)]
        paths: PathBuf,
        /// Requests per second.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// Measure `POST /v1/commands` (many keep-alive clients posting arrays) against `apply` on
    /// the same generated workload, in fresh directories.
    BenchHttp {
        #[arg(long, default_value_t = 200_000)]
        commands: usize,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Commands per request.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How the clients authenticate.
        #[arg(long, value_enum, default_value = "api-key")]
        auth: http_bench::HttpAuth,
    },
    /// Measure apply and replay throughput on a generated workload in a fresh directory.
    Bench {
        #[arg(long, default_value_t = 200_000)]
        commands: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Measure the Kafka transport on loopback: the broker's own produce and consume rate, the
    /// ledger's end-to-end throughput (publish to result) and the latency at a fixed rate.
    BenchKafka {
        /// Kafka bootstrap servers (every topic of the run is new, named with a run id).
        #[arg(long, env = "CSP_LEDGER_KAFKA")]
        kafka: String,
        /// Commands of the broker baseline and of the throughput phase.
        #[arg(long, default_value_t = 100_000)]
        commands: usize,
        /// Commands per second of the latency phase.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// Duration of the latency phase.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Most commands consumed into one group commit.
        #[arg(long, env = "CSP_LEDGER_KAFKA_BATCH_COMMANDS", default_value_t = csp_ledger::writer::SUBMIT_BATCH_COMMANDS_MAX)]
        kafka_batch_commands: usize,
        /// Sign every command (csp-principal, csp-signature) and run the ledgers with a
        /// principals file instead of --insecure-no-auth.
        #[arg(long)]
        signed: bool,
        /// Instead of the three phases: the throughput phase ROUNDS times unsigned and ROUNDS
        /// times signed, alternating, and the two medians.
        #[arg(long, value_name = "ROUNDS", conflicts_with = "signed")]
        compare_signing: Option<usize>,
    },
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
        Err(error) => {
            eprintln!("csp-ledger-tools: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let options = LogOptions { fsync: cli.fsync };
    match cli.command {
        Commands::Loadgen {
            target,
            paths,
            rate,
            seconds,
            connections,
        } => {
            let paths: Vec<String> = std::fs::read_to_string(&paths)
                .with_context(|| format!("reading {}", paths.display()))?
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
            anyhow::ensure!(!paths.is_empty(), "no paths to request");
            let report = csp_ledger_tools::loadgen::run(
                &target,
                paths,
                rate,
                std::time::Duration::from_secs(seconds),
                connections,
            )?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }

        Commands::Generate {
            commands,
            seed,
            profile,
        } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let generator = match profile.as_str() {
                "full" => Generator::new(seed),
                "lean" => Generator::lean(seed),
                other => anyhow::bail!("unknown profile {other:?} (full or lean)"),
            };
            for envelope in generator.take(commands) {
                writeln!(out, "{}", envelope.to_json())?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }

        Commands::BenchHttp {
            commands,
            clients,
            batch,
            seed,
            auth,
        } => {
            let dir = cli
                .data_dir
                .join(format!("bench-http-{}", std::process::id()));
            anyhow::ensure!(!dir.exists(), "{} already exists", dir.display());
            let report = http_bench::run(&dir, commands, clients, batch, seed, options, auth)
                .context("running the HTTP benchmark");
            let _ = std::fs::remove_dir_all(&dir);
            println!("{}", serde_json::to_string_pretty(&report?)?);
            Ok(ExitCode::SUCCESS)
        }
        Commands::Bench { commands, seed } => {
            let dir = cli.data_dir.join(format!("bench-{}", std::process::id()));
            anyhow::ensure!(!dir.exists(), "{} already exists", dir.display());
            let report = csp_ledger_tools::bench::run(&dir, commands, seed, options)
                .context("running the benchmark");
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }

        Commands::BenchKafka {
            kafka,
            commands,
            rate,
            seconds,
            seed,
            kafka_batch_commands,
            signed,
            compare_signing,
        } => {
            use csp_ledger_tools::kafka_bench::{self, BenchSigning, KafkaBenchOptions};
            let signing = if signed {
                Some(BenchSigning::create(
                    &cli.data_dir
                        .join(format!("kafka-bench-keys-{}", std::process::id())),
                )?)
            } else {
                None
            };
            let bench = KafkaBenchOptions {
                brokers: kafka,
                commands,
                rate,
                seconds,
                seed,
                batch_commands_max: kafka_batch_commands
                    .clamp(1, csp_ledger::writer::SUBMIT_BATCH_COMMANDS_MAX),
                data_dir: cli.data_dir.clone(),
                log: options,
                signing,
            };
            if let Some(rounds) = compare_signing {
                let report = kafka_bench::compare_signing(&bench, rounds.max(1))
                    .context("running the Kafka signing comparison")?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(ExitCode::SUCCESS);
            }
            let report = kafka_bench::run(&bench).context("running the Kafka benchmark")?;
            if let Some(signing) = &bench.signing {
                if let Some(dir) = signing.principals_file.parent() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
