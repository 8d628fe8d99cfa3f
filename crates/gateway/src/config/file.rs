//! The `--config` file: a TOML table whose keys are the flags' long names, read beneath the
//! command line and the environment (flag > environment > file > default).
//!
//! No flag needs code of its own here: the keys are checked against clap's own arguments, and a
//! key's value reaches clap as the text a flag would have carried, so it is parsed and refused
//! exactly as that flag is. Three parses: the command line and the environment alone (which
//! say where `--config` is, and where each value came from: [`ArgMatches::value_source`]); the
//! file's values alone, so that each is checked even where a flag overrides it; then the
//! command line with the file's values that neither it nor the environment gave, which cannot
//! overrule either, since those are all the file adds.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::Settings;

/// The clap id of `--config`, which a file cannot set (it names no other file).
const CONFIG: &str = "config";

/// Settings as loaded: what they are, from which file, and each key's value as clap read it
/// (what a reload compares with the file's next version).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The settings.
    pub settings: Settings,
    /// The `--config` file they were read from, if any.
    pub file: Option<PathBuf>,
    /// Every key (a flag's long name) with its values as text, in the flags' order.
    values: Vec<(String, Vec<String>)>,
}

/// Why the settings could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// The command line or the environment, as clap says it (help and version included).
    Usage(clap::Error),
    /// The `--config` file: unreadable, not TOML, an unknown key, a value that does not parse.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key when one is at fault.
        reason: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Usage(error) => f.write_str(&said(error)),
            LoadError::File { path, reason } => write!(f, "config file {}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for LoadError {}

/// What clap says of `error`, on one line, as the start-up errors are.
fn said(error: &clap::Error) -> String {
    let text = error.render().to_string();
    text.lines().next().unwrap_or_default().trim_start_matches("error: ").to_owned()
}

impl Settings {
    /// The settings of `args` (the program's name first, as [`std::env::args_os`] gives them),
    /// the environment's `STREAMFLIGHT_*` variables and the `--config` file they name.
    ///
    /// ```
    /// use streamflight_gateway::Settings;
    ///
    /// let settings = Settings::load(["streamflight-gateway", "--max-concurrent-requests", "8"]);
    /// assert_eq!(settings.map(|s| s.max_concurrent_requests).ok(), Some(8));
    /// ```
    pub fn load<I, T>(args: I) -> Result<Settings, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        Loaded::from_args(args).map(|loaded| loaded.settings)
    }
}

impl Loaded {
    /// Loads the settings of `args`, the environment and the `--config` file (see
    /// [`Settings::load`]).
    pub fn from_args<I, T>(args: I) -> Result<Loaded, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let first = Settings::command().try_get_matches_from(&args).map_err(LoadError::Usage)?;
        let Some(path) = first.get_one::<PathBuf>(CONFIG).cloned() else {
            return Loaded::of(&first, None);
        };
        let given = file_args(&path)?;
        // Every value is checked, even one a flag or the environment overrides here: the file
        // must also hold where they do not (another host, a flag dropped, a reload).
        let program = args.first().cloned().unwrap_or_else(|| OsString::from("streamflight-gateway"));
        let alone = std::iter::once(program).chain(given.iter().map(|given| given.arg.clone()));
        Settings::command().try_get_matches_from(alone).map_err(|error| blame(error, &given, &path))?;
        let used: Vec<Given> = given
            .into_iter()
            .filter(|given| {
                let from = first.value_source(&given.id);
                !matches!(from, Some(ValueSource::CommandLine | ValueSource::EnvVariable))
            })
            .collect();
        // The file's values right after the program's name; none of them is on the command line.
        let mut merged = args;
        let rest = merged.split_off(merged.len().min(1));
        merged.extend(used.iter().map(|given| given.arg.clone()));
        merged.extend(rest);
        let matches =
            Settings::command().try_get_matches_from(merged).map_err(|error| blame(error, &used, &path))?;
        Loaded::of(&matches, Some(path))
    }

    fn of(matches: &ArgMatches, file: Option<PathBuf>) -> Result<Loaded, LoadError> {
        let settings = Settings::from_arg_matches(matches).map_err(LoadError::Usage)?;
        let values = keys()
            .map(|arg| {
                let text = matches.get_raw(arg.get_id().as_str()).into_iter().flatten();
                (key_of(&arg).to_owned(), text.map(|v| v.to_string_lossy().into_owned()).collect())
            })
            .collect();
        Ok(Loaded { settings, file, values })
    }

    /// The keys whose values differ from `earlier`'s, in the flags' order.
    pub fn changed_since(&self, earlier: &Loaded) -> Vec<String> {
        self.values
            .iter()
            .filter(|(key, values)| earlier.values(key) != Some(values.as_slice()))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// `key`'s values as text.
    pub fn values(&self, key: &str) -> Option<&[String]> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, values)| values.as_slice())
    }
}

/// Every argument a file may set: those with a long name, but `--config` and clap's own.
fn keys() -> impl Iterator<Item = Arg> {
    let command = Settings::command();
    let args: Vec<Arg> = command.get_arguments().cloned().collect();
    args.into_iter().filter(|arg| {
        arg.get_long().is_some()
            && arg.get_id() != CONFIG
            && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
    })
}

/// A key is the flag's long name, dashes and all (`max-concurrent-requests`).
fn key_of(arg: &Arg) -> &str {
    arg.get_long().unwrap_or_default()
}

/// One argument from the file, as a flag would give it.
struct Given {
    /// The key it comes from.
    key: String,
    /// Its argument's clap id.
    id: String,
    /// `--key=value`, or `--key` for a switch.
    arg: OsString,
}

/// The arguments of every key of the file at `path`; an unknown key, or a value of a type its
/// flag cannot take, is an error.
fn file_args(path: &Path) -> Result<Vec<Given>, LoadError> {
    let wrong = |reason: String| LoadError::File { path: path.to_owned(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| wrong(format!("cannot be read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| wrong(format!("not TOML: {}", one_line(&e.to_string()))))?;
    let known: Vec<Arg> = keys().collect();
    let mut given = Vec::new();
    for (key, value) in table {
        let Some(arg) = known.iter().find(|arg| key_of(arg) == key) else {
            return Err(wrong(unknown(&key, &known)));
        };
        for text in texts(arg, &value).map_err(|e| wrong(format!("key `{key}`: {e}")))? {
            given.push(Given { key: key.clone(), id: arg.get_id().to_string(), arg: text });
        }
    }
    Ok(given)
}

/// The error for a key no flag has, with the flag's spelling when it is only spelt otherwise.
fn unknown(key: &str, known: &[Arg]) -> String {
    if key == CONFIG {
        return "`config` cannot be set in a config file".to_owned();
    }
    let dashed = key.replace('_', "-");
    match known.iter().find(|arg| key_of(arg) == dashed) {
        Some(_) => format!("unknown key `{key}` (keys are spelt as the flags are: `{dashed}`)"),
        None => format!("unknown key `{key}`"),
    }
}

/// `value` as the arguments its flag would take: a boolean sets a switch (or not), a list
/// repeats a flag that takes several values, anything else is one `--key=text`.
fn texts(arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let key = key_of(arg);
    let flag = |text: &str| OsString::from(format!("--{key}={text}"));
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(vec![OsString::from(format!("--{key}"))]),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetFalse, toml::Value::Boolean(false)) => Ok(vec![OsString::from(format!("--{key}"))]),
        (ArgAction::SetFalse, toml::Value::Boolean(true)) => Ok(Vec::new()),
        (ArgAction::SetTrue | ArgAction::SetFalse, _) => Err("expected true or false".to_owned()),
        (ArgAction::Append, toml::Value::Array(items)) => {
            items.iter().map(|item| scalar(item).map(|text| flag(&text))).collect()
        }
        (_, toml::Value::Array(_)) => Err("takes one value, not a list".to_owned()),
        (_, value) => scalar(value).map(|text| vec![flag(&text)]),
    }
}

/// A string, a number or a boolean as the text a flag would carry.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(number) => Ok(number.to_string()),
        toml::Value::Float(number) => Ok(number.to_string()),
        toml::Value::Boolean(value) => Ok(value.to_string()),
        _ => Err("expected a string, a number or a boolean".to_owned()),
    }
}

/// A second parse's error, which is the file's: the first parse, without it, went through. Said
/// of the key at fault: the one clap names, else the first that fails alone (a parser of ours
/// may give clap an error that names no argument).
fn blame(error: clap::Error, injected: &[Given], path: &Path) -> LoadError {
    use clap::error::{ContextKind, ContextValue};
    let named = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.trim_start_matches('-').split([' ', '=']).next(),
        _ => None,
    };
    let named = named.filter(|name| injected.iter().any(|given| given.key == *name)).map(str::to_owned);
    let key = named.or_else(|| {
        injected
            .iter()
            .map(|given| &given.key)
            .find(|key| {
                let alone = injected.iter().filter(|given| given.key == **key).map(|given| given.arg.clone());
                let args = std::iter::once(OsString::from("streamflight-gateway")).chain(alone);
                Settings::command().try_get_matches_from(args).is_err()
            })
            .cloned()
    });
    let Some(key) = key else {
        return LoadError::File { path: path.to_owned(), reason: said(&error) };
    };
    let secret = keys().any(|arg| key_of(&arg) == key && arg.is_hide_env_values_set());
    let reason = match (error.get(ContextKind::InvalidValue), std::error::Error::source(&error)) {
        // A secret's value is never written out (G6), nor is what its parser said of it.
        (Some(_), _) if secret => "invalid value (not shown: a secret)".to_owned(),
        (Some(ContextValue::String(value)), Some(why)) => format!("invalid value `{value}`: {why}"),
        _ => said(&error),
    };
    LoadError::File { path: path.to_owned(), reason: format!("key `{key}`: {}", one_line(&reason)) }
}

/// `text` on one line, for a start-up error.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A file of `text` in the temporary directory, removed when dropped.
    struct File(PathBuf);

    impl File {
        fn new(name: &str, text: &str) -> File {
            let path = std::env::temp_dir().join(format!("streamflight-{}-{name}.toml", std::process::id()));
            let file = File(path);
            file.write(text);
            file
        }

        fn write(&self, text: &str) {
            std::fs::write(&self.0, text).unwrap();
        }

        fn load(&self, flags: &[&str]) -> Result<Settings, LoadError> {
            let path = self.0.to_str().unwrap();
            Settings::load([&["streamflight-gateway", "--config", path], flags].concat())
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn reason(error: LoadError) -> String {
        match error {
            LoadError::File { reason, .. } => reason,
            other => panic!("not the file's fault: {other}"),
        }
    }

    #[test]
    fn the_file_is_under_the_flags_and_over_the_defaults() {
        let file = File::new(
            "precedence",
            "sim-tokens = 3\nmax-concurrent-requests = 7\nlog = \"warn\"\nupstream-http2 = true\n\
             cors-origin = [\"https://a.example\", \"https://b.example\"]\nlinger = \"2s\"\n",
        );
        let settings = file.load(&["--sim-tokens", "5"]).unwrap();
        assert_eq!(settings.sim_tokens, 5, "a flag beats the file");
        assert_eq!(settings.max_concurrent_requests, 7, "the file beats the default");
        assert!(settings.upstream_http2);
        assert_eq!(settings.cors_origins, ["https://a.example", "https://b.example"]);
        assert_eq!(settings.linger, Duration::from_secs(2));
        assert_eq!(settings.body_limit, 32 << 20, "what the file leaves out keeps its default");
        assert_eq!(file.load(&["--cors-origin", "*"]).unwrap().cors_origins, ["*"]);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let file = File::new("unknown", "sim-tokens = 3\nmax-conccurent-requests = 7\n");
        let error = file.load(&[]).unwrap_err();
        let line = error.to_string();
        assert!(line.contains("unknown key `max-conccurent-requests`"), "{line}");
        assert!(line.contains(file.0.to_str().unwrap()), "names the file: {line}");
        let underscored = File::new("underscored", "max_concurrent_requests = 7\n");
        let hint = reason(underscored.load(&[]).unwrap_err());
        assert!(hint.contains("`max-concurrent-requests`"), "{hint}");
        let nested = File::new("nested", "config = \"other.toml\"\n");
        assert!(reason(nested.load(&[]).unwrap_err()).contains("`config`"));
    }

    #[test]
    fn a_wrong_value_is_named_by_its_key() {
        for (text, key, says) in [
            ("body-limit = \"lots\"", "body-limit", "invalid value `lots`"),
            ("body-limit = -1", "body-limit", "invalid value `-1`"),
            ("linger = 5", "linger", "has no unit"),
            ("upstream-http2 = \"yes\"", "upstream-http2", "true or false"),
            ("listen = [\"127.0.0.1:1\"]", "listen", "not a list"),
            ("log-format = \"xml\"", "log-format", "xml"),
            ("sim-tokens = { a = 1 }", "sim-tokens", "expected a string"),
        ] {
            let file = File::new("wrong", text);
            let reason = reason(file.load(&[]).unwrap_err());
            assert!(reason.contains(&format!("key `{key}`")) && reason.contains(says), "{text}: {reason}");
            assert!(!reason.contains('\n'), "one line: {reason}");
        }
        // A parser of ours that names no argument to clap: the key is found all the same, and
        // a secret in the value stays out of the line (G6).
        let secret = File::new("secret", "sim-tokens = 3\nupstream = \"https://user:s3cret@host/v1\"\n");
        let said = reason(secret.load(&[]).unwrap_err());
        assert!(said.starts_with("key `upstream`") && !said.contains("s3cret"), "{said}");
        let broken = File::new("broken", "sim-tokens = \n");
        assert!(reason(broken.load(&[]).unwrap_err()).starts_with("not TOML"));
    }

    #[test]
    fn a_value_a_flag_overrides_is_checked_all_the_same() {
        let file = File::new("overridden", "body-limit = \"lots\"\n");
        assert!(reason(file.load(&["--body-limit", "10"]).unwrap_err()).contains("key `body-limit`"));
        file.write("body-limit = 20\n");
        assert_eq!(file.load(&["--body-limit", "10"]).unwrap().body_limit, 10);
    }

    #[test]
    fn a_missing_file_is_said_so() {
        let error = Settings::load(["streamflight-gateway", "--config", "/nonexistent/streamflight.toml"]);
        let line = error.unwrap_err().to_string();
        assert!(line.contains("/nonexistent/streamflight.toml") && line.contains("cannot be read"), "{line}");
    }

    #[test]
    fn changes_are_found_key_by_key() {
        let earlier = Loaded::from_args(["streamflight-gateway"]).unwrap();
        let later = Loaded::from_args(["streamflight-gateway", "--log", "warn", "--upstream-http2"]).unwrap();
        assert_eq!(later.changed_since(&earlier), ["upstream-http2", "log"]);
        assert!(later.changed_since(&later).is_empty());
    }
}
