//! ServiceAccounts: no rules beyond metadata; their deletion answers with the deleted
//! account, as kube-apiserver's service account storage does.

use super::Strategy;

pub struct ServiceAccounts;

impl Strategy for ServiceAccounts {
    fn returns_deleted_object(&self) -> bool {
        true
    }
}
