//! Integers as JSON Schema counts them: `5` and `5.0` alike (a number with no fraction is an
//! integer there), so a client that writes whole numbers as floats is not refused.

use serde::de::{Deserializer, Error, Visitor};

struct Whole;

impl Visitor<'_> for Whole {
    type Value = i64;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an integer")
    }

    fn visit_i64<E: Error>(self, value: i64) -> Result<i64, E> {
        Ok(value)
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<i64, E> {
        i64::try_from(value).map_err(|_| E::custom(format!("{value} is too large")))
    }

    fn visit_f64<E: Error>(self, value: f64) -> Result<i64, E> {
        // Exactly representable: |value| below 2^53 has no rounding to hide.
        if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 {
            Ok(value as i64)
        } else {
            Err(E::custom(format!("{value} is not an integer")))
        }
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(Whole)
}

/// An integer read as above, for the containers below.
#[derive(serde::Deserialize)]
struct Integer(#[serde(deserialize_with = "deserialize")] i64);

/// The same for an optional field.
pub(crate) mod option {
    use serde::Deserialize;
    use serde::de::Deserializer;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        Ok(Option::<super::Integer>::deserialize(deserializer)?.map(|integer| integer.0))
    }
}

/// The same for an optional map of names to integers.
pub(crate) mod map {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde::de::Deserializer;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<BTreeMap<String, i64>>, D::Error> {
        let map = Option::<BTreeMap<String, super::Integer>>::deserialize(deserializer)?;
        Ok(map.map(|map| {
            map.into_iter()
                .map(|(name, integer)| (name, integer.0))
                .collect()
        }))
    }
}

/// The same for an optional count that cannot be negative.
pub(crate) mod unsigned {
    use serde::de::{Deserializer, Error};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        super::option::deserialize(deserializer)?
            .map(|value| {
                u64::try_from(value).map_err(|_| D::Error::custom(format!("{value} is negative")))
            })
            .transpose()
    }
}
