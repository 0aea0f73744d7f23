//! The image config being built (kept as JSON so that fields kiln does not know survive from the
//! base image) and writing the finished image into the store.

use crate::error::BuildError;
use kiln_oci::spec::{Descriptor, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST};
use kiln_oci::{Digest, Store};
use serde_json::{Map, Value, json};

/// The default PATH of images built from scratch.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An OCI image config.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig(pub Map<String, Value>);

impl ImageConfig {
    /// The config of an empty image.
    pub fn scratch(arch: &str) -> Self {
        let v = json!({
            "architecture": kiln_oci::spec::normalize_arch(arch),
            "os": "linux",
            "config": {"Env": [format!("PATH={DEFAULT_PATH}")]},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [],
        });
        match v {
            Value::Object(m) => ImageConfig(m),
            _ => ImageConfig(Map::new()),
        }
    }

    /// Parse a config blob.
    pub fn from_json(data: &[u8]) -> Result<Self, String> {
        match serde_json::from_slice(data).map_err(|e| e.to_string())? {
            Value::Object(m) => Ok(ImageConfig(m)),
            _ => Err("the image config is not a JSON object".into()),
        }
    }

    fn exec(&mut self) -> &mut Map<String, Value> {
        let c = self
            .0
            .entry("config")
            .or_insert_with(|| Value::Object(Map::new()));
        if !c.is_object() {
            *c = Value::Object(Map::new());
        }
        match c {
            Value::Object(m) => m,
            _ => unreachable!("just made an object"),
        }
    }

    /// A field of `config` (`Env`, `Cmd`, `WorkingDir`, ...).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get("config")?.get(key).filter(|v| !v.is_null())
    }

    /// A string field of `config`, or "".
    pub fn get_str(&self, key: &str) -> &str {
        self.get(key).and_then(Value::as_str).unwrap_or("")
    }

    /// Set a field of `config`; `Value::Null` removes it.
    pub fn set(&mut self, key: &str, value: Value) {
        if value.is_null() {
            self.exec().remove(key);
        } else {
            self.exec().insert(key.to_string(), value);
        }
    }

    /// Add to a map field of `config` (`Labels`, `ExposedPorts`, `Volumes`).
    pub fn insert(&mut self, field: &str, key: &str, value: Value) {
        let m = self
            .exec()
            .entry(field)
            .or_insert_with(|| Value::Object(Map::new()));
        if !m.is_object() {
            *m = Value::Object(Map::new());
        }
        if let Value::Object(m) = m {
            m.insert(key.to_string(), value);
        }
    }

    /// Set a label.
    pub fn set_label(&mut self, key: &str, value: &str) {
        self.insert("Labels", key, Value::String(value.to_string()));
    }

    /// The environment as pairs.
    pub fn env(&self) -> Vec<(String, String)> {
        self.get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Set one environment variable, replacing an earlier value in place.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value.to_string(),
            None => env.push((key.to_string(), value.to_string())),
        }
        let list: Vec<Value> = env
            .into_iter()
            .map(|(k, v)| Value::String(format!("{k}={v}")))
            .collect();
        self.set("Env", Value::Array(list));
    }

    /// The layers' diff ids.
    pub fn diff_ids(&self) -> Vec<String> {
        strings(self.0.get("rootfs").and_then(|r| r.get("diff_ids")))
    }

    /// Record a step in the history.
    pub fn add_history(&mut self, created_by: &str, empty_layer: bool) {
        let mut h = Map::new();
        h.insert("created_by".into(), Value::String(created_by.to_string()));
        h.insert("comment".into(), Value::String("kiln.dockerfile.v0".into()));
        if empty_layer {
            h.insert("empty_layer".into(), Value::Bool(true));
        }
        let list = self
            .0
            .entry("history")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !list.is_array() {
            *list = Value::Array(Vec::new());
        }
        if let Value::Array(a) = list {
            a.push(Value::Object(h));
        }
    }

    /// Final touches: the layer list, creation time on the image and on new history entries.
    pub fn finish(&mut self, layers: &[(Digest, Descriptor)], created: &str) {
        let ids: Vec<Value> = layers
            .iter()
            .map(|(d, _)| Value::String(d.to_string()))
            .collect();
        self.0
            .insert("rootfs".into(), json!({"type": "layers", "diff_ids": ids}));
        self.0
            .insert("created".into(), Value::String(created.to_string()));
        if let Some(Value::Array(h)) = self.0.get_mut("history") {
            for e in h.iter_mut() {
                if let Value::Object(m) = e
                    && !m.contains_key("created")
                {
                    m.insert("created".into(), Value::String(created.to_string()));
                }
            }
        }
    }
}

/// The strings of a JSON array (none when it is absent or not an array).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 3339 time of `epoch` seconds, or of now.
pub fn timestamp(epoch: Option<u64>) -> String {
    let secs = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    kiln_fs::time::rfc3339(secs)
}

/// Write the config and manifest into the store. Returns the manifest digest and descriptor.
pub fn write(
    store: &Store,
    config: &ImageConfig,
    layers: &[(Digest, Descriptor)],
) -> Result<(Digest, Descriptor), BuildError> {
    let config_bytes = serde_json::to_vec(&config.0).map_err(|e| kiln_oci::StoreError::Json {
        what: "image config".into(),
        source: e,
    })?;
    let config_digest = store.put_bytes(&config_bytes, None, "image config")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": Descriptor::new(MEDIA_OCI_CONFIG, &config_digest, config_bytes.len() as u64),
        "layers": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|e| kiln_oci::StoreError::Json {
        what: "image manifest".into(),
        source: e,
    })?;
    let digest = store.put_bytes(&bytes, None, "image manifest")?;
    let mut desc = Descriptor::new(MEDIA_OCI_MANIFEST, &digest, bytes.len() as u64);
    desc.platform = Some(kiln_oci::spec::Platform {
        architecture: config
            .0
            .get("architecture")
            .and_then(Value::as_str)
            .unwrap_or("amd64")
            .to_string(),
        os: "linux".into(),
        variant: None,
    });
    Ok((digest, desc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_in_place() {
        let mut c = ImageConfig::scratch("amd64");
        c.set_env("A", "1");
        c.set_env("PATH", "/bin");
        assert_eq!(c.get("Env"), Some(&json!(["PATH=/bin", "A=1"])));
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(Some(1_700_000_000)), "2023-11-14T22:13:20Z");
        let day = |n: u64| timestamp(Some(n * 86_400))[..10].to_string();
        assert_eq!(day(59), "1970-03-01");
        // 2000-02-29 (a leap day of a century divisible by 400) and the day after.
        assert_eq!(day(11_016), "2000-02-29");
        assert_eq!(day(11_017), "2000-03-01");
        // 2100 is no leap year.
        assert_eq!(day(47_540), "2100-02-28");
        assert_eq!(day(47_541), "2100-03-01");
        assert_eq!(day(20_454), "2026-01-01");
    }
}
