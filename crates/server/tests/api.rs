//! The REST API, specified through HTTP on both storage backends.

use hirewire_server::testing::{ADMIN, RECRUITER, TestApp};
use hirewire_store::both_backends;
use hirewire_store::testing::TestDb;
use serde_json::{Value, json};

/// An org with one recruiter and their API client.
async fn recruiter_api(app: &TestApp, org_name: &str) -> hirewire_server::testing::Api {
    let org = app.org(org_name, &["acme.example"]).await;
    let user = app
        .user(
            org,
            &format!("rita@{}.example", org_name.to_lowercase().replace(' ', "")),
            RECRUITER,
            "pw-recruiter-1",
        )
        .await;
    app.api(&app.api_token(&user).await)
}

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

both_backends! {
    async fn requests_without_a_valid_token_are_401_with_a_stable_code(db: TestDb) {
        let app = TestApp::start(&db).await;
        let res = reqwest::get(app.at("/api/v1/me")).await.unwrap();
        let (status, body) = json_of(res).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "unauthenticated");
        let bad = app.api("hw_not-a-token");
        assert_eq!(bad.get("/candidates").send().await.unwrap().status(), 401);
    }

    async fn me_describes_the_token_owner_and_their_org(db: TestDb) {
        let app = TestApp::start(&db).await;
        let org = app.org("Acme Talent", &["acme.example"]).await;
        let user = app.user(org, "ada@acme.example", ADMIN, "pw-admin-123").await;
        let api = app.api(&app.api_token(&user).await);
        let (status, me) = json_of(api.get("/me").send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(me["email"], "ada@acme.example");
        assert_eq!(me["role"], "admin");
        assert_eq!(me["organization"]["name"], "Acme Talent");
        assert_eq!(me["organization"]["domains"], json!(["acme.example"]));
        assert!(!me.to_string().contains("argon2"), "no password hash in API responses");
    }

    async fn a_candidate_is_created_read_renamed_and_has_addresses_added_and_removed(db: TestDb) {
        let app = TestApp::start(&db).await;
        let api = recruiter_api(&app, "Acme").await;
        let (status, c) = json_of(api.post("/candidates").json(&json!({"name": "Élodie Durand", "emails": ["Elodie@Example.org", "e.d@mailbox.example"]})).send().await.unwrap()).await;
        assert_eq!(status, 201);
        let id = c["id"].as_i64().unwrap();
        assert_eq!(c["emails"], json!(["Elodie@Example.org", "e.d@mailbox.example"]));

        let (_, got) = json_of(api.get(&format!("/candidates/{id}")).send().await.unwrap()).await;
        assert_eq!(got["name"], "Élodie Durand");

        let (status, renamed) = json_of(api.patch(&format!("/candidates/{id}")).json(&json!({"name": "Élodie Durand-Roy"})).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(renamed["name"], "Élodie Durand-Roy");

        let (status, added) = json_of(api.post(&format!("/candidates/{id}/addresses")).json(&json!({"email": "third@x.example"})).send().await.unwrap()).await;
        assert_eq!(status, 201);
        assert_eq!(added["emails"].as_array().unwrap().len(), 3);

        // Removal compares by key: case does not matter.
        let (status, removed) = json_of(api.delete(&format!("/candidates/{id}/addresses/ELODIE@example.ORG")).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(removed["emails"], json!(["e.d@mailbox.example", "third@x.example"]));
    }

    async fn an_address_belongs_to_one_candidate_per_org_compared_without_case(db: TestDb) {
        let app = TestApp::start(&db).await;
        let api = recruiter_api(&app, "Acme").await;
        let first = api.post("/candidates").json(&json!({"name": "A", "emails": ["ömer@x.example"]})).send().await.unwrap();
        assert_eq!(first.status(), 201);
        let (status, err) = json_of(api.post("/candidates").json(&json!({"name": "B", "emails": ["new@x.example", "ÖMER@X.example"]})).send().await.unwrap()).await;
        assert_eq!(status, 409);
        assert_eq!(err["error"]["code"], "address_taken");
        let (_, list) = json_of(api.get("/candidates").send().await.unwrap()).await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "the refused candidate was not half-written");
        // The same address is free in another organization.
        let other = recruiter_api(&app, "Globex").await;
        assert_eq!(other.post("/candidates").json(&json!({"name": "C", "emails": ["ömer@x.example"]})).send().await.unwrap().status(), 201);
    }

    async fn bad_input_gets_a_4xx_with_a_stable_code(db: TestDb) {
        let app = TestApp::start(&db).await;
        let api = recruiter_api(&app, "Acme").await;
        let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
            (api.post("/candidates").body("{not json").header("content-type", "application/json"), 400, "invalid_json"),
            (api.post("/candidates").json(&json!({"emails": []})), 422, "invalid_field"),
            (api.post("/candidates").json(&json!({"name": "  ", "emails": []})), 422, "invalid_candidate"),
            (api.post("/candidates").json(&json!({"name": "A", "emails": ["not-an-address"]})), 422, "invalid_candidate"),
            (api.post("/candidates").json(&json!({"name": "A", "surprise": 1})), 422, "invalid_field"),
            (api.get("/candidates?limit=0"), 400, "invalid_limit"),
            (api.get("/candidates?cursor=abc"), 400, "invalid_cursor"),
            (api.get("/candidates/999999"), 404, "not_found"),
            (api.get("/candidates/not-a-number"), 404, "not_found"),
            (api.get("/no-such-endpoint"), 404, "not_found"),
        ];
        for (req, status, code) in cases {
            let (got, body) = json_of(req.send().await.unwrap()).await;
            assert_eq!((got, body["error"]["code"].as_str().unwrap_or("")), (status, code), "{body}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    async fn candidate_lists_page_with_a_cursor_and_search_by_name_or_address(db: TestDb) {
        let app = TestApp::start(&db).await;
        let api = recruiter_api(&app, "Acme").await;
        for i in 0..7 {
            let body = json!({"name": format!("Person {i}"), "emails": [format!("p{i}@Example.net")]});
            assert_eq!(api.post("/candidates").json(&body).send().await.unwrap().status(), 201);
        }
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let (_, page) = json_of(api.get(&format!("/candidates?limit=3&cursor={cursor}")).send().await.unwrap()).await;
            seen.extend(page["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_owned(),
                None => break,
            }
        }
        assert_eq!(seen.len(), 7);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 7, "every candidate exactly once");
        let (_, by_name) = json_of(api.get("/candidates?q=person%203").send().await.unwrap()).await;
        assert_eq!(by_name["data"][0]["name"], "Person 3");
        let (_, by_address) = json_of(api.get("/candidates?q=P5@EXAMPLE").send().await.unwrap()).await;
        assert_eq!(by_address["data"].as_array().unwrap().len(), 1);
        assert_eq!(by_address["data"][0]["name"], "Person 5");
    }

    async fn inmail_is_written_and_listed_newest_first(db: TestDb) {
        let app = TestApp::start(&db).await;
        let api = recruiter_api(&app, "Acme").await;
        let (_, c) = json_of(api.post("/candidates").json(&json!({"name": "Kwame", "emails": []})).send().await.unwrap()).await;
        let id = c["id"].as_i64().unwrap();
        for (i, dir) in ["outbound", "inbound", "outbound"].iter().enumerate() {
            let (status, m) = json_of(api.post(&format!("/candidates/{id}/inmail")).json(&json!({"body": format!("message {i}"), "direction": dir})).send().await.unwrap()).await;
            assert_eq!(status, 201);
            assert_eq!(m["direction"], *dir);
            app.clock.advance(jiff::SignedDuration::from_mins(1));
        }
        let (_, list) = json_of(api.get(&format!("/candidates/{id}/inmail")).send().await.unwrap()).await;
        let bodies: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
        assert_eq!(bodies, ["message 2", "message 1", "message 0"]);
        assert!(list["data"][1]["author_user_id"].is_null(), "inbound messages have no author");
        let (status, err) = json_of(api.post(&format!("/candidates/{id}/inmail")).json(&json!({"body": "   "})).send().await.unwrap()).await;
        assert_eq!((status, err["error"]["code"].as_str().unwrap()), (422, "invalid_body"));
        let (status, err) = json_of(api.post(&format!("/candidates/{id}/inmail")).json(&json!({"body": "x", "direction": "sideways"})).send().await.unwrap()).await;
        assert_eq!((status, err["error"]["code"].as_str().unwrap()), (422, "invalid_direction"));
    }

    async fn a_retried_create_with_the_same_idempotency_key_creates_once(db: TestDb) {
        let app = TestApp::start(&db).await;
        let api = recruiter_api(&app, "Acme").await;
        let body = json!({"name": "Once", "emails": ["once@x.example"]});
        let first = api.post("/candidates").header("Idempotency-Key", "k-1").json(&body).send().await.unwrap();
        assert_eq!(first.status(), 201);
        let first: Value = first.json().await.unwrap();
        let again = api.post("/candidates").header("Idempotency-Key", "k-1").json(&body).send().await.unwrap();
        assert_eq!(again.status(), 201);
        assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
        let (status, err) = json_of(api.post("/candidates").header("Idempotency-Key", "k-1").json(&json!({"name": "Other"})).send().await.unwrap()).await;
        assert_eq!((status, err["error"]["code"].as_str().unwrap()), (422, "idempotency_key_reused"));
        let (_, list) = json_of(api.get("/candidates").send().await.unwrap()).await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        // A failed request does not burn its key.
        let bad = api.post("/candidates").header("Idempotency-Key", "k-2").json(&json!({"name": ""})).send().await.unwrap();
        assert_eq!(bad.status(), 422);
        let good = api.post("/candidates").header("Idempotency-Key", "k-2").json(&json!({"name": ""})).send().await.unwrap();
        assert_eq!(good.status(), 422, "the same bad request is evaluated again, not replayed from a stored error");
    }

    async fn one_org_never_sees_or_changes_another_orgs_data_through_any_endpoint(db: TestDb) {
        let app = TestApp::start(&db).await;
        let acme = recruiter_api(&app, "Acme").await;
        let globex = recruiter_api(&app, "Globex").await;
        let (_, c) = json_of(acme.post("/candidates").json(&json!({"name": "Secret", "emails": ["secret@x.example"]})).send().await.unwrap()).await;
        let id = c["id"].as_i64().unwrap();
        acme.post(&format!("/candidates/{id}/inmail")).json(&json!({"body": "private"})).send().await.unwrap();

        let probes = [
            globex.get(&format!("/candidates/{id}")),
            globex.patch(&format!("/candidates/{id}")).json(&json!({"name": "Hijacked"})),
            globex.post(&format!("/candidates/{id}/addresses")).json(&json!({"email": "evil@x.example"})),
            globex.delete(&format!("/candidates/{id}/addresses/secret@x.example")),
            globex.get(&format!("/candidates/{id}/inmail")),
            globex.post(&format!("/candidates/{id}/inmail")).json(&json!({"body": "hi"})),
        ];
        for probe in probes {
            let (status, body) = json_of(probe.send().await.unwrap()).await;
            assert_eq!(status, 404, "{body}");
        }
        let (_, list) = json_of(globex.get("/candidates?q=secret").send().await.unwrap()).await;
        assert_eq!(list["data"], json!([]));
        let (_, me) = json_of(globex.get("/me").send().await.unwrap()).await;
        assert_eq!(me["organization"]["name"], "Globex");
        // And nothing changed on Acme's side.
        let (_, after) = json_of(acme.get(&format!("/candidates/{id}")).send().await.unwrap()).await;
        assert_eq!(after["name"], "Secret");
        assert_eq!(after["emails"], json!(["secret@x.example"]));
        let (_, msgs) = json_of(acme.get(&format!("/candidates/{id}/inmail")).send().await.unwrap()).await;
        assert_eq!(msgs["data"].as_array().unwrap().len(), 1);
    }

    async fn health_and_readiness_answer(db: TestDb) {
        let app = TestApp::start(&db).await;
        assert_eq!(reqwest::get(app.at("/healthz")).await.unwrap().status(), 200);
        assert_eq!(reqwest::get(app.at("/readyz")).await.unwrap().status(), 200);
        app.store.close().await;
        assert_eq!(reqwest::get(app.at("/readyz")).await.unwrap().status(), 503, "a closed database is not ready");
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_api_route() {
    let db = TestDb::new(hirewire_store::Backend::Sqlite).await.unwrap();
    let app = TestApp::start(&db).await;
    let doc: Value = reqwest::get(app.at("/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/me", &["get"][..]),
        ("/candidates", &["get", "post"]),
        ("/candidates/{id}", &["get", "patch"]),
        ("/candidates/{id}/addresses", &["post"]),
        ("/candidates/{id}/addresses/{email}", &["delete"]),
        ("/candidates/{id}/inmail", &["get", "post"]),
        ("/me/integrations", &["get"]),
        ("/me/integrations/{kind}/authorize", &["post"]),
        ("/me/integrations/{kind}", &["delete"]),
        ("/admin/email-provider", &["get", "put"]),
    ] {
        for m in methods {
            assert!(paths[path][m].is_object(), "{m} {path} is documented");
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
