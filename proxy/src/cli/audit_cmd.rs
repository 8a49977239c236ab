//! `maschera audit ...`: the auditors' commands over the access log (keygen, verify, search, report).
//! Not for: writing the log (the proxy does, through `audit::AuditLog`).

use crate::audit::config::{AuditConfig, PUBLIC_KEY_ENV};
use crate::audit::keys::{self, ChainSecret, KeySource};
use crate::audit::search::{self, Entry, Filter};
use crate::audit::verify::{self, Verdict};
use anyhow::{Context, Result, bail};
use ed25519_dalek::VerifyingKey;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AuditCommand {
    /// Generate the chain secret, the checkpoint signing key and its public verification key.
    Keygen(KeygenArgs),
    /// Check that the log is whole. Exit 0: whole and sealed; 1: broken; 2: unsealed tail.
    Verify(Box<VerifyArgs>),
    /// Find records by user, role, table, column, category, outcome and time.
    Search(Box<SearchArgs>),
    /// Write a Markdown breach report of one user's accesses over a period.
    Report(Box<ReportArgs>),
}

#[derive(clap::Args, Debug)]
struct KeygenArgs {
    /// Write `audit.key`, `audit-signing.key` (mode 0600) and `audit-public.key` into this folder
    /// instead of printing environment assignments.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Where the log is: explicit files/folders, or the `[audit]` section of the proxy's configuration.
#[derive(clap::Args, Debug)]
struct LogArgs {
    /// A log file or folder (repeatable).
    #[arg(long = "log")]
    log: Vec<PathBuf>,
    /// The proxy's configuration file; its `[audit]` section gives the folder and keys.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl LogArgs {
    fn config(&self) -> Result<Option<AuditConfig>> {
        self.config
            .as_deref()
            .map(AuditConfig::from_proxy_config)
            .transpose()
            .map_err(Into::into)
    }

    fn paths(&self, extra: &[PathBuf], config: Option<&AuditConfig>) -> Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = self.log.iter().chain(extra).cloned().collect();
        if paths.is_empty() {
            match config {
                Some(c) => paths.push(c.dir.clone()),
                None => {
                    bail!("give the log with --log FILE|DIR (or FILE arguments) or --config FILE")
                }
            }
        }
        Ok(paths)
    }
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Log files or folders (in any order; they are checked in chain order).
    files: Vec<PathBuf>,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Accept a set whose first file links an earlier file that is not given (e.g. removed by retention).
    #[arg(long)]
    partial: bool,
}

/// The auditor's keys: the chain secret and the checkpoints' public key.
#[derive(clap::Args, Debug)]
struct KeyArgs {
    /// File holding the chain secret (hex); default: the config's source, else MASCHERA_AUDIT_KEY.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// File holding the public verification key (hex); default: the config's `public_key_file`, else
    /// MASCHERA_AUDIT_PUBLIC_KEY, else derived from the config's signing key.
    #[arg(long)]
    public_key: Option<PathBuf>,
}

impl KeyArgs {
    fn load(&self, config: Option<&AuditConfig>) -> Result<(ChainSecret, VerifyingKey)> {
        let file_source = |what, file| KeySource {
            what,
            file: Some(file),
            env: None,
        };
        let secret_source = match (&self.key_file, config) {
            (Some(file), _) => file_source("audit chain secret", file),
            (None, Some(c)) => c.chain_secret_source(),
            (None, None) => KeySource {
                what: "audit chain secret",
                file: None,
                env: Some("MASCHERA_AUDIT_KEY"),
            },
        };
        let secret = keys::chain_secret(&secret_source)?;
        let public = match (&self.public_key, config) {
            (Some(file), _) => keys::verifying_key(&file_source("audit public key", file))?,
            (None, Some(c)) => match keys::verifying_key(&c.public_key_source())? {
                Some(k) => Some(k),
                None => Some(keys::signing_key(&c.signing_key_source())?.verifying_key()),
            },
            (None, None) => keys::verifying_key(&KeySource {
                what: "audit public key",
                file: None,
                env: Some(PUBLIC_KEY_ENV),
            })?,
        };
        let public = public
            .context("no public key: pass --public-key FILE or set MASCHERA_AUDIT_PUBLIC_KEY")?;
        Ok((secret, public))
    }
}

#[derive(clap::Args, Debug)]
struct FilterArgs {
    #[arg(long)]
    user: Option<String>,
    /// The end user an application user acted for (`SET maschera.end_user`).
    #[arg(long)]
    end_user: Option<String>,
    #[arg(long)]
    role: Option<String>,
    /// `schema.table` or `table`.
    #[arg(long)]
    table: Option<String>,
    #[arg(long)]
    column: Option<String>,
    /// e.g. `contact`, `national_identifier`, `special_category`.
    #[arg(long)]
    category: Option<String>,
    /// How the statement ended (`unknown`: sent, but no outcome recorded).
    #[arg(long, value_parser = ["ok", "refused", "error", "unknown"])]
    outcome: Option<String>,
    /// Start of the period: RFC 3339 or YYYY-MM-DD (inclusive).
    #[arg(long)]
    from: Option<String>,
    /// End of the period: RFC 3339 (exclusive) or YYYY-MM-DD (the whole day included).
    #[arg(long)]
    to: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter> {
        if let Some(c) = &self.category
            && policy::access::Category::parse(c).is_none()
        {
            let names: Vec<&str> = policy::access::Category::all()
                .iter()
                .map(|c| c.as_str())
                .collect();
            bail!("unknown category {c:?}; one of: {}", names.join(", "));
        }
        Ok(Filter {
            user: self.user.clone(),
            end_user: self.end_user.clone(),
            user_or_end_user: false,
            role: self.role.clone(),
            table: self.table.clone(),
            column: self.column.clone(),
            category: self.category.clone(),
            outcome: self.outcome.clone(),
            from: self
                .from
                .as_deref()
                .map(|t| search::parse_time(t, false))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|t| search::parse_time(t, true))
                .transpose()?,
        })
    }
}

#[derive(clap::Args, Debug)]
struct SearchArgs {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print the matching records as JSON lines (as stored, a statement's `outcome` record after it)
    /// instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ReportArgs {
    #[command(flatten)]
    log: LogArgs,
    #[arg(long)]
    user: String,
    /// Start of the period: RFC 3339 or YYYY-MM-DD.
    #[arg(long)]
    from: Option<String>,
    /// End of the period: RFC 3339 or YYYY-MM-DD (whole day included).
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    keys: KeyArgs,
    /// Write the report to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(args: AuditArgs) -> Result<ExitCode> {
    match args.command {
        AuditCommand::Keygen(a) => keygen(a),
        AuditCommand::Verify(a) => verify_cmd(*a),
        AuditCommand::Search(a) => search_cmd(*a),
        AuditCommand::Report(a) => report_cmd(*a),
    }
}

fn keygen(args: KeygenArgs) -> Result<ExitCode> {
    let (secret, signing, public) = keys::generate();
    let Some(dir) = args.out else {
        println!(
            "# Proxy: chain secret and checkpoint signing key. Auditor: chain secret and public key."
        );
        println!("MASCHERA_AUDIT_KEY={secret}");
        println!("MASCHERA_AUDIT_SIGNING_KEY={signing}");
        println!("{PUBLIC_KEY_ENV}={public}");
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_key(&dir.join("audit.key"), &secret, true)?;
    write_key(&dir.join("audit-signing.key"), &signing, true)?;
    write_key(&dir.join("audit-public.key"), &public, false)?;
    println!(
        "wrote {0}/audit.key, {0}/audit-signing.key (secret) and {0}/audit-public.key",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_key(path: &Path, hex: &str, secret: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    writeln!(file, "{hex}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn verify_cmd(args: VerifyArgs) -> Result<ExitCode> {
    let config = args.log.config()?;
    let paths = args.log.paths(&args.files, config.as_ref())?;
    let (secret, public) = args.keys.load(config.as_ref())?;
    let report = verify::verify(&paths, &secret, &public, args.partial)?;
    for note in &report.notes {
        println!("note: {note}");
    }
    match &report.verdict {
        Verdict::Broken(b) => println!("BROKEN at {b}"),
        _ => println!("{}", verdict_text(&report)),
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// One sentence on a whole or unsealed log.
fn verdict_text(report: &verify::Report) -> String {
    match &report.verdict {
        Verdict::Whole => format!(
            "whole: {} records in {} files, last seq {}, sealed by a shutdown checkpoint",
            report.records,
            report.files,
            report.last_seq.unwrap_or(0)
        ),
        Verdict::Unsealed {
            last_checkpoint_seq,
            unsealed_records,
            torn,
        } => format!(
            "unsealed tail: {} records in {} files check, but {unsealed_records} records after the last checkpoint{} are not sealed{} (the proxy is running or stopped uncleanly, or the tail was cut)",
            report.records,
            report.files,
            last_checkpoint_seq
                .map(|s| format!(" (seq {s})"))
                .unwrap_or_default(),
            if *torn {
                ", followed by a partial line"
            } else {
                ""
            }
        ),
        Verdict::Broken(b) => format!("BROKEN at {b}"),
    }
}

fn collect(log: &LogArgs, filter: &Filter) -> Result<Vec<Entry>> {
    let config = log.config()?;
    let paths = log.paths(&[], config.as_ref())?;
    let mut entries = Vec::new();
    let unreadable = search::scan(&paths, filter, |e| entries.push(e))?;
    if unreadable > 0 {
        eprintln!("warning: {unreadable} unreadable lines skipped (run `maschera audit verify`)");
    }
    Ok(entries)
}

fn search_cmd(args: SearchArgs) -> Result<ExitCode> {
    let entries = collect(&args.log, &args.filter.filter()?)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for entry in &entries {
            writeln!(out, "{}", entry.line)?;
            if let Some(follow_up) = &entry.follow_up {
                writeln!(out, "{follow_up}")?;
            }
        }
    } else {
        write!(out, "{}", search::table(&entries))?;
        writeln!(out, "{} records", entries.len())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn report_cmd(args: ReportArgs) -> Result<ExitCode> {
    let mut filter = FilterArgs {
        user: Some(args.user.clone()),
        end_user: None,
        role: None,
        table: None,
        column: None,
        category: None,
        outcome: None,
        from: args.from.clone(),
        to: args.to.clone(),
    }
    .filter()?;
    // The report of a person covers what they saw as an end user of any application, too.
    filter.user_or_end_user = true;
    let entries = collect(&args.log, &filter)?;
    let config = args.log.config()?;
    let verification = match args.keys.load(config.as_ref()) {
        Ok((secret, public)) => {
            let paths = args.log.paths(&[], config.as_ref())?;
            verdict_text(&verify::verify(&paths, &secret, &public, true)?)
        }
        Err(e) => format!("not checked ({e:#}); run `maschera audit verify` on the same files"),
    };
    let generated = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let scope = crate::audit::report::Scope {
        user: &args.user,
        from: args.from.as_deref(),
        to: args.to.as_deref(),
        generated: &generated,
        verification: &verification,
    };
    let markdown = crate::audit::report::markdown(&scope, &entries);
    match args.output {
        Some(path) => std::fs::write(&path, markdown)
            .with_context(|| format!("writing {}", path.display()))?,
        None => print!("{markdown}"),
    }
    Ok(ExitCode::SUCCESS)
}
