//! Bearer-token authentication of every gRPC call.
//!
//! With `GRPC_TOKEN` set, each call — reflection and health included — must carry
//! `authorization: Bearer <token>`; anything else is refused with `UNAUTHENTICATED`. The token
//! is compared through SHA-256 digests in constant time, so neither its content nor its length
//! leaks through response timing. Neither the expected nor the offered token is ever logged.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::secret::Secret;

/// Checks the `authorization` header of each call; lets everything through without a token.
#[derive(Clone)]
pub(crate) struct BearerAuth {
    /// SHA-256 of the expected token; `None` when `GRPC_TOKEN` is unset.
    expected: Option<Arc<[u8; 32]>>,
}

impl BearerAuth {
    /// An interceptor for `token` (`None`: no authentication).
    pub(crate) fn new(token: Option<&Secret>) -> Self {
        BearerAuth {
            expected: token.map(|t| Arc::new(digest(t.expose().as_bytes()))),
        }
    }

    /// Checks an `authorization` value (also used by the REST routes).
    pub(crate) fn check(&self, offered: Option<&[u8]>) -> Result<(), Status> {
        let Some(expected) = &self.expected else {
            return Ok(());
        };
        let Some(header) = offered else {
            return Err(Status::unauthenticated(
                "this server needs a token: send the header 'authorization: Bearer <GRPC_TOKEN>'",
            ));
        };
        let token = strip_bearer(header).ok_or_else(|| {
            Status::unauthenticated("the authorization header must be 'Bearer <GRPC_TOKEN>'")
        })?;
        if bool::from(digest(token).ct_eq(expected.as_slice())) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let offered = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        match self.check(offered) {
            Ok(()) => Ok(request),
            Err(status) => {
                let peer = request.remote_addr().map(|a| a.to_string());
                tracing::warn!(
                    peer = peer.as_deref().unwrap_or("unknown"),
                    reason = status.message(),
                    "grpc call refused"
                );
                Err(status)
            }
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The credentials after a case-insensitive `Bearer ` scheme.
fn strip_bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() < SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(header[SCHEME.len()..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn only_the_right_bearer_token_passes() {
        let auth = BearerAuth::new(Some(&Secret::new(TOKEN)));
        assert!(auth
            .check(Some(format!("Bearer {TOKEN}").as_bytes()))
            .is_ok());
        assert!(auth
            .check(Some(format!("bearer {TOKEN}").as_bytes()))
            .is_ok());
        for bad in [
            None,
            Some(TOKEN.as_bytes().to_vec()),
            Some(b"Bearer ".to_vec()),
            Some(format!("Bearer {TOKEN}x").into_bytes()),
            Some(format!("Basic {TOKEN}").into_bytes()),
        ] {
            let err = auth.check(bad.as_deref()).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated);
            assert!(!err.message().contains(TOKEN));
        }
    }

    #[test]
    fn without_a_token_everything_passes() {
        assert!(BearerAuth::new(None).check(None).is_ok());
    }
}
