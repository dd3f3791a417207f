//! The built-in rate card and loadgen's price table agree: loadgen reconciles tollgate's bills
//! with its own table, so a price that differs would be billed one way and checked another.

use loadgen::prices::PriceTable;
use tollgate_actors::pricing::RateCard;

#[test]
fn the_built_in_card_and_loadgens_prices_agree_model_for_model() {
    let card = RateCard::builtin().unwrap();
    let table = PriceTable::shipped().unwrap();
    let now = chrono::Utc::now();
    let mut priced = 0;
    for entry in &table.models {
        for id in &entry.ids {
            let version = card
                .price_at(id, now)
                .unwrap_or_else(|| panic!("{id} is in loadgen's prices but not on the card"));
            let (base, table_base) = (&version.base, &entry.usd_per_mtok);
            assert_eq!(
                [
                    base.input,
                    base.cache_write_5m,
                    base.cache_write_1h,
                    base.cache_read,
                    base.output
                ],
                [
                    table_base.input,
                    table_base.cache_write_5m,
                    table_base.cache_write_1h,
                    table_base.cache_read,
                    table_base.output
                ],
                "{id}"
            );
            assert_eq!(version.web_search_per_use, entry.web_search_per_use, "{id}");
            match (&version.long_prompt, &entry.long_prompt) {
                (None, None) => {}
                (Some(tier), Some(long)) => {
                    assert_eq!(tier.threshold_tokens, long.above_tokens, "{id}");
                    assert_eq!(tier.requires_beta, long.requires_beta, "{id}");
                    let (p, q) = (&tier.prices, &long.usd_per_mtok);
                    assert_eq!(
                        [
                            p.input,
                            p.cache_write_5m,
                            p.cache_write_1h,
                            p.cache_read,
                            p.output
                        ],
                        [
                            q.input,
                            q.cache_write_5m,
                            q.cache_write_1h,
                            q.cache_read,
                            q.output
                        ],
                        "{id}"
                    );
                }
                (card_tier, table_tier) => {
                    panic!("{id}: long-prompt tier on the card {card_tier:?}, in loadgen's prices {table_tier:?}")
                }
            }
            priced += 1;
        }
    }
    assert_eq!(
        priced,
        card.models().count(),
        "every model on the card has a price in loadgen's table"
    );
}
