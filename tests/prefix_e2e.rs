//! End-to-end: routes with `strip_prefix = true` hand out URLs that work (issue 19
//! item 5). The backend is told the prefix (`X-Forwarded-Prefix`) and the client's
//! address, scheme and host (RFC 7239 `Forwarded`), but, like many real servers, builds
//! its URLs from `X-Forwarded-Host`/`-Proto` alone; the gateway puts the prefix back, so
//! a client following `Location` or a Bundle's `fullUrl` gets the resource, not a 404.

use crate::common::*;
use jsonwebtoken::Algorithm;
use phr_test_support::config::issuer;
use phr_test_support::tokens;
use serde_json::{json, Value};

struct Client<'a> {
    gw: &'a Gateway,
    pki: &'a Pki,
    /// The Host the client uses: the gateway's loopback name and port, so the URLs
    /// the gateway hands back name a place this client can actually connect to.
    host: String,
}

impl Client<'_> {
    async fn send(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, http::HeaderMap, Value) {
        fhir_request(self.gw.addr, &self.pki.ca_pem, &self.host, token, method, path, body).await
    }

    /// GET an absolute URL the gateway handed out, as a client would: it must be https
    /// on the host this client used (which resolves to the gateway's listener).
    async fn follow(&self, token: Option<&str>, url: &str) -> (u16, Value) {
        let uri: http::Uri = url.parse().unwrap_or_else(|e| panic!("{url:?} is not a URL: {e}"));
        assert_eq!(uri.scheme_str(), Some("https"), "{url}");
        assert_eq!(uri.authority().map(|a| a.as_str()), Some(self.host.as_str()), "{url}");
        let (status, _, v) = self
            .send(token, "GET", uri.path_and_query().unwrap().as_str(), None)
            .await;
        (status, v)
    }
}

fn patient_token(patient: &str) -> String {
    let mut c = tokens::claims();
    c["scope"] = json!("launch/patient openid patient/*.cruds");
    c["patient"] = json!(patient);
    tokens::sign("ec1", Algorithm::ES256, "ec1", &c)
}

#[tokio::test]
async fn a_created_resources_location_works_through_a_stripped_prefix_route() {
    let pki = Pki::new();
    let (backend, seen) = fhir_backend::start_behind_proxy().await;
    let fhir = route_with(
        "fhir",
        "/api/fhir/",
        &[backend],
        "",
        &format!("strip_prefix = true\n{}", phr_test_support::config::FHIR_ROUTE),
    );
    let raw = route_with(
        "raw",
        "/api/raw/",
        &[backend],
        "",
        "strip_prefix = true\nphi = false\n[routes.auth]\nmode = \"none\"\n",
    );
    let rest = format!("{}\n{fhir}\n{raw}", issuer(pki.dir.path()));
    let gw = Gateway::start(&pki, &base_config(&pki, "", &rest));
    let client = Client {
        gw: &gw,
        pki: &pki,
        host: format!("localhost:{}", gw.addr.port()),
    };
    let host = &client.host;
    let token = patient_token("pa");
    let token = Some(token.as_str());

    // Create: the backend answers https://HOST/Observation/new-1/_history/1.
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
                     "subject": {"reference": "Patient/pa"}});
    let (status, headers, v) = client.send(token, "POST", "/api/fhir/Observation", Some(obs)).await;
    assert_eq!(status, 201, "{v}");
    let location = headers["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("https://{host}/api/fhir/Observation/new-1/_history/1")
    );

    // What the backend was told: the stripped prefix and RFC 7239 Forwarded.
    let received = seen.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(received["x-forwarded-prefix"], "/api/fhir");
    assert_eq!(received["x-forwarded-host"], host.as_str());
    assert_eq!(
        received["forwarded"],
        format!("for=127.0.0.1;proto=https;host=\"{host}\"").as_str()
    );

    // Following Location reaches the resource that was created.
    let (status, read) = client.follow(token, &location).await;
    assert_eq!(status, 200, "GET {location}: {read}");
    assert_eq!(read["resourceType"], "Observation", "{read}");
    assert_eq!(read["id"], "new-1", "{read}");
    assert_eq!(read["subject"]["reference"], "Patient/pa", "{read}");

    // A search Bundle's link and fullUrls point under the prefix, and work.
    let (status, _, bundle) = client.send(token, "GET", "/api/fhir/Observation", None).await;
    assert_eq!(status, 200, "{bundle}");
    let under = format!("https://{host}/api/fhir/");
    let link = bundle["link"][0]["url"].as_str().unwrap();
    assert!(link.starts_with(&under), "link not under the prefix: {bundle}");
    let full_urls: Vec<&str> = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    assert!(
        full_urls.contains(&format!("{under}Observation/new-1").as_str()),
        "{bundle}"
    );
    assert!(full_urls.iter().all(|u| u.starts_with(&under)), "{bundle}");
    for url in full_urls {
        let (status, v) = client.follow(token, url).await;
        assert_eq!(status, 200, "GET {url}: {v}");
    }

    // A plain (non-FHIR) route that strips its prefix gets the same treatment.
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
                     "subject": {"reference": "Patient/pb"}});
    let (status, headers, v) = client.send(None, "POST", "/api/raw/Observation", Some(obs)).await;
    assert_eq!(status, 201, "{v}");
    let location = headers["location"].to_str().unwrap().to_string();
    assert_eq!(location, format!("https://{host}/api/raw/Observation/new-2/_history/1"));
    let (status, read) = client.follow(None, &location).await;
    assert_eq!(status, 200, "GET {location}: {read}");
    assert_eq!(read["id"], "new-2", "{read}");
    let received = seen.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(received["x-forwarded-prefix"], "/api/raw");
}
