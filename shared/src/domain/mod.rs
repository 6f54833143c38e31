//! The payment and token domain: states, the transitions allowed between them, and what each
//! Klarna outcome means for them. Pure code, no I/O.

pub mod aggregate;
pub mod money;
pub mod payment;
pub mod reconcile;
pub mod token;

pub use payment::{PaymentKind, PaymentState, StepUpEvent};
pub use token::{Scope, TokenState};
