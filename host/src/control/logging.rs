//! Logging with `tracing`: human-readable text or one JSON object per line (`--log-format`,
//! `director.log_format`), on standard error, filtered by `RUST_LOG` (default `info`; e.g.
//! `RUST_LOG=debug` or `RUST_LOG=ringvs::control=debug,info`).

use crate::config::LogFormat;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The filter: `RUST_LOG` if it is set and valid, else `info`.
fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// A subscriber writing `format` to `writer`; colours only with `ansi`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        // One object per line, the event's fields at the top level beside `timestamp`,
        // `level`, `target` and `message`: what log shippers (journald, Vector, Loki) expect.
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_ansi(false)
                .finish(),
        ),
    }
}

/// Installs the global subscriber on standard error (once; later calls do nothing).
pub fn init(format: LogFormat) {
    use std::io::IsTerminal;
    // Colours only on a terminal: logs written to files or the journal stay plain text.
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing::subscriber::set_global_default(subscriber(
        format,
        filter(),
        std::io::stderr,
        ansi,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn emit(format: LogFormat, level: &str) -> String {
        let buf = Buf::default();
        let sub = subscriber(format, EnvFilter::new(level), buf.clone(), false);
        tracing::subscriber::with_default(sub, || {
            tracing::info!(service = "web", server = %"10.77.1.1:8080", weight = 3u32, "server added");
            tracing::warn!("admin socket: refused uid 65534 \"quoted\"\nsecond line");
            tracing::debug!(detail = 1u8, "only at debug");
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_parse() {
        let out = emit(LogFormat::Json, "info");
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        assert_eq!(lines.len(), 2, "debug is filtered out at info: {out}");
        let first = &lines[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["message"], "server added");
        assert_eq!(first["service"], "web");
        assert_eq!(first["server"], "10.77.1.1:8080");
        assert_eq!(first["weight"], 3);
        assert!(first["timestamp"].is_string(), "{first}");
        assert!(first["target"].as_str().unwrap().starts_with("ringvs"));
        // A message with quotes and a newline stays one line of JSON.
        assert_eq!(
            lines[1]["message"],
            "admin socket: refused uid 65534 \"quoted\"\nsecond line"
        );
        assert_eq!(lines[1]["level"], "WARN");
    }

    #[test]
    fn human_lines_and_the_level_filter() {
        let out = emit(LogFormat::Text, "debug");
        assert!(
            out.contains(" INFO ") && out.contains("server added"),
            "{out}"
        );
        assert!(
            out.contains("service=\"web\"") || out.contains("service=web"),
            "{out}"
        );
        assert!(out.contains("only at debug"), "{out}");
        assert!(
            !out.contains('\x1b'),
            "no colours without a terminal: {out:?}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(out.lines().next().unwrap()).is_err());
    }
}
