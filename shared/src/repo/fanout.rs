//! Repository methods used by fanout (see the parent module).

#[allow(unused_imports)]
use super::*;
