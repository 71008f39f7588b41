//! The `data` part of a `/0.2/documents` request: the JSON message that is signed.
//!
//! Two shapes exist and Sila accepts both:
//!
//! * **single** — one file part named `file`; its metadata (`filename`, `hash`, `mime_type`,
//!   `document_type`, optional `name`, `description`, `identity_type`) sits at the top level
//!   next to `header`;
//! * **multi** — file parts named by *labels*; `file_metadata` maps each label to the same
//!   per-file fields. The labels in the parts and in `file_metadata` must be the same set.
//!
//! The signature covers the serialised bytes exactly, so the message is serialised once
//! ([`DataMessage::to_bytes`]) and those bytes are both signed and sent. docgate writes
//! compact JSON with raw UTF-8 (as Sila's Node SDK does); a receiver must never re-serialise.

use serde::{ser::SerializeMap, Serialize, Serializer};

/// The API version every header carries.
pub const VERSION: &str = "0.2";

/// `header`: who is asking (app), for whom (user), when, and the caller's reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// Unix seconds at signing time.
    pub created: i64,
    pub app_handle: String,
    pub user_handle: String,
    pub version: &'static str,
    /// The caller's id for this request, echoed back as `reference_id`.
    pub reference: String,
}

/// The per-file fields, identical in both shapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Without extension, at most 100 characters.
    pub filename: String,
    /// Lower-case hex SHA-256 of the file's bytes: the only thing that binds the file to the
    /// signature.
    pub hash: String,
    pub mime_type: String,
    pub document_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The whole `data` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataMessage {
    Single {
        header: Header,
        file: FileFields,
    },
    /// `(label, fields)` in the order the file parts are sent.
    Multi {
        header: Header,
        files: Vec<(String, FileFields)>,
    },
}

impl DataMessage {
    /// The part name of each file, in order: `file` for the single shape, else the labels.
    pub fn part_names(&self) -> Vec<&str> {
        match self {
            DataMessage::Single { .. } => vec![SINGLE_PART_NAME],
            DataMessage::Multi { files, .. } => files.iter().map(|(l, _)| l.as_str()).collect(),
        }
    }

    /// The exact bytes that are signed and sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and integers into a Vec cannot fail; an empty message
        // would be refused by Sila's signature check rather than go out unsigned.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The file part's name in the single shape.
pub const SINGLE_PART_NAME: &str = "file";

impl Serialize for DataMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DataMessage::Single { header, file } => {
                #[derive(Serialize)]
                struct Single<'a> {
                    header: &'a Header,
                    #[serde(flatten)]
                    file: &'a FileFields,
                }
                Single { header, file }.serialize(s)
            }
            DataMessage::Multi { header, files } => {
                struct InOrder<'a>(&'a [(String, FileFields)]);
                impl Serialize for InOrder<'_> {
                    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                        let mut map = s.serialize_map(Some(self.0.len()))?;
                        for (label, fields) in self.0 {
                            map.serialize_entry(label, fields)?;
                        }
                        map.end()
                    }
                }
                #[derive(Serialize)]
                struct Multi<'a> {
                    header: &'a Header,
                    file_metadata: InOrder<'a>,
                }
                Multi {
                    header,
                    file_metadata: InOrder(files),
                }
                .serialize(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            created: 1_700_000_000,
            app_handle: "test_app.silamoney.eth".into(),
            user_handle: "test_user.silamoney.eth".into(),
            version: VERSION,
            reference: "00000000-0000-4000-8000-000000000000".into(),
        }
    }

    fn red1x1() -> FileFields {
        FileFields {
            name: None,
            filename: "red1x1".into(),
            hash: "b1ff9c8ea3a780bad09b346c423d2d0e46815926879b18e841d928376a946640".into(),
            mime_type: "image/png".into(),
            document_type: "id_drivers_license".into(),
            identity_type: None,
            description: None,
        }
    }

    #[test]
    fn single_shape_is_byte_identical_to_the_node_sdk_vector() {
        // signature_vectors.json "node_style_documents" is what Sila's Node SDK signs for
        // the same upload: our serialisation must produce exactly those bytes.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/sila/signature_vectors.json"
        );
        let vectors: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        let expected = vectors["node_style_documents"]["message"]
            .as_str()
            .expect("message");
        let msg = DataMessage::Single {
            header: header(),
            file: red1x1(),
        };
        assert_eq!(String::from_utf8(msg.to_bytes()).expect("utf8"), expected);
        assert_eq!(msg.part_names(), vec!["file"]);
    }

    #[test]
    fn multi_shape_keeps_document_order_and_optional_fields() {
        let mut second = red1x1();
        second.name = Some("Ünïcode ✓".into());
        second.description = Some("back".into());
        let msg = DataMessage::Multi {
            header: header(),
            files: vec![("zeta".into(), red1x1()), ("alpha".into(), second)],
        };
        let text = String::from_utf8(msg.to_bytes()).expect("utf8");
        let zeta = text.find("\"zeta\"").expect("zeta");
        let alpha = text.find("\"alpha\"").expect("alpha");
        assert!(zeta < alpha, "labels stay in part order: {text}");
        assert!(text.contains("\"name\":\"Ünïcode ✓\""), "raw UTF-8: {text}");
        assert!(
            !text.contains("identity_type"),
            "absent fields are omitted: {text}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["file_metadata"]["alpha"]["description"], "back");
        assert_eq!(msg.part_names(), vec!["zeta", "alpha"]);
    }
}
