//! Money in: the operator's exchange rate and its history, and recharge orders
//! (docs/adr/0022-recharge-orders.md). An order is paid only through
//! [`PgStore::pay_order`], the store's side of a [`Settles::RechargeOrder`] change, which the
//! account's actor sends ([`tollgate_actors::LedgerStore::apply_balance_change`]).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::Row;
use tollgate_actors::{AccountId, BalanceChange, ChangeApplied, PaymentPath, Settles};
use uuid::Uuid;

use super::{column, DbError, PgStore};

/// The newest rate the operator set.
const CURRENT_RATE: &str =
    "SELECT cny_per_usd, set_by, set_at FROM exchange_rates ORDER BY id DESC LIMIT 1";
const SET_RATE: &str = "
    INSERT INTO exchange_rates (cny_per_usd, set_by) VALUES ($1, $2)
    RETURNING cny_per_usd, set_by, set_at";
const RATE_HISTORY: &str = "
    SELECT cny_per_usd, set_by, set_at FROM exchange_rates ORDER BY id DESC LIMIT $1";

const ORDER_COLUMNS: &str = "id, account_id, method, channel, amount_cny, cny_per_usd, \
    amount_usd, status, provider, provider_ref, paid_at, review_reason, reported_cny, \
    expires_at, created_at";

/// An order is locked while it is paid, so that two payers of one order wait for each other.
const LOCK_ORDER: &str = "
    SELECT status, method, account_id, amount_usd, expires_at <= now() AS past
    FROM recharge_orders WHERE id = $1 FOR UPDATE";
const MARK_PAID: &str = "
    UPDATE recharge_orders
    SET status = 'paid', provider = $2, provider_ref = $3, paid_at = now(), confirm_reason = $4
    WHERE id = $1";
/// The credit and its ledger entry, inside the order's transaction (the same statement as an
/// operator's credit: a change id entered already writes nothing).
const CREDIT: &str = "
    WITH upd AS (
        UPDATE accounts SET balance = balance + $2 WHERE id = $1
        AND NOT EXISTS (SELECT 1 FROM ledger WHERE change_id = $5)
        RETURNING id, balance
    )
    INSERT INTO ledger (account_id, kind, amount, balance_after, reason, change_id)
    SELECT id, $3, $2, balance, $4, $5 FROM upd";

/// A rate as it was set.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRow {
    pub cny_per_usd: Decimal,
    pub set_by: String,
    pub set_at: DateTime<Utc>,
}

/// A recharge order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub method: String,
    pub channel: Option<String>,
    pub amount_cny: Decimal,
    pub cny_per_usd: Decimal,
    pub amount_usd: Decimal,
    pub status: String,
    pub provider: Option<String>,
    pub provider_ref: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub review_reason: Option<String>,
    pub reported_cny: Option<Decimal>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl OrderRow {
    fn from_row(row: &Row) -> Result<OrderRow, DbError> {
        Ok(OrderRow {
            id: column(row, "id")?,
            account_id: column(row, "account_id")?,
            method: column(row, "method")?,
            channel: column(row, "channel")?,
            amount_cny: column(row, "amount_cny")?,
            cny_per_usd: column(row, "cny_per_usd")?,
            amount_usd: column(row, "amount_usd")?,
            status: column(row, "status")?,
            provider: column(row, "provider")?,
            provider_ref: column(row, "provider_ref")?,
            paid_at: column(row, "paid_at")?,
            review_reason: column(row, "review_reason")?,
            reported_cny: column(row, "reported_cny")?,
            expires_at: column(row, "expires_at")?,
            created_at: column(row, "created_at")?,
        })
    }
}

/// An order to create: its terms are fixed from then on.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: Uuid,
    pub account_id: Uuid,
    pub method: &'static str,
    pub channel: Option<String>,
    pub amount_cny: Decimal,
    pub cny_per_usd: Decimal,
    pub amount_usd: Decimal,
    pub expires_at: DateTime<Utc>,
}

fn rate_row(row: &Row) -> Result<RateRow, DbError> {
    Ok(RateRow {
        cny_per_usd: column(row, "cny_per_usd")?,
        set_by: column(row, "set_by")?,
        set_at: column(row, "set_at")?,
    })
}

impl PgStore {
    /// The rate the operator set last; `None` while the configuration's stands.
    pub async fn current_rate(&self) -> Result<Option<RateRow>, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(CURRENT_RATE, &[]).await?;
        row.as_ref().map(rate_row).transpose()
    }

    pub async fn set_rate(&self, cny_per_usd: Decimal, set_by: &str) -> Result<RateRow, DbError> {
        let client = self.pool.get().await?;
        let row = client.query_one(SET_RATE, &[&cny_per_usd, &set_by]).await?;
        rate_row(&row)
    }

    /// The rates set, newest first.
    pub async fn rate_history(&self, limit: i64) -> Result<Vec<RateRow>, DbError> {
        let client = self.pool.get().await?;
        let rows = client.query(RATE_HISTORY, &[&limit]).await?;
        rows.iter().map(rate_row).collect()
    }

    pub async fn create_order(&self, order: &NewOrder) -> Result<OrderRow, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "INSERT INTO recharge_orders (id, account_id, method, channel, amount_cny, \
             cny_per_usd, amount_usd, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING {ORDER_COLUMNS}"
        );
        let row = client
            .query_one(
                &sql,
                &[
                    &order.id,
                    &order.account_id,
                    &order.method,
                    &order.channel,
                    &order.amount_cny,
                    &order.cny_per_usd,
                    &order.amount_usd,
                    &order.expires_at,
                ],
            )
            .await?;
        OrderRow::from_row(&row)
    }

    /// How many orders of an account are pending.
    pub async fn pending_orders_of(&self, account: Uuid) -> Result<i64, DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM recharge_orders WHERE account_id = $1 AND status = 'pending'",
                &[&account],
            )
            .await?;
        column(&row, "count")
    }

    pub async fn order(&self, id: Uuid) -> Result<Option<OrderRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {ORDER_COLUMNS} FROM recharge_orders WHERE id = $1");
        let row = client.query_opt(&sql, &[&id]).await?;
        row.as_ref().map(OrderRow::from_row).transpose()
    }

    /// An account's orders, newest first, at most `limit`, older than `before` if given.
    pub async fn orders_of(
        &self,
        account: Uuid,
        before: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<OrderRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM recharge_orders WHERE account_id = $1 \
             AND ($2::timestamptz IS NULL OR created_at < $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        );
        let rows = client.query(&sql, &[&account, &before, &limit]).await?;
        rows.iter().map(OrderRow::from_row).collect()
    }

    /// Unpaid EPay orders made at least `min_age_secs` ago and at most a day before they
    /// expired, newest first, expired ones included (a payment may have landed just before
    /// the expiry, or the gateway could not be asked then): what the re-query job asks the
    /// gateway about. Newest first, so that a flood of old orders cannot hide a new one.
    pub async fn pending_epay_orders(
        &self,
        min_age_secs: i64,
        limit: i64,
    ) -> Result<Vec<OrderRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM recharge_orders WHERE status IN ('pending', 'expired') \
             AND method = 'epay' AND review_reason IS NULL \
             AND created_at <= now() - make_interval(secs => $1::int) \
             AND expires_at > now() - interval '1 day' \
             ORDER BY created_at DESC LIMIT $2"
        );
        let min_age = i32::try_from(min_age_secs).unwrap_or(i32::MAX);
        let rows = client.query(&sql, &[&min_age, &limit]).await?;
        rows.iter().map(OrderRow::from_row).collect()
    }

    /// Pending orders past their expiry become `expired`, unless flagged for review (an
    /// operator decides those); how many did.
    pub async fn expire_orders(&self) -> Result<u64, DbError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "UPDATE recharge_orders SET status = 'expired' \
                 WHERE status = 'pending' AND expires_at < now() AND review_reason IS NULL",
                &[],
            )
            .await?)
    }

    /// Flags an order for an operator: a payment was reported that could not be credited
    /// (an unpaid order), or a second payment of a paid one. The first reason stays.
    pub async fn flag_order(
        &self,
        id: Uuid,
        reason: &str,
        reported_cny: Option<Decimal>,
    ) -> Result<(), DbError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE recharge_orders SET review_reason = COALESCE(review_reason, $2), \
                 reported_cny = COALESCE(reported_cny, $3) WHERE id = $1",
                &[&id, &reason, &reported_cny],
            )
            .await?;
        Ok(())
    }

    /// Writes a change that settles something (ADR 0022): what it settles, the balance and
    /// the ledger entry, in one transaction, or nothing.
    pub(super) async fn settle(
        &self,
        change: &BalanceChange,
        settles: &Settles,
    ) -> Result<ChangeApplied, DbError> {
        match settles {
            Settles::RechargeOrder {
                path,
                provider,
                provider_ref,
                reason,
            } => {
                self.pay_order(change, *path, provider, provider_ref, reason.as_deref())
                    .await
            }
            Settles::RedemptionCode => self.redeem_code(change).await,
            Settles::ReferralReward => self.pay_reward(change).await,
            Settles::ReferralReversal { reward_id, reason } => {
                self.reverse_reward(change, *reward_id, reason).await
            }
        }
    }

    /// Pays the order a change settles, credits its account and enters the credit in the
    /// ledger, in one transaction. Paid already, under any reference:
    /// [`ChangeApplied::AlreadyApplied`], nothing written. Not payable (expired, made for
    /// another path, or the reference paid another order): [`ChangeApplied::Refused`].
    async fn pay_order(
        &self,
        change: &BalanceChange,
        path: PaymentPath,
        provider: &str,
        provider_ref: &str,
        reason: Option<&str>,
    ) -> Result<ChangeApplied, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Some(order) = tx.query_opt(LOCK_ORDER, &[&change.id]).await? else {
            return Ok(ChangeApplied::Refused);
        };
        let status: String = column(&order, "status")?;
        let method: String = column(&order, "method")?;
        let account: AccountId = column(&order, "account_id")?;
        let amount: Decimal = column(&order, "amount_usd")?;
        // Past its time the order is closed to the providers even before the expiry job
        // marks it; an operator may still confirm it.
        let past: bool = column(&order, "past")?;
        if account != change.account_id || amount != change.amount {
            return Err(DbError::Config(format!(
                "recharge order {} is not the change's: another account or amount",
                change.id
            )));
        }
        let payable = match (status.as_str(), path) {
            ("paid", _) => {
                return Ok(ChangeApplied::AlreadyApplied {
                    change_id: change.id,
                })
            }
            ("pending", PaymentPath::Epay) => method == "epay" && !past,
            ("pending", PaymentPath::Webhook) => method == "webhook" && !past,
            // An operator may confirm a payment that arrived after the order expired.
            ("pending" | "expired", PaymentPath::Manual) => true,
            _ => false,
        };
        if !payable {
            return Ok(ChangeApplied::Refused);
        }
        let marked = tx
            .execute(MARK_PAID, &[&change.id, &provider, &provider_ref, &reason])
            .await
            .map_err(DbError::from);
        match marked {
            Ok(_) => {}
            // The reference paid another order already: one payment credits one order.
            Err(error) if error.is_unique_violation() => return Ok(ChangeApplied::Refused),
            Err(error) => return Err(error),
        }
        enter(&tx, change).await?;
        // The inviter's reward, if this is the invitee's first paid recharge: earned in the
        // same transaction, so that it exists exactly when the recharge does; the unique
        // invitee makes a second first recharge earn nothing.
        self.earn_reward(&tx, change, RewardSource::Order).await?;
        tx.commit().await?;
        Ok(ChangeApplied::Applied)
    }

    /// Earns the invitee's inviter a reward for this first recharge (or redemption), inside
    /// its transaction. An operator's invitation code the invitee registered with sets its
    /// own reward; otherwise the configured share, half-even to 6 decimals.
    async fn earn_reward(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        change: &BalanceChange,
        source: RewardSource,
    ) -> Result<(), DbError> {
        let invitation = tx
            .query_opt(
                "SELECT i.reward_kind, i.reward_value FROM accounts a \
                 JOIN invitations i ON i.code = a.invitation_code WHERE a.id = $1",
                &[&change.account_id],
            )
            .await?;
        let reward = match invitation {
            Some(row) => {
                let kind: String = column(&row, "reward_kind")?;
                let value: Decimal = column(&row, "reward_value")?;
                if kind == "fixed" {
                    value
                } else {
                    change.amount * value
                }
            }
            None => change.amount * self.referral_ratio,
        }
        .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointNearestEven);
        if reward <= Decimal::ZERO {
            return Ok(());
        }
        let (order, code) = match source {
            RewardSource::Order => (Some(change.id), None),
            RewardSource::Code => (None, Some(change.id)),
        };
        tx.execute(
            EARN_REWARD,
            &[
                &Uuid::now_v7(),
                &change.account_id,
                &order,
                &reward,
                &code,
                &self.redemption_first_recharge,
            ],
        )
        .await?;
        Ok(())
    }

    /// Credits a pending referral reward to its inviter, marking it paid, in one
    /// transaction. Paid already: [`ChangeApplied::AlreadyApplied`]; held or reversed:
    /// [`ChangeApplied::Refused`].
    async fn pay_reward(&self, change: &BalanceChange) -> Result<ChangeApplied, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let marked = tx
            .query_opt(
                PAY_REWARD,
                &[&change.id, &change.account_id, &change.amount],
            )
            .await?;
        if marked.is_none() {
            let status: Option<String> = tx
                .query_opt(
                    "SELECT status FROM referral_rewards WHERE id = $1",
                    &[&change.id],
                )
                .await?
                .map(|row| column(&row, "status"))
                .transpose()?;
            return Ok(match status.as_deref() {
                Some("paid") => ChangeApplied::AlreadyApplied {
                    change_id: change.id,
                },
                _ => ChangeApplied::Refused,
            });
        }
        enter(&tx, change).await?;
        tx.commit().await?;
        Ok(ChangeApplied::Applied)
    }

    /// Reverses a paid reward: marks it reversed and debits its inviter, in one transaction.
    /// Reversed already: [`ChangeApplied::AlreadyApplied`]; not paid: [`ChangeApplied::Refused`].
    async fn reverse_reward(
        &self,
        change: &BalanceChange,
        reward_id: Uuid,
        reason: &str,
    ) -> Result<ChangeApplied, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let marked = tx
            .query_opt(
                "UPDATE referral_rewards SET status = 'reversed', hold_reason = $4 \
                 WHERE id = $1 AND inviter_id = $2 AND amount_usd = -($3::numeric) AND status = 'paid' \
                 RETURNING id",
                &[&reward_id, &change.account_id, &change.amount, &reason],
            )
            .await?;
        if marked.is_none() {
            let status: Option<String> = tx
                .query_opt(
                    "SELECT status FROM referral_rewards WHERE id = $1",
                    &[&reward_id],
                )
                .await?
                .map(|row| column(&row, "status"))
                .transpose()?;
            return Ok(match status.as_deref() {
                Some("reversed") => ChangeApplied::AlreadyApplied {
                    change_id: change.id,
                },
                _ => ChangeApplied::Refused,
            });
        }
        enter(&tx, change).await?;
        tx.commit().await?;
        Ok(ChangeApplied::Applied)
    }

    /// One reward.
    pub async fn reward(&self, id: Uuid) -> Result<Option<RewardRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {REWARD_COLUMNS} FROM referral_rewards WHERE id = $1");
        let row = client.query_opt(&sql, &[&id]).await?;
        row.as_ref().map(RewardRow::from_row).transpose()
    }

    /// Rewards, newest first, of one status if given.
    pub async fn rewards(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RewardRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM referral_rewards \
             WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC LIMIT $2"
        );
        let rows = client.query(&sql, &[&status, &limit]).await?;
        rows.iter().map(RewardRow::from_row).collect()
    }

    /// Moves a held reward to `from` → `to` (held → pending to approve it, held → reversed to
    /// cancel it); whether it was in `from`.
    pub async fn move_reward(
        &self,
        id: Uuid,
        from: &str,
        to: &str,
        reason: Option<&str>,
    ) -> Result<bool, DbError> {
        let client = self.pool.get().await?;
        let moved = client
            .execute(
                "UPDATE referral_rewards SET status = $3, hold_reason = COALESCE($4, hold_reason) \
                 WHERE id = $1 AND status = $2",
                &[&id, &from, &to, &reason],
            )
            .await?;
        Ok(moved == 1)
    }

    /// The reward a recharge order, or a redeemed code, earned, if any.
    pub async fn reward_of_order(&self, order: Uuid) -> Result<Option<RewardRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM referral_rewards WHERE order_id = $1 OR code_id = $1"
        );
        let row = client.query_opt(&sql, &[&order]).await?;
        row.as_ref().map(RewardRow::from_row).transpose()
    }

    /// Rewards earned and not credited yet, oldest first: what a crash between a recharge and
    /// its reward's credit left, for the background job.
    pub async fn pending_rewards(&self, limit: i64) -> Result<Vec<RewardRow>, DbError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM referral_rewards r WHERE status = 'pending' \
             AND EXISTS (SELECT 1 FROM accounts a WHERE a.id = r.inviter_id AND a.status <> 'deleted') \
             ORDER BY created_at LIMIT $1"
        );
        let rows = client.query(&sql, &[&limit]).await?;
        rows.iter().map(RewardRow::from_row).collect()
    }

    /// Rewards of deleted inviters that were never credited are cancelled: nobody can take
    /// them. How many were.
    pub async fn cancel_rewards_of_deleted_inviters(&self) -> Result<u64, DbError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "UPDATE referral_rewards r SET status = 'reversed', hold_reason = 'the inviter was deleted' \
                 FROM accounts a WHERE a.id = r.inviter_id AND a.status = 'deleted' \
                 AND r.status IN ('pending', 'held')",
                &[],
            )
            .await?)
    }

    /// What an inviter's rewards add up to, over all of them: paid, held, and taken back
    /// after they were paid.
    pub async fn reward_totals(
        &self,
        inviter: Uuid,
    ) -> Result<(Decimal, Decimal, Decimal), DbError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT COALESCE(sum(amount_usd) FILTER (WHERE status = 'paid'), 0) AS paid, \
                        COALESCE(sum(amount_usd) FILTER (WHERE status = 'held'), 0) AS held, \
                        COALESCE(sum(amount_usd) FILTER (WHERE status = 'reversed' AND paid_at IS NOT NULL), 0) AS reversed \
                 FROM referral_rewards WHERE inviter_id = $1",
                &[&inviter],
            )
            .await?;
        Ok((
            column(&row, "paid")?,
            column(&row, "held")?,
            column(&row, "reversed")?,
        ))
    }

    /// An inviter's rewards, newest first, and how many accounts it invited.
    pub async fn referrals_of(&self, inviter: Uuid) -> Result<(i64, Vec<RewardRow>), DbError> {
        let client = self.pool.get().await?;
        let invitees: i64 = column(
            &client
                .query_one(
                    "SELECT count(*) FROM accounts WHERE invited_by = $1",
                    &[&inviter],
                )
                .await?,
            "count",
        )?;
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM referral_rewards WHERE inviter_id = $1 \
             ORDER BY created_at DESC LIMIT 500"
        );
        let rows = client.query(&sql, &[&inviter]).await?;
        Ok((
            invitees,
            rows.iter()
                .map(RewardRow::from_row)
                .collect::<Result<_, _>>()?,
        ))
    }

    /// Redeems the code a change settles for the change's account, credits it and enters the
    /// credit in the ledger, in one transaction. The conditional update takes the code's row
    /// lock, so of two accounts redeeming one code at once the second waits, then finds it
    /// redeemed.
    async fn redeem_code(&self, change: &BalanceChange) -> Result<ChangeApplied, DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let redeemed = tx
            .query_opt(REDEEM, &[&change.id, &change.account_id, &change.amount])
            .await?;
        if redeemed.is_none() {
            let by: Option<Option<AccountId>> = tx
                .query_opt(
                    "SELECT redeemed_by FROM redemption_codes WHERE id = $1",
                    &[&change.id],
                )
                .await?
                .map(|row| column(&row, "redeemed_by"))
                .transpose()?;
            return Ok(match by {
                Some(Some(by)) if by == change.account_id => ChangeApplied::AlreadyApplied {
                    change_id: change.id,
                },
                _ => ChangeApplied::Refused,
            });
        }
        enter(&tx, change).await?;
        if self.redemption_first_recharge {
            self.earn_reward(&tx, change, RewardSource::Code).await?;
        }
        tx.commit().await?;
        Ok(ChangeApplied::Applied)
    }
}

/// What earned a referral reward.
#[derive(Debug, Clone, Copy)]
enum RewardSource {
    Order,
    Code,
}

/// Earns the inviter's reward for the invitee's first paid recharge ($2 the invitee, $3 the
/// order, or $5 the redemption code): nothing if the invitee was not invited, its inviter is deleted, or a reward was
/// earned already. Held for review when both signed up from the same /24 (IPv4) or /64
/// (IPv6).
const EARN_REWARD: &str = "
    INSERT INTO referral_rewards (id, inviter_id, invitee_id, order_id, code_id, amount_usd, status, hold_reason)
    SELECT $1, inviter.id, invitee.id, $3, $5, $4,
        CASE WHEN same_network THEN 'held' ELSE 'pending' END,
        CASE WHEN same_network THEN 'the invitee signed up from the inviter''s network, or an address is unknown' END
    FROM accounts invitee
    JOIN accounts inviter ON inviter.id = invitee.invited_by
    CROSS JOIN LATERAL (SELECT
        -- An address unknown (an account made before addresses were kept, or by an operator)
        -- cannot be told apart: held too.
        invitee.signup_ip IS NULL OR inviter.signup_ip IS NULL
        OR (family(invitee.signup_ip) = family(inviter.signup_ip)
            AND network(set_masklen(invitee.signup_ip, CASE family(invitee.signup_ip) WHEN 4 THEN 24 ELSE 64 END))
              = network(set_masklen(inviter.signup_ip, CASE family(inviter.signup_ip) WHEN 4 THEN 24 ELSE 64 END)))
        AS same_network) net
    WHERE invitee.id = $2 AND inviter.id <> invitee.id AND inviter.status <> 'deleted'
      -- The first paid recharge (or, where redemptions count, redemption): no other before.
      AND NOT EXISTS (SELECT 1 FROM recharge_orders o WHERE o.account_id = invitee.id
                      AND o.status = 'paid' AND o.id IS DISTINCT FROM $3)
      AND (NOT $6 OR NOT EXISTS (SELECT 1 FROM redemption_codes c WHERE c.redeemed_by = invitee.id
                                 AND c.id IS DISTINCT FROM $5))
    ON CONFLICT (invitee_id) DO NOTHING";

/// Marks a pending reward paid, if it is the inviter's and of the change's amount.
const PAY_REWARD: &str = "
    UPDATE referral_rewards SET status = 'paid', paid_at = now()
    WHERE id = $1 AND inviter_id = $2 AND amount_usd = $3 AND status = 'pending'
    RETURNING id";

const REWARD_COLUMNS: &str =
    "id, inviter_id, invitee_id, order_id, amount_usd, status, hold_reason, created_at, paid_at";

/// A referral reward as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardRow {
    pub id: Uuid,
    pub inviter_id: Uuid,
    pub invitee_id: Uuid,
    /// The recharge that earned it (none when a redemption did).
    pub order_id: Option<Uuid>,
    pub amount_usd: Decimal,
    pub status: String,
    pub hold_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

impl RewardRow {
    fn from_row(row: &Row) -> Result<RewardRow, DbError> {
        Ok(RewardRow {
            id: column(row, "id")?,
            inviter_id: column(row, "inviter_id")?,
            invitee_id: column(row, "invitee_id")?,
            order_id: column(row, "order_id")?,
            amount_usd: column(row, "amount_usd")?,
            status: column(row, "status")?,
            hold_reason: column(row, "hold_reason")?,
            created_at: column(row, "created_at")?,
            paid_at: column(row, "paid_at")?,
        })
    }
}

/// Changes the balance of the change's account by its amount and enters it in the ledger,
/// inside the transaction of what it settles.
async fn enter(
    tx: &tokio_postgres::Transaction<'_>,
    change: &BalanceChange,
) -> Result<(), DbError> {
    let kind = change.kind.as_str();
    let entered = tx
        .execute(
            CREDIT,
            &[
                &change.account_id,
                &change.amount,
                &kind,
                &change.reason,
                &change.id,
            ],
        )
        .await?;
    if entered != 1 {
        return Err(DbError::Config(format!(
            "{} {}: its account's balance was not changed (no account, or the change was entered before)",
            kind, change.id
        )));
    }
    Ok(())
}

/// Marks a code redeemed if it is not yet, has not expired, and is worth the change's amount.
const REDEEM: &str = "
    UPDATE redemption_codes SET redeemed_by = $2, redeemed_at = now()
    WHERE id = $1 AND redeemed_by IS NULL AND amount_usd = $3
      AND (expires_at IS NULL OR expires_at > now())
    RETURNING id";
