//! The pacer on the real request paths (`MailReader::with_pacer`), against a small local server that records
//! when (on the pacer's manual clock) each request of each mailbox arrived and how many were in flight.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use common::no_retry_http;
use hirewire_providers::pacing::{BackoffConfig, ManualClock, PaceClock, RateLimit, ServicePacing};
use hirewire_providers::{
    Endpoints, GmailMethod, MailReader, PaceKey, Pacer, PacingConfig, Provider, ProviderError,
    Secret, Service,
};

/// What the server answers to the `n`-th (0-based) request of mailbox `token`: status, Retry-After, body.
type Script = Arc<dyn Fn(&str, usize) -> (u16, Option<u64>, String) + Send + Sync>;

#[derive(Default)]
struct Log {
    /// Per mailbox (bearer token): the clock reading at each request.
    arrivals: HashMap<String, Vec<Instant>>,
    in_flight: HashMap<String, usize>,
    max_in_flight: HashMap<String, usize>,
}

struct Server {
    base: String,
    log: Arc<Mutex<Log>>,
}

impl Server {
    fn arrivals(&self, token: &str) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap()
            .arrivals
            .get(token)
            .cloned()
            .unwrap_or_default()
    }

    fn max_in_flight(&self, token: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .max_in_flight
            .get(token)
            .copied()
            .unwrap_or(0)
    }
}

/// A server whose every answer is held for `hold` (real time) so requests overlap.
async fn serve(clock: ManualClock, hold: Duration, script: Script) -> Server {
    let log = Arc::new(Mutex::new(Log::default()));
    let state = (log.clone(), clock, script);
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let (log, clock, script) = state.clone();
        async move {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim_start_matches("Bearer ")
                .to_owned();
            let n = {
                let mut l = log.lock().unwrap();
                let arrivals = l.arrivals.entry(token.clone()).or_default();
                arrivals.push(clock.now());
                let n = arrivals.len() - 1;
                let f = l.in_flight.entry(token.clone()).or_default();
                *f += 1;
                let f = *f;
                let m = l.max_in_flight.entry(token.clone()).or_default();
                *m = (*m).max(f);
                n
            };
            tokio::time::sleep(hold).await;
            *log.lock().unwrap().in_flight.get_mut(&token).unwrap() -= 1;
            let (status, retry_after, body) = script(&token, n);
            let mut resp: Response = (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response();
            if let Some(ra) = retry_after {
                resp.headers_mut()
                    .insert("retry-after", ra.to_string().parse().unwrap());
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base, log }
}

fn reader(provider: Provider, server: &Server, pacer: &Pacer, mailbox: &str) -> MailReader {
    MailReader::new(provider, Endpoints::all_at(&server.base), no_retry_http())
        .with_pacer(pacer.clone(), PaceKey::new("app", mailbox))
}

fn since() -> jiff::Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

const EMPTY_GRAPH_PAGE: &str = r#"{"value":[]}"#;

fn ok_graph() -> Script {
    Arc::new(|_, _| (200, None, EMPTY_GRAPH_PAGE.into()))
}

fn gmail_raw(id: &str) -> String {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "Message-ID: <{id}@x>\r\nSubject: hi\r\n\r\nbody\r\n"
    ));
    format!(r#"{{"id":"{id}","threadId":"t","internalDate":"1740823092000","raw":"{raw}"}}"#)
}

#[tokio::test]
async fn graph_never_has_more_than_four_requests_in_flight_per_mailbox() {
    let clock = ManualClock::auto_advance();
    let server = serve(clock.clone(), Duration::from_millis(15), ok_graph()).await;
    let pacer = Pacer::with_parts(
        PacingConfig::documented(hirewire_providers::GmailCostModel::Legacy),
        Arc::new(clock),
        Arc::new(|| 0.5),
    )
    .unwrap();
    let mut tasks = Vec::new();
    for mailbox in ["a", "b"] {
        for _ in 0..12 {
            let r = reader(Provider::Microsoft, &server, &pacer, mailbox);
            tasks.push(tokio::spawn(async move {
                r.list_page(&Secret::new(mailbox), None, since(), 10).await
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().expect("every request succeeds");
    }
    for mailbox in ["a", "b"] {
        assert_eq!(server.arrivals(mailbox).len(), 12);
        let max = server.max_in_flight(mailbox);
        assert!((1..=4).contains(&max), "{mailbox}: {max} in flight");
    }
    assert_eq!(pacer.stats(Service::Graph).requests, 24);
    assert_eq!(pacer.stats(Service::Graph).waiting, 0);
}

#[tokio::test]
async fn retry_after_pauses_only_the_throttled_mailbox_until_the_time_given() {
    let clock = ManualClock::new();
    let script: Script = Arc::new(|token, n| {
        if token == "a" && n == 0 {
            (
                429,
                Some(5),
                r#"{"error":{"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}}"#.into(),
            )
        } else {
            (200, None, EMPTY_GRAPH_PAGE.into())
        }
    });
    let server = serve(clock.clone(), Duration::ZERO, script).await;
    let pacer = Pacer::with_parts(
        PacingConfig::default(),
        Arc::new(clock.clone()),
        Arc::new(|| 0.5),
    )
    .unwrap();
    let t0 = clock.now();
    let a = reader(Provider::Microsoft, &server, &pacer, "a");
    let a_call =
        tokio::spawn(async move { a.list_page(&Secret::new("a"), None, since(), 10).await });
    let key_a = PaceKey::new("app", "a");
    while pacer.mailbox(&key_a, Service::Graph).current_wait.is_zero() {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        pacer.mailbox(&key_a, Service::Graph).current_wait,
        Duration::from_secs(5)
    );

    // Mailbox b is not paused: its request goes out and returns while the clock stands still.
    let b = reader(Provider::Microsoft, &server, &pacer, "b");
    b.list_page(&Secret::new("b"), None, since(), 10)
        .await
        .unwrap();
    assert_eq!(server.arrivals("b"), [t0]);
    assert_eq!(server.arrivals("a").len(), 1, "a waits for its Retry-After");

    clock.advance(Duration::from_secs(4));
    tokio::task::yield_now().await;
    assert_eq!(server.arrivals("a").len(), 1, "not a second early");
    clock.advance(Duration::from_secs(1));
    a_call.await.unwrap().expect("a succeeds after the pause");
    let a_times = server.arrivals("a");
    assert_eq!(a_times.len(), 2);
    assert!(a_times[1] >= t0 + Duration::from_secs(5));
    let stats = pacer.stats(Service::Graph);
    assert_eq!((stats.throttled, stats.retries, stats.requests), (1, 1, 3));
    assert_eq!(pacer.mailbox(&key_a, Service::Graph).throttled, 1);
}

#[tokio::test]
async fn a_pause_longer_than_the_longest_wait_fails_fast_as_throttled_and_holds_back_the_mailbox() {
    let clock = ManualClock::new();
    let script: Script = Arc::new(|_, _| (429, Some(3600), "{}".into()));
    let server = serve(clock.clone(), Duration::ZERO, script).await;
    let pacer = Pacer::with_parts(
        PacingConfig::default(),
        Arc::new(clock.clone()),
        Arc::new(|| 0.5),
    )
    .unwrap();
    let r = reader(Provider::Microsoft, &server, &pacer, "a");
    let err = r
        .list_page(&Secret::new("a"), None, since(), 10)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(3600)),
        "{err:?}"
    );
    // The next call of that mailbox is not sent at all.
    let err = r
        .list_page(&Secret::new("a"), None, since(), 10)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Throttled { .. }), "{err:?}");
    assert_eq!(server.arrivals("a").len(), 1);
}

#[tokio::test]
async fn gmail_requests_wait_for_their_quota_units_and_never_exceed_the_bucket() {
    let clock = ManualClock::auto_advance();
    let script: Script = Arc::new(|_, n| (200, None, gmail_raw(&format!("m{n}"))));
    let server = serve(clock.clone(), Duration::ZERO, script).await;
    let mut config = PacingConfig::unlimited();
    // Test scale: 20 units per second, a burst of 10, messages.get = 5 units.
    let limit = RateLimit {
        units: 20,
        per: Duration::from_secs(1),
        burst: 10,
    };
    config.gmail = ServicePacing {
        max_concurrent_per_mailbox: None,
        per_mailbox: Some(limit),
        per_app: None,
    };
    let pacer = Pacer::with_parts(config, Arc::new(clock.clone()), Arc::new(|| 0.5)).unwrap();
    let t0 = clock.now();
    // One after another, so that each arrival is stamped at the moment the pacer let it go (concurrent waiters are
    // covered by the unit tests on the manual clock).
    let r = reader(Provider::Google, &server, &pacer, "g");
    for i in 0..12 {
        r.fetch_raw(&Secret::new("g"), &format!("m{i}"))
            .await
            .expect("fetched");
    }
    let times = server.arrivals("g");
    assert_eq!(times.len(), 12);
    let rate = limit.refill_per_second();
    for (i, start) in times.iter().enumerate() {
        for (j, end) in times.iter().enumerate().skip(i) {
            let units = 5.0 * (j - i + 1) as f64;
            let window = end.duration_since(*start).as_secs_f64();
            assert!(
                units <= 10.0 + rate * window + 1e-6,
                "{units} units in {window}s"
            );
        }
    }
    // 60 units at 10 per second after a burst of 10: the last request is due at 5 s.
    assert!(*times.iter().max().unwrap() >= t0 + Duration::from_millis(4999));
    let stats = pacer.stats(Service::Gmail);
    assert_eq!((stats.requests, stats.units), (12, 60));
    assert_eq!(
        pacer
            .mailbox(&PaceKey::new("app", "g"), Service::Gmail)
            .units,
        60
    );
}

#[tokio::test]
async fn retries_are_bounded_and_spaced_by_full_jitter_backoff() {
    let clock = ManualClock::auto_advance();
    let script: Script = Arc::new(|_, _| (503, None, "{}".into()));
    let server = serve(clock.clone(), Duration::ZERO, script).await;
    let mut config = PacingConfig::unlimited();
    config.backoff = BackoffConfig {
        max_attempts: 4,
        base: Duration::from_secs(1),
        max: Duration::from_secs(3),
        min: Duration::from_millis(100),
    };
    let draws = Arc::new(Mutex::new(vec![1.0, 0.0, 0.5].into_iter()));
    let jitter = move || draws.lock().unwrap().next().unwrap_or(0.0);
    let pacer = Pacer::with_parts(config, Arc::new(clock.clone()), Arc::new(jitter)).unwrap();
    let r = reader(Provider::Google, &server, &pacer, "g");
    let err = r.fetch_raw(&Secret::new("g"), "m").await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    let times = server.arrivals("g");
    assert_eq!(times.len(), 4, "max_attempts tries, then the error");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Ceilings 1 s, 2 s, 3 s (capped); draws 1.0, 0.0, 0.5 over [100 ms, ceiling].
    assert_eq!(
        gaps,
        [
            Duration::from_secs(1),
            Duration::from_millis(100),
            Duration::from_millis(1550)
        ]
    );
    assert_eq!(pacer.stats(Service::Gmail).retries, 3);
}

#[tokio::test]
async fn a_gmail_user_rate_limit_403_pauses_the_user_then_the_call_succeeds() {
    let clock = ManualClock::auto_advance();
    let script: Script = Arc::new(|_, n| {
        if n == 0 {
            (
                403,
                None,
                r#"{"error":{"code":403,"message":"User Rate Limit Exceeded","errors":[{"message":"User Rate Limit Exceeded","domain":"usageLimits","reason":"userRateLimitExceeded"}]}}"#.into(),
            )
        } else {
            (200, None, gmail_raw("m"))
        }
    });
    let server = serve(clock.clone(), Duration::ZERO, script).await;
    let pacer = Pacer::with_parts(
        PacingConfig::default(),
        Arc::new(clock.clone()),
        Arc::new(|| 1.0),
    )
    .unwrap();
    let r = reader(Provider::Google, &server, &pacer, "g");
    let m = r.fetch_raw(&Secret::new("g"), "m").await.unwrap();
    assert_eq!(m.id, "m");
    let times = server.arrivals("g");
    // No Retry-After from Google: the pause is the first backoff ceiling (jitter 1.0).
    assert_eq!(times[1] - times[0], BackoffConfig::default().ceiling(1));
    assert_eq!(pacer.stats(Service::Gmail).throttled, 1);
    assert_eq!(
        pacer.cost(hirewire_providers::pacing::Op::Gmail(
            GmailMethod::MessagesGet,
            2
        )),
        10
    );
}
