//! Query-protocol response documents, written with quick-xml:
//!
//! ```xml
//! <CreateUserResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
//!   <CreateUserResult>...</CreateUserResult>
//!   <ResponseMetadata><RequestId>...</RequestId></ResponseMetadata>
//! </CreateUserResponse>
//! ```
//!
//! Lists are `<Name><member>...</member></Name>`, timestamps ISO 8601 (UTC), booleans
//! `true`/`false`, as botocore's query parser reads them.

use std::io::Cursor;

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use berth_core::Timestamp;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// Builds the elements of a result.
pub struct Xml {
    w: Writer<Cursor<Vec<u8>>>,
}

impl Xml {
    fn new() -> Self {
        Self {
            w: Writer::new(Cursor::new(Vec::new())),
        }
    }

    fn write(&mut self, event: Event<'_>) {
        self.w
            .write_event(event)
            .expect("writing XML to memory cannot fail");
    }

    pub fn start(&mut self, name: &str) {
        self.write(Event::Start(BytesStart::new(name)));
    }

    pub fn end(&mut self, name: &str) {
        self.write(Event::End(BytesEnd::new(name)));
    }

    /// `<name>text</name>`.
    pub fn text(&mut self, name: &str, value: &str) {
        self.start(name);
        self.write(Event::Text(BytesText::new(value)));
        self.end(name);
    }

    /// `<name>text</name>` if there is a value.
    pub fn opt(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.text(name, v);
        }
    }

    pub fn time(&mut self, name: &str, t: Timestamp) {
        self.text(name, &iso8601(t));
    }

    pub fn int(&mut self, name: &str, n: i64) {
        self.text(name, &n.to_string());
    }

    pub fn bool(&mut self, name: &str, b: bool) {
        self.text(name, if b { "true" } else { "false" });
    }

    /// `<name>...</name>` around what `f` writes.
    pub fn elem(&mut self, name: &str, f: impl FnOnce(&mut Self)) {
        self.start(name);
        f(self);
        self.end(name);
    }

    /// `<name><member>...</member>...</name>`.
    pub fn list<T>(&mut self, name: &str, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.start(name);
        for item in items {
            self.start("member");
            f(self, item);
            self.end("member");
        }
        self.end(name);
    }

    /// `<name><member>text</member>...</name>`.
    pub fn strings(&mut self, name: &str, items: &[String]) {
        self.start(name);
        for item in items {
            self.text("member", item);
        }
        self.end(name);
    }

    fn into_string(self) -> String {
        String::from_utf8(self.w.into_inner().into_inner()).expect("XML we wrote is UTF-8")
    }
}

/// A query timestamp: `2024-01-02T03:04:05Z` (UTC; milliseconds when not zero).
pub fn iso8601(t: Timestamp) -> String {
    let dt = chrono::DateTime::from_timestamp_millis(t.millis()).unwrap_or_default();
    if t.millis() % 1000 == 0 {
        dt.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    }
}

/// The document of a successful `action`; `result` writes the `<ActionResult>` content
/// (None: an operation without output, which has no result element).
pub fn document(action: &str, xmlns: &str, result: Option<&dyn Fn(&mut Xml)>) -> String {
    let mut x = Xml::new();
    let response = format!("{action}Response");
    let mut start = BytesStart::new(response.as_str());
    start.push_attribute(("xmlns", xmlns));
    x.write(Event::Start(start));
    if let Some(f) = result {
        let result_name = format!("{action}Result");
        x.start(&result_name);
        f(&mut x);
        x.end(&result_name);
    }
    x.elem("ResponseMetadata", |x| {
        x.text("RequestId", &uuid::Uuid::new_v4().to_string())
    });
    x.end(&response);
    x.into_string()
}

/// An HTTP 200 answer carrying an XML document.
pub fn ok(doc: String) -> Response {
    let mut response = doc.into_response();
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    crate::aws_error::insert_request_id(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_escaping() {
        let doc = document(
            "GetUser",
            "https://iam.amazonaws.com/doc/2010-05-08/",
            Some(&|x: &mut Xml| {
                x.elem("User", |x| {
                    x.text("UserName", "a<b&c");
                    x.time("CreateDate", Timestamp::from_millis(1_700_000_000_000));
                    x.list("Tags", &[("k", "v")], |x, (k, v)| {
                        x.text("Key", k);
                        x.text("Value", v);
                    });
                })
            }),
        );
        assert!(doc.starts_with(
            "<GetUserResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\"><GetUserResult><User><UserName>a&lt;b&amp;c</UserName><CreateDate>2023-11-14T22:13:20Z</CreateDate><Tags><member><Key>k</Key><Value>v</Value></member></Tags></User></GetUserResult><ResponseMetadata><RequestId>"
        ), "{doc}");
        let empty = document("DeleteUser", "ns", None);
        assert!(empty.starts_with("<DeleteUserResponse xmlns=\"ns\"><ResponseMetadata>"));
        assert_eq!(
            iso8601(Timestamp::from_millis(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
