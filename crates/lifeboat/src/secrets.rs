//! Where the passphrase comes from. Never from a plain command-line argument: arguments are
//! visible to every user through `ps` and end up in shell history.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Result;
use zeroize::Zeroizing;

use crate::exit::{USAGE, WRONG_PASSPHRASE, fail};

/// Sources, in order of precedence.
#[derive(Debug, Default, Clone)]
pub struct PassphraseSources {
    /// `--password-file` / `LIFEBOAT_PASSWORD_FILE` / config.
    pub file: Option<std::path::PathBuf>,
    /// `LIFEBOAT_PASSWORD_COMMAND` / config.
    pub command: Option<String>,
}

fn read_file(p: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let raw = std::fs::read(p).map_err(|e| fail(USAGE, format!("password file {}: {e}", p.display())))?;
    let mut v = Zeroizing::new(raw);
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    Ok(v)
}

fn run_command(cmd: &str) -> Result<Zeroizing<Vec<u8>>> {
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| fail(USAGE, format!("password command: cannot run: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            WRONG_PASSPHRASE,
            format!("password command failed with {}", out.status),
        ));
    }
    let mut v = Zeroizing::new(out.stdout);
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    Ok(v)
}

/// Gets the repository passphrase; prompts (twice when `confirm`) only on a terminal.
pub fn passphrase(src: &PassphraseSources, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if let Ok(p) = std::env::var("LIFEBOAT_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    if let Some(f) = &src.file {
        return read_file(f);
    }
    if let Some(c) = &src.command {
        return run_command(c);
    }
    prompt("repository passphrase", confirm)
}

/// Gets a new passphrase for `key add` / `key passwd`.
pub fn new_passphrase(file: Option<&Path>) -> Result<Zeroizing<Vec<u8>>> {
    if let Ok(p) = std::env::var("LIFEBOAT_NEW_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    if let Some(f) = file {
        return read_file(f);
    }
    prompt("new passphrase", true)
}

fn prompt(what: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    if !std::io::stdin().is_terminal() {
        return Err(fail(
            WRONG_PASSPHRASE,
            format!(
                "no {what}: set LIFEBOAT_PASSWORD, LIFEBOAT_PASSWORD_FILE or LIFEBOAT_PASSWORD_COMMAND (no terminal to ask on)"
            ),
        ));
    }
    let a = Zeroizing::new(rpassword::prompt_password(format!("Enter {what}: "))?);
    if a.is_empty() {
        return Err(fail(USAGE, "empty passphrase refused"));
    }
    if confirm {
        let b = Zeroizing::new(rpassword::prompt_password(format!("Repeat {what}: "))?);
        if *a != *b {
            return Err(fail(USAGE, "passphrases do not match"));
        }
    }
    Ok(Zeroizing::new(a.as_bytes().to_vec()))
}
