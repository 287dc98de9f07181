//! The `consistency-checker` binary: parse the options, run the check, print the JSON summary
//! as the last line of standard output. Exit status: 0 when every gate passed, 1 when a gated
//! counter is not zero, 2 when the run could not be done.

use clap::Parser;
use shoal_consistency_checker::cli::Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match Args::parse().into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consistency-checker: {e}");
            return ExitCode::from(2);
        }
    };
    let summary_path = summary_path();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("consistency-checker: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let summary = match runtime.block_on(shoal_consistency_checker::run(config)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("consistency-checker: {e}");
            return ExitCode::from(2);
        }
    };
    let json = match serde_json::to_string(&summary) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("consistency-checker: cannot write the summary: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = summary_path {
        if let Err(e) = std::fs::write(&path, format!("{json}\n")) {
            eprintln!("consistency-checker: {}: {e}", path.display());
        }
    }
    if !summary.passed() {
        eprintln!(
            "consistency-checker: FAIL: {}",
            summary.failed_gates.join(", ")
        );
    }
    println!("{json}");
    if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--summary PATH`, read again here because the config does not carry output paths.
fn summary_path() -> Option<std::path::PathBuf> {
    Args::try_parse().ok().and_then(|a| a.summary)
}
