//! A minimal HTML page builder: a title, a table of contents, and sections.

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}\
p.why{color:#555;margin-top:-.4em}table{border-collapse:collapse;margin:.8em 0}\
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
img{max-width:100%;display:block;margin:.8em 0}pre{background:#f6f6f6;padding:.8em;overflow:auto}nav a{margin-right:1em}";

/// A page being built.
pub struct Page {
    title: String,
    sections: Vec<(String, String, String)>,
}

impl Page {
    /// A page with a title.
    pub fn new(title: &str) -> Self {
        Page {
            title: title.to_string(),
            sections: Vec::new(),
        }
    }

    /// Adds a section with an id, a heading, a one-line explanation and HTML content.
    pub fn section(&mut self, id: &str, heading: &str, why: &str, content: &str) {
        let body = format!("<p class=why>{}</p>{content}", esc(why));
        self.sections
            .push((id.to_string(), heading.to_string(), body));
    }

    /// The section ids, in order.
    pub fn ids(&self) -> Vec<String> {
        self.sections.iter().map(|s| s.0.clone()).collect()
    }

    /// The finished HTML.
    pub fn finish(self) -> String {
        let nav: String = self
            .sections
            .iter()
            .map(|(id, h, _)| format!("<a href=\"#{id}\">{}</a>", esc(h)))
            .collect();
        let body: String = self
            .sections
            .iter()
            .map(|(id, h, b)| format!("<section id=\"{id}\"><h2>{}</h2>{b}</section>\n", esc(h)))
            .collect();
        format!(
            "<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{t}</title><style>{STYLE}</style></head>\n<body><h1>{t}</h1><nav>{nav}</nav>\n{body}<footer><p class=why>Made by mnist-ae {v}.</p></footer></body></html>\n",
            t = esc(&self.title),
            v = env!("CARGO_PKG_VERSION")
        )
    }
}
