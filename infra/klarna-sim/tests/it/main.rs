//! Integration tests: reqwest against a started simulator, a tiny axum receiver for webhooks.

mod common;

mod authorize;
mod final_authorize;
mod identity;
mod journey;
mod misbehaviour;
mod misc;
mod notifications;
mod payment_requests;
mod transactions;
mod webhooks;
