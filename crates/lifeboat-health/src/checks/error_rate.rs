//! `error_rate`: a Prometheus instant query (`/api/v1/query`) that yields a ratio; the largest
//! sample counts.

use super::{Outcome, Shared, chain, pct};

/// Extracts the largest sample of a vector or scalar answer; `Ok(None)` when there is none
/// (no traffic: `0/0` gives NaN or an empty vector).
fn largest(body: &[u8]) -> Result<Option<f64>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if v["status"] != "success" {
        let err = v["error"].as_str().unwrap_or("unknown error");
        return Err(format!("query failed: {err}"));
    }
    let sample = |pair: &serde_json::Value| pair.get(1).and_then(|s| s.as_str()).and_then(|s| s.parse::<f64>().ok());
    let data = &v["data"];
    let values: Vec<f64> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| sample(&r["value"]))
            .collect(),
        Some("scalar") => sample(&data["result"]).into_iter().collect(),
        other => {
            return Err(format!(
                "query must give a vector or scalar, not {}",
                other.unwrap_or("nothing")
            ));
        }
    };
    Ok(values.into_iter().filter(|x| !x.is_nan()).reduce(f64::max))
}

pub(crate) async fn probe(prometheus: &reqwest::Url, query: &str, max_rate: f64, shared: &Shared) -> Outcome {
    let client = match shared.http(true, None) {
        Ok(c) => c,
        Err(e) => return Outcome::fail("down", e),
    };
    let mut url = prometheus.clone();
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    let Ok(url) = url.join("api/v1/query") else {
        return Outcome::fail("down", "cannot build the query URL");
    };
    let resp = match client.get(url).query(&[("query", query)]).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::fail("down", format!("Prometheus unreachable: {}", chain(&e.without_url()))),
    };
    let status = resp.status();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::fail("down", format!("Prometheus answer failed: {}", chain(&e.without_url()))),
    };
    if !status.is_success() && status.as_u16() != 400 && status.as_u16() != 422 {
        return Outcome::fail("down", format!("Prometheus answered status {}", status.as_u16()));
    }
    match largest(&body) {
        Err(e) => Outcome::fail("down", e),
        Ok(None) => Outcome::ok("no samples (no traffic in the window)"),
        Ok(Some(r)) if r > max_rate => {
            Outcome::fail("errors", format!("error rate {} above {}", pct(r), pct(max_rate)))
        }
        Ok(Some(r)) => Outcome::ok(format!("error rate {}", pct(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::largest;

    #[test]
    fn answers() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"0.02"]},{"metric":{},"value":[1,"0.3"]}]}}"#;
        assert_eq!(largest(v).unwrap(), Some(0.3));
        let s = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert_eq!(largest(s).unwrap(), None);
        let e = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(largest(e).unwrap_err().contains("parse error"));
        assert!(largest(b"<html>").is_err());
    }
}
