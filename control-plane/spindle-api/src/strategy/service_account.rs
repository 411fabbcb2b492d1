//! ServiceAccounts: no rules beyond metadata; their deletion answers with the deleted
//! account, as kube-apiserver's service account storage does. The `token` subresource
//! (TokenRequest) mints the account's tokens in the API server.

use super::{Strategy, Subresource};

pub struct ServiceAccounts;

const SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "token",
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    verbs: &["create"],
    connect: false,
}];

impl Strategy for ServiceAccounts {
    fn returns_deleted_object(&self) -> bool {
        true
    }

    fn subresources(&self) -> &'static [Subresource] {
        SUBRESOURCES
    }
}
