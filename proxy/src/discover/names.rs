//! Name hints: what a column's or a table's name says about the personal data it holds (English and
//! Italian names, snake_case or camelCase). Strong hints classify on their own; weak hints (a city, a
//! gender) are only suggested, since they identify nobody alone. Not for: content (see `detect`).

use policy::access::Category;

/// How much a name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strength {
    /// Personal on its own (`email`, `tax_code`).
    Strong,
    /// Personal only together with other data (`city`, `gender`): proposed as a comment.
    Weak,
}

/// Words of a name, lower case: `birthDate`, `birth_date` and `BIRTH-DATE` all give `["birth", "date"]`.
pub fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Rules in order: the first whose words all appear in the name wins.
const COLUMN_RULES: &[(&[&str], Category, Strength)] = &[
    (
        &["codice", "fiscale"],
        Category::NationalIdentifier,
        Strength::Strong,
    ),
    (
        &["tax", "code"],
        Category::NationalIdentifier,
        Strength::Strong,
    ),
    (
        &["tax", "id"],
        Category::NationalIdentifier,
        Strength::Strong,
    ),
    (
        &["fiscal", "code"],
        Category::NationalIdentifier,
        Strength::Strong,
    ),
    (&["ssn"], Category::NationalIdentifier, Strength::Strong),
    (
        &["social", "security"],
        Category::NationalIdentifier,
        Strength::Strong,
    ),
    (
        &["national", "id"],
        Category::NationalIdentifier,
        Strength::Strong,
    ),
    (
        &["passport"],
        Category::NationalIdentifier,
        Strength::Strong,
    ),
    (&["dni"], Category::NationalIdentifier, Strength::Strong),
    (&["nie"], Category::NationalIdentifier, Strength::Strong),
    (&["nif"], Category::NationalIdentifier, Strength::Strong),
    (&["nir"], Category::NationalIdentifier, Strength::Strong),
    (
        &["driver", "license"],
        Category::NationalIdentifier,
        Strength::Strong,
    ),
    (&["iban"], Category::Financial, Strength::Strong),
    (
        &["account", "number"],
        Category::Financial,
        Strength::Strong,
    ),
    (&["card", "number"], Category::Financial, Strength::Strong),
    (&["credit", "card"], Category::Financial, Strength::Strong),
    (&["salary"], Category::Financial, Strength::Strong),
    (&["income"], Category::Financial, Strength::Strong),
    (&["email"], Category::Contact, Strength::Strong),
    (&["mail"], Category::Contact, Strength::Strong),
    (&["phone"], Category::Contact, Strength::Strong),
    (&["telephone"], Category::Contact, Strength::Strong),
    (&["mobile"], Category::Contact, Strength::Strong),
    (&["cellphone"], Category::Contact, Strength::Strong),
    (&["telefono"], Category::Contact, Strength::Strong),
    (&["cellulare"], Category::Contact, Strength::Strong),
    (&["fax"], Category::Contact, Strength::Strong),
    (&["first", "name"], Category::Identifying, Strength::Strong),
    (&["firstname"], Category::Identifying, Strength::Strong),
    (&["last", "name"], Category::Identifying, Strength::Strong),
    (&["lastname"], Category::Identifying, Strength::Strong),
    (&["given", "name"], Category::Identifying, Strength::Strong),
    (&["family", "name"], Category::Identifying, Strength::Strong),
    (&["full", "name"], Category::Identifying, Strength::Strong),
    (&["middle", "name"], Category::Identifying, Strength::Strong),
    (&["maiden", "name"], Category::Identifying, Strength::Strong),
    (&["user", "name"], Category::Identifying, Strength::Strong),
    (&["username"], Category::Identifying, Strength::Strong),
    (&["surname"], Category::Identifying, Strength::Strong),
    (&["nome"], Category::Identifying, Strength::Strong),
    (&["cognome"], Category::Identifying, Strength::Strong),
    (&["birth"], Category::Identifying, Strength::Strong),
    (&["birthday"], Category::Identifying, Strength::Strong),
    (&["birthdate"], Category::Identifying, Strength::Strong),
    (&["dob"], Category::Identifying, Strength::Strong),
    (&["nascita"], Category::Identifying, Strength::Strong),
    (&["ip", "address"], Category::Identifying, Strength::Strong),
    (&["ip"], Category::Identifying, Strength::Strong),
    (&["street"], Category::Location, Strength::Strong),
    (&["address"], Category::Location, Strength::Strong),
    (&["indirizzo"], Category::Location, Strength::Strong),
    (&["latitude"], Category::Location, Strength::Strong),
    (&["longitude"], Category::Location, Strength::Strong),
    (&["geolocation"], Category::Location, Strength::Strong),
    (&["notes"], Category::FreeText, Strength::Strong),
    (&["note"], Category::FreeText, Strength::Strong),
    (&["comment"], Category::FreeText, Strength::Strong),
    (&["comments"], Category::FreeText, Strength::Strong),
    (&["remarks"], Category::FreeText, Strength::Strong),
    (&["memo"], Category::FreeText, Strength::Strong),
    (&["body"], Category::FreeText, Strength::Strong),
    (&["message"], Category::FreeText, Strength::Strong),
    (&["subject"], Category::FreeText, Strength::Strong),
    (&["description"], Category::FreeText, Strength::Strong),
    (&["feedback"], Category::FreeText, Strength::Strong),
    (&["diagnosis"], Category::SpecialCategory, Strength::Strong),
    (&["health"], Category::SpecialCategory, Strength::Strong),
    (&["medical"], Category::SpecialCategory, Strength::Strong),
    (&["disability"], Category::SpecialCategory, Strength::Strong),
    (&["religion"], Category::SpecialCategory, Strength::Strong),
    (&["ethnicity"], Category::SpecialCategory, Strength::Strong),
    (
        &["sexual", "orientation"],
        Category::SpecialCategory,
        Strength::Strong,
    ),
    (&["political"], Category::SpecialCategory, Strength::Strong),
    (&["biometric"], Category::SpecialCategory, Strength::Strong),
    (&["genetic"], Category::SpecialCategory, Strength::Strong),
    (&["offence"], Category::Criminal, Strength::Strong),
    (&["offense"], Category::Criminal, Strength::Strong),
    (&["conviction"], Category::Criminal, Strength::Strong),
    (&["criminal"], Category::Criminal, Strength::Strong),
    (&["city"], Category::Location, Strength::Weak),
    (&["zip"], Category::Location, Strength::Weak),
    (&["postcode"], Category::Location, Strength::Weak),
    (&["postal", "code"], Category::Location, Strength::Weak),
    (&["cap"], Category::Location, Strength::Weak),
    (&["gender"], Category::Identifying, Strength::Weak),
    (&["sex"], Category::Identifying, Strength::Weak),
    (&["name"], Category::Identifying, Strength::Weak),
];

/// What a column's name says, if anything.
pub fn column_hint(column: &str) -> Option<(Category, Strength)> {
    let words = words(column);
    COLUMN_RULES
        .iter()
        .find(|(needed, _, _)| needed.iter().all(|n| words.iter().any(|w| w == n)))
        .map(|(_, category, strength)| (*category, *strength))
}

const TABLE_RULES: &[(&[&str], Category)] = &[
    (
        &[
            "health",
            "medical",
            "medicine",
            "clinical",
            "diagnosis",
            "diagnoses",
            "patient",
            "patients",
            "sanitari",
        ],
        Category::SpecialCategory,
    ),
    (
        &[
            "judicial",
            "criminal",
            "conviction",
            "convictions",
            "offence",
            "offences",
            "offense",
            "offenses",
            "penal",
        ],
        Category::Criminal,
    ),
];

/// A table whose name says it holds special-category (Art. 9) or criminal (Art. 10) data: every column
/// of it is personal data of that category.
pub fn table_hint(table: &str) -> Option<Category> {
    let words = words(table);
    TABLE_RULES
        .iter()
        .find(|(names, _)| words.iter().any(|w| names.contains(&w.as_str())))
        .map(|(_, c)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_any_case() {
        assert_eq!(words("birthDate"), ["birth", "date"]);
        assert_eq!(words("BIRTH_DATE"), ["birth", "date"]);
        assert_eq!(words("e-mail"), ["e", "mail"]);
        assert_eq!(words("contactEmail2"), ["contact", "email2"]);
    }

    #[test]
    fn personal_names() {
        let strong = |c: &str| {
            column_hint(c)
                .filter(|(_, s)| *s == Strength::Strong)
                .map(|(cat, _)| cat)
        };
        assert_eq!(strong("first_name"), Some(Category::Identifying));
        assert_eq!(strong("lastName"), Some(Category::Identifying));
        assert_eq!(strong("email"), Some(Category::Contact));
        assert_eq!(strong("e_mail"), Some(Category::Contact));
        assert_eq!(strong("phone"), Some(Category::Contact));
        assert_eq!(strong("tax_code"), Some(Category::NationalIdentifier));
        assert_eq!(strong("codice_fiscale"), Some(Category::NationalIdentifier));
        assert_eq!(strong("iban"), Some(Category::Financial));
        assert_eq!(strong("birth_date"), Some(Category::Identifying));
        assert_eq!(strong("data_nascita"), Some(Category::Identifying));
        assert_eq!(strong("street_address"), Some(Category::Location));
        assert_eq!(strong("notes"), Some(Category::FreeText));
        assert_eq!(
            column_hint("city"),
            Some((Category::Location, Strength::Weak))
        );
    }

    #[test]
    fn business_names_say_nothing() {
        for column in [
            "id",
            "amount",
            "status",
            "stage",
            "created_at",
            "closed_at",
            "purpose",
            "channel",
            "region",
            "source",
            "price",
            "quantity",
            "sku",
            "total",
            "currency",
            "occurred_at",
            "granted_at",
        ] {
            assert_eq!(column_hint(column), None, "{column}");
        }
    }

    #[test]
    fn special_tables() {
        assert_eq!(
            table_hint("health_records"),
            Some(Category::SpecialCategory)
        );
        assert_eq!(table_hint("MedicalVisits"), Some(Category::SpecialCategory));
        assert_eq!(table_hint("judicial_records"), Some(Category::Criminal));
        assert_eq!(table_hint("contacts"), None);
        assert_eq!(table_hint("deals"), None);
    }
}
