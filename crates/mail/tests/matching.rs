//! Candidate matching over participants.

use hirewire_mail::{
    AddressNormalizer, AddressOptions, CandidateIndex, Mailbox, Participants, Role, parse_envelope,
};
use proptest::prelude::*;

fn org() -> AddressNormalizer {
    AddressNormalizer::new(AddressOptions::default().with_internal_domains(["acme.io"]))
}

fn big_index() -> CandidateIndex<u32> {
    let entries = (0..100_000u32).map(|i| (format!("Candidate.{i}@Talent{}.example", i % 13), i));
    let (mut index, conflicts) = CandidateIndex::build(org(), entries);
    assert!(conflicts.is_empty());
    index.insert("jane.doe@gmail.com", 500_000).unwrap();
    index.insert("ÉLODIE@exemple.fr", 500_001).unwrap();
    index
}

#[test]
fn finds_candidates_among_100k_with_roles_and_org_rules() {
    let index = big_index();
    assert_eq!(index.len(), 100_002);
    let raw = "From: Recruiter <sam@acme.io>\r\nTo: \"Jane\" <Jane.Doe+jobs@GoogleMail.com>, candidate.77@TALENT12.example\r\nCc: Élodie@Exemple.FR, stranger@else.com\r\nBcc: candidate.77@talent12.example\r\nMessage-ID: <x@acme.io>\r\n\r\nhi";
    let env = parse_envelope(raw.as_bytes());
    let inv = index.involvement(&env.participants);
    let ids: Vec<u32> = inv.candidates.iter().map(|h| h.candidate).collect();
    assert_eq!(ids, [77, 500_000, 500_001]);
    let c77 = &inv.candidates[0];
    assert!(
        c77.roles.contains(Role::To)
            && c77.roles.contains(Role::Bcc)
            && !c77.roles.contains(Role::Cc)
    );
    assert_eq!(c77.roles.iter().collect::<Vec<_>>(), [Role::To, Role::Bcc]);
    assert!(!inv.internal_only);
    assert_eq!(inv.external_count, 5);
    assert_eq!(index.lookup(" JANE.DOE@gmail.com "), Some(&500_000));
    assert_eq!(index.lookup("nobody@gmail.com"), None);
}

#[test]
fn exact_options_do_not_fold_tags_or_dots() {
    let (index, _) = CandidateIndex::build(
        AddressNormalizer::new(AddressOptions::exact()),
        [("jane.doe@gmail.com", 1u8)],
    );
    assert_eq!(index.lookup("JANE.DOE@GMAIL.COM"), Some(&1));
    assert_eq!(index.lookup("janedoe@gmail.com"), None);
    assert_eq!(index.lookup("jane.doe+x@gmail.com"), None);
}

#[test]
fn internal_only_and_conflicts() {
    let index = big_index();
    let env =
        parse_envelope(b"From: a@acme.io\r\nTo: b@Mail.ACME.io\r\nMessage-ID: <i@x>\r\n\r\nb");
    let inv = index.involvement(&env.participants);
    assert!(inv.internal_only);
    assert!(!inv.involves_candidates());
    let empty = index.involvement(&Participants::default());
    assert!(
        !empty.internal_only,
        "a message with nobody is not internal-only"
    );
    // One normalized address belongs to one candidate.
    let mut idx = CandidateIndex::new(org());
    idx.insert("j.d@gmail.com", 1).unwrap();
    idx.insert("JD@gmail.com", 1).unwrap();
    let err = idx.insert("jd+x@googlemail.com", 2).unwrap_err();
    assert_eq!(
        (err.key.as_str(), err.existing, err.rejected),
        ("jd@gmail.com", 1, 2)
    );
}

fn mailbox_strategy() -> impl Strategy<Value = Mailbox> {
    let pool = prop::sample::select(vec![
        "candidate.1@talent1.example",
        "Candidate.2@TALENT2.example",
        "jane.doe+x@gmail.com",
        "j.a.n.e.doe@googlemail.com",
        "sam@acme.io",
        "x@mail.acme.io",
        "stranger@else.com",
        "élodie@exemple.fr",
        "ÉLODIE@EXEMPLE.FR",
    ]);
    (pool, any::<bool>()).prop_map(|(a, named)| Mailbox {
        name: named.then(|| "N".to_string()),
        address: a.to_string(),
    })
}

fn participants_strategy() -> impl Strategy<Value = Participants> {
    let list = || prop::collection::vec(mailbox_strategy(), 0..5);
    (list(), list(), list(), list(), list(), list()).prop_map(
        |(from, sender, reply_to, to, cc, bcc)| Participants {
            from,
            sender,
            reply_to,
            to,
            cc,
            bcc,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Reordering the addresses of any field (and so of the message) does not change the result.
    #[test]
    fn matching_is_symmetric_in_address_order(p in participants_strategy(), seed in any::<u64>()) {
        let entries = [
            ("candidate.1@talent1.example", 1u32),
            ("candidate.2@talent2.example", 2),
            ("janedoe@gmail.com", 3),
            ("Élodie@exemple.fr", 4),
        ];
        let (index, _) = CandidateIndex::build(org(), entries);
        let base = index.involvement(&p);
        let mut shuffled = p.clone();
        for (k, list) in [&mut shuffled.from, &mut shuffled.sender, &mut shuffled.reply_to, &mut shuffled.to, &mut shuffled.cc, &mut shuffled.bcc].into_iter().enumerate() {
            list.reverse();
            let len = list.len();
            if len > 1 {
                list.rotate_left((seed as usize + k) % len);
            }
        }
        prop_assert_eq!(index.involvement(&shuffled), base.clone());
        // Building the index in another order changes nothing either.
        let mut rev = entries;
        rev.reverse();
        let (index2, _) = CandidateIndex::build(org(), rev);
        prop_assert_eq!(index2.involvement(&p), base);
    }
}
