//! A journal record's body: a settled request's [`UsageRecord`], field for field, in a fixed
//! little-endian layout behind a version byte (docs/adr/0019-write-ahead-journal.md).
//!
//! Version 1:
//!
//! ```text
//! version        u8 = 1
//! request_id     16 bytes   account_id  16 bytes   key_id  16 bytes
//! usage          7 × u64: input, output, cache read, cache write 5m, cache write 1h,
//!                web search requests, web fetch requests
//! cost           i128 mantissa (16 bytes), u8 scale
//! price_version, started_at, finished_at
//!                each i64 seconds since the epoch, u32 nanoseconds
//! flags          u8: bit 0 long_prompt_tier, bit 1 estimated; the others 0
//! outcome        u8: 1 completed, 2 client_disconnected, 3 upstream_cut, 4 interrupted,
//!                5 balance_exceeded
//! usage_fault    u8: 0 none, 1 missing_usage, 2 absurd_count
//! model          u16 length, then that many bytes of UTF-8
//! ```
//!
//! The codes are written out here, not derived from the enums' order, so that a new variant
//! or a reordering cannot change what an old journal means. A body with bytes left over, an
//! unknown code or a value out of range does not decode: the record is damage, never a guess.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::bill::UsageFault;
use crate::ledger::{Outcome, UsageRecord};
use crate::usage::Usage;

/// The format this build writes, and the only one it reads.
pub(super) const VERSION: u8 = 1;
/// The longest model name a record carries. Model ids are tens of bytes; the rate card
/// admits only the models it prices, so this bounds a record, never a real request.
pub(super) const MAX_MODEL_BYTES: usize = 1024;
/// A record's size without its model name.
pub(super) const FIXED_LEN: usize = 1 + 3 * 16 + 7 * 8 + 17 + 3 * 12 + 3 + 2;

const LONG_PROMPT_TIER: u8 = 0b01;
const ESTIMATED: u8 = 0b10;

/// Why a record cannot be journaled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the model name is {0} bytes, more than a journal record carries")]
    ModelTooLong(usize),
    #[error("a journal record of {0} bytes is larger than a frame carries")]
    TooLarge(usize),
}

/// Why a body whose checksum holds does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    /// Written by a build with a format this one does not know (a newer tollgate).
    #[error("format version {0}, which this build cannot read")]
    UnsupportedVersion(u8),
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// Appends `record`'s body to `out`.
pub(super) fn encode(record: &UsageRecord, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let model = record.model.as_bytes();
    let model_len = u16::try_from(model.len())
        .ok()
        .filter(|_| model.len() <= MAX_MODEL_BYTES)
        .ok_or(EncodeError::ModelTooLong(model.len()))?;
    out.reserve(FIXED_LEN + model.len());
    out.push(VERSION);
    out.extend_from_slice(record.request_id.as_bytes());
    out.extend_from_slice(record.account_id.as_bytes());
    out.extend_from_slice(record.key_id.as_bytes());
    let usage = &record.usage;
    for count in [
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.web_search_requests,
        usage.web_fetch_requests,
    ] {
        out.extend_from_slice(&count.to_le_bytes());
    }
    out.extend_from_slice(&record.cost.mantissa().to_le_bytes());
    // A Decimal's scale is at most 28.
    out.push(u8::try_from(record.cost.scale()).unwrap_or(u8::MAX));
    for at in [record.price_version, record.started_at, record.finished_at] {
        out.extend_from_slice(&at.timestamp().to_le_bytes());
        out.extend_from_slice(&at.timestamp_subsec_nanos().to_le_bytes());
    }
    let mut flags = 0;
    if record.long_prompt_tier {
        flags |= LONG_PROMPT_TIER;
    }
    if record.estimated {
        flags |= ESTIMATED;
    }
    out.push(flags);
    out.push(outcome_code(record.outcome));
    out.push(fault_code(record.usage_fault));
    out.extend_from_slice(&model_len.to_le_bytes());
    out.extend_from_slice(model);
    Ok(())
}

/// The record a body holds.
pub(super) fn decode(body: &[u8]) -> Result<UsageRecord, DecodeError> {
    let mut body = Reader(body);
    let version = body.u8()?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let request_id = Uuid::from_bytes(body.array()?);
    let account_id = Uuid::from_bytes(body.array()?);
    let key_id = Uuid::from_bytes(body.array()?);
    let usage = Usage {
        input_tokens: body.u64()?,
        output_tokens: body.u64()?,
        cache_read_tokens: body.u64()?,
        cache_write_5m_tokens: body.u64()?,
        cache_write_1h_tokens: body.u64()?,
        web_search_requests: body.u64()?,
        web_fetch_requests: body.u64()?,
    };
    let mantissa = i128::from_le_bytes(body.array()?);
    let scale = u32::from(body.u8()?);
    let cost = Decimal::try_from_i128_with_scale(mantissa, scale)
        .map_err(|_| DecodeError::Malformed("cost out of range"))?;
    let price_version = body.time()?;
    let started_at = body.time()?;
    let finished_at = body.time()?;
    let flags = body.u8()?;
    if flags & !(LONG_PROMPT_TIER | ESTIMATED) != 0 {
        return Err(DecodeError::Malformed("unknown flags"));
    }
    let outcome = outcome_from(body.u8()?)?;
    let usage_fault = fault_from(body.u8()?)?;
    let model_len = usize::from(u16::from_le_bytes(body.array()?));
    if model_len > MAX_MODEL_BYTES {
        return Err(DecodeError::Malformed("model name too long"));
    }
    let model = std::str::from_utf8(body.take(model_len)?)
        .map_err(|_| DecodeError::Malformed("model name is not UTF-8"))?
        .to_owned();
    if !body.0.is_empty() {
        return Err(DecodeError::Malformed("bytes after the record"));
    }
    Ok(UsageRecord {
        request_id,
        account_id,
        key_id,
        model,
        usage,
        cost,
        price_version,
        long_prompt_tier: flags & LONG_PROMPT_TIER != 0,
        outcome,
        estimated: flags & ESTIMATED != 0,
        usage_fault,
        started_at,
        finished_at,
    })
}

fn outcome_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Completed => 1,
        Outcome::ClientDisconnected => 2,
        Outcome::UpstreamCut => 3,
        Outcome::Interrupted => 4,
        Outcome::BalanceExceeded => 5,
    }
}

fn outcome_from(code: u8) -> Result<Outcome, DecodeError> {
    Ok(match code {
        1 => Outcome::Completed,
        2 => Outcome::ClientDisconnected,
        3 => Outcome::UpstreamCut,
        4 => Outcome::Interrupted,
        5 => Outcome::BalanceExceeded,
        _ => return Err(DecodeError::Malformed("unknown outcome")),
    })
}

fn fault_code(fault: Option<UsageFault>) -> u8 {
    match fault {
        None => 0,
        Some(UsageFault::MissingUsage) => 1,
        Some(UsageFault::AbsurdCount) => 2,
    }
}

fn fault_from(code: u8) -> Result<Option<UsageFault>, DecodeError> {
    Ok(match code {
        0 => None,
        1 => Some(UsageFault::MissingUsage),
        2 => Some(UsageFault::AbsurdCount),
        _ => return Err(DecodeError::Malformed("unknown usage fault")),
    })
}

/// Reads a body front to back; running out of bytes is malformed.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Malformed("record cut short"))?;
        self.0 = rest;
        Ok(*head)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(DecodeError::Malformed("record cut short"))?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn time(&mut self) -> Result<DateTime<Utc>, DecodeError> {
        let seconds = i64::from_le_bytes(self.array()?);
        let nanos = u32::from_le_bytes(self.array()?);
        DateTime::from_timestamp(seconds, nanos).ok_or(DecodeError::Malformed("time out of range"))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    /// A record with every field set to something other than its default.
    pub(in crate::journal) fn sample(n: u64) -> UsageRecord {
        let at = DateTime::from_timestamp(1_764_000_000 + n as i64, 123_456_789).unwrap();
        UsageRecord {
            request_id: Uuid::from_u128(0x1000 + u128::from(n)),
            account_id: Uuid::from_u128(0xacc0),
            key_id: Uuid::from_u128(0xbee5),
            model: "claude-sonnet-4-5-20250929".to_owned(),
            usage: Usage {
                input_tokens: 1_000 + n,
                output_tokens: 200,
                cache_read_tokens: 50_000,
                cache_write_5m_tokens: 3,
                cache_write_1h_tokens: 4,
                web_search_requests: 1,
                web_fetch_requests: 2,
            },
            cost: dec!(0.012345678901234567) + Decimal::from(n),
            price_version: at - chrono::Duration::days(30),
            long_prompt_tier: n.is_multiple_of(2),
            outcome: Outcome::ClientDisconnected,
            estimated: true,
            usage_fault: Some(UsageFault::AbsurdCount),
            started_at: at - chrono::Duration::seconds(3),
            finished_at: at,
        }
    }

    fn encoded(record: &UsageRecord) -> Vec<u8> {
        let mut body = Vec::new();
        encode(record, &mut body).unwrap();
        body
    }

    #[test]
    fn a_record_reads_back_field_for_field() {
        let record = sample(7);
        let body = encoded(&record);
        assert_eq!(body.len(), FIXED_LEN + record.model.len());
        let read = decode(&body).unwrap();
        assert_eq!(read, record);
        // Decimal's equality ignores the scale; the journal keeps it too.
        assert_eq!(read.cost.scale(), record.cost.scale());
    }

    #[test]
    fn every_outcome_and_fault_reads_back() {
        let outcomes = [
            Outcome::Completed,
            Outcome::ClientDisconnected,
            Outcome::UpstreamCut,
            Outcome::Interrupted,
            Outcome::BalanceExceeded,
        ];
        let faults = [
            None,
            Some(UsageFault::MissingUsage),
            Some(UsageFault::AbsurdCount),
        ];
        for outcome in outcomes {
            for usage_fault in faults {
                let record = UsageRecord {
                    outcome,
                    usage_fault,
                    ..sample(1)
                };
                assert_eq!(decode(&encoded(&record)).unwrap(), record);
            }
        }
    }

    #[test]
    fn another_version_is_refused_by_name_not_misread() {
        let mut body = encoded(&sample(1));
        body[0] = 2;
        assert_eq!(decode(&body), Err(DecodeError::UnsupportedVersion(2)));
    }

    #[test]
    fn a_body_cut_short_or_with_bytes_left_over_does_not_decode() {
        let body = encoded(&sample(1));
        for len in 0..body.len() {
            assert!(decode(&body[..len]).is_err(), "cut at {len}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer),
            Err(DecodeError::Malformed("bytes after the record"))
        );
    }

    #[test]
    fn a_model_name_longer_than_a_record_carries_is_refused() {
        let record = UsageRecord {
            model: "m".repeat(MAX_MODEL_BYTES + 1),
            ..sample(1)
        };
        assert_eq!(
            encode(&record, &mut Vec::new()),
            Err(EncodeError::ModelTooLong(MAX_MODEL_BYTES + 1))
        );
    }

    proptest! {
        #[test]
        fn any_record_reads_back(
            counts in prop::array::uniform7(any::<u64>()),
            mantissa in -(1i128 << 95)..(1i128 << 95),
            scale in 0u32..=28,
            seconds in -62_000_000_000i64..250_000_000_000,
            nanos in 0u32..1_000_000_000,
            model in "\\PC{0,60}",
            flags in 0u8..4,
        ) {
            let at = DateTime::from_timestamp(seconds, nanos).unwrap();
            let record = UsageRecord {
                model,
                usage: Usage {
                    input_tokens: counts[0],
                    output_tokens: counts[1],
                    cache_read_tokens: counts[2],
                    cache_write_5m_tokens: counts[3],
                    cache_write_1h_tokens: counts[4],
                    web_search_requests: counts[5],
                    web_fetch_requests: counts[6],
                },
                cost: Decimal::from_i128_with_scale(mantissa, scale),
                price_version: at,
                started_at: at,
                finished_at: at,
                long_prompt_tier: flags & 1 != 0,
                estimated: flags & 2 != 0,
                ..sample(0)
            };
            let read = decode(&encoded(&record)).unwrap();
            prop_assert_eq!(read.cost.scale(), record.cost.scale());
            prop_assert_eq!(read, record);
        }

        /// Arbitrary bytes after a version byte either decode or are refused: never a panic.
        #[test]
        fn arbitrary_bodies_never_panic(rest in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut body = vec![VERSION];
            body.extend(rest);
            let _ = decode(&body);
        }
    }
}
