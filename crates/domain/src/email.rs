//! Email addresses and their comparison key.
//!
//! An address is shown as typed (trimmed), but compared through [`AddressKey`]:
//! the trimmed address lowercased with Unicode rules (`str::to_lowercase`, which
//! folds `É` to `é` and `ẞ` to `ß`, unlike SQL `lower()` / `NOCASE` which fold
//! ASCII only). Keys are computed here, in Rust, and stored beside the address.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not an acceptable email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is longer than 254 characters")]
    TooLong,
    #[error("the address needs exactly one @ with text on both sides")]
    Shape,
    #[error("the address contains spaces or control characters")]
    BadCharacter,
    #[error("the domain part is not a valid domain name")]
    BadDomain,
}

/// A syntactically plausible email address, trimmed, with its original case kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses user input at the edge. Deliberately permissive on the local part
    /// (real mailboxes carry `+tags`, dots and Unicode), strict on shape.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if s.chars().count() > 254 {
            return Err(EmailError::TooLong);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::BadCharacter);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(EmailError::Shape)?;
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(EmailError::Shape);
        }
        if !is_domain(domain) {
            return Err(EmailError::BadDomain);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The comparison key of this address.
    pub fn key(&self) -> AddressKey {
        AddressKey::of(&self.0)
    }

    /// The domain part, lowercased.
    pub fn domain(&self) -> String {
        self.0
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = EmailError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

fn is_domain(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.chars().count() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// The normalized comparison key of an address: trimmed, Unicode-lowercased.
///
/// One address belongs to at most one candidate per organization, and that rule
/// is enforced on this key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AddressKey(String);

impl AddressKey {
    /// Computes the key of any string (valid address or not); idempotent.
    pub fn of(address: &str) -> Self {
        Self(address.trim().to_lowercase())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mail domain an organization owns (`acme.example`), lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MailDomain(String);

impl MailDomain {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let s = input.trim().trim_start_matches('@').to_lowercase();
        if s.is_empty() {
            return Err(EmailError::Empty);
        }
        if !is_domain(&s) || !s.contains('.') {
            return Err(EmailError::BadDomain);
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MailDomain {
    type Error = EmailError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<MailDomain> for String {
    fn from(value: MailDomain) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_fold_unicode_case_and_trim() {
        assert_eq!(
            AddressKey::of("  ÉLODIE@Example.COM "),
            AddressKey::of("élodie@example.com")
        );
        assert_eq!(AddressKey::of("ÖMER@x.de").as_str(), "ömer@x.de");
    }

    #[test]
    fn parse_rejects_what_cannot_be_an_address() {
        assert_eq!(EmailAddress::parse(""), Err(EmailError::Empty));
        assert_eq!(EmailAddress::parse("no-at-sign"), Err(EmailError::Shape));
        assert_eq!(EmailAddress::parse("a@"), Err(EmailError::Shape));
        assert_eq!(
            EmailAddress::parse("a b@x.com"),
            Err(EmailError::BadCharacter)
        );
        assert_eq!(EmailAddress::parse("a@-x.com"), Err(EmailError::BadDomain));
        assert!(EmailAddress::parse(" Jane.Doe+cv@Example.com ").is_ok());
    }

    #[test]
    fn mail_domains_are_lowercased_and_need_a_dot() {
        assert_eq!(
            MailDomain::parse("@ACME.example").unwrap().as_str(),
            "acme.example"
        );
        assert!(MailDomain::parse("localhost").is_err());
    }

    proptest! {
        #[test]
        fn key_is_idempotent(s in "\\PC{0,40}") {
            let once = AddressKey::of(&s);
            prop_assert_eq!(AddressKey::of(once.as_str()), once);
        }

        #[test]
        fn key_ignores_case_of_parseable_addresses(local in "[a-zà-öø-þ0-9._+-]{1,20}", domain in "[a-z]{1,10}\\.[a-z]{2,5}") {
            let a = EmailAddress::parse(&format!("{local}@{domain}")).unwrap();
            let b = EmailAddress::parse(&format!("{}@{}", local.to_uppercase(), domain.to_uppercase())).unwrap();
            prop_assert_eq!(a.key(), b.key());
        }
    }
}
