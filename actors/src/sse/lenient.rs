//! A lenient JSON reader for the few fields billing needs. A value of an unexpected type
//! counts as absent rather than failing the whole document, because losing a `message_start`
//! to one strange field would under-bill the request.
//!
//! - [`Loose`]: a string or object field that is what we expect, absent, or odd.
//! - [`Obj`]: a JSON object, and only an object, read as a struct.
//! - [`Count`]: a token count: a non-negative integer, nothing, or an absurd number.
//! - [`parse_wire`]: one pass over the bytes, with a fallback for repeated keys.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Reads `T` from JSON in one pass. The only thing that pass refuses in valid JSON is a key
/// repeated inside one of our objects (derived deserializers reject duplicate fields), which
/// would lose the whole event; such a document is read again through `serde_json::Value`, which
/// keeps the last occurrence of a key, as JavaScript's `JSON.parse` does.
pub(super) fn parse_wire<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(error) if error.is_data() => {
            let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
            serde_json::from_value(value).ok()
        }
        Err(_) => None,
    }
}

/// A value that is either what we expect, or absent (missing or null), or something else.
///
/// Read in one pass, without buffering the value first (as `#[serde(untagged)]` would): it is
/// on the path of every response and every stream event.
#[derive(Debug, Default)]
pub(super) enum Loose<T> {
    Got(T),
    #[default]
    Absent,
    Odd,
}

/// What a [`Loose`] value's visitor does with each JSON shape: `Absent` for null, `Odd` for
/// anything `T` is not made from (skipping over arrays and objects), and `Got` for the shape
/// the implementation reads.
macro_rules! loose_visitor_defaults {
    ($value:ty) => {
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok(Loose::Absent)
        }
        fn visit_none<E: de::Error>(self) -> Result<$value, E> {
            Ok(Loose::Absent)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_i128<E: de::Error>(self, _: i128) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_u128<E: de::Error>(self, _: u128) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok(Loose::Odd)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Loose::Odd)
        }
    };
}

/// A string field.
impl<'de> Deserialize<'de> for Loose<String> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Loose<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            loose_visitor_defaults!(Loose<String>);
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Loose<String>, E> {
                Ok(Loose::Got(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loose<String>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Odd)
            }
        }
        deserializer.deserialize_any(StrVisitor)
    }
}

/// An object field.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loose<Obj<T>> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjFieldVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjFieldVisitor<T> {
            type Value = Loose<Obj<T>>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            loose_visitor_defaults!(Loose<Obj<T>>);
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Loose<Obj<T>>, E> {
                Ok(Loose::Odd)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose<Obj<T>>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|value| Loose::Got(Obj(value)))
            }
        }
        deserializer.deserialize_any(ObjFieldVisitor(std::marker::PhantomData))
    }
}

/// A JSON object read as `T`. Derived struct deserializers also accept arrays (fields by
/// position); usage numbers taken from an array would be nonsense, so only objects are read.
#[derive(Debug)]
pub(super) struct Obj<T>(pub(super) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjVisitor(std::marker::PhantomData))
    }
}

struct ObjVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
    type Value = Obj<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Obj)
    }
}

/// A token count as the upstream wrote it.
///
/// A negative number, or one too large for a `u64`, is not something to bill or to ignore
/// quietly: it is an upstream fault ([`Count::Absurd`]), which the report flags. A fraction,
/// a string and any other shape count as absent, as before.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Count {
    #[default]
    Absent,
    Got(u64),
    Absurd,
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
        Ok(Count::Got(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
        Ok(u64::try_from(v).map_or(Count::Absurd, Count::Got))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Count, E> {
        Ok(Count::Absurd)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Count, E> {
        Ok(Count::Absurd)
    }

    // Counts are integers; a fractional or exponent form is not one we can bill exactly. The
    // JSON reader hands integers beyond a `u64` over as floats: those, and negative numbers,
    // are absurd.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
        if v < 0.0 || v >= u64::MAX as f64 {
            Ok(Count::Absurd)
        } else {
            Ok(Count::Absent)
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
        Ok(Count::Absent)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
        Ok(Count::Absent)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Count, E> {
        Ok(Count::Absent)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count::Absent)
    }

    fn visit_none<E: de::Error>(self) -> Result<Count, E> {
        Ok(Count::Absent)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Count, D::Error> {
        Count::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Count::Absent)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Count::Absent)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{delta, parse, start};
    use super::super::usage_from_message;
    use super::*;
    use crate::Usage;
    use serde_json::json;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Sample {
        name: Loose<String>,
        inner: Loose<Obj<Inner>>,
        n: Count,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Inner {
        n: Count,
    }

    fn sample(json: &str) -> Option<Sample> {
        parse_wire::<Obj<Sample>>(json.as_bytes()).map(|Obj(sample)| sample)
    }

    #[test]
    fn counts_are_non_negative_integers_nothing_or_absurd() {
        let n = |value: &str| sample(&format!("{{\"n\":{value}}}")).map(|s| s.n);
        assert_eq!(n("0"), Some(Count::Got(0)));
        assert_eq!(n("18446744073709551615"), Some(Count::Got(u64::MAX)));
        for absurd in ["-1", "-9223372036854775808", "18446744073709551616"] {
            assert_eq!(n(absurd), Some(Count::Absurd), "{absurd}");
        }
        for odd in ["1.5", "1e3", "\"7\"", "true", "null", "[1]", "{\"n\":1}"] {
            assert_eq!(n(odd), Some(Count::Absent), "{odd}");
        }
    }

    #[test]
    fn loose_fields_tell_absent_from_odd() {
        let s = sample(r#"{"name":"x","inner":{"n":3}}"#).unwrap();
        assert!(matches!(s.name, Loose::Got(ref name) if name == "x"));
        assert!(matches!(
            s.inner,
            Loose::Got(Obj(Inner { n: Count::Got(3) }))
        ));
        let s = sample(r#"{"name":null}"#).unwrap();
        assert!(matches!((s.name, s.inner), (Loose::Absent, Loose::Absent)));
        let s = sample(r#"{"name":{"a":[1]},"inner":[1,2],"other":{"deep":[{}]}}"#).unwrap();
        assert!(matches!((s.name, s.inner), (Loose::Odd, Loose::Odd)));
        assert!(matches!(
            sample(r#"{"inner":"text"}"#).unwrap().inner,
            Loose::Odd
        ));
    }

    #[test]
    fn only_objects_are_read_and_a_repeated_key_keeps_the_last() {
        assert!(sample("[\"x\",null,1]").is_none());
        assert!(sample("not json").is_none());
        let s = sample(r#"{"n":1,"n":2}"#).unwrap();
        assert_eq!(s.n, Count::Got(2));
    }

    #[test]
    fn a_repeated_key_does_not_lose_the_event() {
        // The last occurrence counts, as in JSON.parse.
        let stream = start(json!({"input_tokens":10,"output_tokens":1}))
            + "event: message_delta\ndata: {\"delta\":{\"stop_reason\":\"end_turn\",\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3,\"output_tokens\":500}}\n\n";
        assert_eq!(parse(stream.as_bytes()).usage().output_tokens, 500);
        assert_eq!(
            usage_from_message(
                br#"{"usage":{"input_tokens":4,"cache_creation":{"ephemeral_1h_input_tokens":1,"ephemeral_1h_input_tokens":2},"output_tokens":7}}"#
            )
            .map(|u| (u.input_tokens, u.cache_write_1h_tokens, u.output_tokens)),
            Some((4, 2, 7))
        );
    }

    #[test]
    fn odd_values_count_as_absent() {
        let stream =
            start(json!({"input_tokens":10,"output_tokens":1,"cache_read_input_tokens":4}))
                + &delta(
                    json!({"output_tokens":"12","input_tokens":-1,"cache_read_input_tokens":2.5,
                "server_tool_use":"lots","cache_creation":[1,2]}),
                )
                + &delta(json!({"output_tokens":{"a":[1]}}));
        let u = parse(stream.as_bytes()).usage();
        assert_eq!(
            u,
            Usage {
                input_tokens: 10,
                output_tokens: 1,
                cache_read_tokens: 4,
                ..Usage::default()
            }
        );
        let p = parse(
            b"event: message_start\ndata: {\"message\":{\"model\":5,\"usage\":{\"input_tokens\":3}}}\n\n",
        );
        assert!(p.saw_message_start());
        assert_eq!(p.model(), None);
        assert_eq!(p.usage().input_tokens, 3);
    }

    #[test]
    fn malformed_json_is_ignored() {
        let stream = start(json!({"input_tokens":10,"output_tokens":1}))
            + "event: message_delta\ndata: {\"usage\":{\"output_tokens\":5\n\n"
            + "event: message_delta\ndata: [1,2,3]\n\n"
            + "event: message_delta\ndata: \n\n";
        let p = parse(stream.as_bytes());
        assert_eq!(p.usage().output_tokens, 1);
    }
}
