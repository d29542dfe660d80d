//! Per-organization address normalization: the key used for matching, and which
//! domains are the organization's own.
//!
//! Display keeps an address as written (trimmed). Matching always goes through
//! [`AddressNormalizer::key`], which starts from the domain's [`AddressKey`]
//! (trimmed, Unicode-lowercased) and then applies the org's options.

use std::collections::HashSet;

use hirewire_domain::email::AddressKey;

/// How an organization wants addresses compared. Stored per org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressOptions {
    /// `jane+jobs@x.com` matches `jane@x.com`: everything from the first `+`
    /// of the local part (not at its start) is dropped from the key.
    pub strip_plus_tags: bool,
    /// `j.a.n.e@gmail.com` matches `jane@gmail.com` on [`Self::dot_insensitive_domains`],
    /// and `googlemail.com` is folded into `gmail.com`.
    pub gmail_dot_insensitive: bool,
    /// Domains (lowercase) whose local parts ignore dots when
    /// [`Self::gmail_dot_insensitive`] is set. Defaults to gmail.com and googlemail.com.
    pub dot_insensitive_domains: Vec<String>,
    /// The organization's own mail domains (lowercase, no `@`). An address on one
    /// of them, or on a subdomain of one, is internal.
    pub internal_domains: Vec<String>,
}

impl Default for AddressOptions {
    fn default() -> Self {
        Self {
            strip_plus_tags: true,
            gmail_dot_insensitive: true,
            dot_insensitive_domains: vec!["gmail.com".into(), "googlemail.com".into()],
            internal_domains: Vec::new(),
        }
    }
}

impl AddressOptions {
    /// Options that only trim and lowercase (the plain [`AddressKey`]).
    pub fn exact() -> Self {
        Self {
            strip_plus_tags: false,
            gmail_dot_insensitive: false,
            ..Self::default()
        }
    }

    /// Sets the org's own domains (builder style).
    pub fn with_internal_domains<I, S>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.internal_domains = domains
            .into_iter()
            .map(|d| d.as_ref().trim().trim_start_matches('@').to_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        self
    }
}

/// Compiled [`AddressOptions`]: computes matching keys and the internal flag.
#[derive(Debug, Clone)]
pub struct AddressNormalizer {
    options: AddressOptions,
    dot_domains: HashSet<String>,
    internal: HashSet<String>,
}

impl AddressNormalizer {
    pub fn new(options: AddressOptions) -> Self {
        let dot_domains = options
            .dot_insensitive_domains
            .iter()
            .map(|d| d.trim().to_lowercase())
            .collect();
        let internal = options
            .internal_domains
            .iter()
            .map(|d| {
                d.trim()
                    .trim_start_matches('@')
                    .trim_end_matches('.')
                    .to_lowercase()
            })
            .filter(|d| !d.is_empty())
            .collect();
        Self {
            options,
            dot_domains,
            internal,
        }
    }

    pub fn options(&self) -> &AddressOptions {
        &self.options
    }

    /// The org's matching key of `address`. Idempotent: `key(key(a)) == key(a)`.
    pub fn key(&self, address: &str) -> AddressKey {
        let mut buf = String::new();
        self.key_into(address, &mut buf);
        AddressKey::of(&buf)
    }

    /// Writes the matching key of `address` into `buf` (cleared first), without
    /// allocating when `buf` has room. Used on the hot path.
    pub fn key_into(&self, address: &str, buf: &mut String) {
        buf.clear();
        let trimmed = address.trim();
        if trimmed.is_ascii() {
            buf.push_str(trimmed);
            buf.make_ascii_lowercase();
        } else {
            buf.push_str(AddressKey::of(trimmed).as_str());
        }
        let Some(at) = buf.rfind('@') else { return };
        let (local_end, domain_start) = (at, at + 1);
        let mut new_local_end = local_end;
        if self.options.strip_plus_tags
            && let Some(p) = buf[..local_end]
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == '+')
        {
            new_local_end = p.0;
        }
        let domain = &buf[domain_start..];
        let dots = self.options.gmail_dot_insensitive && self.dot_domains.contains(domain);
        if !dots && new_local_end == local_end {
            return;
        }
        let mut out = String::with_capacity(buf.len());
        if dots {
            out.extend(buf[..new_local_end].chars().filter(|&c| c != '.'));
            out.push('@');
            if domain == "googlemail.com" {
                out.push_str("gmail.com");
            } else {
                out.push_str(domain);
            }
        } else {
            out.push_str(&buf[..new_local_end]);
            out.push_str(&buf[local_end..]);
        }
        // Removing dots can expose whitespace at the start; keys are always trimmed.
        let t = out.trim();
        if t.len() != out.len() {
            out = t.to_owned();
        }
        *buf = out;
    }

    /// Whether `address` is on one of the org's own domains (or a subdomain of one).
    pub fn is_internal(&self, address: &str) -> bool {
        if self.internal.is_empty() {
            return false;
        }
        let Some((_, domain)) = address.trim().rsplit_once('@') else {
            return false;
        };
        let domain = domain.trim_end_matches('.');
        if domain.is_ascii() {
            let mut small = [0u8; 255];
            if domain.len() <= small.len() {
                let s = &mut small[..domain.len()];
                s.copy_from_slice(domain.as_bytes());
                s.make_ascii_lowercase();
                // ASCII in, ASCII out.
                let lower = std::str::from_utf8(s).unwrap_or_default();
                return self.domain_is_internal(lower);
            }
        }
        self.domain_is_internal(&domain.to_lowercase())
    }

    fn domain_is_internal(&self, mut domain: &str) -> bool {
        if self.internal.len() <= 8 {
            // Few domains (the usual case): suffix checks beat hashing every label.
            return self.internal.iter().any(|d| {
                domain.len() >= d.len()
                    && domain.ends_with(d.as_str())
                    && (domain.len() == d.len()
                        || domain.as_bytes()[domain.len() - d.len() - 1] == b'.')
            });
        }
        loop {
            if self.internal.contains(domain) {
                return true;
            }
            match domain.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => domain = parent,
                _ => return false,
            }
        }
    }
}

impl Default for AddressNormalizer {
    fn default() -> Self {
        Self::new(AddressOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plus_tags_and_gmail_dots_follow_the_options() {
        let n = AddressNormalizer::default();
        assert_eq!(
            n.key(" Jane.Doe+CV@GMail.com ").as_str(),
            "janedoe@gmail.com"
        );
        assert_eq!(
            n.key("jane.doe@googlemail.com").as_str(),
            "janedoe@gmail.com"
        );
        assert_eq!(n.key("jane.doe+x@acme.io").as_str(), "jane.doe@acme.io");
        assert_eq!(n.key("+only@acme.io").as_str(), "+only@acme.io");
        let exact = AddressNormalizer::new(AddressOptions::exact());
        assert_eq!(
            exact.key("Jane.Doe+CV@GMail.com").as_str(),
            "jane.doe+cv@gmail.com"
        );
        let plus_only = AddressNormalizer::new(AddressOptions {
            gmail_dot_insensitive: false,
            ..AddressOptions::default()
        });
        assert_eq!(plus_only.key("j.d+x@gmail.com").as_str(), "j.d@gmail.com");
    }

    #[test]
    fn unicode_case_is_folded_in_keys() {
        let n = AddressNormalizer::new(AddressOptions::exact());
        assert_eq!(n.key("ÉLODIE@Exemple.FR").as_str(), "élodie@exemple.fr");
        assert_eq!(n.key("ÉLODIE@Exemple.FR"), n.key("élodie@exemple.fr"));
    }

    #[test]
    fn internal_domains_include_subdomains_only_on_label_boundaries() {
        let n =
            AddressNormalizer::new(AddressOptions::default().with_internal_domains(["@Acme.io"]));
        assert!(n.is_internal("x@acme.io"));
        assert!(n.is_internal("x@MAIL.Acme.IO"));
        assert!(!n.is_internal("x@notacme.io"));
        assert!(!n.is_internal("x@acme.io.evil.com"));
        assert!(!n.is_internal("acme.io"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn normalization_is_idempotent(
            s in "\\PC{0,30}",
            local in "[A-Za-zÀ-ÖØ-Þà-ö.+_-]{0,12}",
            dom in prop::sample::select(vec!["gmail.com", "GoogleMail.com", "acme.io", "Exemple.FR"]),
            plus in any::<bool>(),
            dots in any::<bool>(),
        ) {
            let n = AddressNormalizer::new(AddressOptions {
                strip_plus_tags: plus,
                gmail_dot_insensitive: dots,
                ..AddressOptions::default()
            });
            for input in [s.clone(), format!("{local}@{dom}"), format!(" {local}@{dom} ")] {
                let once = n.key(&input);
                prop_assert_eq!(n.key(once.as_str()), once.clone(), "input {:?}", input);
                let mut buf = String::new();
                n.key_into(&input, &mut buf);
                prop_assert_eq!(AddressKey::of(&buf), once);
            }
        }
    }
}
