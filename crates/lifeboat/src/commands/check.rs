//! `check`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Result;
use lifeboat_repo::check::{self, CheckProgress, ReadData};

use super::Ctx;
use crate::cli::CheckArgs;
use crate::exit::{DAMAGED, OK, USAGE, fail};
use crate::output::{self, Progress};

fn parse_subset(s: &str) -> Result<ReadData> {
    let bad = || {
        fail(
            USAGE,
            format!("invalid --read-data-subset {s:?} (use a percentage like 10% or a part like 2/7)"),
        )
    };
    if let Some(p) = s.strip_suffix('%') {
        let v: f64 = p.trim().parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&v) || v.is_nan() {
            return Err(bad());
        }
        return Ok(ReadData::Fraction(v / 100.0));
    }
    if let Some((n, t)) = s.split_once('/') {
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let t: u32 = t.trim().parse().map_err(|_| bad())?;
        if t == 0 || n == 0 || n > t {
            return Err(bad());
        }
        return Ok(ReadData::Part(n, t));
    }
    Err(bad())
}

pub fn run(ctx: &Ctx, a: &CheckArgs) -> Result<u8> {
    let read = match (&a.read_data, &a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(s)) => parse_subset(s)?,
        _ => ReadData::None,
    };
    let (repo, location) = match &a.location {
        Some(n) => {
            let repo = ctx.open_named(n)?.0;
            if repo
                .backend()
                .head("config")
                .map_err(lifeboat_repo::RepoError::from)?
                .is_none()
            {
                eprintln!(
                    "lifeboat: location {n} holds no copy of the repository (no config); `lifeboat replicate --to {n}` makes one"
                );
                return Ok(DAMAGED);
            }
            (repo, Some(n.clone()))
        }
        None if ctx.locations()?.len() > 1 => {
            let (r, locs, i) = ctx.open_primary()?;
            (r, Some(locs[i].name().to_string()))
        }
        None => (ctx.open()?, None),
    };
    let progress = Arc::new(CheckProgress::default());
    let p2 = progress.clone();
    let bar = Progress::bytes(ctx.progress() && read != ReadData::None, move || {
        (
            p2.bytes.load(Ordering::Relaxed),
            p2.total_bytes.load(Ordering::Relaxed),
            format!(
                "{}/{} packs",
                p2.packs_done.load(Ordering::Relaxed),
                p2.packs_total.load(Ordering::Relaxed)
            ),
        )
    });
    let r = check::check(&repo, read, &progress);
    bar.finish();
    let r = r?;
    if location.is_some() {
        let st = lifeboat_repo::locations::CheckStatus {
            time: jiff::Timestamp::now(),
            errors: r.errors.len(),
            read_data: read != ReadData::None,
        };
        if let Err(e) = lifeboat_repo::locations::update_status(&repo, |s| s.last_check = Some(st)) {
            eprintln!("lifeboat: warning: the check result could not be recorded in the location: {e}");
        }
    }
    if ctx.global.json {
        output::json(&r);
    } else {
        for w in &r.warnings {
            eprintln!("lifeboat: warning: {w}");
        }
        for e in &r.errors {
            eprintln!("lifeboat: error: {e}");
        }
        for af in &r.affected {
            eprintln!(
                "lifeboat: snapshot {} ({}) has {} damaged path(s):",
                &af.snapshot[..8],
                af.time,
                af.count
            );
            for p in &af.paths {
                eprintln!("    {p}");
            }
        }
        if !ctx.global.quiet {
            if let Some(l) = &location {
                println!("location {l}:");
            }
            println!(
                "checked {} snapshot(s), {} index segment(s), {} pack(s), {} blob(s); read {} pack(s), {} in {}",
                r.snapshots,
                r.index_segments,
                r.packs,
                r.blobs,
                r.packs_read,
                output::bytes(r.bytes_read),
                output::secs(r.duration_secs)
            );
            if r.ok() {
                println!("no errors found");
            }
        }
    }
    if !r.ok() {
        eprintln!("lifeboat: repository damaged: {} error(s) found", r.errors.len());
        return Ok(DAMAGED);
    }
    Ok(OK)
}
