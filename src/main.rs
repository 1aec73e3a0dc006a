//! The `strata` binary: parse arguments ([`strata::cli`]), dispatch to the
//! library's commands, map the outcome to an exit code (documented in
//! docs/cli.md).

use std::process::ExitCode;

use clap::Parser;
use strata::cli::{
    BackupRequest, Cli, Command, DrillAction, DrillArgs, KeyAction, KeyArgs, RestoreRequest,
    ScheduleAction, ScheduleArgs, WalAction, WalArgs,
};
use strata::commands::{self, Globals};
use strata::error::Error;

async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let g = Globals {
        config: cli.config,
        identity: cli.identity,
        repo: cli.repo,
    };
    let json = cli.json;
    match cli.command {
        Command::Init(a) => commands::init::run(&g, a.owner.as_deref(), json).await,
        Command::Key(KeyArgs { action }) => match action {
            KeyAction::Generate { out } => commands::key::generate(&out, json),
            KeyAction::Recipients { set } => commands::key::recipients(&g, set, json).await,
        },
        Command::Backup(a) => match a.request(chrono::Utc::now())? {
            BackupRequest::Point { source, label } => {
                commands::backup::point(&g, &source, &label, json).await
            }
            BackupRequest::Backup {
                source,
                tier,
                kind,
                incremental,
            } => {
                commands::backup::run_kind(&g, source.as_deref(), tier, kind, incremental, json)
                    .await
            }
            BackupRequest::Labelled {
                sources,
                tier,
                kind,
                incremental,
                pin,
            } => {
                commands::backup::labelled(&g, &sources, tier, kind, incremental, &pin, json).await
            }
        },
        Command::List(a) => {
            commands::list::run(&g, a.source.as_deref(), a.label.as_deref(), json).await
        }
        Command::Drill(DrillArgs {
            action: Some(DrillAction::History { id }),
            ..
        }) => commands::drill::history(&g, id.as_deref(), json).await,
        Command::Drill(a) => commands::drill::run(&g, &a.into_args(json)).await,
        Command::Restore(a) => match a.request(json)? {
            RestoreRequest::Logical(a) => commands::restore::run(&g, &a).await,
            RestoreRequest::TableAt(a) => commands::restore_table::run(&g, &a).await,
            RestoreRequest::Physical(a) => commands::restore::run_physical(&g, &a).await,
            RestoreRequest::Snapshot(a) => commands::restore::run_redis(&g, &a).await,
            RestoreRequest::Into(a) => commands::restore::run_into(&g, &a).await,
            RestoreRequest::All(a) => commands::restore_all::run(&g, &a).await,
        },
        Command::Verify(a) => {
            commands::verify::run(&g, a.source.as_deref(), a.read_data, json).await
        }
        Command::Copy(a) => commands::copy::run(&g, &a.into_args(chrono::Utc::now(), json)?).await,
        Command::Cleanup(a) => commands::cleanup::run(&g, a.older_than()?, a.dry_run, json).await,
        Command::Prune(a) => {
            let p = a.request(chrono::Utc::now())?;
            commands::prune::run(&g, p.dry_run, p.at, p.grace, json).await
        }
        Command::Unlock(a) => commands::unlock::run(&g, a.force, json).await,
        Command::Status(a) => commands::status::run(&g, a.check, json).await,
        Command::Metrics(a) => commands::metrics::run(&g, &a.textfile, json).await,
        Command::Schedule(ScheduleArgs { action }) => match action {
            ScheduleAction::Next { count } => commands::schedule::next(&g, count, json),
            ScheduleAction::Crontab => commands::schedule::crontab(&g, json),
            ScheduleAction::Run(a) => commands::schedule::run(&g, &a.into_args(), json).await,
        },
        Command::Wal(WalArgs { action }) => match action {
            WalAction::Push(a) => commands::wal::push_cmd(&g, &a.into_args(json)).await,
            WalAction::PushWorker(a) => commands::wal::push_worker(&g, &a.into_args()).await,
            WalAction::PrefetchWorker(a) => {
                commands::wal::prefetch_worker(&g, &a.into_args()).await
            }
            WalAction::Fetch(a) => commands::wal::fetch_cmd(&g, &a.into_args(json)).await,
        },
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // the AWS SDK warns at length while probing for a region or
            // credentials it then finds elsewhere (IMDS on a non-EC2 host):
            // its own errors still reach the operator through strata's
            tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| {
                "warn,aws_config=error,aws_smithy_runtime=error,aws_smithy_http_client=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        // background workers log into files: no colour codes there
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--json` users get a usage error as JSON too (help and
            // version stay text)
            if std::env::args().any(|a| a == "--json")
                && let Some(v) = strata::cli::usage_error_json(&e)
            {
                commands::print_json(&v);
            }
            e.exit();
        }
    };
    let json = cli.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let e = e.with_disk_full_hint();
            if json {
                commands::print_json(&serde_json::json!({
                    "error": e.message,
                    "hint": e.hint,
                    "exit_code": e.exit_code(),
                    "retryable": e.retryable,
                }));
            }
            eprintln!("strata: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
