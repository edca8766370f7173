//! `--help`'s `[default: …]`, generated from the config's `Default` so that it cannot drift
//! from it.
//!
//! A daemon documents its flags without defaults. [`with_defaults`] appends to the help of
//! each flag whose id is a config key the value `check` prints for that key in
//! `Config::default()` (`[default: 4096]`, `[default: "text"]`), or `[default: none]` for the
//! keys that have no value by default, with what that means where it explains something
//! (`[default: none: anonymous logins]`). [`disagreements`] is the test each daemon runs.

use std::collections::BTreeMap;

use clap::{Arg, Args, Command};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A key with no value by default, and what that means (`""`: nothing to add).
pub type NoDefault = (&'static str, &'static str);

/// `command` with `[default: …]` appended to the help of every flag (of it and of its
/// subcommands) whose id is a key of `C`, or one of `no_default`.
pub(crate) fn with_defaults<C: Serialize + Default>(
    command: Command,
    no_default: &[NoDefault],
) -> Command {
    let defaults = toml::Table::try_from(C::default()).unwrap_or_default();
    annotate(command, &defaults, no_default)
}

fn annotate(command: Command, defaults: &toml::Table, no_default: &[NoDefault]) -> Command {
    command
        .mut_args(
            |arg| match default_text(defaults, no_default, arg.get_id().as_str()) {
                Some(text) => append(arg, &text),
                None => arg,
            },
        )
        .mut_subcommands(|sub| annotate(sub, defaults, no_default))
}

/// `[default: …]` for `key`, or None when it is not a key.
fn default_text(defaults: &toml::Table, no_default: &[NoDefault], key: &str) -> Option<String> {
    if let Some(value) = defaults.get(key) {
        return Some(format!("[default: {value}]"));
    }
    let (_, note) = no_default.iter().find(|(k, _)| *k == key)?;
    Some(if note.is_empty() {
        "[default: none]".to_string()
    } else {
        format!("[default: none: {note}]")
    })
}

fn append(arg: Arg, text: &str) -> Arg {
    let help = match arg.get_help() {
        Some(help) => format!("{help} {text}"),
        None => text.to_string(),
    };
    let long = arg.get_long_help().map(|long| format!("{long} {text}"));
    let arg = arg.help(help);
    match long {
        Some(long) => arg.long_help(long),
        None => arg,
    }
}

/// For a daemon's test: every way its flags `O` disagree with its config `C`. Each flag but
/// `--config` must be a key; its help must end with the default `check` prints for it with
/// no file and no flags, or say `[default: none` when it is one of `no_default`, keys that
/// `check` prints only when they are set.
pub fn disagreements<O, C>(no_default: &[NoDefault]) -> Vec<String>
where
    O: Args,
    C: Serialize + Default + DeserializeOwned,
{
    let command = with_defaults::<C>(O::augment_args(Command::new("daemon")), no_default);
    let rendered = super::render(&C::default());
    let printed: BTreeMap<&str, &str> = rendered
        .lines()
        .filter_map(|line| line.split_once(" = "))
        .collect();
    let mut problems = Vec::new();
    for arg in command.get_arguments() {
        let key = arg.get_id().as_str();
        let flag = format!("--{}", arg.get_long().unwrap_or(key));
        if key == "config" {
            continue;
        }
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let ok = match printed.get(key) {
            Some(value) => help.ends_with(&format!("[default: {value}]")),
            None if no_default.iter().any(|(k, _)| *k == key) => help.contains("[default: none"),
            None if is_key::<C>(key) => {
                problems.push(format!(
                    "{flag}: `{key}` has no default and is not listed as having none"
                ));
                continue;
            }
            None => {
                problems.push(format!("{flag}: `{key}` is not a key of the configuration"));
                continue;
            }
        };
        if !ok {
            let value = printed.get(key).unwrap_or(&"none");
            problems.push(format!(
                "{flag}: its help {help:?} does not end with the default `check` prints, {value}"
            ));
        }
    }
    for (key, _) in no_default {
        if printed.contains_key(key) {
            problems.push(format!(
                "`{key}` is listed as having no default, but has one"
            ));
        } else if !is_key::<C>(key) {
            problems.push(format!(
                "`{key}` is listed as having no default, but is no key"
            ));
        }
        if !command.get_arguments().any(|arg| arg.get_id() == key) {
            problems.push(format!(
                "`{key}` is listed as having no default, but has no flag"
            ));
        }
    }
    problems
}

/// Whether `C` has a key `key`: an unknown key fails as "unknown field", a known one given a
/// value of the wrong type fails otherwise.
fn is_key<C: DeserializeOwned>(key: &str) -> bool {
    let mut table = toml::Table::new();
    table.insert(key.to_string(), toml::Value::Table(toml::Table::new()));
    match C::deserialize(toml::Value::Table(table)) {
        Ok(_) => true,
        Err(e) => !e.message().starts_with("unknown field"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::path::PathBuf;

    #[derive(Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        port: u16,
        name: String,
        peers: Vec<String>,
        socket: Option<PathBuf>,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                port: 80,
                name: "tether".into(),
                peers: vec!["a:1".into(), "b:2".into()],
                socket: None,
            }
        }
    }

    #[derive(clap::Args)]
    struct Flags {
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The port.
        #[arg(long)]
        port: Option<u16>,
        /// A name.
        #[arg(long)]
        name: Option<String>,
        /// Peers.
        #[arg(long = "peer")]
        peers: Option<Vec<String>>,
        /// A socket.
        #[arg(long)]
        socket: Option<PathBuf>,
    }

    fn help_of(command: &Command, id: &str) -> String {
        command
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_help())
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn defaults_are_appended_as_check_prints_them() {
        // (clap drops the final period of a one-sentence doc comment.)
        let command = with_defaults::<Sample>(
            Flags::augment_args(Command::new("t")),
            &[("socket", "no socket")],
        );
        assert_eq!(help_of(&command, "config"), "Config file");
        assert_eq!(help_of(&command, "port"), "The port [default: 80]");
        assert_eq!(help_of(&command, "name"), "A name [default: \"tether\"]");
        assert_eq!(
            help_of(&command, "peers"),
            "Peers [default: [\"a:1\", \"b:2\"]]"
        );
        assert_eq!(
            help_of(&command, "socket"),
            "A socket [default: none: no socket]"
        );
        assert_eq!(
            disagreements::<Flags, Sample>(&[("socket", "no socket")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn flags_that_are_no_key_and_wrong_lists_are_found() {
        #[derive(clap::Args)]
        struct Extra {
            #[command(flatten)]
            flags: Flags,
            /// Not a key.
            #[arg(long)]
            colour: Option<String>,
        }
        let problems = disagreements::<Extra, Sample>(&[("port", ""), ("nothing", "")]);
        assert_eq!(
            problems,
            [
                "--socket: `socket` has no default and is not listed as having none",
                "--colour: `colour` is not a key of the configuration",
                "`port` is listed as having no default, but has one",
                "`nothing` is listed as having no default, but is no key",
                "`nothing` is listed as having no default, but has no flag",
            ]
        );
    }
}
