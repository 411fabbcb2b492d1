//! A small builder that turns prost messages into Kubernetes-shaped JSON.
//!
//! gogo-protobuf always writes Go non-pointer fields, so a decoded message
//! carries `Some("")`, `Some(0)` and `Some(false)` where the Go struct held
//! its zero value. The JSON encoder would have dropped those for `omitempty`
//! fields, and every converter must pick the matching method: the `*_nz`
//! variants (and `str`) drop zero values, while `num`, `flag` and `str_req`
//! keep anything that was present on the wire (pointers and required fields).

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1::Time;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use crate::DecodeError;

pub(crate) type Res<T = Value> = Result<T, DecodeError>;

/// Conversion from a typed message to its Kubernetes JSON form.
pub(crate) trait ToJson {
    fn to_json(&self) -> Res;
}

/// Go's zero `time.Time` as Unix seconds; gogo writes it for an unset
/// non-pointer `metav1.Time` such as `creationTimestamp`.
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

#[derive(Default)]
pub(crate) struct Obj(Map<String, Value>);

impl Obj {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn finish(self) -> Value {
        Value::Object(self.0)
    }

    pub(crate) fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.0.insert(key.to_owned(), value);
        self
    }

    /// An `omitempty` string.
    pub(crate) fn str(&mut self, key: &str, v: &Option<String>) -> &mut Self {
        match v {
            Some(s) if !s.is_empty() => self.set(key, Value::String(s.clone())),
            _ => self,
        }
    }

    /// A string the JSON form always carries (required or pointer field).
    pub(crate) fn str_req(&mut self, key: &str, v: &Option<String>) -> &mut Self {
        match v {
            Some(s) => self.set(key, Value::String(s.clone())),
            None => self,
        }
    }

    /// A pointer or required number: kept even when zero.
    pub(crate) fn num<N: Into<i64> + Copy>(&mut self, key: &str, v: Option<N>) -> &mut Self {
        match v {
            Some(n) => self.set(key, Value::from(n.into())),
            None => self,
        }
    }

    /// An `omitempty` non-pointer number.
    pub(crate) fn num_nz<N: Into<i64> + Copy>(&mut self, key: &str, v: Option<N>) -> &mut Self {
        match v.map(Into::into) {
            Some(n) if n != 0 => self.set(key, Value::from(n)),
            _ => self,
        }
    }

    /// A pointer bool: kept even when false.
    pub(crate) fn flag(&mut self, key: &str, v: Option<bool>) -> &mut Self {
        match v {
            Some(b) => self.set(key, Value::Bool(b)),
            None => self,
        }
    }

    /// An `omitempty` non-pointer bool.
    pub(crate) fn flag_nz(&mut self, key: &str, v: Option<bool>) -> &mut Self {
        match v {
            Some(true) => self.set(key, Value::Bool(true)),
            _ => self,
        }
    }

    pub(crate) fn strs(&mut self, key: &str, v: &[String]) -> &mut Self {
        if v.is_empty() {
            return self;
        }
        self.set(
            key,
            Value::Array(v.iter().cloned().map(Value::String).collect()),
        )
    }

    pub(crate) fn nums<N: Into<i64> + Copy>(&mut self, key: &str, v: &[N]) -> &mut Self {
        if v.is_empty() {
            return self;
        }
        self.set(
            key,
            Value::Array(v.iter().map(|n| Value::from((*n).into())).collect()),
        )
    }

    pub(crate) fn str_map(&mut self, key: &str, v: &BTreeMap<String, String>) -> &mut Self {
        if v.is_empty() {
            return self;
        }
        let map = v
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.set(key, Value::Object(map))
    }

    /// `map<string,bytes>` fields are `[]byte` in Go, which JSON encodes as
    /// standard base64.
    pub(crate) fn bytes_map(&mut self, key: &str, v: &BTreeMap<String, Vec<u8>>) -> &mut Self {
        if v.is_empty() {
            return self;
        }
        let map = v
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(base64_std(v))))
            .collect();
        self.set(key, Value::Object(map))
    }

    pub(crate) fn qty(&mut self, key: &str, v: &Option<Quantity>) -> &mut Self {
        match v {
            Some(q) => self.set(key, quantity(q)),
            None => self,
        }
    }

    pub(crate) fn qty_map(&mut self, key: &str, v: &BTreeMap<String, Quantity>) -> &mut Self {
        if v.is_empty() {
            return self;
        }
        let map = v.iter().map(|(k, q)| (k.clone(), quantity(q))).collect();
        self.set(key, Value::Object(map))
    }

    pub(crate) fn int_or_str(&mut self, key: &str, v: &Option<IntOrString>) -> &mut Self {
        match v {
            Some(v) => self.set(key, int_or_string(v)),
            None => self,
        }
    }

    /// A `metav1.Time`; the Go zero time (and the Unix epoch, which no
    /// client means) is treated as unset, as the JSON form writes `null`.
    pub(crate) fn time(&mut self, key: &str, v: &Option<Time>) -> Res<&mut Self> {
        let Some(t) = v else { return Ok(self) };
        let seconds = t.seconds.unwrap_or(0);
        let nanos = t.nanos.unwrap_or(0);
        if nanos == 0 && (seconds == 0 || seconds == GO_ZERO_TIME_UNIX) {
            return Ok(self);
        }
        Ok(self.set(key, Value::String(rfc3339(key, seconds)?)))
    }

    pub(crate) fn msg<T: ToJson>(&mut self, key: &str, v: &Option<T>) -> Res<&mut Self> {
        match v {
            Some(m) => {
                let value = m.to_json()?;
                Ok(self.set(key, value))
            }
            None => Ok(self),
        }
    }

    pub(crate) fn msgs<T: ToJson>(&mut self, key: &str, v: &[T]) -> Res<&mut Self> {
        if v.is_empty() {
            return Ok(self);
        }
        let items = v.iter().map(ToJson::to_json).collect::<Res<Vec<_>>>()?;
        Ok(self.set(key, Value::Array(items)))
    }

    /// Flattens a message into this object, mirroring Go's `json:",inline"`
    /// embeddings (for example `Volume.volumeSource`).
    pub(crate) fn inline<T: ToJson>(&mut self, v: &Option<T>) -> Res<&mut Self> {
        if let Some(m) = v {
            if let Value::Object(fields) = m.to_json()? {
                self.0.extend(fields);
            }
        }
        Ok(self)
    }
}

pub(crate) fn base64_std(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn quantity(q: &Quantity) -> Value {
    match q.string.as_deref() {
        // The Go zero Quantity marshals as "0".
        None | Some("") => Value::String("0".to_owned()),
        Some(s) => Value::String(s.to_owned()),
    }
}

fn int_or_string(v: &IntOrString) -> Value {
    // intstr.Type: 0 = Int, 1 = String. gogo always writes the type, but
    // fall back to whichever value is populated if it is missing.
    let is_string = match v.r#type {
        Some(t) => t == 1,
        None => v.str_val.as_deref().is_some_and(|s| !s.is_empty()),
    };
    if is_string {
        Value::String(v.str_val.clone().unwrap_or_default())
    } else {
        Value::from(v.int_val.unwrap_or(0))
    }
}

/// `metav1.Time` marshals with second precision and a `Z` suffix.
fn rfc3339(field: &str, seconds: i64) -> Res<String> {
    let t =
        chrono::DateTime::from_timestamp(seconds, 0).ok_or_else(|| DecodeError::InvalidField {
            field: field.to_owned(),
            reason: format!("timestamp {seconds} is out of range"),
        })?;
    Ok(t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}
