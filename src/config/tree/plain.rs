//! Plain (unquoted) scalars resolved as serde-saphyr resolves them: YAML 1.2 core schema
//! with strict booleans.

use super::NodeKind;

/// A plain scalar's value, as serde-saphyr reads it into an untyped value with strict
/// booleans. `None` for a non-finite float, which serde-saphyr rejects.
pub(super) fn resolve_plain(value: &str) -> Option<NodeKind> {
    if matches!(value, "" | "~" | "null" | "Null" | "NULL") {
        return Some(NodeKind::Null);
    }
    let t = value.trim_matches([' ', '\t', '\r', '\n']);
    match t {
        "true" | "True" | "TRUE" => return Some(NodeKind::Bool(true)),
        "false" | "False" | "FALSE" => return Some(NodeKind::Bool(false)),
        _ => {}
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    // `0X1F`, `0O17`, `0B1` and `-.nan` are strings in the core schema.
    if matches!(unsigned.as_bytes(), [b'0', b'X' | b'O' | b'B', ..])
        || matches!(unsigned, ".nan" | ".NaN" | ".NAN") && unsigned.len() < t.len()
    {
        return Some(NodeKind::Str(value.to_owned()));
    }
    let int = match t.strip_prefix('-') {
        // `-07` is not an integer (no leading zeros), but it is a float below.
        Some(digits)
            if digits.len() > 1
                && digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            None
        }
        Some(digits) => magnitude(digits)
            .and_then(|m| i64::try_from(-i128::try_from(m).ok()?).ok())
            .map(i128::from),
        None => magnitude(t.strip_prefix('+').unwrap_or(t))
            .and_then(|m| u64::try_from(m).ok())
            .map(i128::from),
    };
    if let Some(int) = int {
        return Some(NodeKind::Int(int));
    }
    match float(t) {
        Some(float) if float.is_finite() => Some(NodeKind::Float(float)),
        Some(_) => None,
        None => Some(NodeKind::Str(value.to_owned())),
    }
}

/// An unsigned integer's value: decimal without leading zeros, or `0x`, `0o`, `0b`;
/// `_` allowed between digits.
fn magnitude(text: &str) -> Option<u128> {
    let (radix, digits) = if let Some(hex) = text.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = text.strip_prefix("0o") {
        (8, octal)
    } else if let Some(binary) = text.strip_prefix("0b") {
        (2, binary)
    } else if text.starts_with('0') && text != "0" {
        return None;
    } else {
        (10, text)
    };
    let bytes = digits.as_bytes();
    let mut value: u128 = 0;
    let mut any = false;
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'_' {
            let between = index > 0
                && bytes[index - 1] != b'_'
                && bytes.get(index + 1).is_some_and(|&next| next != b'_');
            if !between {
                return None;
            }
            continue;
        }
        let digit = char::from(byte).to_digit(radix)?;
        value = value
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(digit))?;
        any = true;
    }
    any.then_some(value)
}

/// A float as YAML 1.2 writes it (`1.5`, `-2e3`, `.inf`, `.NaN`), or a decimal number too
/// large for an `f64` (infinite). `None` if the text is not a number.
fn float(t: &str) -> Option<f64> {
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    match unsigned {
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        ".inf" | ".Inf" | ".INF" if negative => return Some(f64::NEG_INFINITY),
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        _ => {}
    }
    // Rust also reads `inf`, `infinity` and `nan`, which YAML keeps as strings.
    let value = t.parse::<f64>().ok()?;
    (value.is_finite() || unsigned.as_bytes().first().is_some_and(u8::is_ascii_digit))
        .then_some(value)
}
