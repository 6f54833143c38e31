//! Repository methods used by step_up (see the parent module).

#[allow(unused_imports)]
use super::*;
