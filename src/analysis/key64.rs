//! `key64(a, b, ...)`: a 64-bit key for a combination of values, for detection queries to
//! group, sort, join and compare on integers instead of text.
//!
//! The default query groups a million rows by session, address and segment several times and
//! compares each row's segment with the previous one in windows; on text keys those operators
//! were most of its time (profiled with `revokd-bench profile`). A key is computed once per
//! distinct dictionary value of a batch, so the `requests` table's dictionaries make it cheap.
//!
//! Equal inputs always give equal keys (the hash is seeded with a constant, so keys agree
//! across batches, objects and runs, whatever the column's encoding). Different inputs give
//! different keys except with probability about n² / 2⁶⁵ for n distinct values: for the
//! 10⁵ addresses of a busy hour, about 3 in 10⁹ per run. NULL is a value of its own, so
//! `key64(a) = key64(b)` behaves like `a IS NOT DISTINCT FROM b`.

use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

static HASHER: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0x006b_6579_3634);
/// The hash of NULL: a value of its own.
const NULL_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

pub fn key64_udf() -> ScalarUDF {
    ScalarUDF::from(Key64 { signature: Signature::variadic_any(Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Key64 {
    signature: Signature,
}

impl ScalarUDFImpl for Key64 {
    fn name(&self) -> &str {
        "key64"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        for t in arg_types {
            if !supported(t) {
                return plan_err!("key64 takes text and integer columns (or dictionaries of them), not {t}");
            }
        }
        if arg_types.is_empty() {
            return plan_err!("key64 needs at least one argument");
        }
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut keys = vec![0u64; rows];
        for arg in &args.args {
            let array = arg.to_array(rows)?;
            let hashes = hash_array(&array)?;
            for (key, hash) in keys.iter_mut().zip(hashes) {
                *key = combine(*key, hash);
            }
        }
        let keys = Int64Array::from_iter_values(keys.into_iter().map(|k| k as i64));
        if rows == 1 && args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            return Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(keys.value(0)))));
        }
        Ok(ColumnarValue::Array(Arc::new(keys)))
    }
}

fn supported(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        t if t.is_integer() => true,
        DataType::Dictionary(key, value) => key.is_integer() && supported(value),
        _ => false,
    }
}

/// Folds one argument's hash into the key. Multiplying by an odd constant is a bijection, so
/// with a single argument distinct hashes stay distinct keys.
fn combine(key: u64, hash: u64) -> u64 {
    (key.rotate_left(23) ^ hash).wrapping_mul(0xff51_afd7_ed55_8ccd)
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    HASHER.hash_one(bytes)
}

fn hash_integer(value: i128) -> u64 {
    // Integers hash by value, so an Int32 and an Int64 column holding 7 give the same key.
    HASHER.hash_one(value)
}

/// One hash per row.
fn hash_array(array: &ArrayRef) -> Result<Vec<u64>> {
    if let Some(dict) = array.as_any_dictionary_opt() {
        // A column whose every row is NULL (a batch without one referer) comes as a dictionary
        // of no values, which `normalized_keys` refuses.
        if dict.values().is_empty() {
            return Ok(vec![NULL_HASH; array.len()]);
        }
        // The values once, then a lookup per row (null keys normalise to 0: masked below).
        let value_hashes = hash_array(dict.values())?;
        let hashes = dict.normalized_keys().into_iter().map(|k| value_hashes.get(k).copied().unwrap_or(NULL_HASH)).collect();
        return Ok(mask_nulls(dict.keys().nulls(), hashes));
    }
    Ok(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(hash_text).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(hash_text).collect(),
        DataType::Utf8View => array.as_string_view().iter().map(hash_text).collect(),
        DataType::Null => vec![NULL_HASH; array.len()],
        DataType::UInt64 => hash_integers(array.as_primitive::<UInt64Type>().values().iter().map(|&v| i128::from(v)), array.nulls()),
        t if t.is_integer() => {
            // Every other integer type fits in an Int64.
            let wide = arrow::compute::cast(array, &DataType::Int64)?;
            hash_integers(wide.as_primitive::<Int64Type>().values().iter().map(|&v| i128::from(v)), array.nulls())
        }
        other => return exec_err!("key64: cannot key a {other} column"),
    })
}

fn hash_integers(values: impl Iterator<Item = i128>, nulls: Option<&arrow::buffer::NullBuffer>) -> Vec<u64> {
    mask_nulls(nulls, values.map(hash_integer).collect())
}

fn hash_text(value: Option<&str>) -> u64 {
    value.map_or(NULL_HASH, |s| hash_bytes(s.as_bytes()))
}

fn mask_nulls(nulls: Option<&arrow::buffer::NullBuffer>, hashes: Vec<u64>) -> Vec<u64> {
    match nulls {
        Some(nulls) => hashes.into_iter().enumerate().map(|(i, h)| if nulls.is_null(i) { NULL_HASH } else { h }).collect(),
        None => hashes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Int64Array, StringArray, StringViewArray};
    use arrow::datatypes::Field;
    use arrow::datatypes::Int32Type;

    fn key(args: Vec<ArrayRef>) -> Vec<i64> {
        let rows = args[0].len();
        let arg_fields = args.iter().map(|a| Arc::new(Field::new("a", a.data_type().clone(), true))).collect();
        let out = key64_udf()
            .invoke_with_args(ScalarFunctionArgs {
                args: args.into_iter().map(ColumnarValue::Array).collect(),
                arg_fields,
                number_rows: rows,
                return_field: Arc::new(Field::new("k", DataType::Int64, false)),
                config_options: Default::default(),
            })
            .unwrap();
        let ColumnarValue::Array(out) = out else { panic!("array expected") };
        out.as_primitive::<Int64Type>().values().to_vec()
    }

    #[test]
    fn equal_text_gives_equal_keys_whatever_the_encoding() {
        let plain: ArrayRef = Arc::new(StringArray::from(vec!["s1", "s2", "s1"]));
        let view: ArrayRef = Arc::new(StringViewArray::from(vec!["s2", "s1", "s1"]));
        let dict: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::from_iter(["s1", "s1", "s2"]));
        let (p, v, d) = (key(vec![plain]), key(vec![view]), key(vec![dict]));
        assert_eq!(p[0], p[2]);
        assert_ne!(p[0], p[1], "different values, different keys");
        assert_eq!((v[0], v[1]), (p[1], p[0]));
        assert_eq!((d[0], d[2]), (p[0], p[1]));
    }

    #[test]
    fn null_is_a_value_of_its_own_and_argument_order_matters() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, None, Some("")]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, None, Some(1)]));
        let k = key(vec![a.clone(), b.clone()]);
        assert_eq!(k[1], k[2], "NULL IS NOT DISTINCT FROM NULL");
        assert_ne!(k[1], k[3], "NULL is not the empty string");
        assert_ne!(k[0], k[3]);
        let swapped = key(vec![b, a]);
        assert_ne!(k[0], swapped[0]);
    }

    #[test]
    fn integers_key_by_value_and_dictionaries_by_value_whatever_their_key_type() {
        use arrow::array::{Int32Array, UInt64Array};
        use arrow::datatypes::UInt8Type;
        let narrow: ArrayRef = Arc::new(Int32Array::from(vec![Some(7), None, Some(-1)]));
        let wide: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), None, Some(-1)]));
        assert_eq!(key(vec![narrow]), key(vec![wide]));
        let unsigned: ArrayRef = Arc::new(UInt64Array::from(vec![7, u64::MAX]));
        let k = key(vec![unsigned]);
        assert_eq!(k[0], key(vec![Arc::new(Int64Array::from(vec![7]))])[0]);
        assert_ne!(k[1], key(vec![Arc::new(Int64Array::from(vec![None::<i64>]))])[0], "u64::MAX is not NULL");
        let small_keys: ArrayRef = Arc::new(DictionaryArray::<UInt8Type>::from_iter([Some("a"), None, Some("b")]));
        let int_keys: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::from_iter([Some("a"), None, Some("b")]));
        assert_eq!(key(vec![small_keys]), key(vec![int_keys]));
    }

    #[test]
    fn a_dictionary_of_nothing_but_nulls_keys_every_row_as_null() {
        let all_null: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::from_iter([None::<&str>, None]));
        assert!(all_null.as_any_dictionary().values().is_empty(), "the case under test: no values at all");
        let null_key = key(vec![Arc::new(StringArray::from(vec![None::<&str>]))])[0];
        assert_eq!(key(vec![all_null]), vec![null_key, null_key]);
    }

    #[test]
    fn keys_of_many_distinct_values_do_not_collide() {
        let values: Vec<String> = (0..200_000).map(|i| format!("203.0.{}.{}", i / 256, i % 256)).collect();
        let array: ArrayRef = Arc::new(StringArray::from_iter_values(&values));
        let mut keys = key(vec![array]);
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), values.len());
    }
}
