//! Content detectors: pure functions that say whether one sampled value (as text) is an e-mail address,
//! a phone number, a street address, an IPv4 or IPv6 address, a validated national identifier or IBAN,
//! or free text quoting any of these; and whether a set of dates looks like dates of birth. Each is
//! cheap and conservative: ids, amounts, status words and timestamps must not match. Not for: column
//! names (see `names`) or deciding the category of a column (see `propose`).

use policy::access::Category;

use super::national_id::{is_codice_fiscale, is_french_nir, is_iban, is_spanish_dni};

/// What a value was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Email,
    Phone,
    CodiceFiscale,
    SpanishDni,
    FrenchNir,
    Iban,
    StreetAddress,
    IpAddress,
    /// Text of several words (prose), whatever it holds.
    FreeText,
}

impl Kind {
    /// How the output names the matches, e.g. "e-mail addresses".
    pub fn label(self) -> &'static str {
        match self {
            Kind::Email => "e-mail addresses",
            Kind::Phone => "phone numbers",
            Kind::CodiceFiscale => "codici fiscali",
            Kind::SpanishDni => "Spanish DNI/NIE",
            Kind::FrenchNir => "French NIR numbers",
            Kind::Iban => "IBANs",
            Kind::StreetAddress => "street addresses",
            Kind::IpAddress => "IP addresses",
            Kind::FreeText => "free text",
        }
    }

    /// The policy category of values of this kind.
    pub fn category(self) -> Category {
        match self {
            Kind::Email | Kind::Phone => Category::Contact,
            Kind::CodiceFiscale | Kind::SpanishDni | Kind::FrenchNir => {
                Category::NationalIdentifier
            }
            Kind::Iban => Category::Financial,
            Kind::StreetAddress => Category::Location,
            Kind::IpAddress => Category::Identifying,
            Kind::FreeText => Category::FreeText,
        }
    }
}

/// `local@domain.tld` with a plausible local part and domain.
pub fn is_email(value: &str) -> bool {
    let v = value.trim();
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-'".contains(c))
        && !local.starts_with('.');
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    local_ok && domain_ok
}

/// A phone number: international (`+` or `00` then 8 to 15 digits) or Italian national (a mobile
/// `3xx` with 9-10 digits, a landline `0x` with 6-11 digits), with spaces, dots, dashes or parentheses
/// between groups. Plain numbers without such a shape (ids, amounts), dates and times do not match.
pub fn is_phone(value: &str) -> bool {
    let v = value.trim();
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_digit() || " .-()/+".contains(c))
    {
        return false;
    }
    if v.chars().skip(1).any(|c| c == '+') {
        return false;
    }
    let digits: String = v.chars().filter(char::is_ascii_digit).collect();
    if let Some(rest) = v.strip_prefix('+') {
        return rest.starts_with(|c: char| c.is_ascii_digit() && c != '0')
            && (8..=15).contains(&digits.len());
    }
    if let Some(rest) = digits.strip_prefix("00") {
        return (8..=15).contains(&rest.len()) && !rest.starts_with('0');
    }
    if looks_like_date(v) {
        return false;
    }
    (digits.starts_with('3') && (9..=10).contains(&digits.len()))
        || (digits.starts_with('0') && (6..=11).contains(&digits.len()) && v.len() > digits.len())
}

/// `2024-01-31`, `31/01/2024`, `31.01.2024` shapes (digits grouped 4-2-2 or 2-2-4).
fn looks_like_date(v: &str) -> bool {
    let groups: Vec<usize> = v.split(['-', '/', '.']).map(str::len).collect();
    groups == [4, 2, 2] || groups == [2, 2, 4]
}

const STREET_WORDS: &[&str] = &[
    "via",
    "viale",
    "piazza",
    "piazzale",
    "corso",
    "vicolo",
    "largo",
    "strada",
    "contrada",
    "borgo",
    "calle",
    "avenida",
    "plaza",
    "rue",
    "boulevard",
    "avenue",
    "straße",
    "strasse",
    "street",
    "st",
    "road",
    "rd",
    "avenue",
    "ave",
    "lane",
    "drive",
    "way",
    "square",
];

/// A street address: a street word (`Via`, `Piazza`, `Rue`, `Street`, ...) and a house number, as in
/// `Via Garibaldi 12` or `221B Baker Street`.
pub fn is_street_address(value: &str) -> bool {
    let v = value.trim();
    if v.len() > 120 {
        return false;
    }
    let words: Vec<String> = v
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .map(|w| w.trim_end_matches('.').to_lowercase())
        .collect();
    if words.len() < 2 || words.len() > 8 {
        return false;
    }
    let is_number = |w: &String| {
        w.len() <= 5
            && w.starts_with(|c: char| c.is_ascii_digit())
            && w.chars().filter(char::is_ascii_digit).count() <= 4
    };
    let is_street = |w: &String| STREET_WORDS.contains(&w.as_str());
    // The address is the whole value: it opens with the street word (`Via Roma 1`) or the house
    // number (`12 Rue de Rivoli`, `221B Baker Street`).
    (is_street(&words[0]) && words[1..].iter().any(is_number))
        || (is_number(&words[0]) && words[1..].iter().any(is_street))
}

/// A dotted IPv4 address.
pub fn is_ipv4(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts
            .iter()
            .all(|p| p.parse::<u16>().is_ok_and(|n| n <= 255))
}

/// An IPv4 or IPv6 address (of at least three groups: not `::` or `::1`), with or without a prefix
/// length (`10.0.0.0/8`, as `inet` prints networks).
pub fn is_ip(value: &str) -> bool {
    let v = value.trim();
    let address = v
        .split_once('/')
        .map_or(v, |(address, prefix)| match prefix.parse::<u8>() {
            Ok(n) if n <= 128 => address,
            _ => "",
        });
    is_ipv4(address)
        || (address.split(':').filter(|g| !g.is_empty()).count() >= 3
            && address.parse::<std::net::Ipv6Addr>().is_ok())
}

/// Prose: at least four words with letters, and at least 20 characters.
pub fn is_free_text(value: &str) -> bool {
    let v = value.trim();
    v.chars().count() >= 20
        && v.split_whitespace()
            .filter(|w| w.chars().any(char::is_alphabetic))
            .count()
            >= 4
}

/// The kinds one value is, whole (an e-mail column) — at most one structured kind, or free text.
pub fn classify_value(value: &str) -> Option<Kind> {
    let v = value.trim();
    if is_email(v) {
        Some(Kind::Email)
    } else if is_codice_fiscale(v) {
        Some(Kind::CodiceFiscale)
    } else if is_spanish_dni(v) {
        Some(Kind::SpanishDni)
    } else if is_iban(v) {
        Some(Kind::Iban)
    } else if is_french_nir(v) {
        Some(Kind::FrenchNir)
    } else if is_phone(v) {
        Some(Kind::Phone)
    } else if is_ip(v) {
        Some(Kind::IpAddress)
    } else if is_street_address(v) {
        Some(Kind::StreetAddress)
    } else if is_free_text(v) {
        Some(Kind::FreeText)
    } else {
        None
    }
}

/// The structured kinds quoted inside a text (an e-mail address or phone number in a note).
pub fn kinds_inside(text: &str) -> Vec<Kind> {
    let mut found = Vec::new();
    let mut add = |kind| {
        if !found.contains(&kind) {
            found.push(kind);
        }
    };
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || ",;:()[]<>\"".contains(c))
        .map(|t| t.trim_end_matches(['.', '!', '?']))
        .filter(|t| !t.is_empty())
        .collect();
    for token in &tokens {
        if is_email(token) {
            add(Kind::Email);
        } else if is_codice_fiscale(token) {
            add(Kind::CodiceFiscale);
        } else if is_iban(token) {
            add(Kind::Iban);
        } else if is_spanish_dni(token) {
            add(Kind::SpanishDni);
        } else if is_french_nir(token) {
            add(Kind::FrenchNir);
        } else if is_ip(token) {
            add(Kind::IpAddress);
        }
    }
    // Phone numbers span several tokens ("+39 347 1234567"): try runs of up to four tokens.
    'phones: for start in 0..tokens.len() {
        for len in (1..=4).rev() {
            if start + len <= tokens.len() && is_phone(&tokens[start..start + len].join(" ")) {
                let first = tokens[start];
                if first.starts_with('+') || first.starts_with("00") || first.len() >= 3 {
                    add(Kind::Phone);
                    break 'phones;
                }
            }
        }
    }
    if contains_street_address(text) {
        add(Kind::StreetAddress);
    }
    found
}

/// A street word followed within a few words by a house number.
fn contains_street_address(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.iter().enumerate().any(|(i, w)| {
        let word = w
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase();
        [
            "via", "viale", "piazza", "corso", "vicolo", "largo", "rue", "calle", "avenida",
        ]
        .contains(&word.as_str())
            && words[i + 1..].iter().take(4).any(|n| {
                let n = n.trim_end_matches([',', '.', ';']);
                !n.is_empty() && n.len() <= 4 && n.starts_with(|c: char| c.is_ascii_digit())
            })
    })
}

/// Whether dates (days since 1970-01-01, with `today` in the same unit) look like dates of birth: all
/// in the past, nearly all from 16 to 100 years ago, spread over decades (not a business period such
/// as the last few years of orders).
pub fn looks_like_birth_dates(days: &[i64], today: i64) -> bool {
    if days.len() < 10 {
        return false;
    }
    let years: Vec<f64> = days.iter().map(|d| (today - d) as f64 / 365.25).collect();
    let adult = years.iter().filter(|y| (16.0..=100.0).contains(*y)).count();
    let mean = years.iter().sum::<f64>() / years.len() as f64;
    let spread =
        (years.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / years.len() as f64).sqrt();
    years.iter().all(|y| *y >= 0.0) && adult * 10 >= years.len() * 9 && spread >= 8.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values that are not personal data and must match no detector.
    const NOT_PERSONAL: &[&str] = &[
        "1",
        "42",
        "123456",
        "3471234567890123",
        "1234.56",
        "50000.00",
        "-17",
        "0.5",
        "open",
        "closed",
        "won",
        "marketing",
        "email",
        "call",
        "north",
        "web_form",
        "2024-01-31",
        "31/01/2024",
        "2024-01-31 10:11:12+00",
        "10:11:12",
        "true",
        "f",
        "EUR",
        "INV-2024-000123",
        "v1.2.3",
        "550e8400-e29b-41d4-a716-446655440000",
        "Milano",
        "Reggio Calabria",
        "Invoice not received",
        "A1B2C3",
        "ORD-99812",
        "1.2.3",
    ];

    #[test]
    fn ids_amounts_status_words_and_timestamps_match_nothing() {
        for value in NOT_PERSONAL {
            assert_eq!(classify_value(value), None, "{value}");
            assert!(kinds_inside(value).is_empty(), "{value}");
        }
    }

    #[test]
    fn odd_text_never_panics() {
        for value in [
            "",
            " ",
            "é",
            "+",
            "@",
            "€€€€€€€€€€€€€€€",
            "2 55 08 é4 168 025 3",
            "Via 1",
            "x@é.it",
            "ñ@ñ",
            "00",
            "IT€0",
        ] {
            let _ = classify_value(value);
            let _ = kinds_inside(value);
        }
        let _ = kinds_inside(&"àè +39 ".repeat(200));
    }

    #[test]
    fn emails() {
        for ok in [
            "mario.rossi.12@example.it",
            "m.rossi+crm@mail.example.com",
            "o'neil@example.ie",
        ] {
            assert!(is_email(ok), "{ok}");
        }
        for no in [
            "mario@",
            "@example.it",
            "mario@example",
            "a@b.c",
            "not an email",
            "x@y..com",
            "a@b.12",
        ] {
            assert!(!is_email(no), "{no}");
        }
    }

    #[test]
    fn phones_italian_and_international() {
        for ok in [
            "+39 347 1234567",
            "+393471234567",
            "347 123 4567",
            "3471234567",
            "06 1234 5678",
            "0039 06 12345678",
            "+44 20 7946 0958",
            "+1 (555) 123-4567",
        ] {
            assert!(is_phone(ok), "{ok}");
        }
        for no in [
            "12345",
            "2024-01-31",
            "1234567890",
            "+0 123",
            "06",
            "0612345678",
            "3.5",
            "+39 12",
            "1+2",
        ] {
            assert!(!is_phone(no), "{no}");
        }
    }

    #[test]
    fn street_addresses() {
        for ok in [
            "Via Garibaldi 12",
            "Piazza della Libertà 3",
            "Corso Vittorio Emanuele II 118",
            "221B Baker Street",
            "12 Rue de Rivoli",
        ] {
            assert!(is_street_address(ok), "{ok}");
        }
        for no in [
            "Via Garibaldi",
            "Milano",
            "Street food festival",
            "12",
            "The way we work",
        ] {
            assert!(!is_street_address(no), "{no}");
        }
    }

    #[test]
    fn identifiers_are_recognised_by_their_checks() {
        assert_eq!(
            classify_value("RSSMRA85T10A562S"),
            Some(Kind::CodiceFiscale)
        );
        assert_eq!(
            classify_value("RSSMRA85T10A562T"),
            None,
            "a wrong check character is not a tax code"
        );
        assert_eq!(
            classify_value("IT60 X054 2811 1010 0000 0123 456"),
            Some(Kind::Iban)
        );
        assert_eq!(classify_value("12345678Z"), Some(Kind::SpanishDni));
        assert_eq!(
            classify_value("2 55 08 14 168 025 38"),
            Some(Kind::FrenchNir)
        );
        assert_eq!(classify_value("192.168.1.20"), Some(Kind::IpAddress));
        assert_eq!(classify_value("300.1.1.1"), None);
        assert_eq!(
            classify_value("2001:db8::8a2e:370:7334"),
            Some(Kind::IpAddress)
        );
        assert_eq!(classify_value("10.0.0.0/8"), Some(Kind::IpAddress));
        assert_eq!(classify_value("10:11:12"), None);
        assert_eq!(classify_value("::"), None);
    }

    #[test]
    fn free_text_and_what_it_quotes() {
        assert_eq!(
            classify_value("Called to discuss the renewal of the contract."),
            Some(Kind::FreeText)
        );
        assert_eq!(
            kinds_inside("Wants to be called back on +39 347 1234567."),
            vec![Kind::Phone]
        );
        assert_eq!(
            kinds_inside("Prefers e-mail, write to m.rossi.3@example.it."),
            vec![Kind::Email]
        );
        assert_eq!(
            kinds_inside("Moved to Via Roma 12, Milano; update the address."),
            vec![Kind::StreetAddress]
        );
        assert_eq!(
            kinds_inside("Paid with IT60X0542811101000000123456 yesterday"),
            vec![Kind::Iban]
        );
        assert!(kinds_inside("Order 123456 shipped on 2024-01-31, total 250.00 EUR").is_empty());
        assert!(kinds_inside("Asked for a quote on the premium plan.").is_empty());
    }

    #[test]
    fn birth_dates_versus_business_dates() {
        let today = 20_000;
        let births: Vec<i64> = (0..200).map(|i| today - 365 * 18 - i * 97).collect();
        assert!(looks_like_birth_dates(&births, today));
        let orders: Vec<i64> = (0..200).map(|i| today - i * 9).collect();
        assert!(
            !looks_like_birth_dates(&orders, today),
            "recent business dates"
        );
        let future: Vec<i64> = births.iter().map(|d| d + 365 * 60).collect();
        assert!(
            !looks_like_birth_dates(&future, today),
            "dates in the future"
        );
    }
}
