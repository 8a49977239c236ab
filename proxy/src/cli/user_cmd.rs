//! `maschera user ...`: add, change the password of, remove and list the proxy's users.
//! Not for: the users file format (see `users`) or password rules (see `password`); this is the CLI edge.

use crate::net::password::check_strength;
use crate::net::scram::{DEFAULT_ITERATIONS, Verifier};
use crate::users::application::{Application, AttributeBounds};
use crate::users::{User, UserStore};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    /// The users file (created by `user add` when missing).
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "config")]
    users: Option<PathBuf>,
    /// Take the users file from `[users] file` of this configuration file (a relative path is relative
    /// to the configuration file's folder).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(clap::Subcommand, Debug)]
enum UserCommand {
    /// Add a user; the password is asked twice without echo, or read from standard input.
    Add {
        name: String,
        /// The policy role the user acts as (not yet checked against the policy file). For an
        /// application user: the role of its statements with no end user set (optional: without
        /// it they may read no personal data).
        #[arg(long, required_unless_present = "application")]
        role: Option<String>,
        /// An attribute the row filters read, e.g. `--attr region=north`; repeatable.
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attribute)]
        attributes: Vec<(String, String)>,
        /// Read the password from standard input (everything up to end of input, one trailing
        /// newline removed) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// An application user: it may act for end users (`SET maschera.end_user`) within the
        /// bounds below.
        #[arg(long)]
        application: bool,
        /// A role the application may act as for an end user; repeatable, at least one.
        #[arg(long = "end-user-role", value_name = "ROLE", requires = "application")]
        end_user_roles: Vec<String>,
        /// The values an application may assert for one attribute, e.g.
        /// `--end-user-attr region=north,south`; repeatable. Without it, end users' attributes come
        /// from the users file.
        #[arg(long = "end-user-attr", value_name = "KEY=V1,V2", value_parser = parse_attribute, requires = "application")]
        end_user_attributes: Vec<(String, String)>,
        /// A `kid` of `[end_users] keys` the application's tokens may be signed with; repeatable
        /// (default: any).
        #[arg(long = "key", value_name = "KID", requires = "application")]
        keys: Vec<String>,
    },
    /// Set a new password for an existing user.
    Passwd {
        name: String,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user.
    Remove { name: String },
    /// List users: name, role and attributes (never verifiers).
    List {
        /// Print a JSON array of {name, role, attributes}.
        #[arg(long)]
        json: bool,
    },
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

pub fn run(args: UserArgs) -> anyhow::Result<ExitCode> {
    let path = users_file(args.users, args.config.as_deref())?;
    let mut store = UserStore::load_or_empty(&path)?;
    match args.command {
        UserCommand::Add {
            name,
            role,
            attributes,
            password_stdin,
            application,
            end_user_roles,
            end_user_attributes,
            keys,
        } => {
            let role = role.unwrap_or_default();
            if store.get(&name).is_some() {
                bail!(
                    "user {name:?} already exists in {}; use `maschera user passwd` to change its password",
                    path.display()
                );
            }
            let password = read_new_password(&name, password_stdin)?;
            check_strength(&password, &[&name, &role])?;
            let mut attribute_map = BTreeMap::new();
            for (key, value) in attributes {
                if attribute_map.insert(key.clone(), value).is_some() {
                    bail!("attribute {key:?} is given twice");
                }
            }
            let user = User {
                name: name.clone(),
                role: role.clone(),
                attributes: attribute_map,
                verifier: Verifier::from_password(&password, DEFAULT_ITERATIONS),
            };
            if application {
                let bounds = application_bounds(end_user_roles, end_user_attributes, keys);
                store.insert_application(user, bounds)
            } else {
                store.insert(user)
            }
            .with_context(|| format!("user {name:?}"))?;
            store.save(&path)?;
            let kind = if application {
                "application user"
            } else {
                "user"
            };
            println!("added {kind} {name} (role {role:?}) to {}", path.display());
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let mut user = existing(&store, &name, &path)?.clone();
            let password = read_new_password(&name, password_stdin)?;
            check_strength(&password, &[&name, &user.role])?;
            user.verifier = Verifier::from_password(&password, DEFAULT_ITERATIONS);
            store.insert(user)?;
            store.save(&path)?;
            println!("changed the password of user {name} in {}", path.display());
        }
        UserCommand::Remove { name } => {
            existing(&store, &name, &path)?;
            store.remove(&name);
            store.save(&path)?;
            println!("removed user {name} from {}", path.display());
        }
        UserCommand::List { json } => print_list(&store, json)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The bounds given by `user add --application`.
fn application_bounds(
    roles: Vec<String>,
    attributes: Vec<(String, String)>,
    keys: Vec<String>,
) -> Application {
    let attributes = if attributes.is_empty() {
        AttributeBounds::UsersFile
    } else {
        let mut values = std::collections::BTreeMap::new();
        for (key, list) in attributes {
            let list = list.split(',').map(str::to_owned);
            values.entry(key).or_insert_with(Vec::new).extend(list);
        }
        AttributeBounds::Values(values)
    };
    Application {
        roles,
        attributes,
        keys,
    }
}

fn existing<'a>(store: &'a UserStore, name: &str, path: &Path) -> anyhow::Result<&'a User> {
    store
        .get(name)
        .with_context(|| format!("no user {name:?} in {}", path.display()))
}

fn print_list(store: &UserStore, json: bool) -> anyhow::Result<()> {
    if json {
        let list: Vec<_> = store
            .users()
            .map(|u| {
                let mut entry =
                    serde_json::json!({"name": u.name, "role": u.role, "attributes": u.attributes});
                // Only application users carry the member (the others' lines stay as they were).
                if store.application(&u.name).is_some() {
                    entry["application"] = serde_json::Value::Bool(true);
                }
                entry
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for user in store.users() {
        let attributes: Vec<String> = user
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let application = match store.application(&user.name) {
            Some(bounds) => format!("\tapplication for {}", bounds.roles.join(",")),
            None => String::new(),
        };
        println!(
            "{}\t{}\t{}{application}",
            user.name,
            user.role,
            attributes.join(",")
        );
    }
    Ok(())
}

/// The users file named by `--users`, or by `[users] file` of the configuration given with `--config`.
fn users_file(users: Option<PathBuf>, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = users {
        return Ok(path);
    }
    let Some(config) = config else {
        bail!("name the users file with --users FILE or the configuration with --config FILE");
    };
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read the configuration {}", config.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("configuration {}", config.display()))?;
    let file = table
        .get("users")
        .and_then(|users| users.get("file"))
        .and_then(|file| file.as_str())
        .with_context(|| {
            format!(
                "configuration {}: no `file` string in a [users] table",
                config.display()
            )
        })?;
    let folder = config.parent().unwrap_or(Path::new(""));
    Ok(folder.join(file))
}

/// The new password, from standard input or from two prompts without echo.
fn read_new_password(name: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the password from standard input (it must be UTF-8)")?;
        let password = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text);
        return Ok(password.to_string());
    }
    let prompt = |label: &str| {
        rpassword::prompt_password(label)
            .context("cannot prompt for the password (no terminal?); use --password-stdin")
    };
    let first = prompt(&format!("New password for {name}: "))?;
    let second = prompt("Repeat it: ")?;
    if first != second {
        bail!("the two passwords differ; nothing changed");
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_comes_from_the_option_or_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let explicit = users_file(Some(PathBuf::from("/x/u.toml")), None).unwrap();
        assert_eq!(explicit, PathBuf::from("/x/u.toml"));

        let config = dir.path().join("maschera.toml");
        std::fs::write(
            &config,
            "[listen]\naddress = \"x\"\n[users]\nfile = \"users.toml\"\n",
        )
        .unwrap();
        assert_eq!(
            users_file(None, Some(&config)).unwrap(),
            dir.path().join("users.toml")
        );
        std::fs::write(&config, "[users]\nfile = \"/etc/maschera/users.toml\"\n").unwrap();
        assert_eq!(
            users_file(None, Some(&config)).unwrap(),
            PathBuf::from("/etc/maschera/users.toml")
        );
        std::fs::write(&config, "[users]\n").unwrap();
        let err = users_file(None, Some(&config)).unwrap_err().to_string();
        assert!(
            err.contains("maschera.toml") && err.contains("[users]"),
            "{err}"
        );
        assert!(users_file(None, None).is_err());
    }

    #[test]
    fn attributes_parse_as_key_value() {
        assert_eq!(
            parse_attribute("region=north"),
            Ok(("region".into(), "north".into()))
        );
        assert_eq!(parse_attribute("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_attribute("region").is_err());
        assert!(parse_attribute("=x").is_err());
    }
}
