//! Name hints: what a column's or a table's name says about the personal data it holds (English,
//! Italian, German, French and Spanish names, snake_case or camelCase). Strong hints classify on their
//! own; weak hints (a city, a gender) are only suggested, since they identify nobody alone, unless the
//! table holds people (see `propose`). Not for: content (see `detect`) or types (see `propose`).

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

const ID: Category = Category::Identifying;
const CONTACT: Category = Category::Contact;
const NATIONAL: Category = Category::NationalIdentifier;
const FINANCIAL: Category = Category::Financial;
const LOCATION: Category = Category::Location;
const TEXT: Category = Category::FreeText;
const SPECIAL: Category = Category::SpecialCategory;
const CRIMINAL: Category = Category::Criminal;
const STRONG: Strength = Strength::Strong;
const WEAK: Strength = Strength::Weak;

/// Rules in order: the first whose words (space-separated) all appear in the name wins. English,
/// Italian, German, French and Spanish names.
const COLUMN_RULES: &[(&str, Category, Strength)] = &[
    ("codice fiscale", NATIONAL, STRONG),
    ("tax code", NATIONAL, STRONG),
    ("tax id", NATIONAL, STRONG),
    ("taxid", NATIONAL, STRONG),
    ("fiscal code", NATIONAL, STRONG),
    ("ssn", NATIONAL, STRONG),
    ("social security", NATIONAL, STRONG),
    ("securite sociale", NATIONAL, STRONG),
    ("sécurité sociale", NATIONAL, STRONG),
    ("sozialversicherungsnummer", NATIONAL, STRONG),
    ("steuernummer", NATIONAL, STRONG),
    ("steuer id", NATIONAL, STRONG),
    ("steueridentifikationsnummer", NATIONAL, STRONG),
    ("personalausweis", NATIONAL, STRONG),
    ("national id", NATIONAL, STRONG),
    ("national insurance", NATIONAL, STRONG),
    ("identity card", NATIONAL, STRONG),
    ("id card", NATIONAL, STRONG),
    ("carta identita", NATIONAL, STRONG),
    ("passport", NATIONAL, STRONG),
    ("passaporto", NATIONAL, STRONG),
    ("pasaporte", NATIONAL, STRONG),
    ("reisepass", NATIONAL, STRONG),
    ("dni", NATIONAL, STRONG),
    ("nie", NATIONAL, STRONG),
    ("nif", NATIONAL, STRONG),
    ("nir", NATIONAL, STRONG),
    ("nss", NATIONAL, STRONG),
    ("insee", NATIONAL, STRONG),
    ("driver license", NATIONAL, STRONG),
    ("driving licence", NATIONAL, STRONG),
    ("iban", FINANCIAL, STRONG),
    ("account number", FINANCIAL, STRONG),
    ("bank account", FINANCIAL, STRONG),
    ("kontonummer", FINANCIAL, STRONG),
    ("card number", FINANCIAL, STRONG),
    ("credit card", FINANCIAL, STRONG),
    ("salary", FINANCIAL, STRONG),
    ("stipendio", FINANCIAL, STRONG),
    ("gehalt", FINANCIAL, STRONG),
    ("salaire", FINANCIAL, STRONG),
    ("salario", FINANCIAL, STRONG),
    ("income", FINANCIAL, STRONG),
    ("email", CONTACT, STRONG),
    ("emails", CONTACT, STRONG),
    ("mail", CONTACT, STRONG),
    ("courriel", CONTACT, STRONG),
    ("correo", CONTACT, STRONG),
    ("phone", CONTACT, STRONG),
    ("phones", CONTACT, STRONG),
    ("telephone", CONTACT, STRONG),
    ("téléphone", CONTACT, STRONG),
    ("telefon", CONTACT, STRONG),
    ("telefono", CONTACT, STRONG),
    ("teléfono", CONTACT, STRONG),
    ("mobile", CONTACT, STRONG),
    ("cellphone", CONTACT, STRONG),
    ("cellulare", CONTACT, STRONG),
    ("handy", CONTACT, STRONG),
    ("movil", CONTACT, STRONG),
    ("móvil", CONTACT, STRONG),
    ("portable", CONTACT, STRONG),
    ("fax", CONTACT, STRONG),
    ("skype", CONTACT, STRONG),
    ("whatsapp", CONTACT, STRONG),
    ("telegram", CONTACT, STRONG),
    ("wechat", CONTACT, STRONG),
    ("viber", CONTACT, STRONG),
    ("icq", CONTACT, STRONG),
    ("jabber", CONTACT, STRONG),
    ("xmpp", CONTACT, STRONG),
    ("msn", CONTACT, STRONG),
    ("im handle", CONTACT, STRONG),
    ("im", CONTACT, STRONG),
    ("first name", ID, STRONG),
    ("firstname", ID, STRONG),
    ("last name", ID, STRONG),
    ("lastname", ID, STRONG),
    ("given name", ID, STRONG),
    ("family name", ID, STRONG),
    ("full name", ID, STRONG),
    ("fullname", ID, STRONG),
    ("display name", ID, STRONG),
    ("middle name", ID, STRONG),
    ("maiden name", ID, STRONG),
    ("contact name", ID, STRONG),
    ("customer name", ID, STRONG),
    ("person name", ID, STRONG),
    ("user name", ID, STRONG),
    ("username", ID, STRONG),
    ("surname", ID, STRONG),
    ("nome", ID, STRONG),
    ("cognome", ID, STRONG),
    ("nominativo", ID, STRONG),
    ("ragione sociale", ID, WEAK),
    ("vorname", ID, STRONG),
    ("nachname", ID, STRONG),
    ("familienname", ID, STRONG),
    ("prenom", ID, STRONG),
    ("prénom", ID, STRONG),
    ("nom famille", ID, STRONG),
    ("apellido", ID, STRONG),
    ("apellidos", ID, STRONG),
    ("object repr", ID, STRONG),
    ("birth", ID, STRONG),
    ("birthday", ID, STRONG),
    ("birthdate", ID, STRONG),
    ("dob", ID, STRONG),
    ("nascita", ID, STRONG),
    ("geburtsdatum", ID, STRONG),
    ("geburtstag", ID, STRONG),
    ("naissance", ID, STRONG),
    ("nacimiento", ID, STRONG),
    ("ip address", ID, STRONG),
    ("ip", ID, STRONG),
    ("ipaddress", ID, STRONG),
    ("remote addr", ID, STRONG),
    ("session data", ID, STRONG),
    ("po box", LOCATION, STRONG),
    ("pobox", LOCATION, STRONG),
    ("post office box", LOCATION, STRONG),
    ("postfach", LOCATION, STRONG),
    ("casella postale", LOCATION, STRONG),
    ("apartado", LOCATION, STRONG),
    ("boite postale", LOCATION, STRONG),
    ("street", LOCATION, STRONG),
    ("address", LOCATION, STRONG),
    ("addresses", LOCATION, STRONG),
    ("indirizzo", LOCATION, STRONG),
    ("adresse", LOCATION, STRONG),
    ("anschrift", LOCATION, STRONG),
    ("strasse", LOCATION, STRONG),
    ("straße", LOCATION, STRONG),
    ("direccion", LOCATION, STRONG),
    ("dirección", LOCATION, STRONG),
    ("latitude", LOCATION, STRONG),
    ("longitude", LOCATION, STRONG),
    ("geolocation", LOCATION, STRONG),
    ("notes", TEXT, STRONG),
    ("note", TEXT, STRONG),
    ("comment", TEXT, STRONG),
    ("comments", TEXT, STRONG),
    ("remarks", TEXT, STRONG),
    ("memo", TEXT, STRONG),
    ("body", TEXT, STRONG),
    ("message", TEXT, STRONG),
    ("subject", TEXT, STRONG),
    ("description", TEXT, STRONG),
    ("feedback", TEXT, STRONG),
    ("bemerkung", TEXT, STRONG),
    ("commento", TEXT, STRONG),
    ("commentaire", TEXT, STRONG),
    ("comentario", TEXT, STRONG),
    ("search", TEXT, STRONG),
    ("searchable", TEXT, STRONG),
    ("diagnosis", SPECIAL, STRONG),
    ("health", SPECIAL, STRONG),
    ("medical", SPECIAL, STRONG),
    ("disability", SPECIAL, STRONG),
    ("religion", SPECIAL, STRONG),
    ("ethnicity", SPECIAL, STRONG),
    ("sexual orientation", SPECIAL, STRONG),
    ("political", SPECIAL, STRONG),
    ("biometric", SPECIAL, STRONG),
    ("genetic", SPECIAL, STRONG),
    ("offence", CRIMINAL, STRONG),
    ("offense", CRIMINAL, STRONG),
    ("conviction", CRIMINAL, STRONG),
    ("criminal", CRIMINAL, STRONG),
    ("city", LOCATION, WEAK),
    ("citta", LOCATION, WEAK),
    ("città", LOCATION, WEAK),
    ("comune", LOCATION, WEAK),
    ("stadt", LOCATION, WEAK),
    ("wohnort", LOCATION, WEAK),
    ("ort", LOCATION, WEAK),
    ("ville", LOCATION, WEAK),
    ("ciudad", LOCATION, WEAK),
    ("localidad", LOCATION, WEAK),
    ("zip", LOCATION, WEAK),
    ("zipcode", LOCATION, WEAK),
    ("postcode", LOCATION, WEAK),
    ("postal code", LOCATION, WEAK),
    ("postalcode", LOCATION, WEAK),
    ("cap", LOCATION, WEAK),
    ("plz", LOCATION, WEAK),
    ("postleitzahl", LOCATION, WEAK),
    ("code postal", LOCATION, WEAK),
    ("codigo postal", LOCATION, WEAK),
    ("gender", ID, WEAK),
    ("sex", ID, WEAK),
    ("geschlecht", ID, WEAK),
    ("sexe", ID, WEAK),
    ("sesso", ID, WEAK),
    ("name", ID, WEAK),
    ("nom", ID, WEAK),
    ("nombre", ID, WEAK),
];

/// Words that make a name about something else than the personal value itself: `email_template`,
/// `phone_type`, `address_count`, `mail_server`, `notes_enabled`, `email_ssl_certfile`.
const QUALIFIERS: &[&str] = &[
    "count",
    "counter",
    "enabled",
    "disabled",
    "verified",
    "confirmed",
    "sent",
    "template",
    "templates",
    "format",
    "type",
    "kind",
    "status",
    "setting",
    "settings",
    "config",
    "configuration",
    "option",
    "options",
    "preference",
    "preferences",
    "host",
    "server",
    "port",
    "provider",
    "backend",
    "policy",
    "visibility",
    "required",
    "allowed",
    "length",
    "max",
    "min",
    "flag",
    "opt",
    "optin",
    "optout",
    "unsubscribed",
    "bounced",
    "campaign",
    "campaigns",
    // A file about the mailbox, not the address: `email_imail_ssl_certfile` (DjangoCRM).
    "file",
    "certfile",
    "keyfile",
    "path",
];

/// What a column's name says: the category, how much, and the rule's words (the evidence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameHint {
    pub category: Category,
    pub strength: Strength,
    /// The words of the rule that matched, e.g. `"first name"`.
    pub pattern: &'static str,
}

/// What a column's name says, if anything, with the rule that matched.
pub fn column_rule(column: &str) -> Option<NameHint> {
    let words = words(column);
    let rule = COLUMN_RULES
        .iter()
        .find(|(pattern, _, _)| pattern.split(' ').all(|n| words.iter().any(|w| w == n)))?;
    let qualified = words
        .iter()
        .any(|w| QUALIFIERS.contains(&w.as_str()) && !rule.0.split(' ').any(|p| p == w));
    (!qualified).then_some(NameHint {
        category: rule.1,
        strength: rule.2,
        pattern: rule.0,
    })
}

/// What a column's name says, if anything.
pub fn column_hint(column: &str) -> Option<(Category, Strength)> {
    column_rule(column).map(|h| (h.category, h.strength))
}

/// A name that is a person's whole name on a table of people (`name`, `nome`, `nom`, `nombre`).
pub fn is_bare_name(column: &str) -> bool {
    matches!(words(column).as_slice(), [w] if ["name", "nome", "nom", "nombre"].contains(&w.as_str()))
}

/// Table names that say their rows are people (`customers`, `clienti`, `kunden`, `auth_user`).
const PERSON_TABLE_WORDS: &[&str] = &[
    "person",
    "persons",
    "people",
    "contact",
    "contacts",
    "customer",
    "customers",
    "client",
    "clients",
    "user",
    "users",
    "member",
    "members",
    "employee",
    "employees",
    "lead",
    "leads",
    "patient",
    "patients",
    "student",
    "students",
    "subscriber",
    "subscribers",
    "candidate",
    "candidates",
    "applicant",
    "applicants",
    "guest",
    "guests",
    "author",
    "authors",
    "profile",
    "profiles",
    "cliente",
    "clienti",
    "clientes",
    "contatto",
    "contatti",
    "contacto",
    "contactos",
    "persona",
    "persone",
    "personas",
    "utente",
    "utenti",
    "usuario",
    "usuarios",
    "dipendente",
    "dipendenti",
    "kunde",
    "kunden",
    "benutzer",
    "mitglied",
    "mitglieder",
    "personne",
    "personnes",
    "utilisateur",
    "utilisateurs",
    "adherent",
    "adherents",
];

/// Whether a table's name says its rows are people.
pub fn is_person_table(table: &str) -> bool {
    words(table)
        .iter()
        .any(|w| PERSON_TABLE_WORDS.contains(&w.as_str()))
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
            "email_imail_ssl_certfile",
            "email_imail_ssl_keyfile",
            "email_template_path",
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
