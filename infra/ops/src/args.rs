//! A small hand-written argument parser (no clap in the workspace): positional words select the
//! command; `--flag value`, `--flag=value` and the switches `--json`, `--help`/`-h` anywhere.

use crate::OpsError;
use std::collections::BTreeMap;

/// Flags that take no value.
const SWITCHES: &[&str] = &["json", "help"];

/// Flags every command accepts.
pub const GLOBAL_FLAGS: &[&str] = &["json", "help", "table", "klarna-url"];

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    pub words: Vec<String>,
    flags: BTreeMap<String, Vec<String>>,
}

impl Args {
    pub fn parse<I, S>(argv: I) -> Result<Self, OpsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Args::default();
        let mut it = argv.into_iter().map(|s| s.as_ref().to_owned());
        while let Some(token) = it.next() {
            if token == "-h" {
                out.flags
                    .entry("help".into())
                    .or_default()
                    .push(String::new());
                continue;
            }
            let Some(flag) = token.strip_prefix("--") else {
                if token.starts_with('-') && token.len() > 1 {
                    return Err(OpsError::Usage(format!(
                        "unknown option {token:?} (options are spelled --name)"
                    )));
                }
                out.words.push(token);
                continue;
            };
            if flag.is_empty() {
                return Err(OpsError::Usage("a bare `--` is not supported".into()));
            }
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (flag.to_owned(), None),
            };
            let value = if SWITCHES.contains(&name.as_str()) {
                if value.is_some() {
                    return Err(OpsError::Usage(format!("--{name} takes no value")));
                }
                String::new()
            } else {
                match value {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| OpsError::Usage(format!("--{name} needs a value")))?,
                }
            };
            out.flags.entry(name).or_default().push(value);
        }
        Ok(out)
    }

    pub fn switch(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }

    pub fn help(&self) -> bool {
        self.switch("help")
    }

    /// A flag given at most once.
    pub fn opt(&self, name: &str) -> Result<Option<&str>, OpsError> {
        match self.flags.get(name).map(Vec::as_slice) {
            None => Ok(None),
            Some([v]) => Ok(Some(v.as_str())),
            Some(_) => Err(OpsError::Usage(format!("--{name} is given more than once"))),
        }
    }

    /// A flag that must be given once, with a non-empty value.
    pub fn req(&self, name: &str) -> Result<&str, OpsError> {
        match self.opt(name)? {
            Some(v) if !v.trim().is_empty() => Ok(v.trim()),
            Some(_) => Err(OpsError::Usage(format!("--{name} must not be empty"))),
            None => Err(OpsError::Usage(format!("--{name} is required"))),
        }
    }

    /// Every value of a repeatable flag.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.flags
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// A number flag.
    pub fn num<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, OpsError> {
        self.opt(name)?
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| OpsError::Usage(format!("--{name} takes a number, not {v:?}")))
            })
            .transpose()
    }

    /// Refuses flags the command does not know (besides the global ones) and extra words.
    pub fn only(&self, words: usize, allowed: &[&str]) -> Result<(), OpsError> {
        if self.words.len() > words {
            return Err(OpsError::Usage(format!(
                "unexpected argument {:?} (see --help)",
                self.words[words]
            )));
        }
        for name in self.flags.keys() {
            if !allowed.contains(&name.as_str()) && !GLOBAL_FLAGS.contains(&name.as_str()) {
                return Err(OpsError::Usage(format!(
                    "unknown option --{name} for this command (see --help)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_flags_and_switches_anywhere() {
        let a = Args::parse([
            "--json",
            "partner",
            "create",
            "--id",
            "p1",
            "--name=Shop One",
            "-h",
        ])
        .unwrap();
        assert_eq!(a.words, ["partner", "create"]);
        assert!(a.switch("json") && a.help());
        assert_eq!(a.req("id").unwrap(), "p1");
        assert_eq!(a.req("name").unwrap(), "Shop One");
        assert_eq!(a.opt("principal").unwrap(), None);
    }

    #[test]
    fn repeated_flags_and_errors() {
        let a = Args::parse(["dlq", "list", "--queue-url", "a", "--queue-url", "b"]).unwrap();
        assert_eq!(a.all("queue-url"), ["a", "b"]);
        assert!(a.opt("queue-url").is_err());
        assert!(a.only(2, &["queue-url"]).is_ok());
        assert!(a.only(2, &[]).is_err());
        assert!(a.only(1, &["queue-url"]).is_err());
        assert!(Args::parse(["--id"]).is_err());
        assert!(Args::parse(["--json=yes"]).is_err());
        assert!(Args::parse(["-x"]).is_err());
        let n = Args::parse(["--max", "x"]).unwrap();
        assert!(n.num::<u32>("max").is_err());
        let n = Args::parse(["--max", "7"]).unwrap();
        assert_eq!(n.num::<u32>("max").unwrap(), Some(7));
        assert!(Args::parse(["--id", " "]).unwrap().req("id").is_err());
        assert!(Args::parse(Vec::<String>::new())
            .unwrap()
            .req("id")
            .is_err());
    }
}
