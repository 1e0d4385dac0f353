//! `Content-MD5` on every S3 PUT. A bucket with Object Lock default retention refuses writes
//! without an integrity header (`MissingUploadObjectWithObjectLockHeaders`), and object_store
//! 0.14 sends none. `Content-MD5` is not among the headers SigV4 must sign, so adding it under
//! object_store's signing layer, in the HTTP connector, is valid on AWS and every compatible
//! store. Used only for locations with `object_lock = true` (it costs an MD5 pass per upload).

use base64::Engine;
use http_body_util::BodyExt;
use md5::{Digest, Md5};
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};

/// Connector that wraps object_store's reqwest client with [`AddContentMd5`].
#[derive(Debug, Default)]
pub(crate) struct ContentMd5Connector;

impl HttpConnector for ContentMd5Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(AddContentMd5(inner)))
    }
}

#[derive(Debug)]
struct AddContentMd5(HttpClient);

#[async_trait::async_trait]
impl HttpService for AddContentMd5 {
    async fn call(&self, mut req: HttpRequest) -> Result<HttpResponse, HttpError> {
        if req.method() == http::Method::PUT && !req.headers().contains_key("content-md5") {
            // The body is already in memory (a part or a small object); cloning it is cheap
            // (reference-counted buffers).
            let body = req
                .body()
                .clone()
                .collect()
                .await
                .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?
                .to_bytes();
            let digest = Md5::digest(&body);
            let v = base64::engine::general_purpose::STANDARD.encode(digest);
            req.headers_mut().insert(
                "content-md5",
                http::HeaderValue::from_str(&v).map_err(|e| HttpError::new(HttpErrorKind::Request, e))?,
            );
        }
        self.0.execute(req).await
    }
}
