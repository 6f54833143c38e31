//! The local proving ground: the template's resources on the local AWS server, Lambda's event
//! delivery reproduced faithfully for the real handlers, and the HTTP API on 127.0.0.1:3000.
#![forbid(unsafe_code)]

pub mod binaries;
pub mod events;
pub mod functions;
pub mod http_api;
pub mod pumps;
pub mod resources;
pub mod runner;
pub mod runtime_api;
pub mod secrets_extension;
pub mod stack;
pub mod template;
pub mod walkthrough;

pub use binaries::BinaryOptions;
pub use events::{HttpRequest, HttpResponse};
pub use stack::{local_sdk_config, LocalStack, StackOptions};

/// The project's `template.yaml`, compiled in: the binaries never depend on where the clone that
/// built them sits (clones share one build cache), and cargo rebuilds when the template changes.
pub const TEMPLATE_YAML: &str = include_str!("../../../template.yaml");
