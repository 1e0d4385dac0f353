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
    if ctx.global.json {
        output::json(&serde_json::json!({
            "location": repo.backend().location(),
            "id": repo.config().id,
            "chunker": repo.config().chunker,
            "compression_level": repo.config().compression_level,
            "pack_size": repo.config().pack_size,
        }));
    } else if !ctx.global.quiet {
        println!(
            "created repository {} at {}",
            repo.config().id.short(),
            repo.backend().location()
        );
        println!("keep the passphrase safe: without it the backups cannot be read by anyone.");
    }
    Ok(OK)
}

pub fn key(ctx: &Ctx, k: KeyCommand) -> Result<u8> {
    let mut repo = ctx.open()?;
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
