//! The CLI's logger: the library reports warnings (a ChatML fallback, a context beyond the
//! trained one, capped threads) through the `log` facade, and they belong on stderr.
//!
//! Warnings and errors are shown by default; `--verbose` adds info. `WLLM_LOG` (or
//! `RUST_LOG`) set to `off`, `error`, `warn`, `info`, `debug` or `trace` overrides both.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let tag = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // Library internals (wgpu, naga) only from debug on.
        let ours = record.target().starts_with("wllm");
        if !ours && record.level() > Level::Warn && log::max_level() < LevelFilter::Debug {
            return;
        }
        eprintln!("{tag}: {}", record.args());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger once, at the level the environment or `verbose` asks for.
pub fn install(verbose: bool) {
    let from_env = ["WLLM_LOG", "RUST_LOG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.trim().parse::<LevelFilter>().ok()));
    let level = from_env.unwrap_or(if verbose { LevelFilter::Info } else { LevelFilter::Warn });
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
