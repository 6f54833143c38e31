//! Repository methods used by partner_api (see the parent module).

#[allow(unused_imports)]
use super::*;
