//! Mail-read endpoints on the shared pipeline ([`crate::apis::call`]: authentication, concurrency, faults,
//! scopes, Gmail quota, counters).
//!
//! Graph: `/v1.0/me/messages`, `/v1.0/me/mailFolders/{id}/messages` (`$filter` on receivedDateTime /
//! sentDateTime, `$orderby`, `$top`, `$skip`, `$select`, `$count`), `/v1.0/me/messages/{id}`, attachments,
//! and per-folder delta. Gmail: `messages.list`, `messages.get`, `messages.attachments.get`, `history.list`
//! and the multipart batch endpoint.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::apis::{Needs, Principal, call, check_alt, gmail_user_ok};
use crate::app::App;
use crate::mailbox::{DeltaItem, DeltaOpts, DeltaToken, Mailbox, MsgView, Round, labels};
use crate::mailview::{
    GRAPH_PROPERTIES, GmailFormat, GraphOpts, gmail_attachment, gmail_message, graph_attachments,
    graph_id, graph_message, parse_ts_ms,
};
use crate::wire::{
    GraphPrefer, Params, PreferScope, google_api_error, graph_applied, graph_bad_request,
    graph_error, graph_not_found, json_response, link_base, random_token,
};

/// Routes of the mail-read endpoints.
pub fn routes() -> Router<App> {
    let graph = Router::new()
        .route("/v1.0/me/messages", get(graph_list_all))
        .route("/v1.0/me/messages/{id}", get(graph_get))
        .route(
            "/v1.0/me/messages/{id}/attachments",
            get(graph_attachment_list),
        )
        .route(
            "/v1.0/me/messages/{id}/attachments/{aid}",
            get(graph_attachment_get),
        )
        .route(
            "/v1.0/me/mailFolders/{folder}/messages",
            get(graph_list_folder),
        )
        .route(
            "/v1.0/me/mailFolders/{folder}/messages/delta",
            get(graph_delta),
        )
        .route(
            "/v1.0/me/mailFolders/{folder}/messages/{id}",
            get(graph_get_in_folder),
        )
        .layer(middleware::from_fn(crate::apis::graph_headers));
    Router::new()
        .merge(graph)
        .route("/gmail/v1/users/{user_id}/messages", get(gmail_list))
        .route("/gmail/v1/users/{user_id}/messages/{id}", get(gmail_get))
        .route(
            "/gmail/v1/users/{user_id}/messages/{id}/attachments/{aid}",
            get(gmail_attachment_get),
        )
        .route("/gmail/v1/users/{user_id}/history", get(gmail_history))
        .route("/batch/gmail/v1", post(gmail_batch))
        .route("/batch/calendar/v3", post(calendar_batch))
}

/// Graph scopes that allow reading mail.
pub const MAIL_READ: &[&str] = &[
    "Mail.Read",
    "Mail.ReadWrite",
    "Mail.Read.Shared",
    "Mail.ReadWrite.Shared",
];

fn mail_needs() -> Needs<'static> {
    Needs::Graph {
        any_of: MAIL_READ,
        code: "ErrorAccessDenied",
        message: "Access is denied. Check credentials and try again.",
    }
}

/// Runs `f` on the caller's mailbox, creating an empty one on first use.
fn with_mailbox<R>(app: &App, p: &Principal, f: impl FnOnce(&mut Mailbox) -> R) -> R {
    app.mail(|m| {
        let mb = m
            .by_owner
            .entry(p.user.email.clone())
            .or_insert_with(|| Mailbox::new(&p.user.email, &p.user.id, p.user.history_id));
        f(mb)
    })
}

fn looks_like_our_id(id: &str) -> bool {
    id.starts_with("AAkALg") || id.starts_with("AAMkAG")
}

fn missing_message(app: &App, headers: &HeaderMap, id: &str) -> Response {
    if looks_like_our_id(id) {
        graph_not_found(app.now(), headers)
    } else {
        graph_bad_request(
            app.now(),
            headers,
            "ErrorInvalidIdMalformed",
            "Id is malformed.",
        )
    }
}

/// `$select` to canonical property names.
fn parse_select(s: Option<&str>) -> Result<Option<Vec<String>>, String> {
    let Some(s) = s else { return Ok(None) };
    let mut out = Vec::new();
    for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match GRAPH_PROPERTIES.iter().find(|p| p.eq_ignore_ascii_case(f)) {
            Some(p) => out.push((*p).to_string()),
            None => {
                return Err(format!(
                    "Could not find a property named '{f}' on type 'microsoft.graph.message'."
                ));
            }
        }
    }
    Ok(Some(out))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DateProp {
    Received,
    Sent,
}

#[derive(Debug, Clone, Copy)]
struct Cond {
    prop: DateProp,
    op: &'static str,
    ms: i64,
}

impl Cond {
    fn holds(&self, v: i64) -> bool {
        match self.op {
            "ge" => v >= self.ms,
            "gt" => v > self.ms,
            "le" => v <= self.ms,
            "lt" => v < self.ms,
            "eq" => v / 1000 == self.ms / 1000,
            _ => v / 1000 != self.ms / 1000,
        }
    }
}

fn date_prop(s: &str) -> Option<DateProp> {
    if s.eq_ignore_ascii_case("receivedDateTime") || s.eq_ignore_ascii_case("createdDateTime") {
        Some(DateProp::Received)
    } else if s.eq_ignore_ascii_case("sentDateTime") {
        Some(DateProp::Sent)
    } else {
        None
    }
}

/// `$filter`: comparisons on receivedDateTime / sentDateTime joined by `and`.
fn parse_filter(s: &str) -> Result<Vec<Cond>, String> {
    let mut out = Vec::new();
    let lower = s.replace(" AND ", " and ");
    for clause in lower.split(" and ") {
        let words: Vec<&str> = clause.split_whitespace().collect();
        let [prop, op, value] = words[..] else {
            return Err(format!("Invalid filter clause: {clause}"));
        };
        let prop = date_prop(prop).ok_or_else(|| {
            format!("The sandbox filters messages on receivedDateTime and sentDateTime only, not '{prop}'.")
        })?;
        let op = match op.to_ascii_lowercase().as_str() {
            "ge" => "ge",
            "gt" => "gt",
            "le" => "le",
            "lt" => "lt",
            "eq" => "eq",
            "ne" => "ne",
            other => return Err(format!("Invalid filter operator '{other}'.")),
        };
        let ms = parse_ts_ms(value)
            .ok_or_else(|| format!("The DateTimeOffset text '{value}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within valid range."))?;
        out.push(Cond { prop, op, ms });
    }
    Ok(out)
}

/// Takes an `internetMessageId eq '<id>'` clause (how clients find a message they sent, issue 8) out of a
/// `$filter`; returns the id (with angle brackets) and the remaining clauses.
fn split_message_id_filter(f: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(f) = f else { return (None, None) };
    let lower = f.replace(" AND ", " and ");
    let mut id = None;
    let mut rest = Vec::new();
    for clause in lower.split(" and ") {
        let c = clause.trim();
        let mut w = c.splitn(3, ' ');
        match (w.next(), w.next(), w.next()) {
            (Some(p), Some(op), Some(v))
                if p.eq_ignore_ascii_case("internetMessageId") && op.eq_ignore_ascii_case("eq") =>
            {
                let v = v.trim().trim_matches('\'').replace("''", "'");
                let bare = v.trim_start_matches('<').trim_end_matches('>');
                id = Some(format!("<{bare}>"));
            }
            _ => rest.push(c.to_string()),
        }
    }
    let rest = (!rest.is_empty()).then(|| rest.join(" and "));
    (id, rest)
}

fn parse_orderby(s: &str) -> Result<(DateProp, bool), String> {
    let mut w = s.split_whitespace();
    let prop = w.next().unwrap_or_default();
    let dir = w.next().unwrap_or("asc");
    let p = date_prop(prop).ok_or_else(|| {
        format!(
            "The sandbox orders messages by receivedDateTime or sentDateTime only, not '{prop}'."
        )
    })?;
    match dir.to_ascii_lowercase().as_str() {
        "asc" => Ok((p, false)),
        "desc" => Ok((p, true)),
        other => Err(format!("Invalid sort direction '{other}'.")),
    }
}

fn date_of(m: &crate::mailbox::Msg, p: DateProp) -> i64 {
    match p {
        DateProp::Received => m.received_ms,
        DateProp::Sent if m.meta.sent_ms > 0 => m.meta.sent_ms,
        DateProp::Sent => m.received_ms,
    }
}

/// The window `[skip, skip + top)` of `hits` in sorted order (descending with `desc`), without sorting the
/// rest: two linear selections and a sort of the window, so paging through a large mailbox does not sort it
/// whole for every page. The keys are unique (they end with the sequence number), so the window is exactly the
/// one a full sort would give.
fn page_window<T: Ord>(hits: &mut [T], skip: usize, top: usize, desc: bool) -> &[T] {
    let cmp = |a: &T, b: &T| if desc { b.cmp(a) } else { a.cmp(b) };
    if skip >= hits.len() {
        return &[];
    }
    let (lo, hi) = (skip, skip + top.min(hits.len() - skip));
    if lo > 0 {
        hits.select_nth_unstable_by(lo, cmp);
    }
    let tail = &mut hits[lo..];
    if hi - lo < tail.len() {
        tail.select_nth_unstable_by(hi - lo, cmp);
    }
    let window = &mut hits[lo..hi];
    window.sort_unstable_by(cmp);
    window
}

fn context(base: &str, user_id: &str, folder: Option<&str>, tail: &str) -> String {
    match folder {
        Some(f) => {
            format!("{base}/v1.0/$metadata#users('{user_id}')/mailFolders('{f}')/messages{tail}")
        }
        None => format!("{base}/v1.0/$metadata#users('{user_id}')/messages{tail}"),
    }
}

async fn graph_list_all(
    State(app): State<App>,
    uri: Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    graph_list(app, uri, q, headers, None).await
}

async fn graph_list_folder(
    State(app): State<App>,
    Path(folder): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    graph_list(app, uri, q, headers, Some(folder)).await
}

async fn graph_list(
    app: App,
    uri: Uri,
    q: Option<String>,
    headers: HeaderMap,
    folder: Option<String>,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let base = link_base(&headers);
    let pref = GraphPrefer::only(&headers, PreferScope::Mail);
    let h2 = headers.clone();
    call(&app, "graph.messages.list", &headers, mail_needs(), |p| {
        let select = match parse_select(params.get("$select")) {
            Ok(s) => s,
            Err(e) => return graph_bad_request(app.now(), &h2, "RequestBroker--ParseUri", &e),
        };
        let (msgid, rest) = split_message_id_filter(params.get("$filter"));
        if msgid.is_some() && app.mail(|m| m.outgoing.take_lookup_refusal(&p.user.email)) {
            return crate::send_api::graph_lookup_refused(app.now(), &h2);
        }
        let filter = match rest.as_deref().map(parse_filter).transpose() {
            Ok(f) => f.unwrap_or_default(),
            Err(e) => return graph_bad_request(app.now(), &h2, "BadRequest", &e),
        };
        let order = match params.get("$orderby").map(parse_orderby).transpose() {
            Ok(o) => o,
            Err(e) => return graph_bad_request(app.now(), &h2, "BadRequest", &e),
        };
        if let (Some((op, _)), Some(first)) = (order, filter.first())
            && op != first.prop
        {
            return graph_bad_request(
                app.now(),
                &h2,
                "InefficientFilter",
                "The restriction or sort order is too complex for this operation.",
            );
        }
        let top = match params.get("$top").map(str::parse::<usize>) {
            None => pref.max_page.unwrap_or(10).clamp(1, 1000),
            Some(Ok(n)) if (1..=1000).contains(&n) => n,
            Some(_) => {
                return graph_bad_request(
                    app.now(),
                    &h2,
                    "ErrorInvalidUrlQuery",
                    "The value of $top must be between 1 and 1000.",
                );
            }
        };
        let skip: usize = match params.get("$skip").map(str::parse) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                return graph_bad_request(app.now(), &h2, "BadRequest", "Invalid $skip value.");
            }
        };
        let (order_prop, desc) = order.unwrap_or((DateProp::Received, true));
        let found = with_mailbox(&app, p, |mb| {
            let fidx = match &folder {
                Some(f) => Some(mb.folder_index(f)?),
                None => None,
            };
            let mut hits: Vec<(i64, u32)> = mb
                .live()
                .filter(|m| fidx.is_none_or(|f| m.place.folder == f))
                .filter(|m| filter.iter().all(|c| c.holds(date_of(m, c.prop))))
                .filter(|m| msgid.as_ref().is_none_or(|id| m.meta.message_id == *id))
                .map(|m| (date_of(m, order_prop), m.seq))
                .collect();
            let total = hits.len();
            let views: Vec<MsgView> = page_window(&mut hits, skip, top, desc)
                .iter()
                .map(|(_, s)| mb.view(*s))
                .collect();
            Some((total, views))
        });
        let Some((total, views)) = found else {
            return graph_not_found(app.now(), &h2);
        };
        let opts = GraphOpts {
            immutable: pref.immutable,
            text_body: pref.text_body,
            select: select.clone(),
            odata_type: false,
        };
        let value: Vec<Value> = views.iter().map(|v| graph_message(v, &opts)).collect();
        let tail = match &select {
            Some(s) => format!("({})", s.join(",")),
            None => String::new(),
        };
        let mut body =
            json!({"@odata.context": context(&base, &p.user.id, folder.as_deref(), &tail)});
        if params
            .get("$count")
            .is_some_and(|c| c.eq_ignore_ascii_case("true"))
        {
            body["@odata.count"] = json!(total);
        }
        body["value"] = json!(value);
        if skip + top < total {
            let mut next = Params(
                params
                    .0
                    .iter()
                    .filter(|(k, _)| k != "$skip")
                    .cloned()
                    .collect(),
            );
            next.push("$skip", &(skip + top).to_string());
            body["@odata.nextLink"] = json!(format!("{base}{}?{}", uri.path(), next.encode()));
        }
        graph_applied(json_response(StatusCode::OK, body), &pref)
    })
    .await
}

async fn graph_get(
    State(app): State<App>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    graph_get_impl(app, None, id, q, headers).await
}

async fn graph_get_in_folder(
    State(app): State<App>,
    Path((folder, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    graph_get_impl(app, Some(folder), id, q, headers).await
}

async fn graph_get_impl(
    app: App,
    folder: Option<String>,
    id: String,
    q: Option<String>,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let base = link_base(&headers);
    let pref = GraphPrefer::only(&headers, PreferScope::Mail);
    let h2 = headers.clone();
    call(&app, "graph.messages.get", &headers, mail_needs(), |p| {
        let select = match parse_select(params.get("$select")) {
            Ok(s) => s,
            Err(e) => return graph_bad_request(app.now(), &h2, "RequestBroker--ParseUri", &e),
        };
        let view = with_mailbox(&app, p, |mb| {
            let seq = mb.find(&id)?;
            if let Some(f) = &folder
                && mb.folder_index(f) != Some(mb.msgs[seq as usize].place.folder)
            {
                return None;
            }
            Some(mb.view(seq))
        });
        let Some(v) = view else {
            return missing_message(&app, &h2, &id);
        };
        let opts = GraphOpts {
            immutable: pref.immutable,
            text_body: pref.text_body,
            select,
            odata_type: false,
        };
        let mut body = graph_message(&v, &opts);
        if let Some(m) = body.as_object_mut() {
            let mut out = serde_json::Map::new();
            out.insert(
                "@odata.context".into(),
                json!(context(&base, &p.user.id, None, "/$entity")),
            );
            out.extend(std::mem::take(m));
            *m = out;
        }
        graph_applied(json_response(StatusCode::OK, body), &pref)
    })
    .await
}

async fn graph_attachment_list(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    graph_attachments_impl(app, id, None, headers).await
}

async fn graph_attachment_get(
    State(app): State<App>,
    Path((id, aid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    graph_attachments_impl(app, id, Some(aid), headers).await
}

async fn graph_attachments_impl(
    app: App,
    id: String,
    aid: Option<String>,
    headers: HeaderMap,
) -> Response {
    let base = link_base(&headers);
    let h2 = headers.clone();
    let endpoint = if aid.is_some() {
        "graph.attachments.get"
    } else {
        "graph.attachments.list"
    };
    call(&app, endpoint, &headers, mail_needs(), |p| {
        let Some(v) = with_mailbox(&app, p, |mb| mb.find(&id).map(|s| mb.view(s))) else {
            return missing_message(&app, &h2, &id);
        };
        let ctx = format!(
            "{base}/v1.0/$metadata#users('{}')/messages('{id}')/attachments",
            p.user.id
        );
        match (graph_attachments(&v, aid.as_deref()), &aid) {
            (Some(list), None) => json_response(
                StatusCode::OK,
                json!({"@odata.context": ctx, "value": list}),
            ),
            (Some(mut list), Some(_)) if !list.is_empty() => {
                let mut one = list.swap_remove(0);
                one["@odata.context"] = json!(format!("{ctx}/$entity"));
                json_response(StatusCode::OK, one)
            }
            _ => graph_not_found(app.now(), &h2),
        }
    })
    .await
}

fn delta_expired(app: &App, headers: &HeaderMap, restart: &str) -> Response {
    let (status, code) = app.read(|s| {
        (
            s.settings.graph_delta_expired_status,
            s.settings.graph_delta_expired_code.clone(),
        )
    });
    let st = StatusCode::from_u16(status).unwrap_or(StatusCode::GONE);
    let mut r = graph_error(
        st,
        &code,
        "The sync state generation is not found or has expired. Restart the sync from an empty token.",
        headers,
        app.now(),
    );
    if let Ok(v) = HeaderValue::from_str(restart) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Builds the items of a round from the change log (a `$deltatoken` call).
fn changes_round(mb: &Mailbox, t: &DeltaToken, immutable: bool) -> Round {
    let f = t.folder;
    let mut order: Vec<u32> = Vec::new();
    let mut last_id: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    for c in mb.changes.iter().filter(|c| c.hid > t.since) {
        let before = c.before.filter(|p| p.folder == f);
        let after = c.after.filter(|p| p.folder == f);
        if before.is_none() && after.is_none() {
            continue;
        }
        if let Some(p) = after.or(before) {
            last_id.insert(c.seq, mb.rest_id_at(c.seq, p));
        }
        order.retain(|s| *s != c.seq);
        order.push(c.seq);
    }
    let items = order
        .into_iter()
        .map(|seq| {
            let m = &mb.msgs[seq as usize];
            let passes = t.opts.filter.is_none_or(|(ms, strict)| {
                if strict {
                    m.received_ms > ms
                } else {
                    m.received_ms >= ms
                }
            });
            if !m.deleted && m.place.folder == f && passes {
                DeltaItem::Msg(seq)
            } else if immutable {
                DeltaItem::Removed(mb.immutable_id(seq))
            } else {
                DeltaItem::Removed(last_id.remove(&seq).unwrap_or_default())
            }
        })
        .collect();
    Round {
        folder: f,
        opts: t.opts.clone(),
        items,
        end: mb.history_id,
    }
}

async fn graph_delta(
    State(app): State<App>,
    Path(folder): Path<String>,
    uri: Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(q.as_deref().unwrap_or(""));
    let base = link_base(&headers);
    let pref = GraphPrefer::only(&headers, PreferScope::Mail);
    let h2 = headers.clone();
    let path = uri.path().to_string();
    call(&app, "graph.messages.delta", &headers, mail_needs(), |p| {
        let now = app.now();
        let (cap, lifetime) = app.read(|s| {
            (
                s.settings.graph_delta_filter_cap,
                s.settings.graph_delta_token_lifetime_secs,
            )
        });
        let restart = format!("{base}{path}");
        // Which round, and where in it.
        enum Start {
            Page(String, usize),
            Fresh(DeltaOpts),
            Token(String),
        }
        let start = if let Some(s) = params.get("$skiptoken") {
            let (r, off) = s.rsplit_once('.').unwrap_or((s, "0"));
            Start::Page(r.to_string(), off.parse().unwrap_or(0))
        } else if let Some(t) = params.get("$deltatoken") {
            Start::Token(t.to_string())
        } else {
            let select = match parse_select(params.get("$select")) {
                Ok(s) => s,
                Err(e) => return graph_bad_request(app.now(), &h2, "RequestBroker--ParseUri", &e),
            };
            let filter = match params.get("$filter") {
                None => None,
                Some(f) => match parse_filter(f) {
                    Ok(c) if c.len() == 1
                        && c[0].prop == DateProp::Received
                        && (c[0].op == "ge" || c[0].op == "gt") =>
                    {
                        Some((c[0].ms, c[0].op == "gt"))
                    }
                    Ok(_) => {
                        return graph_bad_request(app.now(), &h2,
                            "ErrorInvalidUrlQueryFilter",
                            "Delta queries support $filter only as 'receivedDateTime ge|gt {value}'.",
                        );
                    }
                    Err(e) => return graph_bad_request(app.now(), &h2, "BadRequest", &e),
                },
            };
            if let Some(o) = params.get("$orderby")
                && !matches!(parse_orderby(o), Ok((DateProp::Received, true)))
            {
                return graph_bad_request(app.now(), &h2,
                    "ErrorInvalidUrlQuery",
                    "Delta queries support $orderby only as 'receivedDateTime desc'.",
                );
            }
            if params.get("$search").is_some() {
                return graph_bad_request(app.now(), &h2, "ErrorInvalidUrlQuery", "$search is not supported with delta.");
            }
            let page = params
                .get("$top")
                .and_then(|t| t.parse().ok())
                .or(pref.max_page)
                .unwrap_or(10)
                .clamp(1, 1000);
            Start::Fresh(DeltaOpts {
                select,
                filter,
                page,
                filter_text: params.get("$filter").map(str::to_string),
            })
        };
        let out = with_mailbox(&app, p, |mb| {
            let fidx = mb.folder_index(&folder).ok_or(0u8)?;
            let (round_id, offset) = match start {
                Start::Page(r, off) => {
                    if mb.rounds.get(&r).is_none_or(|x| x.folder != fidx) {
                        return Err(1);
                    }
                    (r, off)
                }
                Start::Token(t) => {
                    let Some(tok) = mb.delta_tokens.get(&t).filter(|x| x.folder == fidx) else {
                        return Err(1);
                    };
                    if tok.expired || lifetime.is_some_and(|l| now - tok.created_at > l) {
                        return Err(1);
                    }
                    let round = changes_round(mb, tok, pref.immutable);
                    (mb.add_round(round), 0)
                }
                Start::Fresh(opts) => {
                    let mut hits: Vec<(i64, u32)> = mb
                        .live()
                        .filter(|m| m.place.folder == fidx)
                        .filter(|m| {
                            opts.filter.is_none_or(|(ms, strict)| {
                                if strict { m.received_ms > ms } else { m.received_ms >= ms }
                            })
                        })
                        .map(|m| (m.received_ms, m.seq))
                        .collect();
                    hits.sort_by(|a, b| b.cmp(a));
                    if opts.filter.is_some() {
                        hits.truncate(cap);
                    }
                    let round = Round {
                        folder: fidx,
                        opts,
                        items: hits.into_iter().map(|(_, s)| DeltaItem::Msg(s)).collect(),
                        end: mb.history_id,
                    };
                    (mb.add_round(round), 0)
                }
            };
            let (page, total, ropts, end) = {
                let round = mb.rounds.get(&round_id).ok_or(1u8)?;
                let page: Vec<Result<MsgView, String>> = round
                    .items
                    .iter()
                    .skip(offset)
                    .take(round.opts.page)
                    .map(|i| match i {
                        DeltaItem::Msg(s) => Ok(mb.view(*s)),
                        DeltaItem::Removed(id) => Err(id.clone()),
                    })
                    .collect();
                (page, round.items.len(), round.opts.clone(), round.end)
            };
            let next = offset + ropts.page;
            let link = if next < total {
                (false, format!("{round_id}.{next}"))
            } else {
                let tok = random_token(24);
                mb.delta_tokens.insert(
                    tok.clone(),
                    DeltaToken {
                        folder: fidx,
                        opts: ropts.clone(),
                        since: end,
                        created_at: now,
                        expired: false,
                    },
                );
                (true, tok)
            };
            Ok((page, link, ropts))
        });
        let (page, (done, token), opts) = match out {
            Ok(x) => x,
            Err(0) => return graph_not_found(app.now(), &h2),
            Err(_) => return delta_expired(&app, &h2, &restart),
        };
        let ropts = GraphOpts {
            immutable: pref.immutable,
            text_body: pref.text_body,
            select: opts.select.clone(),
            odata_type: true,
        };
        let value: Vec<Value> = page
            .iter()
            .map(|i| match i {
                Ok(v) => graph_message(v, &ropts),
                Err(id) => json!({"@odata.type": "#microsoft.graph.message", "id": id, "@removed": {"reason": "deleted"}}),
            })
            .collect();
        let mut body = json!({"@odata.context": format!("{base}/v1.0/$metadata#Collection(message)")});
        if done {
            body["@odata.deltaLink"] = json!(format!("{base}{path}?$deltatoken={token}"));
        } else {
            body["@odata.nextLink"] = json!(format!("{base}{path}?$skiptoken={token}"));
        }
        body["value"] = json!(value);
        graph_applied(json_response(StatusCode::OK, body), &pref)
    })
    .await
}

// ---------------------------------------------------------------------------------------------------------
// Gmail

const GMAIL_FULL_READ: &[&str] = &[
    "https://mail.google.com/",
    "https://www.googleapis.com/auth/gmail.modify",
    "https://www.googleapis.com/auth/gmail.readonly",
];

/// Only `gmail.metadata` among the read scopes: no `q`, no `full` / `raw` bodies.
fn metadata_only(p: &Principal) -> bool {
    !p.scopes
        .iter()
        .any(|s| GMAIL_FULL_READ.contains(&s.as_str()))
}

fn gmail_not_found() -> Response {
    google_api_error(
        StatusCode::NOT_FOUND,
        "notFound",
        "global",
        "Requested entity was not found.",
    )
}

fn gmail_bad(msg: &str) -> Response {
    google_api_error(StatusCode::BAD_REQUEST, "invalidArgument", "global", msg)
}

/// One `q` term.
enum Term {
    From(String),
    To(String),
    MsgId(String),
    After(i64),
    Before(i64),
    Label(&'static str),
    HasAttachment,
    Text(String),
}

fn gmail_date(v: &str) -> Option<i64> {
    if let Ok(secs) = v.parse::<i64>() {
        return Some(secs * 1000);
    }
    parse_ts_ms(&v.replace('/', "-"))
}

/// Gmail search: `from:`, `to:`, `rfc822msgid:`, `after:`, `before:` (`YYYY/MM/DD` in UTC, or epoch seconds),
/// `in:`/`label:`/`is:` for system labels, `has:attachment`, and bare words matched against the subject.
fn parse_q(q: &str) -> Result<Vec<Term>, String> {
    let mut out = Vec::new();
    for tok in q.split_whitespace() {
        let (k, v) = match tok.split_once(':') {
            Some((k, v)) if !v.is_empty() => (k.to_ascii_lowercase(), v.trim_matches('"')),
            _ => {
                out.push(Term::Text(tok.trim_matches('"').to_lowercase()));
                continue;
            }
        };
        let label = |l: &str| -> Option<&'static str> {
            Some(match l.to_ascii_lowercase().as_str() {
                "inbox" => "INBOX",
                "sent" => "SENT",
                "trash" => "TRASH",
                "spam" => "SPAM",
                "draft" | "drafts" => "DRAFT",
                "unread" => "UNREAD",
                _ => return None,
            })
        };
        out.push(match k.as_str() {
            "from" => Term::From(v.to_ascii_lowercase()),
            "to" => Term::To(v.to_ascii_lowercase()),
            "rfc822msgid" => Term::MsgId(v.trim_matches(['<', '>']).to_string()),
            "after" => Term::After(gmail_date(v).ok_or(format!("Invalid date: {v}"))?),
            "before" => Term::Before(gmail_date(v).ok_or(format!("Invalid date: {v}"))?),
            "in" | "label" | "is" => {
                Term::Label(label(v).ok_or(format!("Unsupported label: {v}"))?)
            }
            "has" if v.eq_ignore_ascii_case("attachment") => Term::HasAttachment,
            _ => Term::Text(tok.to_lowercase()),
        });
    }
    Ok(out)
}

fn term_holds(t: &Term, m: &crate::mailbox::Msg, labels: &[&str]) -> bool {
    match t {
        Term::From(x) => m.meta.from.contains(x.as_str()),
        Term::To(x) => m.meta.recipients.iter().any(|r| r.contains(x.as_str())),
        Term::MsgId(x) => m.meta.message_id.trim_matches(['<', '>']) == x,
        Term::After(ms) => m.received_ms >= *ms,
        Term::Before(ms) => m.received_ms < *ms,
        Term::Label(l) => labels.contains(l),
        Term::HasAttachment => m.meta.has_attachments,
        Term::Text(x) => m.meta.subject.to_lowercase().contains(x.as_str()),
    }
}

fn page_token(params: &Params) -> Result<usize, Response> {
    match params.get("pageToken") {
        None => Ok(0),
        Some(t) => t.parse().map_err(|_| gmail_bad("Invalid pageToken")),
    }
}

fn max_results(params: &Params) -> Result<usize, Response> {
    match params.get("maxResults") {
        None => Ok(100),
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.clamp(1, 500))
            .map_err(|_| gmail_bad(&format!("Invalid value '{v}' for maxResults"))),
    }
}

async fn gmail_list(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let params = Params::parse(q.as_deref().unwrap_or(""));
    call(&app, "gmail.users.messages.list", &headers, Needs::Google, |p| {
        if let Err(r) = gmail_user_ok(p, &user_id) {
            return r;
        }
        if params.get("q").is_some() && metadata_only(p) {
            return google_api_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "global",
                "Metadata scope does not support 'q' parameter",
            );
        }
        let terms = match parse_q(params.get("q").unwrap_or("")) {
            Ok(t) => t,
            Err(e) => return gmail_bad(&e),
        };
        if terms.iter().any(|t| matches!(t, Term::MsgId(_)))
            && app.mail(|m| m.outgoing.take_lookup_refusal(&p.user.email))
        {
            return crate::send_api::gmail_lookup_refused();
        }
        let (offset, max) = match (page_token(&params), max_results(&params)) {
            (Ok(o), Ok(m)) => (o, m),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let want_labels = params.all("labelIds");
        let spam_trash = params.get("includeSpamTrash") == Some("true");
        let (total, page) = with_mailbox(&app, p, |mb| {
            let mut hits: Vec<(i64, u32)> = mb
                .live()
                .filter(|m| {
                    let l = labels(m.place);
                    (spam_trash || !l.iter().any(|x| *x == "TRASH" || *x == "SPAM"))
                        && want_labels.iter().all(|w| l.contains(w))
                        && terms.iter().all(|t| term_holds(t, m, &l))
                })
                .map(|m| (m.received_ms, m.seq))
                .collect();
            let total = hits.len();
            let page: Vec<Value> = page_window(&mut hits, offset, max, true)
                .iter()
                .map(|(_, s)| json!({"id": mb.gmail_id(*s), "threadId": mb.gmail_id(mb.msgs[*s as usize].thread)}))
                .collect();
            (total, page)
        });
        let mut body = serde_json::Map::new();
        if !page.is_empty() {
            body.insert("messages".into(), json!(page));
        }
        if offset + max < total {
            body.insert("nextPageToken".into(), json!((offset + max).to_string()));
        }
        body.insert("resultSizeEstimate".into(), json!(total));
        json_response(StatusCode::OK, Value::Object(body))
    })
    .await
}

fn gmail_find(app: &App, p: &Principal, id: &str) -> Result<MsgView, Response> {
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(gmail_bad("Invalid id value"));
    }
    with_mailbox(app, p, |mb| mb.find(id).map(|s| mb.view(s))).ok_or_else(gmail_not_found)
}

async fn gmail_get(
    State(app): State<App>,
    Path((user_id, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let params = Params::parse(q.as_deref().unwrap_or(""));
    call(
        &app,
        "gmail.users.messages.get",
        &headers,
        Needs::Google,
        |p| {
            if let Err(r) = gmail_user_ok(p, &user_id) {
                return r;
            }
            let Some(format) = GmailFormat::parse(params.get("format")) else {
                return gmail_bad(&format!(
                    "Invalid value at 'format' ({}), must be one of minimal, full, raw, metadata",
                    params.get("format").unwrap_or_default()
                ));
            };
            if metadata_only(p) && matches!(format, GmailFormat::Full | GmailFormat::Raw) {
                let f = if format == GmailFormat::Raw {
                    "RAW"
                } else {
                    "FULL"
                };
                return google_api_error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "global",
                    &format!("Metadata scope doesn't allow format {f}"),
                );
            }
            let v = match gmail_find(&app, p, &id) {
                Ok(v) => v,
                Err(r) => return r,
            };
            let headers: Vec<String> = params
                .all("metadataHeaders")
                .into_iter()
                .map(str::to_string)
                .collect();
            json_response(StatusCode::OK, gmail_message(&v, format, &headers))
        },
    )
    .await
}

async fn gmail_attachment_get(
    State(app): State<App>,
    Path((user_id, id, aid)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    call(
        &app,
        "gmail.users.messages.attachments.get",
        &headers,
        Needs::Google,
        |p| {
            if let Err(r) = gmail_user_ok(p, &user_id) {
                return r;
            }
            let v = match gmail_find(&app, p, &id) {
                Ok(v) => v,
                Err(r) => return r,
            };
            match gmail_attachment(&v, &aid) {
                Some(bytes) => json_response(
                    StatusCode::OK,
                    json!({"size": bytes.len(), "data": URL_SAFE.encode(&bytes)}),
                ),
                None => gmail_bad("Invalid attachment token"),
            }
        },
    )
    .await
}

async fn gmail_history(
    State(app): State<App>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = check_alt(&q) {
        return r;
    }
    let params = Params::parse(q.as_deref().unwrap_or(""));
    call(
        &app,
        "gmail.users.history.list",
        &headers,
        Needs::Google,
        |p| {
            if let Err(r) = gmail_user_ok(p, &user_id) {
                return r;
            }
            let Some(start) = params.get("startHistoryId") else {
                return gmail_bad("Required parameter: startHistoryId");
            };
            let Ok(start) = start.parse::<u64>() else {
                return gmail_bad(&format!("Invalid value '{start}' for startHistoryId"));
            };
            let (offset, max) = match (page_token(&params), max_results(&params)) {
                (Ok(o), Ok(m)) => (o, m),
                (Err(r), _) | (_, Err(r)) => return r,
            };
            let types = params.all("historyTypes");
            let label = params.get("labelId").map(str::to_string);
            let out = with_mailbox(&app, p, |mb| {
                if start < mb.history_floor {
                    return None;
                }
                let mut recs = Vec::new();
                for c in mb.changes.iter().filter(|c| c.hid > start) {
                    let before = c.before.map(labels).unwrap_or_default();
                    let after = c.after.map(labels).unwrap_or_default();
                    if let Some(l) = &label
                        && !before.contains(&l.as_str())
                        && !after.contains(&l.as_str())
                    {
                        continue;
                    }
                    let id = mb.gmail_id(c.seq);
                    let thread = mb.gmail_id(mb.msgs[c.seq as usize].thread);
                    let short = json!({"id": id, "threadId": thread});
                    let mut rec = serde_json::Map::new();
                    rec.insert("id".into(), json!(c.hid.to_string()));
                    rec.insert("messages".into(), json!([short.clone()]));
                    let mut add = |kind: &str, v: Value| {
                        // `historyTypes` names the kinds in the singular.
                        let ty = match kind {
                            "messagesAdded" => "messageAdded",
                            "messagesDeleted" => "messageDeleted",
                            "labelsAdded" => "labelAdded",
                            _ => "labelRemoved",
                        };
                        if types.is_empty() || types.contains(&ty) {
                            rec.insert(kind.to_string(), json!([v]));
                        }
                    };
                    match (c.before, c.after) {
                        (None, Some(_)) => add(
                            "messagesAdded",
                            json!({"message": {"id": id, "threadId": thread, "labelIds": after}}),
                        ),
                        (Some(_), None) => add("messagesDeleted", json!({"message": short})),
                        _ => {
                            let added: Vec<&str> = after
                                .iter()
                                .filter(|l| !before.contains(l))
                                .copied()
                                .collect();
                            let removed: Vec<&str> = before
                                .iter()
                                .filter(|l| !after.contains(l))
                                .copied()
                                .collect();
                            let msg = json!({"id": id, "threadId": thread, "labelIds": after});
                            if !added.is_empty() {
                                add("labelsAdded", json!({"message": msg, "labelIds": added}));
                            }
                            if !removed.is_empty() {
                                add(
                                    "labelsRemoved",
                                    json!({"message": msg, "labelIds": removed}),
                                );
                            }
                        }
                    }
                    if rec.len() > 2 {
                        recs.push(Value::Object(rec));
                    }
                }
                Some((recs, mb.history_id))
            });
            let Some((recs, current)) = out else {
                return gmail_not_found();
            };
            let total = recs.len();
            let page: Vec<Value> = recs.into_iter().skip(offset).take(max).collect();
            let mut body = serde_json::Map::new();
            if !page.is_empty() {
                body.insert("history".into(), json!(page));
            }
            if offset + max < total {
                body.insert("nextPageToken".into(), json!((offset + max).to_string()));
            }
            body.insert("historyId".into(), json!(current.to_string()));
            json_response(StatusCode::OK, Value::Object(body))
        },
    )
    .await
}

/// Splits a multipart body on its boundary (CRLF or bare LF line ends); the parts without delimiters.
fn multipart_parts(body: &[u8], boundary: &str) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.split('\n') {
        let l = line.trim_end();
        if l == delim || l == format!("{delim}--") {
            if let Some(c) = current.take() {
                parts.push(c.join("\n").into_bytes());
            }
            if l.ends_with("--") && l.len() == delim.len() + 2 {
                break;
            }
            current = Some(Vec::new());
        } else if let Some(c) = current.as_mut() {
            c.push(line);
        }
    }
    parts
}

fn split_head(s: &str) -> (&str, &str) {
    s.split_once("\n\n").unwrap_or((s, ""))
}

fn reason(s: StatusCode) -> &'static str {
    s.canonical_reason().unwrap_or("Unknown")
}

/// `POST /batch/gmail/v1`: each `application/http` part runs as its own request through the normal routes
/// (so scopes, faults, quota and counters apply per part); answers in request order.
async fn gmail_batch(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    batch(app, headers, body, "/gmail/v1/", 100).await
}

/// `POST /batch/calendar/v3`: as the Gmail batch, for Calendar paths (PROVIDERS.md §13). The Calendar cap is not
/// confirmed (§7.4); the sandbox takes Google's generic 1000.
async fn calendar_batch(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    batch(app, headers, body, "/calendar/v3/", 1000).await
}

/// Runs a Google multipart batch whose parts must address paths under `prefix`, at most `cap` parts.
async fn batch(app: App, headers: HeaderMap, body: Bytes, prefix: &str, cap: usize) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let boundary = ct
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string());
    let (true, Some(boundary)) = (ct.to_ascii_lowercase().starts_with("multipart/"), boundary)
    else {
        return gmail_bad("Batch requests must be multipart/mixed with a boundary.");
    };
    let parts = multipart_parts(&body, &boundary);
    if parts.is_empty() {
        return gmail_bad("The batch request has no parts.");
    }
    if parts.len() > cap {
        return gmail_bad(&format!("A batch request may contain at most {cap} calls."));
    }
    let out_boundary = format!("batch_{}", random_token(12).replace(['-', '_'], "x"));
    // One router for every part (building it is far dearer than a part).
    let svc = crate::router(app.clone());
    let mut out = String::new();
    for part in parts {
        let part = String::from_utf8_lossy(&part).to_string();
        let (mime_head, http) = split_head(part.trim_start_matches('\n'));
        let content_id = mime_head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-id")
                .then(|| v.trim().to_string())
        });
        let (req_head, req_body) = split_head(http.trim_start_matches('\n'));
        let mut lines = req_head.lines();
        let request_line = lines.next().unwrap_or_default();
        let mut words = request_line.split_whitespace();
        let method = words.next().unwrap_or("GET");
        let target = words.next().unwrap_or("/");
        let (status, ctype, rbody) = if !target.starts_with(prefix) {
            (
                StatusCode::NOT_FOUND,
                "application/json; charset=UTF-8".to_string(),
                json!({"error": {"code": 404, "message": "Not Found", "errors": [{"message": "Not Found", "domain": "global", "reason": "notFound"}], "status": "NOT_FOUND"}}).to_string().into_bytes(),
            )
        } else {
            let mut rb = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET))
                .uri(target);
            let mut has_auth = false;
            for l in lines {
                if let Some((k, v)) = l.split_once(':') {
                    has_auth |= k.trim().eq_ignore_ascii_case("authorization");
                    rb = rb.header(k.trim(), v.trim());
                }
            }
            if !has_auth && let Some(a) = headers.get(header::AUTHORIZATION) {
                rb = rb.header(header::AUTHORIZATION, a);
            }
            if let Some(h) = headers.get(header::HOST) {
                rb = rb.header(header::HOST, h);
            }
            match rb.body(Body::from(req_body.trim_end_matches('\n').to_string())) {
                Ok(req) => {
                    let resp = svc
                        .clone()
                        .oneshot(req)
                        .await
                        .unwrap_or_else(|e| match e {});
                    let st = resp.status();
                    let ctype = resp
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("application/json; charset=UTF-8")
                        .to_string();
                    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
                        .await
                        .unwrap_or_default();
                    (st, ctype, bytes.to_vec())
                }
                Err(_) => (
                    StatusCode::BAD_REQUEST,
                    "application/json; charset=UTF-8".to_string(),
                    b"{}".to_vec(),
                ),
            }
        };
        out.push_str(&format!(
            "--{out_boundary}\r\nContent-Type: application/http\r\n"
        ));
        if let Some(id) = content_id {
            let echoed = match id.strip_prefix('<').and_then(|x| x.strip_suffix('>')) {
                Some(inner) => format!("<response-{inner}>"),
                None => format!("response-{id}"),
            };
            out.push_str(&format!("Content-ID: {echoed}\r\n"));
        }
        out.push_str(&format!(
            "\r\nHTTP/1.1 {} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            status.as_u16(),
            reason(status),
            rbody.len()
        ));
        out.push_str(&String::from_utf8_lossy(&rbody));
        out.push_str("\r\n");
    }
    out.push_str(&format!("--{out_boundary}--\r\n"));
    let mut r = (StatusCode::OK, out).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("multipart/mixed; boundary={out_boundary}")) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// The Graph id a client would use for a message (for the control API).
pub fn ids_of(mb: &Mailbox, seq: u32) -> Value {
    let v = mb.view(seq);
    json!({
        "id": v.gmail_id,
        "thread_id": v.thread_id,
        "graph_id": graph_id(&v, false),
        "immutable_id": graph_id(&v, true),
        "internet_message_id": v.meta.message_id,
        "folder": crate::mailbox::FOLDERS[v.place.folder as usize].0,
        "is_read": v.place.is_read,
        "received": crate::mailview::graph_ts(v.received_ms / 1000),
        "subject": v.meta.subject,
        "from": v.meta.from,
        "history_id": v.history_id.to_string(),
    })
}

#[cfg(test)]
mod page_tests {
    use super::page_window;

    #[test]
    fn a_page_window_is_the_slice_a_full_sort_would_give() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % 1000
        };
        let all: Vec<(u64, u32)> = (0..500u32).map(|i| (next(), i)).collect();
        for desc in [true, false] {
            let mut sorted = all.clone();
            sorted.sort_by(|a, b| if desc { b.cmp(a) } else { a.cmp(b) });
            for (skip, top) in [
                (0, 10),
                (0, 500),
                (3, 7),
                (490, 20),
                (499, 1),
                (500, 5),
                (600, 5),
                (100, 0),
            ] {
                let mut hits = all.clone();
                let want: Vec<_> = sorted.iter().skip(skip).take(top).copied().collect();
                assert_eq!(
                    page_window(&mut hits, skip, top, desc),
                    &want[..],
                    "skip {skip} top {top} desc {desc}"
                );
            }
        }
    }
}
