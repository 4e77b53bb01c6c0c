//! `ConfigError`: why the flags do not make a configuration, and which flag is at fault.
//! `config.rs` and its parsers make one for each mistake they find; `cli.rs` hands over
//! argh's own mistakes (an unknown flag, a number that is not one) with the flag already
//! picked out. `main.rs` prints it as one line; `config_file.rs` uses the flag to find
//! the file's key and line.

use std::fmt;

use crate::cli::Exit;

/// One mistake in the flags. Printed as `--timeout: '5x' is not a duration (...)`, or,
/// for argh's mistakes, as argh words them (they name the flag themselves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    flag: Option<String>,
    message: String,
    wording: Wording,
}

/// Whose words `message` is, which decides how the error is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wording {
    /// Ours: printed after `--flag: `.
    AfterFlag,
    /// argh's: the whole line, printed as it is.
    Whole,
}

impl ConfigError {
    /// A mistake with `flag` (`--timeout`); `message` is what follows `--timeout: `.
    pub fn new(flag: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            flag: Some(flag.to_owned()),
            message: message.into(),
            wording: Wording::AfterFlag,
        }
    }

    /// The flag at fault, as typed: `--timeout`. `None` only for argh's mistakes that
    /// name no flag (a stray positional argument).
    pub fn flag(&self) -> Option<&str> {
        self.flag.as_deref()
    }

    /// What is wrong with the flag: for ours, the text after `--timeout: `; for argh's,
    /// its whole line.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// argh stopped the parse: its text, with the flag `cli.rs` found in it. `--help` (exit
/// 0) arrives here too when it is passed to `Config::from_args`, as a message with no flag.
impl From<Exit> for ConfigError {
    fn from(exit: Exit) -> ConfigError {
        ConfigError {
            flag: exit.flag,
            message: exit.text,
            wording: Wording::Whole,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.flag, self.wording) {
            (Some(flag), Wording::AfterFlag) => write!(f, "{flag}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn the_flag_is_the_one_at_fault_and_the_line_reads_as_before() {
        let err = Config::from_args(&["--timeout", "5x"]).unwrap_err();
        assert_eq!(err.flag(), Some("--timeout"));
        assert_eq!(
            err.message(),
            "'5x' is not a duration (examples: 500ms, 2s, 1m)"
        );
        assert_eq!(
            err.to_string(),
            "--timeout: '5x' is not a duration (examples: 500ms, 2s, 1m)"
        );
        let err = Config::from_args(&["--backend", "127.0.0.1:1,weight=0"]).unwrap_err();
        assert_eq!(err.flag(), Some("--backend"));
        let err = Config::from_args(&["--strategy", "ip-hash", "--hash-key", "path"]).unwrap_err();
        assert_eq!(err.flag(), Some("--hash-key"));
        assert_eq!(
            err.message(),
            "only with --strategy hash, not --strategy ip-hash"
        );
    }

    #[test]
    fn argh_mistakes_keep_argh_words_and_name_their_flag() {
        let err = Config::from_args(&["--workers", "many"]).unwrap_err();
        assert_eq!(err.flag(), Some("--workers"));
        assert!(
            err.to_string()
                .starts_with("Error parsing option '--workers' with value 'many': "),
            "{err}"
        );
        assert_eq!(err.to_string(), err.message());
        let err = Config::from_args(&["--frobnicate"]).unwrap_err();
        assert_eq!(err.flag(), Some("--frobnicate"));
        assert_eq!(err.to_string(), "Unrecognized argument: --frobnicate");
        let err = Config::from_args(&["stray"]).unwrap_err();
        assert_eq!(err.flag(), None);
        assert_eq!(err.to_string(), "Unrecognized argument: stray");
    }
}
