//! `init` and `key …`.

use anyhow::Result;
use lifeboat_repo::crypto::KdfParams;
use lifeboat_repo::{InitOptions, RepoError, Repository};

use super::Ctx;
use crate::cli::{InitArgs, KeyCommand};
use crate::exit::OK;
use crate::output;
use crate::secrets;

/// Key derivation costs; `LIFEBOAT_INSECURE_FAST_KDF=1` (tests only) makes them trivial.
fn kdf() -> KdfParams {
    if std::env::var("LIFEBOAT_INSECURE_FAST_KDF").as_deref() == Ok("1") {
        KdfParams::TESTING
    } else {
        KdfParams::DEFAULT
    }
}

pub fn init(ctx: &Ctx, a: &InitArgs) -> Result<u8> {
    let b = ctx.backend_for_init()?;
    if b.head("config").map_err(RepoError::from)?.is_some() {
        return Err(RepoError::AlreadyExists {
            location: b.location().into(),
        }
        .into());
    }
    let pass = secrets::passphrase(&ctx.sources(), true)?;
    let mut opts = InitOptions {
        kdf: kdf(),
        ..Default::default()
    };
    if let Some(l) = a.compression_level.or(ctx.config.compression_level) {
        opts.compression_level = l;
    }
    if let Some(m) = a.pack_size_mib.or(ctx.config.pack_size_mib) {
        opts.pack_size = m << 20;
    }
    let repo = Repository::init(b, &pass, &opts)?;
    if !ctx.global.json && !ctx.global.quiet {
        println!(
            "created repository {} at {}",
            repo.config().id.short(),
            repo.backend().location()
        );
        println!("keep the passphrase safe: without it the backups cannot be read by anyone.");
    }
    let mut replication = Vec::new();
    if ctx.locations()?.len() > 1 {
        // The other locations get the config and key file now, so each is a complete
        // repository from the start (local folders are created).
        let mut locs = ctx.open_locations()?;
        for l in locs.iter_mut().skip(1) {
            l.backend = lifeboat_repo::backend::open_location(&l.opts, true).map_err(|e| e.to_string());
        }
        replication = super::locations::after_write(ctx, &repo, &locs, 0);
    }
    if ctx.global.json {
        output::json(&serde_json::json!({
            "location": repo.backend().location(),
            "id": repo.config().id,
            "chunker": repo.config().chunker,
            "compression_level": repo.config().compression_level,
            "pack_size": repo.config().pack_size,
            "replication": replication,
        }));
    }
    Ok(OK)
}

pub fn key(ctx: &Ctx, k: KeyCommand) -> Result<u8> {
    // Key changes go to the first reachable location and are then replayed everywhere: a
    // removed passphrase must not keep opening another copy of the repository.
    let needs_delete = matches!(k, KeyCommand::Remove { .. } | KeyCommand::Passwd(_));
    let mut m = super::maintenance::open_for_deletion(ctx, "removing a key", !needs_delete)?;
    let changes = !matches!(k, KeyCommand::List);
    let code = key_command(ctx, &mut m.repo, k)?;
    if changes {
        super::maintenance::finish_deletion(ctx, &m)?;
    }
    Ok(code)
}

fn key_command(ctx: &Ctx, repo: &mut Repository, k: KeyCommand) -> Result<u8> {
    match k {
        KeyCommand::List => {
            let keys = repo.list_keys()?;
            if ctx.global.json {
                output::json(&keys);
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            format!("{}{}", if k.current { "*" } else { " " }, &k.id[..8]),
                            k.user.clone(),
                            k.host.clone(),
                            k.created.clone(),
                        ]
                    })
                    .collect();
                output::table(&[" ID", "User", "Host", "Created"], &rows);
            }
        }
        KeyCommand::Add(a) => {
            let p = secrets::new_passphrase(a.new_password_file.as_deref())?;
            let id = repo.add_key(&p, kdf())?;
            report(ctx, "added", &id);
        }
        KeyCommand::Remove { id } => {
            let id = repo.remove_key(&id)?;
            report(ctx, "removed", &id);
        }
        KeyCommand::Passwd(a) => {
            let p = secrets::new_passphrase(a.new_password_file.as_deref())?;
            let id = repo.change_passphrase(&p, kdf())?;
            report(ctx, "changed passphrase; new key", &id);
        }
    }
    Ok(OK)
}

fn report(ctx: &Ctx, what: &str, id: &str) {
    if ctx.global.json {
        output::json(&serde_json::json!({ "result": what, "key": id }));
    } else if !ctx.global.quiet {
        println!("{what} key {}", &id[..8.min(id.len())]);
    }
}
