//! CRC-64-AVRO ("Rabin") fingerprints of a schema's Parsing Canonical Form, as the Avro
//! specification defines them, so that readers in other languages agree on the bytes.

use apache_avro::Schema;

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

pub(crate) fn crc64_avro(bytes: &[u8]) -> u64 {
    bytes.iter().fold(EMPTY, |fp, b| {
        (fp >> 8) ^ TABLE[((fp ^ u64::from(*b)) & 0xff) as usize]
    })
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// The Parsing Canonical Form of `schema`.
///
/// apache-avro leaves a primitive that carried a logical type as `{"type":"long"}`, where the
/// specification's [PRIMITIVES] rule (and Java's `SchemaNormalization`) writes `"long"`; the
/// fingerprints would then disagree with every other implementation. The canonical form is
/// compact JSON whose names cannot contain braces or quotes, so the textual rewrite is exact.
pub(crate) fn canonical_form(schema: &Schema) -> String {
    let mut form = schema.canonical_form();
    for primitive in PRIMITIVES {
        form = form.replace(
            &format!(r#"{{"type":"{primitive}"}}"#),
            &format!(r#""{primitive}""#),
        );
    }
    form
}

pub(crate) fn fingerprint(schema: &Schema) -> u64 {
    crc64_avro(canonical_form(schema).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(json: &str) -> i64 {
        fingerprint(&Schema::parse_str(json).unwrap()) as i64
    }

    #[test]
    fn matches_the_specification_test_vectors() {
        // share/test/data/schema-tests.txt of the Avro project.
        assert_eq!(fp(r#""null""#), 7_195_948_357_588_979_594);
        assert_eq!(fp(r#""int""#), 8_247_732_601_305_521_295);
        assert_eq!(fp(r#""long""#), -3_434_872_931_120_570_953);
        assert_eq!(
            fp(r#"{"fields":[], "type":"record", "name":"foo"}"#),
            -4_824_392_279_771_201_922
        );
    }

    #[test]
    fn logical_types_do_not_change_the_fingerprint() {
        assert_eq!(
            fp(r#"{"type":"long","logicalType":"timestamp-micros"}"#),
            fp(r#""long""#)
        );
        assert_eq!(
            fp(r#"{"type":"string","logicalType":"uuid"}"#),
            fp(r#""string""#)
        );
    }
}

/// Golden fingerprints of every schema file: a schema is never edited in place (readers
/// elsewhere hold the old fingerprint); a change is a new versioned file, and its fingerprint
/// is added here on purpose.
#[cfg(test)]
mod golden {
    use super::*;

    /// File name and fingerprint as written on the wire (little-endian bytes, hex).
    const GOLDEN: &[(&str, &str)] = &[
        ("event.v1.avsc", "88c2f60e89271108"),
        ("event.v2.avsc", "d990b6aaeecbe8f7"),
        ("event.v3.avsc", "c8755ff54f3dc05d"),
        ("persisted.v1.avsc", "d30ba440eec973d3"),
        ("tick.v1.avsc", "3158c4c7f9a12452"),
        ("writer.v1.avsc", "d97cbd9afd330cd0"),
    ];

    #[test]
    fn every_schema_file_keeps_its_fingerprint() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "avsc"))
            .collect();
        files.sort();
        let mut seen = Vec::new();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let schema = Schema::parse_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let fp = format!("{:016x}", fingerprint(&schema).swap_bytes());
            seen.push((name, fp));
        }
        let golden: Vec<(String, String)> = GOLDEN
            .iter()
            .map(|(n, f)| (n.to_string(), f.to_string()))
            .collect();
        assert_eq!(seen, golden, "a schema file changed, appeared or vanished");
    }
}
