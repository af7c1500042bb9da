//! A checked field of an `/import` record (`event`, `time`, `distinct_id`, `$insert_id`) as
//! the rules see it: read from a `Value` tree, or straight from the text by `scan`.

use super::*;

/// A checked field as the rules see it, read from a `Value` tree or straight from the text.
pub(super) enum Field<'a> {
    /// Absent or `null`.
    Missing,
    Str(Cow<'a, str>),
    Num(serde_json::Number),
    /// A boolean, array or object.
    Other,
}

impl<'a> Field<'a> {
    pub(super) fn of(value: Option<&'a Value>) -> Self {
        match value {
            None | Some(Value::Null) => Field::Missing,
            Some(Value::String(s)) => Field::Str(Cow::Borrowed(s)),
            Some(Value::Number(n)) => Field::Num(n.clone()),
            Some(_) => Field::Other,
        }
    }

    /// A `distinct_id`'s string form (numbers as `Value` prints them).
    pub(super) fn id_str(&self) -> Option<Cow<'_, str>> {
        match self {
            Field::Str(s) => Some(Cow::Borrowed(s.as_ref())),
            Field::Num(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Field<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            // Numbers become what a `Value` holds for the same text.
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Num(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Field::Num(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Field::Other, Field::Num))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Missing)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Missing)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}
