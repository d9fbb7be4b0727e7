//! `model.safetensors.index.json`: `{"metadata": {...}, "weight_map": {tensor: shard file}}`.
//! Only `weight_map` is read; it is streamed so a hostile index cannot make us hold more than
//! its names.

use std::fmt;
use std::path::{Component, Path};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::error::SafetensorsError;

pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Real indexes are a few hundred KB even for the largest models.
pub const MAX_JSON_LEN: u64 = 64 << 20;

/// (tensor, shard file name) in file order.
pub(super) type WeightMap = Vec<(String, String)>;

pub(super) fn parse_index(json: &[u8]) -> Result<WeightMap, SafetensorsError> {
    let index: Index = serde_json::from_slice(json).map_err(SafetensorsError::Json)?;
    let entries = index.weight_map.ok_or(SafetensorsError::IndexNoWeightMap)?;
    let mut map = Vec::with_capacity(entries.len());
    for (tensor, shard) in entries {
        match shard {
            Ok(shard) if is_plain_file_name(&shard) => map.push((tensor, shard)),
            Ok(shard) => return Err(SafetensorsError::BadShardName { shard }),
            Err(found) => return Err(SafetensorsError::IndexBadEntry { tensor, found }),
        }
    }
    Ok(map)
}

/// A shard must live in the model directory: an index naming `../x` or `/etc/x` is refused
/// rather than followed.
fn is_plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None)) && !name.contains('\\')
}

#[derive(serde::Deserialize)]
struct Index {
    #[serde(default)]
    weight_map: Option<Entries>,
}

/// weight_map entries, each a shard name or what was found instead of one.
struct Entries(Vec<(String, Result<String, &'static str>)>);

impl Entries {
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl IntoIterator for Entries {
    type Item = (String, Result<String, &'static str>);
    type IntoIter = std::vec::IntoIter<Self::Item>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'de> de::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        d.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object mapping tensor names to shard files")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut out = Vec::new();
        while let Some(tensor) = map.next_key::<String>()? {
            out.push((tensor, map.next_value::<ShardName>()?.0));
        }
        Ok(Entries(out))
    }
}

struct ShardName(Result<String, &'static str>);

impl<'de> de::Deserialize<'de> for ShardName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ShardName, D::Error> {
        d.deserialize_any(ShardNameVisitor)
    }
}

struct ShardNameVisitor;

impl<'de> Visitor<'de> for ShardNameVisitor {
    type Value = ShardName;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a shard file name")
    }

    fn visit_str<E>(self, s: &str) -> Result<ShardName, E> {
        Ok(ShardName(Ok(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<ShardName, E> {
        Ok(ShardName(Ok(s)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<ShardName, E> {
        Ok(ShardName(Err("a bool")))
    }
    fn visit_i64<E>(self, _: i64) -> Result<ShardName, E> {
        Ok(ShardName(Err("a number")))
    }
    fn visit_u64<E>(self, _: u64) -> Result<ShardName, E> {
        Ok(ShardName(Err("a number")))
    }
    fn visit_f64<E>(self, _: f64) -> Result<ShardName, E> {
        Ok(ShardName(Err("a number")))
    }
    fn visit_unit<E>(self) -> Result<ShardName, E> {
        Ok(ShardName(Err("null")))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<ShardName, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(ShardName(Err("an array")))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ShardName, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(ShardName(Err("an object")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_weight_map_in_order() {
        let m = parse_index(
            br#"{"metadata":{"total_size":[1,2,{"x":null}]},
                "weight_map":{"b":"model-00002-of-00002.safetensors","a":"model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(m[0], ("b".into(), "model-00002-of-00002.safetensors".into()));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn refuses_paths_outside_the_directory() {
        for bad in ["../x.safetensors", "/etc/passwd", "a/b.safetensors", "..", ".", "", "a\\b"] {
            let json = format!(r#"{{"weight_map":{{"t":{}}}}}"#, serde_json::to_string(bad).unwrap());
            let e = parse_index(json.as_bytes()).unwrap_err();
            assert!(matches!(e, SafetensorsError::BadShardName { .. }), "{bad}: {e:?}");
        }
    }

    #[test]
    fn names_what_is_wrong() {
        assert!(matches!(parse_index(b"{}").unwrap_err(), SafetensorsError::IndexNoWeightMap));
        assert!(matches!(
            parse_index(br#"{"weight_map":{"t":3}}"#).unwrap_err(),
            SafetensorsError::IndexBadEntry { .. }
        ));
        assert!(matches!(parse_index(b"{").unwrap_err(), SafetensorsError::Json(_)));
    }
}
