//! The dashboards: the pages under `web/`, compiled into the binary so it serves them with
//! nothing beside it. `/` is the big screen, `/host` the host's phone, `/console` the
//! operators' console, `/report` the post-show review; `/web/...` their scripts, styles
//! and icon (also at `/favicon.ico`).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Every file of `web/`: its path under `/web/` and its text.
const FILES: &[(&str, &str)] = &[
    ("screen.html", include_str!("../../web/screen.html")),
    ("host.html", include_str!("../../web/host.html")),
    ("console.html", include_str!("../../web/console.html")),
    ("report.html", include_str!("../../web/report.html")),
    ("style.css", include_str!("../../web/style.css")),
    ("icon.svg", include_str!("../../web/icon.svg")),
    ("js/live.js", include_str!("../../web/js/live.js")),
    ("js/i18n.js", include_str!("../../web/js/i18n.js")),
    ("js/chart.js", include_str!("../../web/js/chart.js")),
    ("js/format.js", include_str!("../../web/js/format.js")),
    ("js/page.js", include_str!("../../web/js/page.js")),
    ("js/screen.js", include_str!("../../web/js/screen.js")),
    ("js/host.js", include_str!("../../web/js/host.js")),
    ("js/console.js", include_str!("../../web/js/console.js")),
    ("js/channels.js", include_str!("../../web/js/channels.js")),
    ("js/report.js", include_str!("../../web/js/report.js")),
];

fn file(path: &str) -> Response {
    let Some((_, text)) = FILES.iter().find(|(name, _)| *name == path) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let kind = match path.rsplit_once('.').map(|(_, extension)| extension) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        *text,
    )
        .into_response()
}

pub(crate) async fn screen() -> Response {
    file("screen.html")
}

pub(crate) async fn host() -> Response {
    file("host.html")
}

pub(crate) async fn console() -> Response {
    file("console.html")
}

pub(crate) async fn report() -> Response {
    file("report.html")
}

/// Browsers ask for `/favicon.ico` whatever the page says: the same icon.
pub(crate) async fn icon() -> Response {
    file("icon.svg")
}

pub(crate) async fn asset(Path(path): Path<String>) -> Response {
    file(&path)
}
