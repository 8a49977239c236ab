//! Role templates for `maschera discover --template`: the roles a proposed policy starts with (a generic
//! `reader`, or a CRM's sales, support and analyst) and the action each gives a column found by
//! discovery. Every action keeps the relation's shape (`null`, masks, `year`, `pseudonym`, never `drop`;
//! the roles have `dropped_columns = "null"`), since ORMs select every mapped column; JSON documents get
//! `json.redact`, which keeps them valid. Not for: finding the columns (see
//! `propose`) or validating the result (`maschera policy check` does).

use super::propose::{Finding, Holds};
use policy::access::Category;
use policy::action::TypeFamily;
use policy::framework::fits_json_mask;

/// The templates `--template` accepts (see `discover_cmd` for their names on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Template {
    /// A data protection officer (unrestricted) and one restricted `reader` that sees personal data
    /// masked.
    #[default]
    Reader,
    /// A data protection officer and a CRM's `sales`, `support` and `analyst` roles.
    Crm,
}

/// What a restricted role of a template is allowed to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Keys and consent records plain, names to an initial, e-mails and phones masked, birth dates to
    /// the year, free text redacted, the rest NULL.
    Reader,
    /// Its customers' data plain, national identifiers masked, birth dates to the year.
    Sales,
    /// Like `Reader`, without birth dates.
    Support,
    /// Keys pseudonymised, birth dates to the year, every other personal value NULL.
    Analyst,
}

/// One role of a template.
#[derive(Debug, Clone, Copy)]
pub struct RoleTemplate {
    pub name: &'static str,
    pub description: &'static str,
    pub purpose: &'static str,
    pub lawful_basis: &'static str,
    /// `None`: an unrestricted role.
    pub profile: Option<Profile>,
}

const DPO: RoleTemplate = RoleTemplate {
    name: "dpo",
    description: "Data protection officer",
    purpose: "Oversee processing and answer data subject requests",
    lawful_basis: "Legal obligation, GDPR Art. 6(1)(c)",
    profile: None,
};

impl Template {
    /// The roles of the template, the unrestricted one first.
    pub fn roles(self) -> &'static [RoleTemplate] {
        match self {
            Template::Reader => &[
                DPO,
                RoleTemplate {
                    name: "reader",
                    description: "Reads the application's data with personal data masked",
                    purpose: "Day-to-day work that needs no personal data in clear (review)",
                    lawful_basis: "Legitimate interests, GDPR Art. 6(1)(f) (review)",
                    profile: Some(Profile::Reader),
                },
            ],
            Template::Crm => &[
                DPO,
                RoleTemplate {
                    name: "sales",
                    description: "Sales representatives",
                    purpose: "Manage customers and deals",
                    lawful_basis: "Contract, GDPR Art. 6(1)(b)",
                    profile: Some(Profile::Sales),
                },
                RoleTemplate {
                    name: "support",
                    description: "Customer support",
                    purpose: "Answer customer requests",
                    lawful_basis: "Contract, GDPR Art. 6(1)(b)",
                    profile: Some(Profile::Support),
                },
                RoleTemplate {
                    name: "analyst",
                    description: "Business analysts",
                    purpose: "Aggregate reporting without identifying customers",
                    lawful_basis: "Legitimate interests, GDPR Art. 6(1)(f)",
                    profile: Some(Profile::Analyst),
                },
            ],
        }
    }
}

/// The action `profile` gives a column found by discovery (`None`: shown as stored), for a column of
/// type family `family`. Secrets are NULL for every restricted role. `"null"` is what the draft leaves
/// unsaid: its roles have `dropped_columns = "null"`, so a personal column a rule does not show is NULL.
pub fn action(profile: Profile, finding: &Finding, family: TypeFamily) -> Option<&'static str> {
    if finding.secret.is_some() {
        return Some("null");
    }
    let text = family == TypeFamily::Text;
    let dated = matches!(family, TypeFamily::Date | TypeFamily::Timestamp);
    let masked = |mask: &'static str| Some(if text { mask } else { "null" });
    use Profile::*;
    match (finding.category, finding.holds, profile) {
        (Category::ConsentRecord, _, _) => None,
        (_, Holds::Key, Analyst) => Some("pseudonym"),
        (_, Holds::Key, _) => None,
        (_, Holds::BirthDate, Support) => Some("null"),
        (_, Holds::BirthDate, _) => Some(if dated { "year" } else { "null" }),
        (Category::SpecialCategory | Category::Criminal, _, _) => Some("null"),
        (_, _, Analyst) => Some("null"),
        // A history or audit document: its keys and shape kept (the application's pages parse it),
        // the personal values inside redacted.
        (_, _, Reader | Support) if finding.json && fits_json_mask(&finding.type_name) => {
            Some("json.redact")
        }
        (_, _, Sales) => match finding.category {
            Category::NationalIdentifier => masked("mask.last(4)"),
            Category::Identifying if finding.holds == Holds::Other => Some("null"),
            _ => None,
        },
        (_, Holds::PersonName, _) => masked("mask.initial"),
        (_, Holds::Email, _) => masked("mask.email"),
        (_, Holds::Phone, _) => masked("mask.last(3)"),
        (Category::FreeText, _, _) => masked("redact"),
        _ => Some("null"),
    }
}
