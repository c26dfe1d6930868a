//! Server-rendered HTML: the 404 listing (the status page at `/` is
//! [`super::status_page`]). No scripts, no external assets: it must work
//! offline and on a phone.

use std::fmt::Write;

use super::App;

const HEAD: &str = "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<style>body{font-family:system-ui,sans-serif;margin:1rem auto;max-width:60rem;padding:0 1rem}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.2rem .5rem;border-bottom:1px solid #ddd}\
td.n{text-align:right}code{word-break:break-all}</style>";

/// Escapes text for HTML bodies and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The link a browser can follow without `.radio` DNS: `/<callsign>.radio/<path>`.
pub(super) fn local_href(url: &str) -> String {
    url.strip_prefix("http:/").unwrap_or(url).to_string()
}

/// One row of a 404's list: something the mesh has.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    /// Catalog URL.
    pub url: String,
    /// Bytes.
    pub size: u64,
    /// MIME type.
    pub content_type: String,
    /// Replication priority.
    pub priority: crate::catalog::Priority,
    /// Held by this node (else fetched from the mesh on request).
    pub here: bool,
}

/// 404 with the list of what exists in the mesh.
pub fn not_found(app: &App, wanted: &str, shown: &[Listed], total: usize) -> String {
    let mut out = String::from(HEAD);
    let _ = write!(
        out,
        "<title>Not found</title></head><body><h1>Not found</h1><p><code>{}</code> is not in the mesh (asked at {}).</p>\
         <h2>Available in the mesh ({total})</h2>",
        escape(wanted),
        escape(&app.node.name)
    );
    out.push_str("<table><tr><th>URL<th>size<th>type<th>priority<th>where</tr>");
    for e in shown {
        let _ = write!(
            out,
            "<tr><td><a href=\"{}\">{}</a><td class=n>{}<td>{}<td>{}<td>{}</tr>",
            escape(&local_href(&e.url)),
            escape(&e.url),
            e.size,
            escape(&e.content_type),
            e.priority.name(),
            if e.here { "this node" } else { "mesh" }
        );
    }
    out.push_str("</table>");
    if total > shown.len() {
        let _ = write!(
            out,
            "<p>… and {} more: see <a href=\"/api/v1/catalog\">/api/v1/catalog</a>.</p>",
            total - shown.len()
        );
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(
            super::escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(
            super::local_href("http://n0call.radio/a"),
            "/n0call.radio/a"
        );
    }
}
