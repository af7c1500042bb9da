//! A one-pass reader of an `/import` record's text for the rules' fast path
//! ([`super::rules::accept_fast`]), on serde_json's deserializer: it reads the fields the rules
//! check and visits everything else without building a `Value` tree.
//!
//! It is conservative: a repeated `event`, `properties` or checked property, or a member named
//! like serde_json's raw value marker (which a `Value` cannot hold), makes it give up (`None`),
//! and the caller takes the `Value` path, which decides. Every other value is read by
//! `deserialize_any`, as a `Value` would be (numbers parsed, strings unescaped and checked), so
//! it accepts only text that serde_json reads as the same JSON; the rules' tests check that on
//! mutated records.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};

use super::field::Field;

/// What [`scan_record`] read: the top-level `event`, the three checked properties and how many
/// property names there are (counted as written).
pub(super) struct Scanned<'a> {
    pub(super) event: Field<'a>,
    pub(super) time: Field<'a>,
    pub(super) distinct_id: Field<'a>,
    pub(super) insert_id: Field<'a>,
    pub(super) properties: usize,
}

/// Reads one record (a JSON object, optionally surrounded by whitespace); `None` if it is not
/// JSON, has no `properties` object, or is anything left to the `Value` path.
pub(super) fn scan_record(text: &str) -> Option<Scanned<'_>> {
    let record: Record<'_> = serde_json::from_str(text).ok()?;
    let props = record.properties?;
    Some(Scanned {
        event: record.event.unwrap_or(Field::Missing),
        time: props.time.unwrap_or(Field::Missing),
        distinct_id: props.distinct_id.unwrap_or(Field::Missing),
        insert_id: props.insert_id.unwrap_or(Field::Missing),
        properties: props.count,
    })
}

/// serde_json's raw value marker: an object naming it is not read as a `Value`.
const RAW_VALUE_MARKER: &str = "$serde_json::private::RawValue";

/// Gives up on a repeated member (the `Value` path keeps the last one: it decides).
fn once<'a, E: Error>(slot: &mut Option<Field<'a>>, value: Field<'a>) -> Result<(), E> {
    match slot.replace(value) {
        Some(_) => Err(E::custom("repeated member")),
        None => Ok(()),
    }
}

/// A member's name, borrowed from the text unless it has escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        let name = d.deserialize_str(Visit(PhantomData))?;
        if name.0 == RAW_VALUE_MARKER {
            return Err(D::Error::custom("serde_json's raw value marker"));
        }
        Ok(name)
    }
}

/// Any JSON value, read as a `Value` would read it, and dropped.
struct Any;

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Any)
    }
}

impl<'de> Visitor<'de> for Any {
    type Value = Any;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: Error>(self, _: bool) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_i64<E: Error>(self, _: i64) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_u64<E: Error>(self, _: u64) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_f64<E: Error>(self, _: f64) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_str<E: Error>(self, _: &str) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_unit<E: Error>(self) -> Result<Any, E> {
        Ok(Any)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        while seq.next_element::<Any>()?.is_some() {}
        Ok(Any)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        while map.next_entry::<Name<'de>, Any>()?.is_some() {}
        Ok(Any)
    }
}

/// The top-level object: `event` and `properties` read, other members visited.
struct Record<'a> {
    event: Option<Field<'a>>,
    properties: Option<Props<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Record<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Record<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event record")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record<'a>, A::Error> {
                let mut record = Record {
                    event: None,
                    properties: None,
                };
                while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
                    match name.as_ref() {
                        "event" => once(&mut record.event, map.next_value::<Field<'a>>()?)?,
                        "properties" if record.properties.is_none() => {
                            record.properties = Some(map.next_value()?);
                        }
                        "properties" => return Err(A::Error::custom("repeated properties")),
                        _ => {
                            map.next_value::<Any>()?;
                        }
                    }
                }
                Ok(record)
            }
        }
        d.deserialize_map(Visit(PhantomData))
    }
}

/// The properties object: its checked fields read, the rest visited, names counted.
struct Props<'a> {
    time: Option<Field<'a>>,
    distinct_id: Option<Field<'a>>,
    insert_id: Option<Field<'a>>,
    count: usize,
}

impl<'de: 'a, 'a> Deserialize<'de> for Props<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Props<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a properties object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props<'a>, A::Error> {
                let mut props = Props {
                    time: None,
                    distinct_id: None,
                    insert_id: None,
                    count: 0,
                };
                while let Some(Name(name)) = map.next_key::<Name<'de>>()? {
                    props.count += 1;
                    let slot = match name.as_ref() {
                        "time" => &mut props.time,
                        "distinct_id" => &mut props.distinct_id,
                        "$insert_id" => &mut props.insert_id,
                        _ => {
                            map.next_value::<Any>()?;
                            continue;
                        }
                    };
                    once(slot, map.next_value::<Field<'a>>()?)?;
                }
                Ok(props)
            }
        }
        d.deserialize_map(Visit(PhantomData))
    }
}
