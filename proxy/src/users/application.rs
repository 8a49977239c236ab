//! An application user's bounds, as the users file keeps them (`[users.NAME] application = { roles,
//! attributes, keys }`): the roles it may act as for an end user, the attribute values it may assert
//! (or "users-file": the end user's own), the keys its tokens may be signed with. Read, checked and
//! written here with the rest of the users file.
//!
//! Not for: admitting an end user within these bounds (see `end_user::application`).

use super::is_identifier;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The bounds of one application user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// The roles of the policy it may act as for an end user.
    pub roles: Vec<String>,
    /// Which attribute values it may assert (default: only those of the users file).
    #[serde(default)]
    pub attributes: AttributeBounds,
    /// The `kid`s of `[end_users] keys` its tokens may be signed with (empty: any of them).
    #[serde(default)]
    pub keys: Vec<String>,
}

/// Where an end user's attributes come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawBounds")]
pub enum AttributeBounds {
    /// `"users-file"`: from the end user's entry of the users file; a token asserting other
    /// attributes is refused.
    #[default]
    UsersFile,
    /// From the token, each value one of those listed for its attribute (an attribute not listed
    /// may not be asserted); a token asserting none takes the users file's.
    Values(BTreeMap<String, Vec<String>>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawBounds {
    Text(String),
    Values(BTreeMap<String, Vec<String>>),
}

impl TryFrom<RawBounds> for AttributeBounds {
    type Error = String;

    fn try_from(raw: RawBounds) -> Result<Self, String> {
        match raw {
            RawBounds::Text(text) if text == "users-file" => Ok(AttributeBounds::UsersFile),
            RawBounds::Text(_) => {
                Err("attributes is \"users-file\" or a table of allowed values".into())
            }
            RawBounds::Values(values) => Ok(AttributeBounds::Values(values)),
        }
    }
}

impl Application {
    /// The rules of the users file: roles and attribute names are identifiers.
    pub fn check(&self) -> Result<(), String> {
        if self.roles.is_empty() {
            return Err("an application needs at least one role in application.roles".into());
        }
        if let Some(role) = self.roles.iter().find(|r| !is_identifier(r)) {
            return Err(format!(
                "application role {role:?} must be a lower-case identifier"
            ));
        }
        if let AttributeBounds::Values(values) = &self.attributes
            && let Some(key) = values.keys().find(|k| !is_identifier(k))
        {
            return Err(format!(
                "application attribute {key:?} must be a lower-case identifier"
            ));
        }
        Ok(())
    }

    /// The inline TOML table the users file keeps it in.
    pub fn to_toml(&self, string: impl Fn(&str) -> String) -> String {
        let list = |items: &[String]| {
            let items: Vec<String> = items.iter().map(|i| string(i)).collect();
            format!("[{}]", items.join(", "))
        };
        let attributes = match &self.attributes {
            AttributeBounds::UsersFile => string("users-file"),
            AttributeBounds::Values(values) => {
                let entries: Vec<String> = values
                    .iter()
                    .map(|(key, values)| format!("{key} = {}", list(values)))
                    .collect();
                format!("{{ {} }}", entries.join(", "))
            }
        };
        format!(
            "{{ roles = {}, attributes = {attributes}, keys = {} }}",
            list(&self.roles),
            list(&self.keys)
        )
    }
}
