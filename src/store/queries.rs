//! Every SQL statement tollgate runs, named.

pub const INSERT_ACCOUNT: &str = "
    INSERT INTO accounts (id, email, password_hash, requests_per_minute, tokens_per_minute, max_concurrent)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id, email, status, balance, requests_per_minute, tokens_per_minute, max_concurrent, created_at";

pub const SELECT_ACCOUNT: &str = "
    SELECT id, email, status, balance, requests_per_minute, tokens_per_minute, max_concurrent, created_at
    FROM accounts WHERE id = $1";

pub const SELECT_ACCOUNT_BY_EMAIL: &str = "
    SELECT id, email, status, balance, requests_per_minute, tokens_per_minute, max_concurrent, created_at
    FROM accounts WHERE email = $1";

pub const UPDATE_LIMITS: &str = "
    UPDATE accounts SET requests_per_minute = $2, tokens_per_minute = $3, max_concurrent = $4
    WHERE id = $1";

pub const INSERT_KEY: &str = "
    INSERT INTO api_keys (id, account_id, name, prefix, digest) VALUES ($1, $2, $3, $4, $5)
    RETURNING id, account_id, name, prefix, created_at, revoked_at";

pub const SELECT_KEYS: &str = "
    SELECT id, account_id, name, prefix, created_at, revoked_at
    FROM api_keys WHERE account_id = $1 ORDER BY created_at";

pub const REVOKE_KEY: &str = "
    UPDATE api_keys SET revoked_at = now()
    WHERE account_id = $1 AND id = $2 AND revoked_at IS NULL
    RETURNING digest";

pub const SELECT_ACTIVE_KEYS: &str = "
    SELECT k.digest, k.id, k.account_id FROM api_keys k WHERE k.revoked_at IS NULL";

/// A credit or adjustment and its ledger entry, in one statement (so one transaction).
/// `change_id` is unique, so a retried change is applied once.
pub const APPLY_BALANCE_CHANGE: &str = "
    WITH upd AS (
        UPDATE accounts SET balance = balance + $2 WHERE id = $1
        AND NOT EXISTS (SELECT 1 FROM ledger WHERE change_id = $5)
        RETURNING id, balance
    )
    INSERT INTO ledger (account_id, kind, amount, balance_after, reason, change_id)
    SELECT id, $3, $2, balance, $4, $5 FROM upd";

pub const SET_STATUS: &str = "
    WITH upd AS (
        UPDATE accounts SET status = $2, status_reason = $3 WHERE id = $1 RETURNING id
    )
    INSERT INTO account_status_changes (account_id, status, reason) SELECT id, $2, $3 FROM upd";

/// The usage columns a flush writes, in the order of the batch's column arrays.
macro_rules! usage_columns {
    () => {
        "request_id, account_id, key_id, model,
               input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens,
               cache_write_1h_tokens, web_search_requests, web_fetch_requests,
               cost, price_version, long_prompt_tier, outcome, started_at, finished_at"
    };
}

/// The batch's column arrays, `$1` to `$17`, as rows.
macro_rules! unnest_usage {
    () => {
        "UNNEST(
            $1::uuid[], $2::uuid[], $3::uuid[], $4::text[],
            $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[],
            $12::numeric[], $13::timestamptz[], $14::bool[], $15::text[],
            $16::timestamptz[], $17::timestamptz[])"
    };
}

/// Given a CTE `sums (account_id, total, n)`: debits each account by `total` and writes its
/// ledger entry for `n` usage rows. Returns one row per account with its row count.
macro_rules! debit_sums {
    () => {
        "
    upd AS (
        UPDATE accounts a SET balance = a.balance - s.total
        FROM sums s WHERE a.id = s.account_id
        RETURNING a.id, a.balance
    )
    INSERT INTO ledger (account_id, kind, amount, balance_after, usage_count, reason)
    SELECT s.account_id, 'usage', -s.total, upd.balance, s.n, 'usage flush'
    FROM sums s JOIN upd ON upd.id = s.account_id
    RETURNING usage_count"
    };
}

/// The idempotent flush, in one statement: rows whose request id is already stored are
/// skipped, and only rows actually inserted contribute to the per-account debits and their
/// ledger entries, so a replayed batch changes nothing. The batch arrives as column arrays.
/// Returns one row per debited account with the number of usage rows it inserted.
pub const FLUSH_USAGE: &str = concat!(
    "
    WITH ins AS (
        INSERT INTO usage (",
    usage_columns!(),
    ")
        SELECT * FROM ",
    unnest_usage!(),
    "
        ON CONFLICT (request_id) DO NOTHING
        RETURNING account_id, cost
    ),
    sums AS (
        SELECT account_id, sum(cost) AS total, count(*)::int AS n FROM ins GROUP BY account_id
    ),",
    debit_sums!()
);

/// One part of a paced flush: a plain insert of usage rows, inside the flush's transaction.
/// A row already stored fails it with a unique violation, which rolls the flush back. The
/// balances and the ledger follow in [`DEBIT_FLUSHED_USAGE`] once every part is in.
pub const INSERT_USAGE: &str = concat!(
    "
    INSERT INTO usage (",
    usage_columns!(),
    ")
    SELECT * FROM ",
    unnest_usage!()
);

/// The end of a paced flush: each account's debit (the sum of the costs of the rows the parts
/// inserted for it) and its ledger entry. Returns one row per account with its row count.
pub const DEBIT_FLUSHED_USAGE: &str = concat!(
    "
    WITH sums AS (
        SELECT * FROM UNNEST($1::uuid[], $2::numeric[], $3::int4[]) AS s(account_id, total, n)
    ),",
    debit_sums!()
);
