//! Repository methods used by fanout (see the parent module).

#[allow(unused_imports)]
use super::*;

impl Repository {
    /// The outbox item a stream record's new image holds; `None` for any other item (the
    /// stream's filter should keep them away; there is nothing to relay).
    pub fn outbox_item(&self, image: &serde_dynamo::Item) -> Option<OutboxItem> {
        serde_dynamo::from_item(image.clone()).ok()
    }
}
