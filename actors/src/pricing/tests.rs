//! The rate card's rules and the built-in card's figures.

use super::*;
use chrono::NaiveDate;

/// The built-in cards, before `RateCard::new` checks and orders them.
fn builtin_cards() -> Vec<ModelCard> {
    builtin::cards().unwrap()
}

/// Prices in the reference table's column order.
fn prices(
    input: Decimal,
    cache_write_5m: Decimal,
    cache_write_1h: Decimal,
    cache_read: Decimal,
    output: Decimal,
) -> Prices {
    Prices {
        input,
        output,
        cache_read,
        cache_write_5m,
        cache_write_1h,
    }
}

/// A version without a long-prompt tier, at USD 10 per 1,000 web searches.
fn flat(effective_from: DateTime<Utc>, base: Prices) -> PriceVersion {
    PriceVersion {
        effective_from,
        base,
        long_prompt: None,
        web_search_per_use: dec!(0.01),
    }
}

fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, min, s)
        .unwrap()
        .and_utc()
}

fn now() -> DateTime<Utc> {
    at(2026, 11, 1, 0, 0, 0)
}

fn price(model: &str) -> PriceVersion {
    RateCard::builtin()
        .unwrap()
        .price_at(model, now())
        .unwrap()
        .clone()
}

#[test]
fn builtin_is_valid_and_complete() {
    let card = RateCard::new(builtin_cards(), &[]).unwrap();
    let ids: Vec<&str> = card.models().map(|m| m.id.as_str()).collect();
    let expected = [
        "claude-fable-5-2",
        "claude-fable-5-1",
        "claude-opus-5-5",
        "claude-opus-5",
        "claude-sonnet-5-5",
        "claude-sonnet-5",
        "claude-haiku-5-5",
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-5",
        "claude-opus-4-6",
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-opus-4-1-20250805",
        "claude-opus-4-20250514",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-6",
        "claude-sonnet-4-20250514",
        "claude-3-5-haiku-20241022",
    ];
    assert_eq!(ids.len(), expected.len());
    for id in expected {
        assert!(ids.contains(&id), "{id} missing");
        let card = card.model(id).unwrap();
        assert_eq!(card.id, id);
        assert!(card.display_name.starts_with("Claude "));
        assert!(card.version_at(now()).is_some());
        assert_eq!(card.versions[0].web_search_per_use, dec!(0.01));
    }
    assert_eq!(
        RateCard::builtin().unwrap().models().count(),
        expected.len()
    );
}

#[test]
fn listing_is_newest_first_and_each_id_once() {
    let card = RateCard::builtin().unwrap();
    let listed: Vec<&ModelCard> = card.models().collect();
    for pair in listed.windows(2) {
        assert!(pair[0].created_at >= pair[1].created_at);
    }
    let mut ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), listed.len());
    assert_eq!(listed[0].id, "claude-fable-5-2");
    assert_eq!(listed.last().unwrap().id, "claude-3-5-haiku-20241022");
}

#[test]
fn dated_and_undated_ids_price_the_same() {
    let card = RateCard::builtin().unwrap();
    for (a, b) in [
        ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ] {
        assert_eq!(
            card.model(a).unwrap().versions,
            card.model(b).unwrap().versions
        );
        assert_eq!(
            card.model(a).unwrap().display_name,
            card.model(b).unwrap().display_name
        );
    }
    assert!(card.model("claude-haiku-4").is_none());
    assert!(card.model("").is_none());
}

#[test]
fn aliases_resolve_to_the_canonical_card_and_are_not_listed() {
    let card = RateCard::new(builtin_cards(), &[("haiku", "claude-haiku-4-5-20251001")]).unwrap();
    let via_alias = card.model("haiku").unwrap();
    assert_eq!(via_alias.id, "claude-haiku-4-5-20251001");
    assert!(card.models().all(|m| m.id != "haiku"));
    assert_eq!(
        RateCard::new(builtin_cards(), &[("x", "nope")]).unwrap_err(),
        RateCardError::UnknownAliasTarget {
            alias: "x".into(),
            target: "nope".into()
        }
    );
    assert_eq!(
        RateCard::new(builtin_cards(), &[("claude-opus-5", "claude-opus-5-5")]).unwrap_err(),
        RateCardError::DuplicateId("claude-opus-5".into())
    );
}

#[test]
fn invalid_cards_are_refused() {
    let mut cards = builtin_cards();
    let dup = cards[0].clone();
    cards.push(dup);
    assert!(matches!(
        RateCard::new(cards, &[]),
        Err(RateCardError::DuplicateId(_))
    ));

    let mut cards = builtin_cards();
    cards[0].versions.clear();
    assert!(matches!(
        RateCard::new(cards, &[]),
        Err(RateCardError::NoVersions(_))
    ));

    let mut cards = builtin_cards();
    let v = cards[0].versions[0].clone();
    cards[0].versions.push(v);
    assert!(matches!(
        RateCard::new(cards, &[]),
        Err(RateCardError::UnsortedVersions(_))
    ));
}

#[test]
fn table_rows_match_the_reference() {
    // (id, input, 5m write, 1h write, cache read, output), as in the reference table.
    let rows = [
        (
            "claude-fable-5-2",
            dec!(8),
            dec!(10),
            dec!(16),
            dec!(0.20),
            dec!(40),
        ),
        (
            "claude-fable-5-1",
            dec!(10),
            dec!(12.50),
            dec!(20),
            dec!(0.25),
            dec!(50),
        ),
        (
            "claude-opus-5-5",
            dec!(4),
            dec!(5),
            dec!(8),
            dec!(0.20),
            dec!(20),
        ),
        (
            "claude-opus-5",
            dec!(5),
            dec!(6.25),
            dec!(10),
            dec!(0.50),
            dec!(25),
        ),
        (
            "claude-sonnet-5-5",
            dec!(2),
            dec!(2.50),
            dec!(4),
            dec!(0.10),
            dec!(10),
        ),
        (
            "claude-sonnet-5",
            dec!(2),
            dec!(2.50),
            dec!(4),
            dec!(0.20),
            dec!(10),
        ),
        (
            "claude-haiku-5-5",
            dec!(0.10),
            dec!(0.125),
            dec!(0.20),
            dec!(0.01),
            dec!(0.50),
        ),
        (
            "claude-haiku-4-5",
            dec!(1),
            dec!(1.25),
            dec!(2),
            dec!(0.10),
            dec!(5),
        ),
        (
            "claude-haiku-4-5-20251001",
            dec!(1),
            dec!(1.25),
            dec!(2),
            dec!(0.10),
            dec!(5),
        ),
        (
            "claude-opus-4-5",
            dec!(5),
            dec!(6.25),
            dec!(10),
            dec!(0.50),
            dec!(25),
        ),
        (
            "claude-opus-4-6",
            dec!(5),
            dec!(6.25),
            dec!(10),
            dec!(0.50),
            dec!(25),
        ),
        (
            "claude-opus-4-7",
            dec!(5),
            dec!(6.25),
            dec!(10),
            dec!(0.50),
            dec!(25),
        ),
        (
            "claude-opus-4-8",
            dec!(5),
            dec!(6.25),
            dec!(10),
            dec!(0.50),
            dec!(25),
        ),
        (
            "claude-opus-4-1-20250805",
            dec!(15),
            dec!(18.75),
            dec!(30),
            dec!(1.50),
            dec!(75),
        ),
        (
            "claude-opus-4-20250514",
            dec!(15),
            dec!(18.75),
            dec!(30),
            dec!(1.50),
            dec!(75),
        ),
        (
            "claude-sonnet-4-5",
            dec!(3),
            dec!(3.75),
            dec!(6),
            dec!(0.30),
            dec!(15),
        ),
        (
            "claude-sonnet-4-5-20250929",
            dec!(3),
            dec!(3.75),
            dec!(6),
            dec!(0.30),
            dec!(15),
        ),
        (
            "claude-sonnet-4-6",
            dec!(3),
            dec!(3.75),
            dec!(6),
            dec!(0.30),
            dec!(15),
        ),
        (
            "claude-sonnet-4-20250514",
            dec!(3),
            dec!(3.75),
            dec!(6),
            dec!(0.30),
            dec!(15),
        ),
        (
            "claude-3-5-haiku-20241022",
            dec!(0.80),
            dec!(1),
            dec!(1.60),
            dec!(0.08),
            dec!(4),
        ),
    ];
    for (id, input, w5, w1, read, output) in rows {
        let p = price(id).base;
        assert_eq!(
            (
                p.input,
                p.cache_write_5m,
                p.cache_write_1h,
                p.cache_read,
                p.output
            ),
            (input, w5, w1, read, output),
            "{id}"
        );
    }
    let long = price("claude-haiku-5-5").long_prompt.unwrap();
    assert_eq!(long.threshold_tokens, 100_000);
    assert_eq!(long.requires_beta, None);
    assert_eq!(
        long.prices,
        prices(dec!(0.50), dec!(0.625), dec!(1.00), dec!(0.05), dec!(2.50))
    );
    // "prompts over 200,000 tokens (only possible with the context-1m-2025-08-07 beta): every
    // token of the request".
    let sonnet_long = [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-20250514",
    ];
    for id in sonnet_long {
        let long = price(id).long_prompt.unwrap();
        assert_eq!(long.threshold_tokens, 200_000, "{id}");
        assert_eq!(
            long.requires_beta.as_deref(),
            Some("context-1m-2025-08-07"),
            "{id}"
        );
        assert_eq!(
            long.prices,
            prices(dec!(6), dec!(7.50), dec!(12), dec!(0.60), dec!(22.50)),
            "{id}"
        );
    }
    for m in RateCard::builtin().unwrap().models() {
        if m.id != "claude-haiku-5-5" && !sonnet_long.contains(&m.id.as_str()) {
            assert!(
                m.versions.iter().all(|v| v.long_prompt.is_none()),
                "{}",
                m.id
            );
        }
    }
}

#[test]
fn max_prompt_price_is_the_highest_prompt_class() {
    assert_eq!(price("claude-opus-5-5").base.max_prompt_price(), dec!(8));
    let odd = prices(dec!(1), dec!(2), dec!(3), dec!(9), dec!(100));
    assert_eq!(odd.max_prompt_price(), dec!(9));
}

#[test]
fn cost_of_each_class_by_hand() {
    // Opus 5.5: input 1000 * 4 = 4000, output 500 * 20 = 10000, cache read 2000 * 0.20 = 400,
    // 5m write 300 * 5 = 1500, 1h write 400 * 8 = 3200; 19100 / 1e6 = 0.0191.
    let usage = Usage {
        input_tokens: 1000,
        output_tokens: 500,
        cache_read_tokens: 2000,
        cache_write_5m_tokens: 300,
        cache_write_1h_tokens: 400,
        ..Usage::default()
    };
    assert_eq!(price("claude-opus-5-5").cost(&usage), dec!(0.0191));

    // Haiku 3.5, one class at a time: 7 * 0.80 = 5.6, 3 * 4 = 12, 11 * 0.08 = 0.88,
    // 13 * 1 = 13, 17 * 1.60 = 27.2 (all / 1e6).
    let v = price("claude-3-5-haiku-20241022");
    let one = |f: fn(&mut Usage)| {
        let mut u = Usage::default();
        f(&mut u);
        v.cost(&u)
    };
    assert_eq!(one(|u| u.input_tokens = 7), dec!(0.0000056));
    assert_eq!(one(|u| u.output_tokens = 3), dec!(0.000012));
    assert_eq!(one(|u| u.cache_read_tokens = 11), dec!(0.00000088));
    assert_eq!(one(|u| u.cache_write_5m_tokens = 13), dec!(0.000013));
    assert_eq!(one(|u| u.cache_write_1h_tokens = 17), dec!(0.0000272));

    // Sonnet 4.5: 1 input token at 3 and 1 output token at 15: 18 / 1e6.
    let u = Usage {
        input_tokens: 1,
        output_tokens: 1,
        ..Usage::default()
    };
    assert_eq!(price("claude-sonnet-4-5-20250929").cost(&u), dec!(0.000018));

    // Fable 5.1, a Claude Code-like turn: 120000 cache read * 0.25 = 30000,
    // 3000 5m write * 12.50 = 37500, 50 input * 10 = 500, 800 output * 50 = 40000;
    // 108000 / 1e6 = 0.108.
    let u = Usage {
        input_tokens: 50,
        output_tokens: 800,
        cache_read_tokens: 120_000,
        cache_write_5m_tokens: 3000,
        ..Usage::default()
    };
    assert_eq!(price("claude-fable-5-1").cost(&u), dec!(0.108));
    assert_eq!(
        price("claude-fable-5-1").cost(&Usage::default()),
        Decimal::ZERO
    );
}

#[test]
fn haiku_5_5_tier_boundary() {
    let v = price("claude-haiku-5-5");
    // Exactly 100,000 prompt tokens: base tier. 99,000 * 0.10 + 1,000 * 0.01 = 9,910,
    // plus output 1,000 * 0.50 = 500: 10,410 / 1e6.
    let base = Usage {
        input_tokens: 99_000,
        cache_read_tokens: 1_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    assert_eq!(base.prompt_tokens(), 100_000);
    assert_eq!(v.cost(&base), dec!(0.01041));
    // One more prompt token, as a 1h write: every class at the long tier, output included.
    // 99,000 * 0.50 + 1,000 * 0.05 + 1 * 1.00 + 1,000 * 2.50 = 49,500 + 50 + 1 + 2,500.
    let long = Usage {
        cache_write_1h_tokens: 1,
        ..base
    };
    assert_eq!(long.prompt_tokens(), 100_001);
    assert_eq!(v.cost(&long), dec!(0.052051));
    assert_eq!(v.prices_for(100_000), &v.base);
    assert_eq!(v.prices_for(100_001).output, dec!(2.50));
    assert_eq!(v.prices_for(u64::MAX).input, dec!(0.50));
}

#[test]
fn sonnet_4_5_bills_every_token_at_the_long_tier_only_under_the_1m_beta() {
    let v = price("claude-sonnet-4-5");
    // 200,000 prompt tokens: base. 200,000 * 3 + 1,000 * 15 = 615,000.
    let base = Usage {
        input_tokens: 200_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    assert_eq!(v.cost(&base), dec!(0.615));
    // 250,000: every token at the long tier. 240,000 * 6 + 10,000 * 0.60 + 1,000 * 22.50.
    let long = Usage {
        input_tokens: 240_000,
        cache_read_tokens: 10_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    assert_eq!(v.cost(&long), dec!(1.4685));
    // But only for a request that sent the 1M-context beta. Without it (no flag, or others):
    // base. 240,000 * 3 + 10,000 * 0.30 + 1,000 * 15.
    for sent in [&[][..], &["interleaved-thinking-2025-05-14"][..]] {
        let without = v.for_betas(sent.iter().copied());
        assert_eq!(without.long_prompt, None);
        assert_eq!(without.cost(&long), dec!(0.738));
    }
    // With it, among others and in any case: every token at the long tier.
    let sent = ["interleaved-thinking-2025-05-14", " Context-1M-2025-08-07"];
    let with = v.for_betas(sent.into_iter());
    assert_eq!(with, v);
    assert_eq!(with.cost(&long), dec!(1.4685));
    // A tier without a beta condition (Haiku 5.5's) applies whatever the request sent.
    let haiku = price("claude-haiku-5-5");
    assert_eq!(haiku.for_betas([].into_iter()), haiku);
}

#[test]
fn sonnet_5_5_version_either_side_of_the_cut() {
    let card = RateCard::builtin().unwrap();
    let before = card
        .price_at("claude-sonnet-5-5", at(2026, 10, 6, 23, 59, 59))
        .unwrap();
    let from = card
        .price_at("claude-sonnet-5-5", at(2026, 10, 7, 0, 0, 0))
        .unwrap();
    assert_eq!(before.base.cache_read, dec!(0.20));
    assert_eq!(from.base.cache_read, dec!(0.10));
    assert_eq!(
        Prices {
            cache_read: before.base.cache_read,
            ..from.base
        },
        before.base
    );
    let u = Usage {
        cache_read_tokens: 1_000_000,
        ..Usage::default()
    };
    assert_eq!(before.cost(&u), dec!(0.20));
    assert_eq!(from.cost(&u), dec!(0.10));
    assert!(card
        .price_at("claude-sonnet-5-5", at(2024, 12, 31, 23, 59, 59))
        .is_none());
    assert!(card.price_at("claude-nope", now()).is_none());
}

#[test]
fn version_at_picks_latest_effective() {
    let mk = |d: u32, read: Decimal| {
        flat(
            at(2026, 1, d, 0, 0, 0),
            prices(dec!(1), dec!(1), dec!(1), read, dec!(1)),
        )
    };
    let card = ModelCard {
        id: "m".into(),
        display_name: "M".into(),
        created_at: at(2026, 1, 1, 0, 0, 0),
        versions: vec![mk(1, dec!(1)), mk(10, dec!(2)), mk(20, dec!(3))],
    };
    let read = |d, h| {
        card.version_at(at(2026, 1, d, h, 0, 0))
            .map(|v| v.base.cache_read)
    };
    assert_eq!(card.version_at(at(2025, 12, 31, 0, 0, 0)), None);
    assert_eq!(read(1, 0), Some(dec!(1)));
    assert_eq!(read(9, 23), Some(dec!(1)));
    assert_eq!(read(10, 0), Some(dec!(2)));
    assert_eq!(read(19, 5), Some(dec!(2)));
    assert_eq!(read(20, 0), Some(dec!(3)));
    assert_eq!(read(31, 0), Some(dec!(3)));
}

#[test]
fn web_search_is_ten_dollars_per_thousand() {
    let u = Usage {
        web_search_requests: 3,
        web_fetch_requests: 5,
        ..Usage::default()
    };
    for m in RateCard::builtin().unwrap().models() {
        assert_eq!(
            m.version_at(now()).unwrap().cost(&u),
            dec!(0.03),
            "{}",
            m.id
        );
    }
    let u = Usage {
        input_tokens: 1000,
        web_search_requests: 1000,
        ..Usage::default()
    };
    // 1000 * 4 / 1e6 + 1000 * 0.01.
    assert_eq!(price("claude-opus-5-5").cost(&u), dec!(10.004));
}

#[test]
fn huge_counts_do_not_panic() {
    let u = Usage {
        input_tokens: u64::MAX,
        output_tokens: u64::MAX,
        cache_read_tokens: u64::MAX,
        cache_write_5m_tokens: u64::MAX,
        cache_write_1h_tokens: u64::MAX,
        web_search_requests: u64::MAX,
        web_fetch_requests: u64::MAX,
    };
    for m in RateCard::builtin().unwrap().models() {
        assert!(m.version_at(now()).unwrap().cost(&u) > Decimal::ZERO);
    }
}

#[test]
fn prices_serialize_as_decimal_strings() {
    let p = price("claude-haiku-5-5").base;
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("\"cache_write_5m\":\"0.125\""), "{json}");
    let back: Prices = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}
