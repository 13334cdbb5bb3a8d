//! The JSON form of epoch inputs and outputs (`vectors/yuma/SCHEMA.md`).
//!
//! Parsing walks the document by hand so that every error names the JSON path of the field at
//! fault (`input.weights[3][1][0]`), says what was expected, and refuses unknown fields.

use serde_json::{Map, Value};

use crate::{EpochInput, EpochOutput, Hyperparameters, InputError};

/// Why a JSON document is not a valid epoch input or vector.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The text is not JSON.
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// A required field is absent.
    #[error("{path}: missing field")]
    Missing {
        /// Where the field belongs.
        path: String,
    },
    /// A field has the wrong type or is out of range.
    #[error("{path}: expected {expected}, found {found}")]
    Type {
        /// The field.
        path: String,
        /// What the schema wants.
        expected: &'static str,
        /// What the document has.
        found: String,
    },
    /// A field the schema does not define.
    #[error("{path}: unknown field; see vectors/yuma/SCHEMA.md for the fields")]
    Unknown {
        /// The field.
        path: String,
    },
    /// The document is well-typed but inconsistent (lengths, uids).
    #[error("{prefix}{source}")]
    Input {
        /// Path prefix of the input object (`input.` inside a vector file).
        prefix: &'static str,
        /// The inconsistency.
        source: InputError,
    },
}

/// A conformance vector: an input and, optionally, the reference's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vector {
    /// The vector's name, if it has one.
    pub name: Option<String>,
    /// The epoch input.
    pub input: EpochInput,
    /// The reference output.
    pub expected: Option<EpochOutput>,
}

/// Parse either a vector file (an object with `input`) or a bare epoch input object.
pub fn parse(text: &str) -> Result<Vector, JsonError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| JsonError::Syntax(e.to_string()))?;
    let obj = as_object(&doc, "$")?;
    if obj.contains_key("input") {
        let f = Fields::new(obj, "", &["name", "source", "input", "expected"])?;
        let name = match obj.get("name") {
            None | Some(Value::Null) => None,
            Some(v) => Some(as_str(v, "name")?.to_owned()),
        };
        let input = parse_input(f.req("input")?, "input.")?;
        input.validate().map_err(|source| JsonError::Input {
            prefix: "input.",
            source,
        })?;
        let expected = match obj.get("expected") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_output(v, "expected.", input.n)?),
        };
        Ok(Vector {
            name,
            input,
            expected,
        })
    } else {
        let input = parse_input(&doc, "")?;
        input
            .validate()
            .map_err(|source| JsonError::Input { prefix: "", source })?;
        Ok(Vector {
            name: None,
            input,
            expected: None,
        })
    }
}

struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    fn new(
        obj: &'a Map<String, Value>,
        prefix: &'a str,
        known: &[&str],
    ) -> Result<Self, JsonError> {
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(JsonError::Unknown {
                path: format!("{prefix}{k}"),
            });
        }
        Ok(Self { obj, prefix })
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn req(&self, key: &str) -> Result<&'a Value, JsonError> {
        self.obj.get(key).ok_or_else(|| JsonError::Missing {
            path: self.path(key),
        })
    }

    fn uint<T: TryFrom<u64>>(&self, key: &str, expected: &'static str) -> Result<T, JsonError> {
        uint(self.req(key)?, &self.path(key), expected)
    }

    fn bool(&self, key: &str) -> Result<bool, JsonError> {
        as_bool(self.req(key)?, &self.path(key))
    }

    fn list<T>(
        &self,
        key: &str,
        each: impl Fn(&Value, &str) -> Result<T, JsonError>,
    ) -> Result<Vec<T>, JsonError> {
        let path = self.path(key);
        as_array(self.req(key)?, &path)?
            .iter()
            .enumerate()
            .map(|(i, v)| each(v, &format!("{path}[{i}]")))
            .collect()
    }
}

fn found(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn type_err(path: &str, expected: &'static str, v: &Value) -> JsonError {
    JsonError::Type {
        path: path.into(),
        expected,
        found: found(v),
    }
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, JsonError> {
    v.as_object().ok_or_else(|| type_err(path, "an object", v))
}

fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, JsonError> {
    v.as_array().ok_or_else(|| type_err(path, "an array", v))
}

fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, JsonError> {
    v.as_str().ok_or_else(|| type_err(path, "a string", v))
}

fn as_bool(v: &Value, path: &str) -> Result<bool, JsonError> {
    v.as_bool()
        .ok_or_else(|| type_err(path, "true or false", v))
}

fn uint<T: TryFrom<u64>>(v: &Value, path: &str, expected: &'static str) -> Result<T, JsonError> {
    v.as_u64()
        .and_then(|x| T::try_from(x).ok())
        .ok_or_else(|| type_err(path, expected, v))
}

fn sparse_row(v: &Value, path: &str) -> Result<Vec<(u16, u16)>, JsonError> {
    as_array(v, path)?
        .iter()
        .enumerate()
        .map(|(k, pair)| {
            let p = format!("{path}[{k}]");
            let items = as_array(pair, &p)?;
            if items.len() != 2 {
                return Err(type_err(&p, "a [uid, value] pair", pair));
            }
            Ok((
                uint(&items[0], &format!("{p}[0]"), "a uid (u16)")?,
                uint(&items[1], &format!("{p}[1]"), "a u16 value")?,
            ))
        })
        .collect()
}

fn parse_input(v: &Value, prefix: &str) -> Result<EpochInput, JsonError> {
    let obj = as_object(
        v,
        if prefix.is_empty() {
            "$"
        } else {
            prefix.trim_end_matches('.')
        },
    )?;
    let f = Fields::new(
        obj,
        prefix,
        &[
            "n",
            "current_block",
            "tempo",
            "last_mechanism_step_block",
            "activity_cutoff",
            "stake_threshold",
            "owner_uid",
            "stake",
            "validator_permits",
            "last_update",
            "block_at_registration",
            "weights",
            "bonds",
            "emission",
            "hyperparameters",
        ],
    )?;
    let u64s = |key: &str| f.list(key, |v, p| uint::<u64>(v, p, "a u64"));
    let owner_uid = match f.req("owner_uid")? {
        Value::Null => None,
        v => Some(uint(v, &f.path("owner_uid"), "a uid (u16) or null")?),
    };
    let hp_path = f.path("hyperparameters.");
    let hp_obj = as_object(f.req("hyperparameters")?, &f.path("hyperparameters"))?;
    let h = Fields::new(
        hp_obj,
        &hp_path,
        &[
            "kappa",
            "bonds_penalty",
            "bonds_moving_average",
            "yuma3",
            "liquid_alpha",
            "alpha_low",
            "alpha_high",
            "alpha_sigmoid_steepness",
            "max_allowed_validators",
        ],
    )?;
    let steepness_value = h.req("alpha_sigmoid_steepness")?;
    let alpha_sigmoid_steepness = steepness_value
        .as_i64()
        .and_then(|x| i16::try_from(x).ok())
        .ok_or_else(|| {
            type_err(
                &h.path("alpha_sigmoid_steepness"),
                "an i16",
                steepness_value,
            )
        })?;
    let hyperparameters = Hyperparameters {
        kappa: h.uint("kappa", "a u16")?,
        bonds_penalty: h.uint("bonds_penalty", "a u16")?,
        bonds_moving_average: h.uint("bonds_moving_average", "a u64")?,
        yuma3: h.bool("yuma3")?,
        liquid_alpha: h.bool("liquid_alpha")?,
        alpha_low: h.uint("alpha_low", "a u16")?,
        alpha_high: h.uint("alpha_high", "a u16")?,
        alpha_sigmoid_steepness,
        max_allowed_validators: h.uint("max_allowed_validators", "a u16")?,
    };
    Ok(EpochInput {
        n: f.uint("n", "a u16")?,
        current_block: f.uint("current_block", "a u64")?,
        tempo: f.uint("tempo", "a u64")?,
        last_mechanism_step_block: f.uint("last_mechanism_step_block", "a u64")?,
        activity_cutoff: f.uint("activity_cutoff", "a u64")?,
        stake_threshold: f.uint("stake_threshold", "a u64")?,
        owner_uid,
        stake: u64s("stake")?,
        validator_permits: f.list("validator_permits", as_bool)?,
        last_update: u64s("last_update")?,
        block_at_registration: u64s("block_at_registration")?,
        weights: f.list("weights", sparse_row)?,
        bonds: f.list("bonds", sparse_row)?,
        emission: f.uint("emission", "a u64")?,
        hyperparameters,
    })
}

fn parse_output(v: &Value, prefix: &'static str, n: u16) -> Result<EpochOutput, JsonError> {
    let obj = as_object(v, "expected")?;
    let f = Fields::new(
        obj,
        prefix,
        &[
            "active",
            "stake_weight",
            "validator_permits",
            "consensus",
            "incentive",
            "dividends",
            "validator_trust",
            "bonds",
            "server_emission",
            "validator_emission",
            "combined_emission",
        ],
    )?;
    let u16s = |key: &str| f.list(key, |v, p| uint::<u16>(v, p, "a u16"));
    let u64s = |key: &str| f.list(key, |v, p| uint::<u64>(v, p, "a u64"));
    let out = EpochOutput {
        active: f.list("active", as_bool)?,
        stake_weight: u16s("stake_weight")?,
        validator_permits: f.list("validator_permits", as_bool)?,
        consensus: u16s("consensus")?,
        incentive: u16s("incentive")?,
        dividends: u16s("dividends")?,
        validator_trust: u16s("validator_trust")?,
        bonds: f.list("bonds", sparse_row)?,
        server_emission: u64s("server_emission")?,
        validator_emission: u64s("validator_emission")?,
        combined_emission: u64s("combined_emission")?,
    };
    for (key, len) in output_lengths(&out) {
        if len != usize::from(n) {
            return Err(JsonError::Input {
                prefix,
                source: InputError::WrongLength {
                    path: key.into(),
                    len,
                    n,
                },
            });
        }
    }
    Ok(out)
}

fn output_lengths(o: &EpochOutput) -> [(&'static str, usize); 11] {
    [
        ("active", o.active.len()),
        ("stake_weight", o.stake_weight.len()),
        ("validator_permits", o.validator_permits.len()),
        ("consensus", o.consensus.len()),
        ("incentive", o.incentive.len()),
        ("dividends", o.dividends.len()),
        ("validator_trust", o.validator_trust.len()),
        ("bonds", o.bonds.len()),
        ("server_emission", o.server_emission.len()),
        ("validator_emission", o.validator_emission.len()),
        ("combined_emission", o.combined_emission.len()),
    ]
}

/// The first difference between two outputs, as `field[index]`, got, want.
pub fn first_mismatch(got: &EpochOutput, want: &EpochOutput) -> Option<(String, String, String)> {
    fn cmp<T: PartialEq>(
        name: &str,
        got: &[T],
        want: &[T],
        show: impl Fn(&T) -> String,
    ) -> Option<(String, String, String)> {
        if got.len() != want.len() {
            return Some((
                format!("{name}.length"),
                got.len().to_string(),
                want.len().to_string(),
            ));
        }
        let i = got.iter().zip(want).position(|(g, w)| g != w)?;
        Some((format!("{name}[{i}]"), show(&got[i]), show(&want[i])))
    }
    let s = |x: &dyn ToString| x.to_string();
    cmp("active", &got.active, &want.active, |x| s(x))
        .or_else(|| {
            cmp("stake_weight", &got.stake_weight, &want.stake_weight, |x| {
                s(x)
            })
        })
        .or_else(|| {
            cmp(
                "validator_permits",
                &got.validator_permits,
                &want.validator_permits,
                |x| s(x),
            )
        })
        .or_else(|| cmp("consensus", &got.consensus, &want.consensus, |x| s(x)))
        .or_else(|| cmp("incentive", &got.incentive, &want.incentive, |x| s(x)))
        .or_else(|| cmp("dividends", &got.dividends, &want.dividends, |x| s(x)))
        .or_else(|| {
            cmp(
                "validator_trust",
                &got.validator_trust,
                &want.validator_trust,
                |x| s(x),
            )
        })
        .or_else(|| cmp("bonds", &got.bonds, &want.bonds, |r| row_json(r)))
        .or_else(|| {
            cmp(
                "server_emission",
                &got.server_emission,
                &want.server_emission,
                |x| s(x),
            )
        })
        .or_else(|| {
            cmp(
                "validator_emission",
                &got.validator_emission,
                &want.validator_emission,
                |x| s(x),
            )
        })
        .or_else(|| {
            cmp(
                "combined_emission",
                &got.combined_emission,
                &want.combined_emission,
                |x| s(x),
            )
        })
}

fn row_json(row: &[(u16, u16)]) -> String {
    let cells: Vec<String> = row.iter().map(|(j, v)| format!("[{j},{v}]")).collect();
    format!("[{}]", cells.join(","))
}

fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
    let cells: Vec<String> = items.iter().map(show).collect();
    format!("[{}]", cells.join(","))
}

/// The output object in the schema's `expected` shape and field order, as compact JSON.
pub fn output_to_json(o: &EpochOutput) -> String {
    let s = |x: &dyn ToString| x.to_string();
    let fields = [
        ("active", list(&o.active, |x| s(x))),
        ("stake_weight", list(&o.stake_weight, |x| s(x))),
        ("validator_permits", list(&o.validator_permits, |x| s(x))),
        ("consensus", list(&o.consensus, |x| s(x))),
        ("incentive", list(&o.incentive, |x| s(x))),
        ("dividends", list(&o.dividends, |x| s(x))),
        ("validator_trust", list(&o.validator_trust, |x| s(x))),
        ("bonds", list(&o.bonds, |r| row_json(r))),
        ("server_emission", list(&o.server_emission, |x| s(x))),
        ("validator_emission", list(&o.validator_emission, |x| s(x))),
        ("combined_emission", list(&o.combined_emission, |x| s(x))),
    ];
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}
