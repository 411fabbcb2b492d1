//! Where a pod's guests meet the network: the pod's own tokio runtime (its threads live
//! in the pod's network namespace, so sockets the guest opens belong to the pod) and the
//! cluster's names for outgoing `wasi:http` requests.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// Resolves a host name the way the pod's resolver would (search domains included).
pub trait NameResolver: Send + Sync {
    /// `None`: not a name this resolver knows; the request then resolves the name
    /// through the host's resolver.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<IpAddr>> + Send + 'a>>;
}

/// A pod's network, for the instances of its containers.
#[derive(Clone)]
pub struct PodNetwork {
    /// Instances (and HTTP servers) run on this runtime instead of the shared one. Its
    /// threads are in the pod's network namespace, so every socket a guest creates
    /// (`wasi:sockets`, outgoing `wasi:http`) is the pod's.
    pub executor: tokio::runtime::Handle,
    /// Names of outgoing `wasi:http` requests are looked up here first, so `http://web/`
    /// reaches the Service `web` the way it would from a container.
    pub resolver: Option<Arc<dyn NameResolver>>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("resolver", &self.resolver.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) type SendRequestFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                hyper::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

/// Outgoing `wasi:http` through wasmtime-wasi-http's client, with host names the
/// resolver knows replaced by their address (the `Host` header keeps the name).
pub(crate) struct ResolvingHooks {
    pub(crate) resolver: Arc<dyn NameResolver>,
}

impl WasiHttpHooks for ResolvingHooks {
    fn send_request(
        &mut self,
        mut request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendRequestFuture {
        let resolver = self.resolver.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            // TLS checks the certificate against the name, so only plain HTTP is
            // readdressed; in-cluster names are served over plain HTTP anyway.
            let plain = request.uri().scheme_str() == Some("http");
            let host = request.uri().host().map(str::to_owned);
            if let (true, Some(host)) = (plain, host) {
                if host.parse::<IpAddr>().is_err() {
                    if let Some(ip) = resolver.resolve(&host).await {
                        readdress(&mut request, ip)?;
                    }
                }
            }
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Points the request's URI at `ip`, keeping scheme, port and path.
fn readdress(request: &mut hyper::Request<WasiBody>, ip: IpAddr) -> wasmtime_wasi_http::Result<()> {
    let uri = request.uri();
    let port = uri.port_u16().unwrap_or(80);
    let authority = match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(
        authority
            .parse()
            .map_err(|_| wasmtime_wasi_http::Error::HttpRequestUriInvalid)?,
    );
    *request.uri_mut() = hyper::Uri::from_parts(parts)
        .map_err(|_| wasmtime_wasi_http::Error::HttpRequestUriInvalid)?;
    Ok(())
}
