//! The portable export format of one Chroma collection: JSON Lines.
//!
//! ```text
//! {"strata_chroma_export":1,"tenant":"…","database":"…","collection":{"name":"…","id":"…","metadata":{…}|null,"configuration":{…}|null,"schema":{…}|null,"dimension":384}}
//! {"id":"…","embedding":"<base64 of little-endian f32>","document":"…"|null,"metadata":{…}|null,"uri":"…"|null}
//! … one line per record …
//! {"end":{"records":N}}
//! ```
//!
//! - Embeddings are base64 of the little-endian IEEE-754 `f32`s, so they
//!   are bit-exact to what the API returned (the server's decimal text is
//!   parsed with a correctly rounding `f32` parser, see
//!   [`parse_embeddings`]); Chroma's add endpoint takes this encoding as is.
//! - `metadata`, `configuration` and `schema` are the server's JSON text,
//!   copied verbatim: doubles in metadata are never re-printed.
//! - The `end` line says the export is complete; a file without it was cut.
//!
//! Plain tools read it: `age -d -i KEY OBJ | zstd -d | jq -c 'select(.id)'`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Version of the format, the value of `strata_chroma_export`.
pub const FORMAT_VERSION: u32 = 1;

/// The first line of an export.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    pub strata_chroma_export: u32,
    pub tenant: String,
    pub database: String,
    pub collection: HeaderCollection,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HeaderCollection {
    pub name: String,
    /// The collection's id on the server it was exported from.
    pub id: String,
    pub metadata: Option<Box<RawValue>>,
    pub configuration: Option<Box<RawValue>>,
    pub schema: Option<Box<RawValue>>,
    pub dimension: Option<u32>,
}

/// One record line, as written.
#[derive(Debug, Serialize)]
pub struct RecordOut<'a> {
    pub id: &'a str,
    pub embedding: String,
    pub document: Option<&'a str>,
    pub metadata: Option<&'a RawValue>,
    pub uri: Option<&'a str>,
}

/// One record line, as read back (borrowing from the line).
#[derive(Debug, Deserialize)]
pub struct RecordIn<'a> {
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    pub embedding: &'a str,
    #[serde(borrow, default)]
    pub document: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    pub metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub uri: Option<std::borrow::Cow<'a, str>>,
}

/// The last line.
#[derive(Debug, Serialize, Deserialize)]
pub struct End {
    pub end: EndCount,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EndCount {
    pub records: u64,
}

/// A page of `get` results as the server sends it.
#[derive(Debug, Deserialize)]
pub struct GetPage<'a> {
    pub ids: Vec<String>,
    #[serde(borrow, default)]
    pub embeddings: Option<&'a RawValue>,
    #[serde(default)]
    pub documents: Option<Vec<Option<String>>>,
    #[serde(borrow, default)]
    pub metadatas: Option<Vec<Option<&'a RawValue>>>,
    #[serde(default)]
    pub uris: Option<Vec<Option<String>>>,
}

/// base64 of the little-endian bytes of `v`.
pub fn encode_embedding(v: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(v.len() * 4);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    B64.encode(bytes)
}

/// The inverse of [`encode_embedding`].
pub fn decode_embedding(s: &str) -> Result<Vec<f32>, String> {
    let bytes = B64
        .decode(s)
        .map_err(|e| format!("embedding is not base64: {e}"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "embedding has {} bytes, not a multiple of 4",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Parses the JSON text of a list of float lists (`[[0.1,2e-3],[…]]`)
/// into `f32`s, each decimal rounded once, correctly, to the nearest
/// `f32` (`str::parse::<f32>`). serde_json would parse to `f64` first and
/// round again, which can land one ulp off.
pub fn parse_embeddings(raw: &str) -> Result<Vec<Vec<f32>>, String> {
    let b = raw.as_bytes();
    let mut out: Vec<Vec<f32>> = Vec::new();
    let mut depth = 0usize;
    let mut cur: Vec<f32> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'[' => {
                depth += 1;
                if depth > 2 {
                    return Err("embeddings nest deeper than a list of lists".into());
                }
                if depth == 2 {
                    cur = Vec::new();
                }
                i += 1;
            }
            b']' => {
                if depth == 2 {
                    out.push(std::mem::take(&mut cur));
                }
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced ] in embeddings".to_string())?;
                i += 1;
            }
            b',' | b' ' | b'\n' | b'\r' | b'\t' => i += 1,
            b'n' if depth == 1 && b[i..].starts_with(b"null") => {
                // a record without an embedding
                out.push(Vec::new());
                i += 4;
            }
            _ if depth == 2 => {
                let start = i;
                while i < b.len() && !matches!(b[i], b',' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    i += 1;
                }
                let tok = std::str::from_utf8(&b[start..i]).map_err(|e| e.to_string())?;
                let x: f32 = tok
                    .parse()
                    .map_err(|_| format!("{tok:?} in embeddings is not a number"))?;
                cur.push(x);
            }
            _ => return Err(format!("unexpected {:?} in embeddings", c as char)),
        }
    }
    if depth != 0 {
        return Err("embeddings end early".into());
    }
    Ok(out)
}

/// Parses the header line of an export.
pub fn parse_header(line: &[u8]) -> Result<Header, String> {
    let h: Header = serde_json::from_slice(line)
        .map_err(|e| format!("the first line is not a strata chroma export header: {e}"))?;
    if h.strata_chroma_export != FORMAT_VERSION {
        return Err(format!(
            "export format {} (this strata reads {FORMAT_VERSION})",
            h.strata_chroma_export
        ));
    }
    Ok(h)
}

/// One line of an export, as [`ExportReader::line`] reads it.
#[derive(Debug)]
pub enum Line<'a> {
    Header(Header),
    Record(RecordIn<'a>),
    End(EndCount),
}

/// Reads the lines of an export in order and checks their sequence: the
/// header first, records, then the end line with the right count and
/// nothing after it. Pure (no server), so the restore and the fuzz target
/// (`fuzz/fuzz_targets/chroma_export.rs`) read exports the same way.
#[derive(Debug)]
pub struct ExportReader {
    /// base64 length of one embedding, when the dimension is known.
    want_len: Option<usize>,
    dimension: Option<u32>,
    header: bool,
    records: u64,
    ended: bool,
}

impl ExportReader {
    /// A reader for an export whose embeddings have `dimension` floats
    /// (as the manifest records; `None`: not checked).
    pub fn new(dimension: Option<u32>) -> ExportReader {
        ExportReader {
            want_len: dimension.map(|d| (4 * d as usize).div_ceil(3) * 4),
            dimension,
            header: false,
            records: 0,
            ended: false,
        }
    }

    /// Record lines read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Reads the next line (without its newline).
    pub fn line<'a>(&mut self, line: &'a [u8]) -> Result<Line<'a>, String> {
        if self.ended {
            return Err("lines after the end line".into());
        }
        if !self.header {
            let h = parse_header(line)?;
            self.header = true;
            return Ok(Line::Header(h));
        }
        if line.starts_with(b"{\"end\"") {
            let e: End = serde_json::from_slice(line).map_err(|e| e.to_string())?;
            if e.end.records != self.records {
                return Err(format!(
                    "the end line counts {} records, the file holds {}",
                    e.end.records, self.records
                ));
            }
            self.ended = true;
            return Ok(Line::End(e.end));
        }
        let r: RecordIn =
            serde_json::from_slice(line).map_err(|e| format!("record {}: {e}", self.records))?;
        if let Some(n) = self.want_len
            && r.embedding.len() != n
        {
            return Err(format!(
                "record {}: the embedding is not of dimension {}",
                r.id,
                self.dimension.unwrap_or(0)
            ));
        }
        self.records += 1;
        Ok(Line::Record(r))
    }

    /// Checks that the export was complete; `rest` is what followed the
    /// last newline (nothing, in a whole export).
    pub fn finish(&self, rest: &[u8]) -> Result<u64, String> {
        if !self.header {
            return Err("it is empty".into());
        }
        if !rest.is_empty() || !self.ended {
            return Err("it ends early (no end line)".into());
        }
        Ok(self.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_round_trip_bit_exact() {
        let v = vec![
            0.1f32,
            -0.0,
            f32::MIN_POSITIVE,
            1.0e-45,
            f32::MAX,
            0.40295026,
            std::f32::consts::PI,
        ];
        let e = encode_embedding(&v);
        let back = decode_embedding(&e).unwrap();
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert!(decode_embedding("AAA=").is_err());
        assert!(decode_embedding("not base64!").is_err());
    }

    #[test]
    fn parses_server_decimals_exactly() {
        // Every f32's shortest decimal (what Chroma prints) parses back to it.
        let mut x: u32 = 0x1234_5678;
        let mut vals = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let f = f32::from_bits(x);
            if f.is_finite() {
                vals.push(f);
            }
        }
        let text = format!(
            "[[{}], [ {} ],null,[]]",
            vals.iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(","),
            "1.5, -2e-3"
        );
        let parsed = parse_embeddings(&text).unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].len(), vals.len());
        for (a, b) in parsed[0].iter().zip(&vals) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(parsed[1], vec![1.5, -2e-3]);
        assert!(parsed[2].is_empty() && parsed[3].is_empty());
        assert!(parse_embeddings("[[1,2]").is_err());
        assert!(parse_embeddings("[[1,x]]").is_err());
        assert!(parse_embeddings("[[[1]]]").is_err());
    }

    #[test]
    fn record_lines_keep_raw_metadata() {
        let meta = RawValue::from_string(r#"{"f":0.30000000000000004,"n":1}"#.into()).unwrap();
        let line = serde_json::to_string(&RecordOut {
            id: "a\"b",
            embedding: encode_embedding(&[1.0, 2.0]),
            document: Some("doc"),
            metadata: Some(&meta),
            uri: None,
        })
        .unwrap();
        assert!(
            line.contains(r#""metadata":{"f":0.30000000000000004,"n":1}"#),
            "{line}"
        );
        let r: RecordIn = serde_json::from_str(&line).unwrap();
        assert_eq!(r.id, "a\"b");
        assert_eq!(decode_embedding(r.embedding).unwrap(), vec![1.0, 2.0]);
        assert_eq!(r.metadata.unwrap().get(), meta.get());
        assert_eq!(r.document.as_deref(), Some("doc"));
    }

    #[test]
    fn export_reader_checks_the_sequence() {
        let header = br#"{"strata_chroma_export":1,"tenant":"t","database":"d","collection":{"name":"c","id":"i","metadata":null,"configuration":null,"schema":null,"dimension":2}}"#;
        let rec = format!(
            r#"{{"id":"a","embedding":"{}","document":null,"metadata":null,"uri":null}}"#,
            encode_embedding(&[1.0, 2.0])
        );
        let read = |lines: &[&[u8]], dimension: Option<u32>| -> Result<u64, String> {
            let mut r = ExportReader::new(dimension);
            for l in lines {
                r.line(l)?;
            }
            r.finish(b"")
        };
        let end1: &[u8] = br#"{"end":{"records":1}}"#;
        assert_eq!(read(&[header, rec.as_bytes(), end1], Some(2)), Ok(1));
        assert!(
            read(&[header, rec.as_bytes(), end1], Some(3))
                .unwrap_err()
                .contains("not of dimension 3")
        );
        assert!(
            read(&[header, br#"{"end":{"records":2}}"#], None)
                .unwrap_err()
                .contains("counts 2 records, the file holds 0")
        );
        assert!(
            read(&[header, rec.as_bytes(), end1, rec.as_bytes()], None)
                .unwrap_err()
                .contains("after the end line")
        );
        assert!(
            read(&[header, rec.as_bytes()], None)
                .unwrap_err()
                .contains("ends early")
        );
        assert_eq!(read(&[], None).unwrap_err(), "it is empty");
        assert!(
            read(&[rec.as_bytes()], None).is_err(),
            "a record is no header"
        );
        let mut r = ExportReader::new(None);
        r.line(header).unwrap();
        r.line(br#"{"end":{"records":0}}"#).unwrap();
        assert!(r.finish(b"{\"id\"").unwrap_err().contains("ends early"));
    }

    #[test]
    fn header_versions() {
        let h = br#"{"strata_chroma_export":1,"tenant":"t","database":"d","collection":{"name":"c","id":"i","metadata":null,"configuration":{"hnsw":{"space":"ip"}},"schema":null,"dimension":3}}"#;
        let p = parse_header(h).unwrap();
        assert_eq!(p.collection.name, "c");
        assert_eq!(
            p.collection.configuration.unwrap().get(),
            r#"{"hnsw":{"space":"ip"}}"#
        );
        let h2 = String::from_utf8_lossy(h).replace(":1,", ":2,");
        assert!(
            parse_header(h2.as_bytes())
                .unwrap_err()
                .contains("format 2")
        );
        assert!(parse_header(b"{\"id\":\"x\"}").is_err());
    }
}
