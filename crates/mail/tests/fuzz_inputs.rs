//! Inputs kept from fuzzing (`crates/mail/fuzz`), run through the same checks as the
//! fuzz target. A crash the fuzzer finds is minimized (`cargo fuzz tmin`) and added
//! to `tests/fuzz_inputs/` so it stays fixed.

use hirewire_mail::{
    AddressNormalizer, AddressOptions, CandidateIndex, parse_envelope, parse_full, render_html,
    sanitize_for_storage, text_to_html, threading_keys,
};

fn check(data: &[u8], index: &CandidateIndex<u32>) {
    let env = parse_envelope(data);
    let full = parse_full(data);
    assert_eq!(env, full.envelope, "stages disagree");
    let inv = index.involvement(&env.participants);
    assert!(
        inv.candidates
            .windows(2)
            .all(|w| w[0].candidate < w[1].candidate)
    );
    let n = index.normalizer();
    for (_, mb) in env.participants.iter() {
        let k = n.key(&mb.address);
        assert_eq!(n.key(k.as_str()), k, "key not idempotent");
    }
    let _ = threading_keys(&env, None);
    if let Some(html) = &full.html {
        let stored = sanitize_for_storage(html);
        assert!(!stored.to_ascii_lowercase().contains("<script"), "{stored}");
        let _ = render_html(&stored, false);
    }
    if let Some(text) = &full.text {
        let _ = text_to_html(text);
    }
    let _ = full.text_or_from_html();
}

#[test]
fn every_kept_fuzz_input_passes_the_fuzz_checks() {
    let normalizer =
        AddressNormalizer::new(AddressOptions::default().with_internal_domains(["acme.io"]));
    let (index, _) = CandidateIndex::build(
        normalizer,
        (0..1000u32).map(|i| (format!("c{i}@example.com"), i)),
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_inputs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        check(&data, &index);
        // Every prefix of a kept input too (truncation is the commonest real breakage).
        for cut in (0..data.len()).step_by(97) {
            check(&data[..cut], &index);
        }
        n += 1;
    }
    assert!(n >= 2, "no fuzz inputs found in {}", dir.display());
}
