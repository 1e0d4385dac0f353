//! `command`: a program's exit status, for what nothing else covers. On timeout the whole
//! process group is killed, so a script's children do not outlive the check.

use std::process::Stdio;

use tokio::time::Instant;

use super::Outcome;

/// Kills the process group when dropped (the runner drops the probe on timeout).
struct GroupGuard(Option<rustix::process::Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The last non-empty line of the output, shortened.
fn last_line(out: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(out);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(200).collect())
}

pub(crate) async fn probe(argv: &[String]) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::fail("down", "empty command");
    };
    let t0 = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        // lifeboat's own secrets are not the script's business.
        .env_remove("LIFEBOAT_PASSWORD")
        .env_remove("LIFEBOAT_NEW_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return Outcome::fail("down", format!("cannot run {program}: {e}")),
    };
    let mut guard = GroupGuard(child.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)));
    let out = child.wait_with_output().await;
    let latency = t0.elapsed();
    let out = match out {
        Ok(o) => o,
        Err(e) => return Outcome::fail("down", format!("{program}: {e}")).with_latency(latency),
    };
    // The leader exited on its own: the group's other members (if any) are left alone.
    guard.0 = None;
    let said = last_line(&out.stderr).or_else(|| last_line(&out.stdout));
    if out.status.success() {
        let msg = said.map_or_else(|| "exit status 0".to_string(), |s| format!("exit status 0: {s}"));
        Outcome::ok(msg).with_latency(latency)
    } else {
        let msg = format!(
            "{program} failed ({}){}",
            out.status,
            said.map(|s| format!(": {s}")).unwrap_or_default()
        );
        Outcome::fail("down", msg).with_latency(latency)
    }
}
