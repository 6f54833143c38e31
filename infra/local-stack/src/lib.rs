//! The local proving ground: the template's resources on the local AWS server, Lambda's event
//! delivery reproduced faithfully for the real handlers, and the HTTP API on 127.0.0.1:3000.
#![forbid(unsafe_code)]

pub mod events;
pub mod functions;
pub mod http_api;
pub mod pumps;
pub mod resources;
pub mod runner;
pub mod stack;
pub mod template;
pub mod walkthrough;

pub use events::{HttpRequest, HttpResponse};
pub use stack::{local_sdk_config, LocalStack, StackOptions};

/// The project's `template.yaml`.
pub fn template_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")
}
