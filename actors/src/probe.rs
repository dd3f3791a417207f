//! Reading a Messages request body once: the fields billing needs, and what in the body can
//! add input that its bytes do not show.
//!
//! [`RequestProbe::read`] is the one parse of a request body. It reads `model`, `max_tokens`
//! and `stream`, counts media and server tools from the decoded JSON, captures the top-level
//! options it is asked to watch (price-changing ones, see `metering.price_options`), and
//! skips everything else with [`IgnoredAny`], which checks the JSON without building it.
//! Counting from the decoded JSON, not from the raw bytes, means an escaped spelling
//! (`"\u0064ocument"`) is the same type the upstream reads (docs/adr/0011-media-counted-from-the-decoded-body.md).
//!
//! What is counted (the hold's allowance for each kind is in [`crate::hold`]):
//! - **Media**: every JSON object anywhere under `messages` or `system` whose `type` is
//!   `"image"` (any source), or `"document"`, classed by its `source.type`: `base64`, `url`
//!   and `file` documents are *paged* (a PDF costs per page, more than its bytes show, and a
//!   URL or file id shows nothing of its size); any other source (`text`, `content`, none) is
//!   a *text* document, whose text is in the body. Nested blocks count too: images in a
//!   `tool_result`, in a `content` document source, anywhere, except under the keys the API
//!   defines as text or tool input ([`OPAQUE_KEYS`]), which are skipped unread. Over-counting
//!   (an object that only looks like an image block) only makes a hold larger.
//! - **Server tools**: every entry of `tools` whose `type` is set and is not `"custom"`
//!   (`web_search_20250305`, `web_fetch_20250910`, `code_execution_20250825`, ...), with its
//!   `max_uses` when it declares one, and every entry of `mcp_servers`.
//!
//! Duplicate keys are refused in every object the probe reads (the top level, and everything
//! under `messages`, `system` and `tools`): JSON parsers disagree on which duplicate wins, and
//! tollgate must bill the request the upstream reads, not another one.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Media blocks found under `messages` and `system`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaCount {
    /// `"type": "image"` blocks, whatever their source.
    pub images: u32,
    /// Documents whose cost the body's bytes do not bound: `base64` (PDF pages), `url` and
    /// `file` sources.
    pub paged_documents: u32,
    /// Documents whose text is in the body: `text` and `content` sources (or none).
    pub text_documents: u32,
}

/// What kind of server tool a `tools[]` entry is, by its `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerToolKind {
    /// `web_search_*`: billed per use, and its results add input.
    WebSearch,
    /// `web_fetch_*`: the fetched page or PDF adds input.
    WebFetch,
    /// Any other typed tool (`code_execution_*`, `bash_*`, `text_editor_*`, `computer_*`,
    /// `tool_search_*`, `memory_*`, an `mcp_servers` entry, ...): its results or its own
    /// definition add input.
    Other,
}

impl ServerToolKind {
    /// The kind of a tool of type `tool_type`; `None` for a client tool (no type, or
    /// `"custom"`).
    pub fn of(tool_type: &str) -> Option<ServerToolKind> {
        if tool_type == "custom" {
            None
        } else if tool_type.starts_with("web_search") {
            Some(ServerToolKind::WebSearch)
        } else if tool_type.starts_with("web_fetch") {
            Some(ServerToolKind::WebFetch)
        } else {
            Some(ServerToolKind::Other)
        }
    }
}

/// One server tool the request enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTool {
    pub kind: ServerToolKind,
    /// The tool's own `max_uses`, when it declares one (a non-negative integer).
    pub max_uses: Option<u64>,
}

/// The value of a watched top-level option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    /// A JSON string.
    Text(String),
    /// Any other JSON value (a number, an object, ...).
    Other,
}

/// What the probe read from a Messages request body.
#[derive(Debug, Default)]
pub struct RequestProbe<'a> {
    pub model: Option<Cow<'a, str>>,
    pub max_tokens: Option<serde_json::Number>,
    pub stream: Option<bool>,
    pub media: MediaCount,
    /// In the order of `tools`, then `mcp_servers`. Empty (and unallocated) without any.
    pub server_tools: Vec<ServerTool>,
    /// The watched top-level options present in the body, with their values.
    pub options: Vec<(String, OptionValue)>,
}

impl<'a> RequestProbe<'a> {
    /// Reads `body`, capturing the top-level keys named in `watched`. Fails on anything
    /// that is not a JSON object, on trailing bytes, and on a duplicate key in an object it
    /// reads; the message says what is wrong (it names no value from the body).
    pub fn read(body: &'a [u8], watched: &[String]) -> Result<RequestProbe<'a>, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let probe = TopLevel { watched }.deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(probe)
    }
}

/// How many keys of one object are remembered on the stack; an object with more spills to
/// the heap. Blocks and messages have two to five keys.
const INLINE_KEYS: usize = 8;

/// Remembers the keys of one object, to refuse a duplicate. Objects have a handful of keys,
/// so a linear search beats hashing, and nothing is allocated for an object of up to
/// [`INLINE_KEYS`] keys (keys are borrowed from the body unless they had to be unescaped).
struct SeenKeys<'de> {
    inline: [Option<Cow<'de, str>>; INLINE_KEYS],
    len: usize,
    spilled: Vec<Cow<'de, str>>,
}

impl<'de> SeenKeys<'de> {
    fn new() -> Self {
        SeenKeys {
            inline: Default::default(),
            len: 0,
            spilled: Vec::new(),
        }
    }

    fn insert<E: de::Error>(&mut self, key: Cow<'de, str>) -> Result<(), E> {
        let seen = self
            .inline
            .iter()
            .take(self.len)
            .flatten()
            .chain(self.spilled.iter())
            .any(|seen| *seen == key);
        if seen {
            return Err(E::custom(format_args!("duplicate key `{key}`")));
        }
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(key);
                self.len += 1;
            }
            None => self.spilled.push(key),
        }
        Ok(())
    }
}

/// A key or a string value, borrowed from the body unless it had to be unescaped.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// The top-level object.
struct TopLevel<'w> {
    watched: &'w [String],
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = RequestProbe<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = RequestProbe<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Messages request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut probe = RequestProbe::default();
        let mut seen = SeenKeys::new();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            seen.insert(key.clone())?;
            match key.as_ref() {
                "model" => probe.model = Some(map.next_value::<Text<'de>>()?.0),
                "max_tokens" => probe.max_tokens = Some(map.next_value()?),
                "stream" => probe.stream = Some(map.next_value()?),
                "messages" | "system" => {
                    let walked = map.next_value_seed(Walk { want_text: false })?;
                    probe.media = probe.media.plus(walked.count);
                }
                "tools" | "mcp_servers" => map.next_value_seed(ServerTools {
                    into: &mut probe.server_tools,
                    mcp: key == "mcp_servers",
                })?,
                other if self.watched.iter().any(|w| w == other) => {
                    let value = map.next_value::<Captured>()?.0;
                    probe.options.push((other.to_owned(), value));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(probe)
    }
}

/// Implements the visitor methods of the scalars a visitor treats alike: each returns
/// `$value`.
macro_rules! scalars {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// Implements `visit_map` for a visitor that skips an object whole, returning `$value`.
macro_rules! compounds {
    ($value:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($value)
        }
    };
}

/// A watched option's value: its text if it is a string.
struct Captured(OptionValue);

impl<'de> de::Deserialize<'de> for Captured {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CapturedVisitor;
        impl<'de> Visitor<'de> for CapturedVisitor {
            type Value = Captured;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            scalars!(Captured(OptionValue::Other));
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Captured, E> {
                Ok(Captured(OptionValue::Text(v.to_owned())))
            }
            compounds!(Captured(OptionValue::Other));
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Captured, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Captured(OptionValue::Other))
            }
        }
        deserializer.deserialize_any(CapturedVisitor)
    }
}

impl MediaCount {
    /// Both counts together (saturating: a count only ever makes a hold larger).
    pub fn plus(self, other: MediaCount) -> MediaCount {
        MediaCount {
            images: self.images.saturating_add(other.images),
            paged_documents: self.paged_documents.saturating_add(other.paged_documents),
            text_documents: self.text_documents.saturating_add(other.text_documents),
        }
    }

    /// The media an object of type `kind`, whose `source` is of type `source_kind`, is by
    /// itself (not counting what it contains).
    pub fn of_block(kind: Option<&str>, source_kind: Option<&str>) -> MediaCount {
        let mut own = MediaCount::default();
        match (kind, source_kind) {
            (Some("image"), _) => own.images = 1,
            (Some("document"), Some("base64" | "url" | "file")) => own.paged_documents = 1,
            (Some("document"), _) => own.text_documents = 1,
            _ => {}
        }
        own
    }
}

/// What walking one value under `messages` or `system` found.
#[derive(Default)]
struct Walked<'de> {
    /// The value itself, when it is a string and the walk wanted it (a `type`).
    text: Option<Cow<'de, str>>,
    /// The value's own `type`, when it is an object whose `type` is a string (a `source`).
    object_type: Option<Cow<'de, str>>,
    /// The media blocks in the value, at any depth, itself included.
    count: MediaCount,
}

/// Keys whose values the walk skips unread: the API defines them as text (`text`, `data`,
/// `thinking`, ...) or as the model's own tool input (`input`), so no block the API would
/// read as media can be there, and their tokens are bounded by their bytes. They are most of
/// a long conversation's bytes, and skipping them costs what the old byte scan did.
pub const OPAQUE_KEYS: [&str; 10] = [
    "text",
    "data",
    "thinking",
    "signature",
    "input",
    "id",
    "tool_use_id",
    "name",
    "role",
    "citations",
];

/// Walks any value under `messages` or `system` for media blocks.
#[derive(Clone, Copy)]
struct Walk {
    /// Keep the value's text if it is a string. Only a `type` is wanted: other strings (the
    /// prompt's text) are skipped without a copy.
    want_text: bool,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Walked<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Walked<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = Walked<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    scalars!(Walked::default());

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Walked<'de>, E> {
        Ok(Walked {
            text: self.want_text.then_some(Cow::Borrowed(v)),
            ..Walked::default()
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Walked<'de>, E> {
        Ok(Walked {
            text: self.want_text.then(|| Cow::Owned(v.to_owned())),
            ..Walked::default()
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Walked<'de>, A::Error> {
        let mut count = MediaCount::default();
        while let Some(walked) = seq.next_element_seed(Walk { want_text: false })? {
            count = count.plus(walked.count);
        }
        Ok(Walked {
            count,
            ..Walked::default()
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Walked<'de>, A::Error> {
        let mut count = MediaCount::default();
        let mut kind = None;
        let mut source_kind = None;
        let mut seen = SeenKeys::new();
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            seen.insert(key.clone())?;
            let walked = match key.as_ref() {
                "type" => {
                    let mut walked = map.next_value_seed(Walk { want_text: true })?;
                    kind = walked.text.take();
                    walked
                }
                "source" => {
                    let mut walked = map.next_value_seed(Walk { want_text: false })?;
                    source_kind = walked.object_type.take();
                    walked
                }
                skipped if OPAQUE_KEYS.contains(&skipped) => {
                    map.next_value::<IgnoredAny>()?;
                    Walked::default()
                }
                _ => map.next_value_seed(Walk { want_text: false })?,
            };
            count = count.plus(walked.count);
        }
        let own = MediaCount::of_block(kind.as_deref(), source_kind.as_deref());
        Ok(Walked {
            text: None,
            object_type: kind,
            count: count.plus(own),
        })
    }
}

/// `tools` or `mcp_servers`: the server tools among them.
struct ServerTools<'p> {
    into: &'p mut Vec<ServerTool>,
    /// `mcp_servers`: every entry is a server whose tools run upstream, one server tool of
    /// unknown use each. Otherwise `tools`, whose entries say what they are.
    mcp: bool,
}

impl<'de> DeserializeSeed<'de> for ServerTools<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ServerTools<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of tools")
    }

    scalars!(());
    compounds!(());

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.mcp {
            while seq.next_element::<IgnoredAny>()?.is_some() {
                self.into.push(ServerTool {
                    kind: ServerToolKind::Other,
                    max_uses: None,
                });
            }
        } else {
            while let Some(tool) = seq.next_element::<Tool>()? {
                self.into.extend(tool.0);
            }
        }
        Ok(())
    }
}

/// One `tools[]` entry: a server tool, or `None` for a client tool (or a value that is not
/// a tool at all).
struct Tool(Option<ServerTool>);

impl<'de> de::Deserialize<'de> for Tool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ToolVisitor;
        impl<'de> Visitor<'de> for ToolVisitor {
            type Value = Tool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tool")
            }
            scalars!(Tool(None));
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Tool, E> {
                Ok(Tool(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tool, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Tool(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tool, A::Error> {
                let mut kind = None;
                let mut max_uses = None;
                let mut seen = SeenKeys::new();
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    seen.insert(key.clone())?;
                    match key.as_ref() {
                        "type" => {
                            kind = map
                                .next_value_seed(Walk { want_text: true })?
                                .text
                                .and_then(|t| ServerToolKind::of(&t));
                        }
                        // Rare (server tools only), so decoded whole.
                        "max_uses" => {
                            max_uses = map.next_value::<serde_json::Value>()?.as_u64();
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Tool(kind.map(|kind| ServerTool { kind, max_uses })))
            }
        }
        deserializer.deserialize_any(ToolVisitor)
    }
}

/// The same counts as [`RequestProbe::read`], done the slow way on a decoded
/// [`serde_json::Value`]: the reference that tests and the fuzz target compare the probe
/// with. Not for the request path (it builds the whole document).
pub mod reference {
    use serde_json::Value;

    use super::{MediaCount, ServerTool, ServerToolKind};

    /// Media blocks under `messages` and `system` of a request object.
    pub fn media(request: &Value) -> MediaCount {
        ["messages", "system"]
            .iter()
            .filter_map(|key| request.get(key))
            .map(walk)
            .fold(MediaCount::default(), MediaCount::plus)
    }

    fn walk(value: &Value) -> MediaCount {
        match value {
            Value::Array(items) => items
                .iter()
                .map(walk)
                .fold(MediaCount::default(), MediaCount::plus),
            Value::Object(object) => {
                let inner = object
                    .iter()
                    .filter(|(key, _)| !super::OPAQUE_KEYS.contains(&key.as_str()))
                    .map(|(_, value)| walk(value))
                    .fold(MediaCount::default(), MediaCount::plus);
                let kind = object.get("type").and_then(Value::as_str);
                let source_kind = object
                    .get("source")
                    .and_then(Value::as_object)
                    .and_then(|source| source.get("type"))
                    .and_then(Value::as_str);
                inner.plus(MediaCount::of_block(kind, source_kind))
            }
            _ => MediaCount::default(),
        }
    }

    /// Server tools of a request object, in the probe's order.
    pub fn server_tools(request: &Value) -> Vec<ServerTool> {
        let tools = request
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|tool| {
                let kind = ServerToolKind::of(tool.get("type")?.as_str()?)?;
                let max_uses = tool.get("max_uses").and_then(Value::as_u64);
                Some(ServerTool { kind, max_uses })
            });
        let servers = request
            .get("mcp_servers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|_| ServerTool {
                kind: ServerToolKind::Other,
                max_uses: None,
            });
        tools.chain(servers).collect()
    }
}

#[cfg(test)]
mod tests;
