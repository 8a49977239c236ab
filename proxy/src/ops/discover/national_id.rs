//! Validators for national identifiers and bank accounts that can be checked cheaply and offline:
//! the Italian codice fiscale (shape and check character), the Spanish DNI/NIE (check letter) and the
//! IBAN (ISO 13616 mod-97). Also computes the codice fiscale check character for the CRM generator.
//! Not for: deciding whether a column is personal (see `detect`), or proving an identifier exists.

/// Values of the characters in odd positions (1st, 3rd, ...) of a codice fiscale, indexed by digit or
/// letter (`0`/`A` = 1, `1`/`B` = 0, ...), from the Ministry's table.
const CF_ODD: [u32; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];

/// The month letters of a codice fiscale, January first.
pub const CF_MONTHS: [u8; 12] = *b"ABCDEHLMPRST";

fn cf_char_index(c: u8) -> Option<usize> {
    match c {
        b'0'..=b'9' => Some((c - b'0') as usize),
        b'A'..=b'Z' => Some((c - b'A') as usize),
        _ => None,
    }
}

/// The check character of the first 15 characters of a codice fiscale (upper case), or `None` when a
/// character is not a digit or letter.
pub fn codice_fiscale_check_char(first15: &[u8]) -> Option<u8> {
    if first15.len() != 15 {
        return None;
    }
    let mut sum = 0u32;
    for (i, &c) in first15.iter().enumerate() {
        let index = cf_char_index(c)?;
        sum += if i % 2 == 0 {
            CF_ODD[index]
        } else {
            index as u32
        };
    }
    Some(b'A' + (sum % 26) as u8)
}

/// Digits of a codice fiscale may be replaced by letters (omocodia): `LMNPQRSTUV` for 0-9.
fn cf_digit_or_omocode(c: u8) -> bool {
    c.is_ascii_digit() || b"LMNPQRSTUV".contains(&c)
}

/// A 16-character Italian codice fiscale: shape `AAAAAA99A99A999A` (with omocodia letters allowed in the
/// digit places), a valid month letter, a day 1-31 or 41-71, and the right check character.
pub fn is_codice_fiscale(value: &str) -> bool {
    let v = value.trim().as_bytes();
    if v.len() != 16
        || !v
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return false;
    }
    let letters = [0, 1, 2, 3, 4, 5, 8, 11, 15];
    let digits = [6, 7, 9, 10, 12, 13, 14];
    if !letters.iter().all(|&i| v[i].is_ascii_uppercase())
        || !digits.iter().all(|&i| cf_digit_or_omocode(v[i]))
    {
        return false;
    }
    if !CF_MONTHS.contains(&v[8]) {
        return false;
    }
    let digit = |c: u8| {
        if c.is_ascii_digit() {
            c - b'0'
        } else {
            b"LMNPQRSTUV".iter().position(|&o| o == c).unwrap_or(0) as u8
        }
    };
    let day = digit(v[9]) * 10 + digit(v[10]);
    if !(1..=31).contains(&day) && !(41..=71).contains(&day) {
        return false;
    }
    codice_fiscale_check_char(&v[..15]) == Some(v[15])
}

/// A Spanish DNI (`12345678Z`) or NIE (`X1234567L`) with the right check letter.
pub fn is_spanish_dni(value: &str) -> bool {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let v = value.trim().as_bytes();
    if v.len() != 9 || !v[8].is_ascii_uppercase() {
        return false;
    }
    let prefix = match v[0] {
        b'X' => Some(0),
        b'Y' => Some(1),
        b'Z' => Some(2),
        c if c.is_ascii_digit() => None,
        _ => return false,
    };
    let body = if prefix.is_some() { &v[1..8] } else { &v[..8] };
    if !body.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut number: u64 = prefix.unwrap_or(0);
    for &c in body {
        number = number * 10 + u64::from(c - b'0');
    }
    LETTERS[(number % 23) as usize] == v[8]
}

/// A French NIR (numéro de sécurité sociale, spaces allowed): sex 1 or 2, year, month (01-12, or 20 and
/// above for unknown), department (digits, or `2A`/`2B` for Corsica), commune and order numbers, and a
/// two-digit key equal to 97 minus the 13-digit number modulo 97.
pub fn is_french_nir(value: &str) -> bool {
    let compact: String = value.trim().chars().filter(|c| *c != ' ').collect();
    if compact.len() != 15
        || !compact.bytes().all(|b| b.is_ascii_alphanumeric())
        || !matches!(compact.as_bytes()[0], b'1' | b'2')
    {
        return false;
    }
    let number = match &compact[5..7] {
        "2A" | "2B" => format!(
            "{}{}{}",
            &compact[..5],
            if &compact[5..7] == "2A" { "19" } else { "18" },
            &compact[7..13]
        ),
        _ => compact[..13].to_string(),
    };
    let month: u32 = compact[3..5].parse().unwrap_or(0);
    let (Ok(body), Ok(key)) = (number.parse::<u64>(), compact[13..].parse::<u64>()) else {
        return false;
    };
    number.len() == 13 && month >= 1 && (month <= 12 || month >= 20) && key == 97 - body % 97
}

/// An IBAN (spaces allowed between groups): two letters, two check digits, 11 to 30 alphanumerics, and
/// the ISO 7064 mod-97 check equal to 1.
pub fn is_iban(value: &str) -> bool {
    let compact: Vec<u8> = value.trim().bytes().filter(|c| *c != b' ').collect();
    if !(15..=34).contains(&compact.len())
        || !compact[..2].iter().all(u8::is_ascii_uppercase)
        || !compact[2..4].iter().all(u8::is_ascii_digit)
        || !compact[4..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return false;
    }
    let mut remainder = 0u32;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let n = if c.is_ascii_digit() {
            u32::from(c - b'0')
        } else {
            u32::from(c - b'A') + 10
        };
        remainder = if n >= 10 {
            (remainder * 100 + n) % 97
        } else {
            (remainder * 10 + n) % 97
        };
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codice_fiscale_check_and_shape() {
        // The Agenzia delle Entrate's example code.
        assert!(is_codice_fiscale("RSSMRA85T10A562S"));
        assert_eq!(codice_fiscale_check_char(b"RSSMRA85T10A562"), Some(b'S'));
        assert!(
            !is_codice_fiscale("RSSMRA85T10A562T"),
            "wrong check character"
        );
        assert!(
            !is_codice_fiscale("RSSMRA85Z10A562S"),
            "Z is not a month letter"
        );
        assert!(!is_codice_fiscale("RSSMRA85T10A56"), "too short");
        assert!(!is_codice_fiscale("1234567890123456"), "digits only");
        assert!(
            !is_codice_fiscale("rssmra85t10a562s"),
            "lower case is not how they are stored"
        );
    }

    #[test]
    fn spanish_dni_and_nie() {
        assert!(is_spanish_dni("12345678Z"));
        assert!(!is_spanish_dni("12345678A"));
        assert!(is_spanish_dni("X1234567L"));
        assert!(!is_spanish_dni("ABCDEFGHI"));
    }

    #[test]
    fn french_nir() {
        assert!(is_french_nir("2 55 08 14 168 025 38"));
        assert!(is_french_nir("255081416802538"));
        assert!(!is_french_nir("255081416802539"), "wrong key");
        assert!(!is_french_nir("355081416802538"), "sex digit 3");
        assert!(
            !is_french_nir("123456789012345"),
            "month 45 and a wrong key"
        );
    }

    #[test]
    fn iban_checksum() {
        assert!(is_iban("IT60X0542811101000000123456"));
        assert!(is_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(is_iban("DE89370400440532013000"));
        assert!(!is_iban("IT60X0542811101000000123457"), "one digit off");
        assert!(
            !is_iban("INV-2024-000123456789"),
            "an invoice number is not an IBAN"
        );
    }
}
