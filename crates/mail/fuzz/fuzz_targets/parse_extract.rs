#![no_main]
//! Parse + extract entry points on arbitrary bytes: both stages, matching,
//! threading keys and the HTML pipeline. Besides "no panic", checks that the
//! two stages agree on the envelope and that address keys are idempotent.

use std::sync::LazyLock;

use hirewire_mail::{
    AddressNormalizer, AddressOptions, CandidateIndex, parse_envelope, parse_full, render_html,
    sanitize_for_storage, text_to_html, threading_keys,
};
use libfuzzer_sys::fuzz_target;

static INDEX: LazyLock<CandidateIndex<u32>> = LazyLock::new(|| {
    let normalizer =
        AddressNormalizer::new(AddressOptions::default().with_internal_domains(["acme.io"]));
    let entries = (0..1000u32).map(|i| (format!("c{i}@example.com"), i));
    CandidateIndex::build(normalizer, entries).0
});

fuzz_target!(|data: &[u8]| {
    let env = parse_envelope(data);
    let full = parse_full(data);
    assert_eq!(env, full.envelope, "stages disagree");

    let inv = INDEX.involvement(&env.participants);
    assert!(inv.candidates.windows(2).all(|w| w[0].candidate < w[1].candidate));
    let n = INDEX.normalizer();
    for (_, mb) in env.participants.iter() {
        let k = n.key(&mb.address);
        assert_eq!(n.key(k.as_str()), k, "key not idempotent");
        let _ = n.is_internal(&mb.address);
    }
    let _ = threading_keys(&env, None);

    if let Some(html) = &full.html
        && html.len() <= 64 * 1024
    {
        let stored = sanitize_for_storage(html);
        let _ = render_html(&stored, false);
    }
    if let Some(text) = &full.text
        && text.len() <= 64 * 1024
    {
        let _ = text_to_html(text);
    }
    let _ = full.text_or_from_html();
});
