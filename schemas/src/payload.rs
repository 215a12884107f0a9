//! Whether PostgreSQL can store a payload in the `jsonb` column.
//!
//! A payload that is valid JSON can still be refused by `jsonb`; acknowledged with `202`, such
//! an event would only be dead-lettered by db-writer later, where its producer never learns of
//! it. So the gateway applies `jsonb`'s rules up front and answers `422` instead, and db-writer
//! and query-service apply the same rules (`crate::contract`) to records that reached the
//! topics some other way.
//!
//! The gateway's `body` stage has already checked the JSON syntax (serde_json's `RawValue`), but that check lets
//! all of the following through: it neither bounds numbers nor decodes `\u` escapes. Parsing
//! into `serde_json::Value` would be slow and would itself refuse numbers `jsonb` stores (any
//! beyond `f64`), so this is a single pass over the raw text instead.
//!
//! What `jsonb` refuses, measured on the shards (PostgreSQL 15.18, `SELECT '<json>'::jsonb`),
//! and why:
//!
//! * Numbers. `jsonb` stores a JSON number as `numeric` (`numeric_in`, typmod -1), whose
//!   storage holds the weight of the first base-10000 digit in an `int16` (so at most 131072
//!   decimal digits before the point) and the display scale in 14 bits (at most 16383 digits
//!   after the point). `numeric_in` counts those digits as written, not by value:
//!   - digits before the point: those of the first non-zero digit onwards, shifted by the
//!     exponent. Accepted: `1e131071`, `-1e131071`, `9` × 131072, `1.5e131071`,
//!     `0.0001e131075`, `99999e131067`. Refused: `1e131072`, `-1e131072`, `9` × 131073,
//!     `1.5e131072`, `0.0001e131076`, `99999e131068`, `1e999999`.
//!   - digits after the point: the fraction digits as written, trailing zeros included, minus
//!     the exponent, and zero itself too (display scale, not value). Accepted: `1e-16383`,
//!     `-1e-16383`, `1.23e-16381`, `100e-16383`, `1.` + 16383 zeros, `0e-16383`. Refused:
//!     `1e-16384`, `1.23e-16382`, `100e-16385`, `1.0e-16383`, `1.` + 16384 zeros,
//!     `0.` + 16384 zeros, `0e-16384`, `-0.0e-16383`, `1e-999999`.
//!   - the exponent itself: `numeric_in` refuses |exponent| ≥ 1073741823 (`INT_MAX / 2`, its
//!     guard against `int` overflow) before looking at the digits, so this is the only limit
//!     that matters for zero with a positive exponent: `0e1073741822` and `0e999999` are
//!     accepted, `0e1073741823` and `0e99999999999999999999` refused.
//!
//!   `-0`, `-0.0`, `1E+5`, `1e+0131071` (leading zeros in the exponent) are ordinary numbers.
//!   The smallest weight, -32768, cannot be reached: a first digit beyond 16383 places after
//!   the point already breaks the display scale limit.
//! * `\u0000` in any string, key or value: "unsupported Unicode escape sequence, \u0000 cannot
//!   be converted to text". (A raw NUL byte is not valid JSON, so `body` refuses it already.)
//! * Unpaired UTF-16 surrogate escapes: a high one (`\ud800`–`\udbff`) must be followed at once
//!   by a low one (`\udc00`–`\udfff`), and a low one must follow a high one. Refused:
//!   `"\ud800"`, `"\udc00"`, `"\ude00\ud83d"`, `"\ud800\ud800"`, `"\ud800x"`, `"\ud800\n"`,
//!   `"\ud800\u0041"`. Accepted: `"\ud83d\ude00"`, `"\uD83D\uDE00"`, `"\udbff\udfff"`.
//!   Other escapes are stored: `\u0001`–`\u001f`, `\u007f`, `\uffff`, `\ufffe`, `\/`, `\b`, …
//!
//! * Nesting. PostgreSQL's JSON parser recurses and stops at `max_stack_depth` with "stack
//!   depth limit exceeded" (SQLSTATE 54001) — not a data error, so db-writer would retry the
//!   batch for ever and stall its partition. `body` does not bound depth either (serde_json's
//!   `RawValue` skips nested values without its recursion limit: 30,000 levels pass). Payloads
//!   nest at most [`MAX_DEPTH`] levels, serde_json's own limit for parsing into a `Value`, so
//!   every consumer using it can read them back.

/// At most this many digits before the decimal point (base-10000 weight ≤ 32767).
const MAX_INTEGER_DIGITS: i64 = 131_072;
/// At most this many digits after the decimal point (14-bit display scale).
const MAX_FRACTION_DIGITS: i64 = 16_383;
/// `numeric_in` refuses an exponent of this magnitude or more, whatever the digits.
const EXPONENT_LIMIT: i64 = 1_073_741_823;

/// Deepest nesting of arrays and objects accepted in a payload.
pub const MAX_DEPTH: usize = 128;

/// Checks that PostgreSQL's `jsonb` would store `raw`, which is valid JSON text.
///
/// Linear in `raw.len()`, allocates only for the error, and never panics: text that is not
/// valid JSON gets an answer too (an error if a string or escape is cut short).
pub fn storable(raw: &str) -> Result<(), String> {
    let bytes = raw.as_bytes();
    let mut at = 0;
    let mut depth = 0usize;
    while let Some(&byte) = bytes.get(at) {
        at = match byte {
            b'"' => string_end(raw, at)?,
            b'-' | b'0'..=b'9' => number_end(raw, at)?,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "nests deeper than {MAX_DEPTH} levels of arrays and objects \
                         (at byte {at} of the payload)"
                    ));
                }
                at + 1
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                at + 1
            }
            // Structure, whitespace and the letters of true/false/null: none can make jsonb
            // refuse, and none of them contains a digit, quote or minus.
            _ => at + 1,
        };
    }
    Ok(())
}

/// Scans the string whose opening quote is at `start`; returns the index after its closing
/// quote.
fn string_end(raw: &str, start: usize) -> Result<usize, String> {
    let bytes = raw.as_bytes();
    let mut at = start + 1;
    // Where a high surrogate escape began whose low half has not come yet.
    let mut unpaired_high: Option<usize> = None;
    loop {
        // Multi-byte UTF-8 sequences never contain ASCII bytes, so a byte search is exact.
        let rest = bytes.get(at..).unwrap_or_default();
        let Some(skip) = memchr::memchr2(b'"', b'\\', rest) else {
            return Err(cut_short("a string"));
        };
        if skip > 0 {
            if let Some(high) = unpaired_high {
                return Err(lone_surrogate(raw, high));
            }
        }
        at += skip;
        match (bytes.get(at), bytes.get(at + 1)) {
            (Some(b'"'), _) => {
                return match unpaired_high {
                    Some(high) => Err(lone_surrogate(raw, high)),
                    None => Ok(at + 1),
                };
            }
            (Some(b'\\'), Some(b'u')) => {
                let unit = bytes
                    .get(at + 2..at + 6)
                    .and_then(hex4)
                    .ok_or_else(|| cut_short("a \\u escape"))?;
                match unit {
                    0xD800..=0xDBFF => {
                        if let Some(high) = unpaired_high.replace(at) {
                            return Err(lone_surrogate(raw, high));
                        }
                    }
                    0xDC00..=0xDFFF => {
                        if unpaired_high.take().is_none() {
                            return Err(lone_surrogate(raw, at));
                        }
                    }
                    _ => {
                        if let Some(high) = unpaired_high {
                            return Err(lone_surrogate(raw, high));
                        }
                        if unit == 0 {
                            return Err(format!(
                                "\\u0000 is not allowed in JSON strings (PostgreSQL jsonb \
                                 cannot store it), found at byte {at} of the payload"
                            ));
                        }
                    }
                }
                at += 6;
            }
            (Some(b'\\'), Some(_)) => {
                if let Some(high) = unpaired_high {
                    return Err(lone_surrogate(raw, high));
                }
                at += 2;
            }
            _ => return Err(cut_short("an escape")),
        }
    }
}

/// The value of four hex digits.
fn hex4(digits: &[u8]) -> Option<u16> {
    digits.iter().try_fold(0u16, |unit, &d| {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        Some((unit << 4) | u16::from(nibble))
    })
}

fn lone_surrogate(raw: &str, at: usize) -> String {
    let escape = raw.get(at..at + 6).unwrap_or("\\u");
    format!(
        "unpaired UTF-16 surrogate {escape} at byte {at} of the payload: \\ud800-\\udbff must be \
         followed by \\udc00-\\udfff (PostgreSQL jsonb refuses it)"
    )
}

fn cut_short(what: &str) -> String {
    format!("the payload ends inside {what}")
}

/// Scans the number that starts at `start` (a minus or a digit); returns the index after it.
fn number_end(raw: &str, start: usize) -> Result<usize, String> {
    let bytes = raw.as_bytes();
    let digit = |at: usize| bytes.get(at).copied().filter(u8::is_ascii_digit);
    let mut at = start;
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    // Index, among all the digits written, of the first that is not zero: it sets the weight.
    let mut first_nonzero: Option<usize> = None;
    let integer_start = at;
    while let Some(d) = digit(at) {
        if d != b'0' && first_nonzero.is_none() {
            first_nonzero = Some(at - integer_start);
        }
        at += 1;
    }
    let integer_digits = at - integer_start;
    let mut fraction_digits = 0;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let fraction_start = at;
        while let Some(d) = digit(at) {
            if d != b'0' && first_nonzero.is_none() {
                first_nonzero = Some(integer_digits + at - fraction_start);
            }
            at += 1;
        }
        fraction_digits = at - fraction_start;
    }
    let mut exponent: i64 = 0;
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        let negative = bytes.get(at) == Some(&b'-');
        if matches!(bytes.get(at), Some(b'-' | b'+')) {
            at += 1;
        }
        // Saturates like strtol: anything that large is refused the same way.
        while let Some(d) = digit(at) {
            exponent = exponent
                .saturating_mul(10)
                .saturating_add(i64::from(d - b'0'));
            at += 1;
        }
        if negative {
            exponent = -exponent;
        }
    }

    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let beyond = |why: &str| {
        let literal = raw.get(start..at).unwrap_or_default();
        // A number can be as long as the payload; the reason only needs to point at it.
        let shown = match literal.get(..40) {
            Some(head) if literal.len() > 40 => format!("{head}… ({} characters)", literal.len()),
            _ => literal.to_owned(),
        };
        format!("number {shown} is beyond PostgreSQL's numeric range: {why}")
    };
    if exponent.unsigned_abs() >= EXPONENT_LIMIT.unsigned_abs() {
        return Err(beyond("its exponent must be smaller than ±1073741823"));
    }
    // Display scale: digits after the point as written, less the exponent; zero too.
    if count(fraction_digits).saturating_sub(exponent) > MAX_FRACTION_DIGITS {
        return Err(beyond("more than 16383 digits after the decimal point"));
    }
    if let Some(first) = first_nonzero {
        // Power of ten of the first significant digit; 131072 digits end at 10^131071.
        let leading_power = count(integer_digits)
            .saturating_sub(1)
            .saturating_sub(count(first))
            .saturating_add(exponent);
        if leading_power >= MAX_INTEGER_DIGITS {
            return Err(beyond("more than 131072 digits before the decimal point"));
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    use super::*;

    fn number(literal: &str) -> Result<(), String> {
        storable(&format!(r#"{{"n":{literal}}}"#))
    }

    #[track_caller]
    fn accepted(literal: &str) {
        if let Err(reason) = number(literal) {
            panic!("{literal} refused: {reason}");
        }
    }

    #[track_caller]
    fn refused(literal: &str) {
        let reason = number(literal).expect_err(literal);
        assert!(
            reason.contains("is beyond PostgreSQL's numeric range"),
            "{reason}"
        );
    }

    #[test]
    fn nesting_stops_at_max_depth_and_brackets_in_strings_do_not_count() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(storable(&nested(MAX_DEPTH)).is_ok());
        let reason = storable(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(reason.contains("nests deeper than 128"), "{reason}");
        assert!(storable(&nested(30_000)).is_err());
        let objects = format!(
            "{}{}",
            r#"{"a":"#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert!(storable(&objects).is_err());
        // Siblings do not add up, and brackets inside strings are text.
        let wide = format!("[{}]", vec![nested(MAX_DEPTH - 1); 50].join(","));
        assert!(storable(&wide).is_ok());
        let text = format!(r#"{{"s":"{}"}}"#, "[{".repeat(1_000));
        assert!(storable(&text).is_ok());
    }

    #[test]
    fn digits_before_the_point_stop_at_131072() {
        for ok in [
            "1e131071",
            "-1e131071",
            "1E+131071",
            "1e+0131071",
            "1.5e131071",
            "9.999e131071",
            "12e131070",
            "0.0001e131075",
            "0.5e131072",
            "99999e131067",
        ] {
            accepted(ok);
        }
        accepted(&"9".repeat(131_072));
        accepted(&format!("-{}", "9".repeat(131_072)));
        accepted(&format!("1{}", "0".repeat(131_071)));
        for too_big in [
            "1e131072",
            "-1e131072",
            "1E+131072",
            "1e+000000000000000000000131072",
            "1.5e131072",
            "12e131071",
            "0.0001e131076",
            "0.5e131073",
            "99999e131068",
            "1e999999",
        ] {
            refused(too_big);
        }
        refused(&"9".repeat(131_073));
        refused(&format!("1{}", "0".repeat(131_072)));
    }

    #[test]
    fn digits_after_the_point_stop_at_16383_as_written() {
        for ok in [
            "1e-16383",
            "-1e-16383",
            "1E-0016383",
            "1.23e-16381",
            "100e-16383",
            "1.0e-16382",
            "123.456e-16380",
            "0e-16383",
            "-0e-16383",
        ] {
            accepted(ok);
        }
        accepted(&format!("0.{}1", "0".repeat(16_382)));
        accepted(&format!("1.{}", "0".repeat(16_383)));
        accepted(&format!("0.{}", "0".repeat(16_383)));
        for too_small in [
            "1e-16384",
            "-1e-16384",
            "1.23e-16382",
            "100e-16385",
            "1.0e-16383",
            "123.456e-16381",
            "0e-16384",
            "-0e-16384",
            "-0.0e-16383",
            "1e-999999",
            "1e-1073741822",
        ] {
            refused(too_small);
        }
        refused(&format!("0.{}1", "0".repeat(16_383)));
        refused(&format!("1.{}", "0".repeat(16_384)));
        refused(&format!("0.{}", "0".repeat(16_384)));
        refused(&format!("-0.{}", "0".repeat(16_384)));
    }

    #[test]
    fn zero_is_limited_only_by_the_exponent_guard() {
        for ok in [
            "0",
            "-0",
            "-0.0",
            "0e999999",
            "0.0e999999",
            "0e+16384",
            "0e1073741822",
        ] {
            accepted(ok);
        }
        for guarded in ["0e1073741823", "0e99999999999999999999", "-0E+1073741823"] {
            refused(guarded);
        }
    }

    #[test]
    fn ordinary_numbers_pass() {
        for ok in [
            "0",
            "1",
            "-1",
            "1E+5",
            "1e5",
            "1.5E-3",
            "3.141592653589793",
            "-9007199254740993",
            "1e308",
            "1e309",
            "5e-324",
        ] {
            accepted(ok);
        }
    }

    #[test]
    fn numbers_are_checked_wherever_they_are() {
        assert!(storable(r#"[1, {"a": [2, {"b": 1e131072}]}]"#).is_err());
        assert!(storable("1e131072").is_err());
        assert!(storable(r#"{"1e131072": "1e131072", "n": true, "m": null}"#).is_ok());
        let reason = storable(&format!("[{}]", "9".repeat(200_000))).unwrap_err();
        let shown = format!("number {}… (200000 characters) is beyond", "9".repeat(40));
        assert!(reason.starts_with(&shown), "{reason}");
    }

    #[test]
    fn nul_is_refused_in_values_and_keys() {
        for nul in [
            r#"{"s":"\u0000"}"#,
            r#"{"\u0000":1}"#,
            r#"{"s":"a\u0000b"}"#,
            r#"["ok", ["\u0000"]]"#,
            r#""\u0000""#,
        ] {
            let reason = storable(nul).expect_err(nul);
            assert!(
                reason.starts_with(
                    "\\u0000 is not allowed in JSON strings (PostgreSQL jsonb cannot store it)"
                ),
                "{reason}"
            );
        }
        // An escaped backslash followed by u0000 is the text `\u0000`, which is fine.
        assert!(storable(r#"{"s":"\\u0000"}"#).is_ok());
    }

    #[test]
    fn surrogates_must_come_in_pairs() {
        for lone in [
            r#"["\ud800"]"#,
            r#"["\udc00"]"#,
            r#"["\ude00\ud83d"]"#,
            r#"["\ud800\ud800"]"#,
            r#"["\ud800\udbff"]"#,
            r#"["\ud800x"]"#,
            r#"["\ud800\n"]"#,
            r#"["\ud800\u0041"]"#,
            r#"["\ud800\u0000"]"#,
            r#"{"\uDBFF":1}"#,
            r#"["\ud83d\ude00\ude00"]"#,
        ] {
            let reason = storable(lone).expect_err(lone);
            assert!(reason.contains("unpaired UTF-16 surrogate"), "{reason}");
        }
        let reason = storable(r#"{"k":"ab\ud800"}"#).unwrap_err();
        assert!(reason.contains(r"surrogate \ud800 at byte 8"), "{reason}");
        for paired in [
            r#"["\ud83d\ude00"]"#,
            r#"["\uD83D\uDE00"]"#,
            r#"["\udbff\udfff"]"#,
            r#"{"\ud800\udc00":"x\ud83d\ude00y"}"#,
        ] {
            assert_eq!(storable(paired), Ok(()), "{paired}");
        }
    }

    #[test]
    fn other_escapes_and_text_are_stored() {
        for ok in [
            r#"["\u0001\u001f\u007f"]"#,
            r#"["\uffff\ufffe\ufdd0"]"#,
            r#"["\/\b\f\n\r\t\"\\"]"#,
            r#"["\u00e9\u20ac", "é€😀", "-1e999999 in a string"]"#,
            r#"{"a\"b": "c\\", "d": "\"1e999999"}"#,
            "{}",
            "[]",
            "true",
            "null",
            r#""""#,
        ] {
            assert_eq!(storable(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn text_that_is_not_json_gets_an_answer_without_panicking() {
        for junk in [
            "",
            "\"",
            "\"\\",
            "\"\\u",
            "\"\\u12",
            "\"\\uzzzz\"",
            "-",
            "1e",
            "1e-",
            "1.",
            "-.e+",
            "\"\\ud800",
            "é\"",
            "[1e999999999999999999999999999999]",
            "0.",
        ] {
            let _ = storable(junk);
        }
        assert!(storable("\"abc").is_err());
        assert!(storable("\"\\u12").is_err());
    }

    /// The body stage's JSON check lets all of these through: that is why this module exists.
    #[test]
    fn raw_value_parsing_does_not_refuse_what_jsonb_refuses() {
        for text in [
            r#"{"n":1e999999}"#,
            r#"{"n":1e-999999}"#,
            r#"{"n":0e1073741823}"#,
            r#"{"s":"\u0000"}"#,
            r#"{"\u0000":1}"#,
            r#"{"s":"\ud800"}"#,
            r#"{"s":"\udc00"}"#,
        ] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            assert_eq!(raw.get(), text);
            assert!(storable(raw.get()).is_err(), "{text}");
        }
    }

    /// PostgreSQL 15's `set_var_from_str` and `make_result` (src/backend/utils/adt/numeric.c),
    /// transcribed step by step as a second opinion on `number_end`: `dweight` is the power of
    /// ten of the first digit written, `dscale` the display scale, `weight` in base 10000.
    fn numeric_in_accepts(literal: &str) -> bool {
        let unsigned = literal.strip_prefix('-').unwrap_or(literal);
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(e) => (&unsigned[..e], Some(&unsigned[e + 1..])),
            None => (unsigned, None),
        };
        let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut dweight = integer.len() as i128 - 1;
        let mut dscale = fraction.len() as i128;
        if let Some(exponent) = exponent {
            // strtol: saturates at LONG_MAX / LONG_MIN.
            let exponent = exponent
                .parse::<i128>()
                .expect("at most 30 exponent digits")
                .clamp(i128::from(i64::MIN), i128::from(i64::MAX));
            let int_max = i128::from(i32::MAX);
            if exponent >= int_max / 2 || exponent <= -(int_max / 2) {
                return false;
            }
            dweight += exponent;
            dscale = (dscale - exponent).max(0);
        }
        let digits: Vec<u8> = integer.bytes().chain(fraction.bytes()).collect();
        let Some(first) = digits.iter().position(|&d| d != b'0') else {
            return dscale <= 0x3FFF; // zero: weight forced to 0
        };
        let leading = dweight - first as i128;
        let weight = leading.div_euclid(4);
        (i128::from(i16::MIN)..=i128::from(i16::MAX)).contains(&weight) && dscale <= 0x3FFF
    }

    /// Numbers as JSON writes them, biased towards the limits.
    fn json_number() -> impl Strategy<Value = String> {
        let zeros = prop_oneof![0..4usize, 16_380..16_386usize, 131_068..131_074usize];
        let integer = prop_oneof![
            Just("0".to_owned()),
            "[1-9][0-9]{0,6}",
            (1..=9u8, zeros.clone()).prop_map(|(d, n)| format!("{d}{}", "0".repeat(n))),
        ];
        let fraction = prop_oneof![
            Just(String::new()),
            "[0-9]{1,6}".prop_map(|f| format!(".{f}")),
            (zeros, 0..=9u8).prop_map(|(n, d)| format!(".{}{d}", "0".repeat(n))),
        ];
        let magnitude = prop_oneof![
            0..20i64,
            16_370..16_400i64,
            131_060..131_080i64,
            1_073_741_815..1_073_741_830i64,
            0..i64::MAX,
        ];
        let exponent = prop_oneof![
            Just(String::new()),
            ("[eE]", "[-+]?", "0{0,3}", magnitude).prop_map(|(e, s, z, m)| format!("{e}{s}{z}{m}")),
            ("[eE]", "[-+]?", "[0-9]{19,30}").prop_map(|(e, s, d)| format!("{e}{s}{d}")),
        ];
        ("-?", integer, fraction, exponent).prop_map(|(s, i, f, e)| format!("{s}{i}{f}{e}"))
    }

    /// A JSON string body made of code units, as escapes or as characters.
    fn json_string() -> impl Strategy<Value = (String, Vec<u16>)> {
        let piece = prop_oneof![
            prop_oneof![
                Just(0u16),
                0xD800..0xE000u16,
                Just(0xDBFF),
                Just(0xDC00),
                any::<u16>()
            ]
            .prop_map(|u| (format!("\\u{u:04x}"), vec![u])),
            prop_oneof![
                Just((r#"\""#, '"')),
                Just((r"\\", '\\')),
                Just((r"\n", '\n')),
                Just((r"\/", '/')),
            ]
            .prop_map(|(escape, c)| (escape.to_owned(), vec![c as u16])),
            any::<char>()
                .prop_filter("JSON wants these escaped", |c| {
                    *c >= ' ' && *c != '"' && *c != '\\'
                })
                .prop_map(|c| {
                    let mut units = [0u16; 2];
                    (c.to_string(), c.encode_utf16(&mut units).to_vec())
                }),
        ];
        prop::collection::vec(piece, 0..8).prop_map(|pieces| {
            let mut text = String::from("\"");
            let mut units = Vec::new();
            for (piece_text, piece_units) in pieces {
                text.push_str(&piece_text);
                units.extend(piece_units);
            }
            text.push('"');
            (text, units)
        })
    }

    /// PostgreSQL's rule for the code units of a string: no NUL, surrogates only in pairs.
    fn jsonb_accepts_units(units: &[u16]) -> bool {
        !units.contains(&0) && char::decode_utf16(units.iter().copied()).all(|c| c.is_ok())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn numbers_follow_numeric_in(literal in json_number()) {
            let text = format!("[{literal}]");
            prop_assume!(serde_json::from_str::<&RawValue>(&text).is_ok());
            prop_assert_eq!(storable(&text).is_ok(), numeric_in_accepts(&literal), "{}", literal);
        }

        #[test]
        fn strings_follow_the_jsonb_lexer((string, units) in json_string(), as_key in any::<bool>()) {
            let text = if as_key { format!("{{{string}:0}}") } else { format!("[{string}]") };
            prop_assert!(serde_json::from_str::<&RawValue>(&text).is_ok(), "{}", text);
            let verdict = storable(&text);
            prop_assert_eq!(verdict.is_ok(), jsonb_accepts_units(&units), "{} {:?}", text, verdict);
            if verdict.is_ok() {
                // serde_json, decoding in full, agrees that the text is NUL-free Unicode.
                let decoded: String = serde_json::from_str(&string).unwrap();
                prop_assert!(!decoded.contains('\0'));
            }
        }

        #[test]
        fn never_panics_on_any_text(text in any::<String>()) {
            let _ = storable(&text);
        }

        #[test]
        fn never_panics_on_json_like_text(text in r#"[-+.eE0-9"\\u{}\[\],:a-fA-F ]{0,40}"#) {
            let _ = storable(&text);
        }
    }
}
