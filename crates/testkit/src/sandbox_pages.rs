//! A scripted person in front of the provider sandbox's sign-in pages: opens
//! an authorize URL, picks an account, answers the consent screen, and reports
//! where it ended. HTTP only (no browser), for tests at HTTP level.

/// Where a walk through the sandbox's sign-in pages ended.
#[derive(Debug)]
pub enum Landing {
    /// Redirected back to the app: the full `Location`.
    Redirect(String),
    /// A page of the sandbox (status, HTML), e.g. "Need admin approval".
    Page(u16, String),
}

/// How to answer the consent screen.
#[derive(Clone, Copy)]
pub enum Answer<'a> {
    /// Accept everything ("Select all" on Google's granular screen).
    AcceptAll,
    /// Google granular consent: tick only these scopes.
    Tick(&'a [&'a str]),
    /// Press Cancel.
    Cancel,
}

/// The sandbox's sign-in pages at `base` (its base URL).
pub struct SignInPages {
    base: String,
    http: reqwest::Client,
}

impl SignInPages {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// Opens `url`, picks `account` on the account picker and answers the
    /// consent screen if one comes.
    pub async fn walk(&self, url: &str, account: &str, answer: Answer<'_>) -> Landing {
        let picker = match self
            .land(self.http.get(url).send().await.expect("authorize url"))
            .await
        {
            Landing::Page(200, html) => html,
            other => return other,
        };
        let res = self
            .http
            .post(self.form_target(&picker, "account"))
            .form(&[("user", account)])
            .send()
            .await
            .expect("pick an account");
        let page = match self.land(res).await {
            Landing::Page(200, html) if html.contains("name=\"decision\"") => html,
            other => return other,
        };
        let mut form: Vec<(&str, &str)> = Vec::new();
        match answer {
            Answer::AcceptAll => form.extend([("decision", "accept"), ("select_all", "1")]),
            Answer::Tick(scopes) => {
                form.push(("decision", "accept"));
                form.extend(scopes.iter().map(|s| ("scope", *s)));
            }
            Answer::Cancel => form.push(("decision", "cancel")),
        }
        let res = self
            .http
            .post(self.form_target(&page, "consent"))
            .form(&form)
            .send()
            .await
            .expect("answer the consent screen");
        self.land(res).await
    }

    /// Presses "Return to the application" on a sandbox error page.
    pub async fn leave_error_page(&self, html: &str) -> Landing {
        let res = self
            .http
            .post(self.form_target(html, "cancel"))
            .send()
            .await
            .expect("leave the page");
        self.land(res).await
    }

    async fn land(&self, r: reqwest::Response) -> Landing {
        if r.status().is_redirection() {
            Landing::Redirect(
                r.headers()["location"]
                    .to_str()
                    .expect("a location")
                    .to_owned(),
            )
        } else {
            let status = r.status().as_u16();
            Landing::Page(status, r.text().await.unwrap_or_default())
        }
    }

    fn form_target(&self, html: &str, action: &str) -> String {
        let start = html
            .find("/_sandbox/ui/")
            .unwrap_or_else(|| panic!("no sandbox sign-in form in page: {html}"));
        let rest = &html[start + "/_sandbox/ui/".len()..];
        let id = &rest[..rest.find('/').expect("a form id")];
        format!("{}/_sandbox/ui/{id}/{action}", self.base)
    }
}
