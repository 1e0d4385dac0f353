//! The CLI's `lifeboat.toml` parser (`crates/lifeboat/src/config.rs`, inside the binary crate).
//!
//! That file is not part of any library, so it is compiled here in place with `#[path]`, with a
//! stand-in for the one item it takes from the binary (`crate::exit::{USAGE, fail}`). If
//! config.rs starts using more of the binary crate, extend the `exit` shim below (or move the
//! parser into a library and call it from here).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/lifeboat/src/config.rs"]
mod config;

/// Stand-in for the binary's `exit` module: same names and signatures as far as config.rs uses them.
mod exit {
    pub const USAGE: u8 = 2;

    #[derive(Debug)]
    pub struct Exit {
        pub code: u8,
        pub message: String,
    }

    impl std::fmt::Display for Exit {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} (exit {})", self.message, self.code)
        }
    }

    impl std::error::Error for Exit {}

    pub fn fail(code: u8, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Exit {
            code,
            message: message.into(),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = config::parse(text, Path::new("fuzz.toml")) {
        // Errors are printed as one line by the CLI.
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "multi-line config error: {msg:?}");
    }
});
