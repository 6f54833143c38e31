//! Repository methods used by tokens (see the parent module).

#[allow(unused_imports)]
use super::*;
