//! Repository methods used by webhook (see the parent module).

#[allow(unused_imports)]
use super::*;
