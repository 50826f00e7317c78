//! The JSON format, for machines: one object a line with `timestamp`, `level`, `event`
//! and the fields at top level.

use chrono::{DateTime, Utc};

use crate::events::schema::{self, Value};
use crate::events::{Event, rfc3339};

/// One JSON object: `timestamp`, `level`, `event`, then the fields at top level.
pub fn format_json(at: DateTime<Utc>, event: &Event) -> String {
    let mut map = serde_json::Map::new();
    map.insert("timestamp".into(), rfc3339(at).into());
    map.insert("level".into(), schema::level_of(event).as_str().into());
    map.insert("event".into(), event.name().into());
    for (key, value) in schema::fields(event) {
        let json = match value {
            Value::Str(v) => serde_json::Value::from(v),
            Value::Int(v) => v.into(),
            Value::UInt(v) => v.into(),
            Value::Float(v) => serde_json::Number::from_f64((v * 1000.0).round() / 1000.0)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Bool(v) => v.into(),
            Value::List(v) => v.into(),
        };
        map.insert(key.into(), json);
    }
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejected_with_few_errors_lists_them_all() {
        let at = "2026-10-25T01:30:00Z".parse().unwrap();
        let event = Event::config_rejected(&["a.yaml:1:1: bad", "b.yaml: empty"]);
        let json: serde_json::Value = serde_json::from_str(&format_json(at, &event)).unwrap();
        assert_eq!(json["errors"].as_array().unwrap().len(), 2);
        assert_eq!(json["error_count"], 2);
        assert_eq!(json["level"], "error");
        assert_eq!(json["event"], "config.rejected");
    }
}
