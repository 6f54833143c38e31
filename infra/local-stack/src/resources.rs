//! Creates the template's table and queues on the local AWS server, under a name prefix so
//! parallel tests (and a running local stack) never see each other.

use crate::template::Template;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
#[error("creating {what}: {message}")]
pub struct ResourceError {
    pub what: String,
    pub message: String,
}

fn err(what: impl Into<String>, e: impl std::fmt::Display) -> ResourceError {
    ResourceError {
        what: what.into(),
        message: e.to_string(),
    }
}

/// The names and addresses of the created resources.
#[derive(Clone, Debug)]
pub struct Resources {
    pub prefix: String,
    pub table: String,
    pub stream_arn: Option<String>,
    /// Queue URL by logical id.
    pub queue_urls: BTreeMap<String, String>,
    pub queue_arns: BTreeMap<String, String>,
}

impl Resources {
    pub fn queue_url(&self, logical_id: &str) -> &str {
        self.queue_urls
            .get(logical_id)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub async fn create(
        sdk: &aws_config::SdkConfig,
        template: &Template,
        prefix: &str,
    ) -> Result<Self, ResourceError> {
        let ddb = aws_sdk_dynamodb::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let t = &template.table;
        let table = format!("{prefix}-{}", t.logical_id);
        let mut create = ddb
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest);
        for (name, ty) in &t.attributes {
            create = create.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::from(ty.as_str()))
                    .build()
                    .map_err(|e| err(&table, e))?,
            );
        }
        for (name, ty) in &t.key_schema {
            create = create.key_schema(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(KeyType::from(ty.as_str()))
                    .build()
                    .map_err(|e| err(&table, e))?,
            );
        }
        for ix in &t.indexes {
            let mut gsi = GlobalSecondaryIndex::builder()
                .index_name(&ix.name)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(ix.projection_type.as_str()))
                        .set_non_key_attributes(
                            (!ix.non_key_attributes.is_empty())
                                .then(|| ix.non_key_attributes.clone()),
                        )
                        .build(),
                );
            for (name, ty) in &ix.key_schema {
                gsi = gsi.key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(name)
                        .key_type(KeyType::from(ty.as_str()))
                        .build()
                        .map_err(|e| err(&table, e))?,
                );
            }
            create = create.global_secondary_indexes(gsi.build().map_err(|e| err(&table, e))?);
        }
        if let Some(view) = &t.stream_view_type {
            create = create.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view.as_str()))
                    .build()
                    .map_err(|e| err(&table, e))?,
            );
        }
        let out = match create.send().await {
            Ok(o) => o.table_description,
            Err(e)
                if aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&e)
                    == Some("ResourceInUseException") =>
            {
                ddb.describe_table()
                    .table_name(&table)
                    .send()
                    .await
                    .map_err(|e| err(&table, aws_sdk_dynamodb::error::DisplayErrorContext(e)))?
                    .table
            }
            Err(e) => return Err(err(&table, aws_sdk_dynamodb::error::DisplayErrorContext(e))),
        };
        let stream_arn = out.and_then(|d| d.latest_stream_arn);
        if let Some(attr) = &t.ttl_attribute {
            let _ = ddb
                .update_time_to_live()
                .table_name(&table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attr)
                        .enabled(true)
                        .build()
                        .map_err(|e| err(&table, e))?,
                )
                .send()
                .await;
        }
        // Dead-letter queues first: redrive policies point at them.
        let mut queue_urls = BTreeMap::new();
        let mut queue_arns = BTreeMap::new();
        let mut ordered: Vec<_> = template.queues.iter().collect();
        ordered.sort_by_key(|q| q.redrive.is_some());
        for q in ordered {
            let name = format!(
                "{prefix}-{}{}",
                q.logical_id,
                if q.fifo { ".fifo" } else { "" }
            );
            let mut c = sqs.create_queue().queue_name(&name);
            if q.fifo {
                c = c.attributes(QueueAttributeName::FifoQueue, "true");
            }
            if let Some(v) = q.visibility_timeout {
                c = c.attributes(QueueAttributeName::VisibilityTimeout, v.to_string());
            }
            if let Some(v) = q.retention {
                c = c.attributes(QueueAttributeName::MessageRetentionPeriod, v.to_string());
            }
            if let Some((dlq, max)) = &q.redrive {
                let arn = queue_arns
                    .get(dlq)
                    .ok_or_else(|| err(&name, format!("dead-letter queue {dlq} not created")))?;
                c = c.attributes(
                    QueueAttributeName::RedrivePolicy,
                    serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max})
                        .to_string(),
                );
            }
            let url = c
                .send()
                .await
                .map_err(|e| err(&name, aws_sdk_sqs::error::DisplayErrorContext(e)))?
                .queue_url
                .ok_or_else(|| err(&name, "no queue url"))?;
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(|e| err(&name, aws_sdk_sqs::error::DisplayErrorContext(e)))?
                .attributes
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .ok_or_else(|| err(&name, "no queue arn"))?;
            queue_urls.insert(q.logical_id.clone(), url);
            queue_arns.insert(q.logical_id.clone(), arn);
        }
        Ok(Resources {
            prefix: prefix.to_owned(),
            table,
            stream_arn,
            queue_urls,
            queue_arns,
        })
    }
}
