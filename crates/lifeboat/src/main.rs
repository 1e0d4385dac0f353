//! The `lifeboat` command: argument parsing, configuration, output and exit codes around the
//! engine in `lifeboat-repo`.

mod cli;
mod commands;
mod config;
mod exit;
mod output;
mod secrets;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_for_any(&e);
            eprintln!("lifeboat: {}", one_line(&e));
            ExitCode::from(code)
        }
    }
}

/// The error chain on one line, without repeating a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for c in e.chain() {
        let t = c.to_string();
        if s.contains(&t) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&t);
    }
    s.replace('\n', " ")
}
