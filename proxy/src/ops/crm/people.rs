//! The people of the reference CRM: Italian names, unique e-mail addresses, +39 mobile numbers and
//! codici fiscali derived from the contact id (so uniqueness holds by construction), birth dates,
//! addresses and regions. Not for: the other tables' rows (see `tables`).

use super::rng::{Permutation, Rng};
use crate::ops::calendar::{civil_from_days, days_from_civil};
use crate::ops::discover::national_id::{CF_MONTHS, codice_fiscale_check_char};

const MALE_NAMES: &[&str] = &[
    "Marco",
    "Luca",
    "Giuseppe",
    "Francesco",
    "Alessandro",
    "Andrea",
    "Matteo",
    "Lorenzo",
    "Davide",
    "Simone",
    "Federico",
    "Riccardo",
    "Stefano",
    "Paolo",
    "Giovanni",
    "Antonio",
    "Roberto",
    "Fabio",
    "Daniele",
    "Nicola",
    "Salvatore",
    "Vincenzo",
    "Pietro",
    "Tommaso",
    "Gabriele",
    "Emanuele",
    "Michele",
    "Claudio",
    "Enrico",
    "Massimo",
];
const FEMALE_NAMES: &[&str] = &[
    "Giulia",
    "Francesca",
    "Chiara",
    "Sara",
    "Martina",
    "Valentina",
    "Alessia",
    "Elena",
    "Silvia",
    "Federica",
    "Laura",
    "Anna",
    "Maria",
    "Paola",
    "Elisa",
    "Roberta",
    "Giorgia",
    "Beatrice",
    "Sofia",
    "Aurora",
    "Alice",
    "Ilaria",
    "Claudia",
    "Cristina",
    "Monica",
    "Serena",
    "Veronica",
    "Irene",
    "Marta",
    "Camilla",
];
const SURNAMES: &[&str] = &[
    "Rossi",
    "Russo",
    "Ferrari",
    "Esposito",
    "Bianchi",
    "Romano",
    "Colombo",
    "Ricci",
    "Marino",
    "Greco",
    "Bruno",
    "Gallo",
    "Conti",
    "De Luca",
    "Mancini",
    "Costa",
    "Giordano",
    "Rizzo",
    "Lombardi",
    "Moretti",
    "Barbieri",
    "Fontana",
    "Santoro",
    "Mariani",
    "Rinaldi",
    "Caruso",
    "Ferrara",
    "Galli",
    "Martini",
    "Leone",
    "Longo",
    "Gentile",
    "Martinelli",
    "Vitale",
    "Lombardo",
    "Serra",
    "Coppola",
    "De Santis",
    "D'Angelo",
    "Marchetti",
    "Parisi",
    "Villa",
    "Conte",
    "Ferraro",
    "Ferri",
    "Fabbri",
    "Bianco",
    "Marini",
    "Grasso",
    "Valentini",
    "Messina",
    "Sala",
    "De Angelis",
    "Gatti",
    "Pellegrini",
    "Palumbo",
    "Sanna",
    "Farina",
    "Rizzi",
    "Monti",
    "Cattaneo",
    "Morelli",
    "Amato",
    "Silvestri",
    "Mazza",
    "Testa",
    "Grassi",
    "Pellegrino",
    "Carbone",
    "Giuliani",
    "Benedetti",
    "Barone",
    "Rossetti",
    "Caputo",
    "Montanari",
    "Guerra",
    "Palmieri",
    "Bernardi",
    "Fiore",
    "De Rosa",
    "Ferretti",
    "Bellini",
    "Basile",
    "Riva",
    "Donati",
    "Piras",
    "Vitali",
    "Battaglia",
    "Sartori",
    "Neri",
    "Costantini",
    "Milani",
    "Pagano",
    "Ruggiero",
    "Sorrentino",
    "D'Amico",
    "Orlando",
    "Esposti",
];
const DOMAINS: &[&str] = &[
    "example.it",
    "example.com",
    "posta.example.it",
    "mail.example.net",
];
const MOBILE_PREFIXES: &[&str] = &[
    "320", "324", "327", "328", "329", "330", "331", "333", "334", "335", "338", "339", "340",
    "342", "345", "346", "347", "348", "349", "350", "351", "366", "368", "380", "388", "389",
    "392", "393",
];
const STREET_KINDS: &[&str] = &["Via", "Via", "Via", "Viale", "Piazza", "Corso", "Vicolo"];
const STREETS: &[&str] = &[
    "Roma",
    "Garibaldi",
    "Mazzini",
    "Dante Alighieri",
    "Giuseppe Verdi",
    "Cavour",
    "Vittorio Emanuele II",
    "XX Settembre",
    "della Repubblica",
    "Marconi",
    "Matteotti",
    "IV Novembre",
    "dei Mille",
    "Manzoni",
    "San Martino",
    "della Libertà",
    "Gramsci",
    "Leopardi",
    "Galilei",
    "Carducci",
    "Diaz",
    "Colombo",
    "delle Rose",
    "dei Tigli",
    "Kennedy",
    "Nazionale",
    "Trieste",
    "Cesare Battisti",
    "Fiume",
    "Oberdan",
];

/// Regions of the CRM with their cities; the weights (percent) spread contacts over all three.
pub const REGIONS: &[(&str, u64, &[&str])] = &[
    (
        "north",
        45,
        &[
            "Milano", "Torino", "Genova", "Venezia", "Bologna", "Verona", "Trieste", "Brescia",
            "Bergamo", "Padova",
        ],
    ),
    (
        "centre",
        25,
        &[
            "Roma", "Firenze", "Perugia", "Ancona", "Pisa", "Siena", "Latina", "Arezzo", "Pescara",
        ],
    ),
    (
        "south",
        30,
        &[
            "Napoli",
            "Bari",
            "Palermo",
            "Catania",
            "Reggio Calabria",
            "Salerno",
            "Cagliari",
            "Lecce",
            "Messina",
            "Foggia",
        ],
    ),
];

/// The most contacts the generator can make unique phone numbers for (7 digits after the prefix).
pub const MAX_CONTACTS: u64 = 10_000_000;

/// Birth dates range over these days: 1940-01-01 to 2006-12-31.
const BIRTH_FIRST_DAY: i64 = days_from_civil(1940, 1, 1);
const BIRTH_DAYS: u64 = (days_from_civil(2007, 1, 1) - BIRTH_FIRST_DAY) as u64;
/// Birthplace codes of a codice fiscale look like Belfiore codes: a letter `A`..`M` and three digits.
const BIRTHPLACES: u64 = 13 * 1000;

/// One contact, everything derived from `(seed, id)`.
#[derive(Debug, Clone)]
pub struct Person {
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub email: String,
    pub phone: String,
    /// Days since 1970-01-01.
    pub birth_days: i64,
    pub tax_code: String,
    pub street_address: String,
    pub city: &'static str,
    pub region: &'static str,
    /// Seconds since the epoch when the contact entered the CRM.
    pub created_at: i64,
    /// Seconds since the epoch of the last activity, if any.
    pub last_activity_at: Option<i64>,
}

/// The CRM's history runs from `CRM_START` over `CRM_SPAN` seconds (2018-01-01 to 2026-01-01).
pub const CRM_START: i64 = days_from_civil(2018, 1, 1) * 86_400;
pub const CRM_SPAN: u64 =
    ((days_from_civil(2026, 1, 1) - days_from_civil(2018, 1, 1)) * 86_400) as u64;

/// Table tag for the contacts' random streams (the other tables use their own tags).
pub const CONTACTS: u64 = 1;
/// Stream of the contact's creation time, apart so that child rows get it without the whole person.
const CREATED: u64 = 100;

/// When contact `id` entered the CRM (seconds since the epoch).
pub fn created_at(seed: u64, id: u64) -> i64 {
    CRM_START + Rng::for_row(seed, CREATED, id).below(CRM_SPAN) as i64
}

/// Birth date and birthplace together are a bijection of the id, which makes the tax code unique.
fn identity(seed: u64, id: u64) -> u64 {
    Permutation::new(BIRTH_DAYS * BIRTHPLACES, 29, seed ^ 0xC0D1CE).apply(id - 1)
}

/// Birth date of contact `id` (days since 1970-01-01).
pub fn birth_days(seed: u64, id: u64) -> i64 {
    BIRTH_FIRST_DAY + (identity(seed, id) % BIRTH_DAYS) as i64
}

impl Person {
    /// The contact with id `id` (from 1 to [`MAX_CONTACTS`]) for `seed`.
    pub fn generate(seed: u64, id: u64) -> Self {
        let mut rng = Rng::for_row(seed, CONTACTS, id);
        let female = rng.percent(50);
        let first_name = rng.pick(if female { FEMALE_NAMES } else { MALE_NAMES });
        let last_name = rng.pick(SURNAMES);
        let email = email(&mut rng, first_name, last_name, id);
        let phone = phone(&mut rng, seed, id);
        let birth_days = birth_days(seed, id);
        let tax_code = tax_code(
            first_name,
            last_name,
            female,
            birth_days,
            identity(seed, id) / BIRTH_DAYS,
        );
        let street_address = format!(
            "{} {} {}",
            rng.pick(STREET_KINDS),
            rng.pick(STREETS),
            rng.between(1, 220)
        );
        let (region, cities) = pick_region(&mut rng);
        let city = rng.pick(cities);
        let created_at = created_at(seed, id);
        let remaining = (CRM_START + CRM_SPAN as i64 - created_at) as u64;
        let last_activity_at = rng
            .percent(90)
            .then(|| created_at + rng.below(remaining) as i64);
        Self {
            first_name,
            last_name,
            email,
            phone,
            birth_days,
            tax_code,
            street_address,
            city,
            region,
            created_at,
            last_activity_at,
        }
    }
}

fn pick_region(rng: &mut Rng) -> (&'static str, &'static [&'static str]) {
    let mut roll = rng.below(100);
    for (name, weight, cities) in REGIONS {
        if roll < *weight {
            return (name, cities);
        }
        roll -= weight;
    }
    (REGIONS[0].0, REGIONS[0].2)
}

fn ascii_lower(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Every pattern ends with the id as the only digits, so two contacts never share an address.
fn email(rng: &mut Rng, first: &str, last: &str, id: u64) -> String {
    let (first, last) = (ascii_lower(first), ascii_lower(last));
    let domain = rng.pick(DOMAINS);
    match rng.below(4) {
        0 => format!("{last}.{first}{id}@{domain}"),
        1 => format!("{}{last}.{id}@{domain}", &first[..1]),
        _ => format!("{first}.{last}.{id}@{domain}"),
    }
}

/// `+39 3xx nnnnnnn`: the seven digits are a bijection of the id, so phones are unique.
fn phone(rng: &mut Rng, seed: u64, id: u64) -> String {
    let digits = Permutation::new(MAX_CONTACTS, 24, seed ^ 0x0909).apply(id - 1);
    format!("+39 {} {digits:07}", rng.pick(MOBILE_PREFIXES))
}

/// The three letters of a codice fiscale for a surname (`first_name = false`) or a first name.
fn cf_letters(name: &str, first_name: bool) -> [u8; 3] {
    let upper: Vec<u8> = name
        .bytes()
        .filter(u8::is_ascii_alphabetic)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let is_vowel = |c: &u8| b"AEIOU".contains(c);
    let consonants: Vec<u8> = upper.iter().copied().filter(|c| !is_vowel(c)).collect();
    let vowels = upper.iter().copied().filter(is_vowel);
    let chosen: Vec<u8> = if first_name && consonants.len() >= 4 {
        vec![consonants[0], consonants[2], consonants[3]]
    } else {
        consonants
            .iter()
            .copied()
            .chain(vowels)
            .chain(std::iter::repeat(b'X'))
            .take(3)
            .collect()
    };
    [chosen[0], chosen[1], chosen[2]]
}

fn tax_code(first: &str, last: &str, female: bool, birth_days: i64, birthplace: u64) -> String {
    let (year, month, day) = civil_from_days(birth_days);
    let mut code = Vec::with_capacity(16);
    code.extend_from_slice(&cf_letters(last, false));
    code.extend_from_slice(&cf_letters(first, true));
    code.extend_from_slice(format!("{:02}", year % 100).as_bytes());
    code.push(CF_MONTHS[(month - 1) as usize]);
    code.extend_from_slice(format!("{:02}", day + if female { 40 } else { 0 }).as_bytes());
    code.push(b'A' + (birthplace / 1000) as u8);
    code.extend_from_slice(format!("{:03}", birthplace % 1000).as_bytes());
    code.push(codice_fiscale_check_char(&code).unwrap_or(b'X'));
    String::from_utf8_lossy(&code).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::discover::national_id::is_codice_fiscale;
    use std::collections::HashSet;

    #[test]
    fn tax_codes_follow_the_rules() {
        assert_eq!(&cf_letters("Rossi", false), b"RSS");
        assert_eq!(
            &cf_letters("Francesco", true),
            b"FNC",
            "1st, 3rd and 4th consonant"
        );
        assert_eq!(&cf_letters("Ria", true), b"RIA");
        assert_eq!(&cf_letters("Fo", false), b"FOX");
        assert_eq!(
            tax_code("Mario", "Rossi", false, days_from_civil(1985, 12, 10), 562),
            "RSSMRA85T10A562S"
        );
    }

    #[test]
    fn unique_values_and_valid_shapes() {
        let people: Vec<Person> = (1..=20_000).map(|id| Person::generate(7, id)).collect();
        for (label, values) in [
            (
                "email",
                people
                    .iter()
                    .map(|p| p.email.clone())
                    .collect::<HashSet<_>>(),
            ),
            ("phone", people.iter().map(|p| p.phone.clone()).collect()),
            (
                "tax_code",
                people.iter().map(|p| p.tax_code.clone()).collect(),
            ),
        ] {
            assert_eq!(values.len(), people.len(), "{label} values are unique");
        }
        assert!(
            people.iter().all(|p| is_codice_fiscale(&p.tax_code)),
            "every tax code validates"
        );
        assert!(
            people
                .iter()
                .all(|p| p.phone.len() == 15 && p.phone.starts_with("+39 3"))
        );
        let regions: HashSet<_> = people.iter().map(|p| p.region).collect();
        assert_eq!(regions.len(), 3);
    }
}
