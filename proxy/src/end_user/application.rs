//! Admitting an end user: [`Application::admit`] turns a verified token into the end user a
//! statement is served as, within the application's bounds from the users file
//! (`users::application`), or refuses it (42501) saying which bound it broke.
//!
//! Not for: the bounds themselves (see `users::application`), verifying the token (see `token`) or
//! serving statements (see `hook`).

use super::token::VerifiedToken;
use crate::users::UserStore;
use crate::users::application::{Application, AttributeBounds};
use std::collections::BTreeMap;
use thiserror::Error;

/// The person a statement is served for: who, as which role, with which attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndUser {
    pub name: String,
    pub role: String,
    pub attributes: BTreeMap<String, String>,
    /// The token's `jti` or digest (for the access log).
    pub token_id: String,
    /// When the token expires (seconds since the epoch).
    pub expires: u64,
}

/// Why a verified token is outside the application's bounds (SQLSTATE 42501).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BoundsError {
    #[error("the end-user token is signed with a key this application may not use")]
    Key,
    #[error("the end-user token asserts a role this application may not act as")]
    Role,
    #[error("the end-user token asserts no role and its end user is not in the users file")]
    UnknownEndUser,
    #[error("the end-user token's end user is an application user")]
    Application,
    #[error(
        "the end-user token asserts attributes, but this application's come from the users file"
    )]
    AttributesFromUsersFile,
    #[error("the end-user token asserts an attribute value this application may not assert")]
    Attribute,
}

impl BoundsError {
    pub fn sqlstate(&self) -> &'static str {
        "42501"
    }

    pub fn label(&self) -> &'static str {
        match self {
            BoundsError::Key => "key_not_allowed",
            BoundsError::Role => "role_not_allowed",
            BoundsError::UnknownEndUser => "unknown_end_user",
            BoundsError::Application => "application_as_end_user",
            BoundsError::AttributesFromUsersFile | BoundsError::Attribute => {
                "attribute_not_allowed"
            }
        }
    }
}

impl Application {
    /// The end user `token` names, within this application's bounds.
    pub fn admit(&self, token: &VerifiedToken, users: &UserStore) -> Result<EndUser, BoundsError> {
        if !self.keys.is_empty() && !self.keys.contains(&token.key) {
            return Err(BoundsError::Key);
        }
        if users.application(&token.end_user).is_some() {
            return Err(BoundsError::Application);
        }
        let listed = users.get(&token.end_user);
        let role = match (&token.role, listed) {
            (Some(role), _) => role.clone(),
            (None, Some(user)) => user.role.clone(),
            (None, None) => return Err(BoundsError::UnknownEndUser),
        };
        if !self.roles.contains(&role) {
            return Err(BoundsError::Role);
        }
        let from_file = || listed.map(|u| u.attributes.clone()).unwrap_or_default();
        let attributes = match &self.attributes {
            AttributeBounds::UsersFile => {
                let attributes = from_file();
                if !token.attributes.is_empty() && token.attributes != attributes {
                    return Err(BoundsError::AttributesFromUsersFile);
                }
                attributes
            }
            AttributeBounds::Values(_) if token.attributes.is_empty() => from_file(),
            AttributeBounds::Values(allowed) => {
                let within = token.attributes.iter().all(|(key, value)| {
                    allowed
                        .get(key)
                        .is_some_and(|values| values.contains(value))
                });
                if !within {
                    return Err(BoundsError::Attribute);
                }
                token.attributes.clone()
            }
        };
        Ok(EndUser {
            name: token.end_user.clone(),
            role,
            attributes,
            token_id: token.id.clone(),
            expires: token.expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::scram::Verifier;
    use crate::users::User;

    fn users() -> UserStore {
        let mut store = UserStore::default();
        for (name, role, region) in [("sam", "sales", "north"), ("tom", "support", "")] {
            let attributes = if region.is_empty() {
                BTreeMap::new()
            } else {
                BTreeMap::from([("region".to_string(), region.to_string())])
            };
            store
                .insert(User {
                    name: name.into(),
                    role: role.into(),
                    attributes,
                    verifier: Verifier::from_password("x", 1),
                })
                .unwrap();
        }
        store
    }

    fn token(sub: &str, role: Option<&str>, attributes: &[(&str, &str)]) -> VerifiedToken {
        VerifiedToken {
            end_user: sub.into(),
            role: role.map(str::to_owned),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key: "demo".into(),
            expires: 2_000_000_000,
            id: "sha256:00".into(),
        }
    }

    #[test]
    fn end_users_come_from_the_token_or_the_users_file_within_bounds() {
        let users = users();
        let from_file = Application {
            roles: vec!["sales".into(), "support".into()],
            attributes: AttributeBounds::UsersFile,
            keys: vec![],
        };
        let sam = from_file.admit(&token("sam", None, &[]), &users).unwrap();
        assert_eq!(
            (sam.role.as_str(), sam.attributes["region"].as_str()),
            ("sales", "north")
        );
        let tom = from_file
            .admit(&token("tom", Some("support"), &[]), &users)
            .unwrap();
        assert_eq!(tom.role, "support");
        let cases = [
            (token("sam", Some("dpo"), &[]), BoundsError::Role),
            (token("nobody", None, &[]), BoundsError::UnknownEndUser),
            (
                token("sam", None, &[("region", "south")]),
                BoundsError::AttributesFromUsersFile,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(from_file.admit(&token, &users), Err(expected.clone()));
            assert_eq!(expected.sqlstate(), "42501");
        }
        let values = Application {
            roles: vec!["sales".into()],
            attributes: AttributeBounds::Values(BTreeMap::from([(
                "region".into(),
                vec!["north".into(), "south".into()],
            )])),
            keys: vec!["other".into()],
        };
        assert_eq!(
            values.admit(&token("sam", None, &[]), &users),
            Err(BoundsError::Key)
        );
        let values = Application {
            keys: vec!["demo".into()],
            ..values
        };
        let ann = values
            .admit(&token("ann", Some("sales"), &[("region", "south")]), &users)
            .unwrap();
        assert_eq!(ann.attributes["region"], "south");
        for attributes in [[("region", "west")], [("team", "a")]] {
            let token = token("ann", Some("sales"), &attributes);
            assert_eq!(values.admit(&token, &users), Err(BoundsError::Attribute));
        }
    }
}
