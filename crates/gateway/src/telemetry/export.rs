//! The OTLP/HTTP exporter: each batch encoded by `encode.rs` and posted through the gateway's
//! own reqwest (rustls, no second HTTP stack) on the gateway's tokio runtime.

use std::future::Future;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::Handle;

use super::encode::{self, Prefix};
use crate::upstream::client::{self, ClientOptions};

/// Where the spans go and how, as the flag and OpenTelemetry's standard variables say.
#[derive(Debug)]
pub(super) struct Destination {
    url: reqwest::Url,
    headers: HeaderMap,
    timeout: Duration,
}

impl Destination {
    /// The destination `--otlp-endpoint` (`flag`, a collector's base URL) or the standard
    /// variables (read by `env`) name; `None` when neither names a collector. A variable
    /// that cannot be used is an error naming it.
    pub(super) fn resolve(
        flag: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        default_timeout: Duration,
    ) -> Result<Option<Destination>, String> {
        // The traces' own variable, else the general one: as the OTLP exporter spec reads them.
        let either = |traces: &str, general: &str| {
            env(traces)
                .map(|value| (traces.to_owned(), value))
                .or_else(|| env(general).map(|v| (general.to_owned(), v)))
        };
        let url = match (flag, env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(base), _) => signal_url(base),
            // The signal's own endpoint is used as it is; the general one is a base.
            (None, Some(url)) => url,
            (None, None) => match env("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => signal_url(&base),
                None => return Ok(None),
            },
        };
        let url = reqwest::Url::parse(&url).map_err(|e| format!("traces: the OTLP endpoint {url:?}: {e}"))?;
        if let Some((name, protocol)) =
            either("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
            && protocol.trim() != "http/protobuf"
        {
            return Err(format!("traces: {name}={protocol}: only http/protobuf is exported"));
        }
        let headers = match either("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") {
            Some((name, list)) => headers(&list).map_err(|e| format!("traces: {name}: {e}"))?,
            None => HeaderMap::new(),
        };
        let timeout = match either("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT") {
            Some((name, ms)) => match ms.trim().parse::<u64>() {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                _ => return Err(format!("traces: {name}={ms}: a number of milliseconds is expected")),
            },
            None => default_timeout,
        };
        Ok(Some(Destination { url, headers, timeout }))
    }
}

/// The traces' URL under a collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` is read.
fn signal_url(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") }
}

/// The headers of an `OTEL_EXPORTER_OTLP_HEADERS` list: `name=value` pairs separated by
/// commas, values percent-encoded.
fn headers(list: &str) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for pair in list.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?} is not name=value"))?;
        let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
        let value = HeaderValue::try_from(value.as_ref())
            .map_err(|_| format!("the value of {name} is not a header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The exporter the SDK's batch processor calls with each batch.
#[derive(Debug)]
pub(super) struct Otlp {
    client: reqwest::Client,
    runtime: Handle,
    destination: Destination,
    /// The resource's part of each request, set by the provider.
    prefix: Prefix,
}

impl Otlp {
    /// An exporter to `destination` with a client as the upstream's (system and webpki roots,
    /// no redirects), posting on `runtime`.
    pub(super) fn new(runtime: Handle, destination: Destination) -> Result<Otlp, String> {
        let options = ClientOptions { connect_timeout: destination.timeout, ca_file: None, http2: false };
        let client = client::build(&options).map_err(|e| format!("traces: {e}"))?;
        Ok(Otlp { client, runtime, destination, prefix: Prefix::default() })
    }
}

impl SpanExporter for Otlp {
    /// Encodes the batch here, on the SDK's thread, and posts it on the gateway's runtime:
    /// the batch thread polls outside any runtime, and reqwest's connections need tokio's.
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let mut body = Vec::with_capacity(1024 * batch.len().max(1));
        encode::request(&self.prefix, &batch, &mut body);
        drop(batch);
        let post = self
            .client
            .post(self.destination.url.clone())
            .headers(self.destination.headers.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .timeout(self.destination.timeout)
            .body(body);
        let posted = self.runtime.spawn(async move {
            let answer = post.send().await.map_err(|e| format!("the collector could not be reached: {e}"))?;
            let status = answer.status();
            // Read to its end, so that the connection can carry the next batch.
            let said = answer.bytes().await.unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!(
                    "the collector answered {status}: {}",
                    String::from_utf8_lossy(&said[..said.len().min(200)])
                ))
            }
        });
        async move {
            match posted.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(why)) => Err(OTelSdkError::InternalFailure(why)),
                Err(stopped) => Err(OTelSdkError::InternalFailure(format!("the export stopped: {stopped}"))),
            }
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.prefix = Prefix::new(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::{Destination, signal_url};

    fn resolve(flag: Option<&str>, variables: &[(&str, &str)]) -> Result<Option<Destination>, String> {
        let variables: HashMap<String, String> =
            variables.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Destination::resolve(flag, |name| variables.get(name).cloned(), Duration::from_secs(5))
    }

    #[test]
    fn the_signal_path_is_added_once() {
        assert_eq!(signal_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(signal_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(signal_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }

    #[test]
    fn the_flag_comes_before_the_variables_and_the_traces_variable_before_the_general_one() {
        assert!(resolve(None, &[]).unwrap().is_none());
        let general = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318")];
        assert_eq!(resolve(None, &general).unwrap().unwrap().url.as_str(), "http://general:4318/v1/traces");
        let both = [general[0], ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://own:4318/traces")];
        assert_eq!(resolve(None, &both).unwrap().unwrap().url.as_str(), "http://own:4318/traces");
        assert_eq!(
            resolve(Some("http://flag:1"), &both).unwrap().unwrap().url.as_str(),
            "http://flag:1/v1/traces"
        );
    }

    #[test]
    fn headers_and_timeout_are_read_and_a_bad_variable_is_named() {
        let variables = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret%20one, x-tenant = blue"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ];
        let destination = resolve(Some("http://c:4318"), &variables).unwrap().unwrap();
        assert_eq!(destination.headers["api-key"], "secret one");
        assert_eq!(destination.headers["x-tenant"], "blue");
        assert_eq!(destination.timeout, Duration::from_millis(2500));
        let error = resolve(Some("http://c"), &[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]).unwrap_err();
        assert!(error.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{error}");
        let error =
            resolve(Some("http://c"), &[("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "no-pair")]).unwrap_err();
        assert!(error.contains("OTEL_EXPORTER_OTLP_TRACES_HEADERS"), "{error}");
        let error = resolve(Some("http://c"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(error.contains("http/protobuf"), "{error}");
        assert!(resolve(Some("http://c"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
    }
}
