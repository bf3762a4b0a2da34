//! `--config FILE` under the command line, and `fedreg config check FILE`.
//!
//! The file's settings become the default values of the flags they name
//! (by long name: the global flags at the top of the file, `serve`'s in its
//! `[serve]` table), so that clap itself ranks the sources: a flag on the
//! command line, then its environment variable, then the file, then the
//! built-in default. Any global or `serve` flag is thus settable from the
//! file with no code here, its value checked by the flag's own parser when
//! the file is read, so that an error names the file's line and key.
//! Paths in the file are taken relative to the file's directory.

use std::path::{Path, PathBuf};

use clap::{Arg, Command, CommandFactory, FromArgMatches, Id, Subcommand};

use super::{Cli, CliError};
use crate::config::{ConfigError, ConfigErrors, ConfigFile, Setting, peers};
use crate::error::Error;

/// Flags a configuration file does not set: the file itself, help, and
/// the admin token, a secret with a file of its own (`admin-token`).
const NOT_IN_FILE: &[&str] = &["config", "token", "help", "version"];

/// `fedreg config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file without touching the database: its keys,
    /// each value with its flag's checks, the files it names and its peers
    /// with the admin API's checks. Prints OK, or every error with its line
    /// and key (exit code 1).
    Check {
        /// The configuration file.
        file: PathBuf,
    },
}

/// Parses the command line with the configuration file it names
/// (`--config` or `FEDREG_CONFIG`) under it; on a usage error, prints it
/// and exits as clap does.
pub fn parse() -> Result<Cli, CliError> {
    let mut command = Cli::command();
    if let Some(path) = config_path(command.clone()) {
        let file = ConfigFile::read(&path)?;
        let mut errors = Vec::new();
        command = layer(command, &file, &mut errors);
        ConfigErrors::check(&file.path, errors)?;
    }
    let mut matches = command.get_matches_mut();
    Ok(Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command).exit()))
}

/// Runs a `config` subcommand.
pub fn config(command: ConfigCommand) -> Result<(), CliError> {
    match command {
        ConfigCommand::Check { file } => check(&file),
    }
}

/// `fedreg config check FILE`: OK, or every error of the file.
fn check(path: &Path) -> Result<(), CliError> {
    let file = ConfigFile::read(path)?;
    let mut errors = Vec::new();
    let command = layer(Cli::command(), &file, &mut errors);
    errors.extend(serve_problems(command, &file));
    let peers = match peers::declare(&file) {
        Ok(peers) => peers.len(),
        Err(e) => {
            errors.extend(e.errors);
            0
        }
    };
    ConfigErrors::check(path, errors)?;
    println!(
        "{}: OK (settings: {}, peers: {peers})",
        path.display(),
        file.options.len() + file.serve.len()
    );
    Ok(())
}

/// The configuration file named on the command line or by
/// `FEDREG_CONFIG`, from a first parse that ignores errors (the file may
/// supply what the command line lacks); none for `fedreg config ...`,
/// which names its own file.
fn config_path(command: Command) -> Option<PathBuf> {
    let matches = command.ignore_errors(true).try_get_matches().ok()?;
    if matches.subcommand_name() == Some("config") {
        return None;
    }
    matches.get_one::<PathBuf>("config").cloned()
}

/// `command` with the file's settings as the defaults of their flags, the
/// global ones and `serve`'s; a setting that names no such flag, or whose
/// value its flag refuses, goes to `errors` instead.
fn layer(command: Command, file: &ConfigFile, errors: &mut Vec<ConfigError>) -> Command {
    let Some(serve) = command.find_subcommand("serve") else {
        return command;
    };
    let global = defaults(&command, serve, file, &file.options, "", errors);
    let served = defaults(serve, &command, file, &file.serve, "serve.", errors);
    let set = |command: Command, defaults: Vec<(Id, String)>| {
        defaults.into_iter().fold(command, |command, (id, value)| {
            command.mut_arg(id, |arg| arg.default_value(value))
        })
    };
    let command = set(command, global);
    command.mut_subcommand("serve", |serve| set(serve, served))
}

/// The defaults that `settings`, the keys of the table named `section`,
/// give the flags of `table`: (flag id, value). `other` is the command of
/// the other table, named in the hint of a key in the wrong table.
fn defaults(
    table: &Command,
    other: &Command,
    file: &ConfigFile,
    settings: &[Setting],
    section: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(Id, String)> {
    let mut defaults = Vec::new();
    for setting in settings {
        let key = format!("{section}{}", setting.key);
        let Some(arg) = settable(table, &setting.key) else {
            let hint = unknown_key_hint(table, other, section, &setting.key);
            errors.push(ConfigError::new(setting.line, key, hint));
            continue;
        };
        let value = if arg.get_value_parser().type_id() == std::any::TypeId::of::<PathBuf>() {
            file.path(Path::new(&setting.value))
                .to_string_lossy()
                .into_owned()
        } else {
            setting.value.clone()
        };
        match refusal(arg, &value) {
            None => defaults.push((arg.get_id().clone(), value)),
            Some(why) => errors.push(ConfigError::new(setting.line, key, why)),
        }
    }
    defaults
}

/// Every key a configuration file may set, after its table: the global
/// flags (`data-dir`...), then `serve`'s (`serve.listen`...).
pub fn settable_keys() -> Vec<String> {
    let command = Cli::command();
    let keys = |command: &Command, section: &str| -> Vec<String> {
        command
            .get_arguments()
            .filter_map(Arg::get_long)
            .filter(|long| !NOT_IN_FILE.contains(long))
            .map(|long| format!("{section}{long}"))
            .collect()
    };
    let mut all = keys(&command, "");
    if let Some(serve) = command.find_subcommand("serve") {
        all.extend(keys(serve, "serve."));
    }
    all
}

/// The flag of `command` whose long name is `key`, if the file may set it.
fn settable<'a>(command: &'a Command, key: &str) -> Option<&'a Arg> {
    if NOT_IN_FILE.contains(&key) {
        return None;
    }
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(key))
}

/// Why `key` is not a key of the table named `section`, and what to write.
fn unknown_key_hint(table: &Command, other: &Command, section: &str, key: &str) -> String {
    let dashed = key.replace('_', "-");
    if key == "token" {
        "the admin token is a secret and is not read from the configuration file: \
         use --token, FEDREG_TOKEN or the admin-token file of the data directory"
            .into()
    } else if NOT_IN_FILE.contains(&key) {
        "cannot be set in the configuration file".into()
    } else if dashed != key && settable(table, &dashed).is_some() {
        format!("unknown key: did you mean {dashed:?}? Keys are the long names of the flags")
    } else if settable(other, key).is_some() && section.is_empty() {
        "an option of `fedreg serve`: put it in the [serve] table".into()
    } else if settable(other, key).is_some() {
        "a global option: put it at the top of the file, before any table".into()
    } else {
        "unknown key: keys are the long names of the flags of `fedreg --help` (at the top) \
         and `fedreg serve --help` (in [serve])"
            .into()
    }
}

/// Why `arg` refuses `value` as its default, if it does: its parser runs
/// on it alone, as it will on the default when the flag is left out.
fn refusal(arg: &Arg, value: &str) -> Option<String> {
    let alone = arg
        .clone()
        .env(None::<&str>)
        .default_value(value.to_owned());
    let error = Command::new("fedreg")
        .arg(alone)
        .try_get_matches_from(["fedreg"])
        .err()?;
    Some(one_line(&error))
}

/// A clap error on one line, without its `error:` prefix and help hint.
fn one_line(error: &clap::Error) -> String {
    error
        .render()
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The problems of `serve`'s options as the file alone sets them (the
/// environment left out), each at the line of its key.
fn serve_problems(command: Command, file: &ConfigFile) -> Vec<ConfigError> {
    let without_env = |command: Command| command.mut_args(|arg| arg.env(None::<&str>));
    let command = without_env(command).mut_subcommand("serve", without_env);
    let parsed = command
        .try_get_matches_from(["fedreg", "serve"])
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let args = match parsed {
        Ok(Cli {
            command: super::Command::Serve(args),
            ..
        }) => args,
        Ok(_) => return Vec::new(),
        Err(e) => return vec![ConfigError::new(None, "serve", one_line(&e))],
    };
    args.problems()
        .into_iter()
        .map(|problem| {
            let key = match &problem {
                Error::InvalidArgument { field, .. } => field.replace('_', "-"),
                _ => String::new(),
            };
            let line = file.serve.iter().find(|s| s.key == key).map(|s| s.line);
            ConfigError::new(line, format!("serve.{key}"), problem)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command as Sub;
    use crate::cli::serve::ServeArgs;

    /// The command line `args` with the file `text` under it, or the
    /// file's errors.
    fn parse_with(text: &str, args: &[&str]) -> Result<Cli, Vec<ConfigError>> {
        let file =
            ConfigFile::parse(Path::new("/etc/fedreg/fedreg.toml"), text).map_err(|e| e.errors)?;
        let mut errors = Vec::new();
        let command = layer(Cli::command(), &file, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let matches = command
            .try_get_matches_from(std::iter::once("fedreg").chain(args.iter().copied()))
            .unwrap();
        Ok(Cli::from_arg_matches(&matches).unwrap())
    }

    fn serve_args(cli: Cli) -> ServeArgs {
        match cli.command {
            Sub::Serve(args) => args,
            other => panic!("not serve: {other:?}"),
        }
    }

    const FILE: &str = "data-dir = \"data\"\nlog-format = \"json\"\n[serve]\n\
                        listen = \"127.0.0.2:7000\"\nname = \"plc\"\nrequire-client-cert = true\n\
                        client-ca = \"ca.pem\"\nmax-delete-fraction = 0.25\n";

    #[test]
    fn the_file_fills_in_what_flags_leave_out() {
        let cli = parse_with(FILE, &["serve"]).unwrap();
        assert_eq!(cli.storage.data_dir, Path::new("/etc/fedreg/data"));
        assert_eq!(cli.log_format, crate::cli::LogFormat::Json);
        let serve = serve_args(cli);
        assert_eq!(serve.listen.to_string(), "127.0.0.2:7000");
        assert_eq!(serve.name, "plc");
        assert!(serve.require_client_cert);
        assert_eq!(
            serve.client_ca.as_deref(),
            Some(Path::new("/etc/fedreg/ca.pem"))
        );
        assert_eq!(serve.max_delete_fraction, 0.25);
        // Not in the file: the built-in default.
        assert_eq!(serve.peer_timeout, 60);

        let cli = parse_with(
            FILE,
            &["--data-dir", "here", "serve", "--listen", "127.0.0.3:7001"],
        )
        .unwrap();
        assert_eq!(cli.storage.data_dir, Path::new("here"));
        let serve = serve_args(cli);
        assert_eq!(serve.listen.to_string(), "127.0.0.3:7001");
        assert_eq!(serve.name, "plc");
    }

    #[test]
    fn keys_are_checked_by_their_flags() {
        let errors = parse_with(
            "lisen = 1\ntoken = \"t\"\nlisten = \"x\"\n[serve]\nmax_delete_fraction = 0.1\n\
             refresh-chunk = 0\nlisten = \"nowhere\"\nlog-format = \"json\"\n",
            &["serve"],
        )
        .unwrap_err();
        let found: Vec<_> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(1), "lisen"),
                (Some(2), "token"),
                (Some(3), "listen"),
                (Some(5), "serve.max_delete_fraction"),
                (Some(6), "serve.refresh-chunk"),
                (Some(7), "serve.listen"),
                (Some(8), "serve.log-format"),
            ],
            "{errors:#?}"
        );
        let messages: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
        assert!(messages[0].starts_with("unknown key"), "{messages:#?}");
        assert!(messages[1].contains("FEDREG_TOKEN"), "{messages:#?}");
        assert!(messages[2].contains("[serve]"), "{messages:#?}");
        assert!(
            messages[3].contains("\"max-delete-fraction\""),
            "{messages:#?}"
        );
        assert!(
            messages[4].contains("'0'") && messages[4].contains("--refresh-chunk"),
            "{messages:#?}"
        );
        assert!(messages[5].contains("'nowhere'"), "{messages:#?}");
        assert!(messages[6].contains("at the top"), "{messages:#?}");
    }

    #[test]
    fn serve_problems_are_found_at_their_keys() {
        let file = ConfigFile::parse(
            Path::new("/nonexistent/fedreg.toml"),
            "[serve]\nname = \"a\"\ntls-cert = \"cert.pem\"\nrequire-client-cert = true\n",
        )
        .unwrap();
        let mut errors = Vec::new();
        let command = layer(Cli::command(), &file, &mut errors);
        assert_eq!(errors, []);
        let problems = serve_problems(command, &file);
        let found: Vec<_> = problems.iter().map(|e| (e.line, e.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(3), "serve.tls-cert"),
                (Some(3), "serve.tls-cert"),
                (Some(4), "serve.require-client-cert"),
            ],
            "{problems:#?}"
        );
        assert!(problems[0].message.contains("--tls-key"), "{problems:#?}");
        assert!(problems[1].message.contains("cannot read"), "{problems:#?}");
    }
}
