//! Partner onboarding: a partner record, an API key shown once and stored as its hash, and a
//! notification signing secret shown once and stored sealed.

use crate::crypto;
use crate::ids::{KlarnaAccountId, PartnerId, SecretString};
use crate::notify::WebhookSecret;
use crate::store::records::*;
use crate::store::{Store, StoreError};
use chrono::Utc;

/// What onboarding hands back once; neither secret can be read again.
pub struct NewPartner {
    pub record: PartnerRecord,
    pub api_key: SecretString,
    pub notification_secret: SecretString,
}

/// Associated data of a partner's sealed notification secrets.
pub fn secret_aad(partner: &PartnerId) -> String {
    format!("{}#notification-secret", partner_pk(partner))
}

pub async fn create(
    store: &Store,
    partner_id: PartnerId,
    name: &str,
    klarna_account_id: KlarnaAccountId,
    subscriptions: Vec<Subscription>,
) -> Result<NewPartner, StoreError> {
    let data = |e: crypto::CryptoError| StoreError::Data(e.to_string());
    let api_key = SecretString::new(crypto::random_token("kbk_").map_err(data)?);
    let secret = SecretString::new(WebhookSecret::generate().map_err(data)?);
    let now = Utc::now();
    let record = PartnerRecord {
        pk: partner_pk(&partner_id),
        sk: PROFILE_SK.into(),
        partner_id: partner_id.clone(),
        name: name.to_owned(),
        klarna_account_id,
        status: PartnerStatus::Active,
        subscriptions,
        notification_secrets_sealed: vec![store
            .sealer()
            .seal_str(secret.expose(), &secret_aad(&partner_id))
            .map_err(data)?],
        created_at: now,
    };
    store.put_new(&record).await?;
    store
        .put_new(&ApiKeyRecord {
            pk: api_key_pk(&crypto::sha256_hex(api_key.expose().as_bytes())),
            sk: "API_KEY".into(),
            partner_id,
            status: PartnerStatus::Active,
            created_at: now,
        })
        .await?;
    Ok(NewPartner {
        record,
        api_key,
        notification_secret: secret,
    })
}

/// The partner's live notification secrets (several while one rotates).
pub fn notification_secrets(
    store: &Store,
    p: &PartnerRecord,
) -> Result<Vec<WebhookSecret>, StoreError> {
    p.notification_secrets_sealed
        .iter()
        .map(|s| {
            let clear = store
                .sealer()
                .open_str(s, &secret_aad(&p.partner_id))
                .map_err(|e| StoreError::Data(e.to_string()))?;
            WebhookSecret::parse(&clear).map_err(|e| StoreError::Data(e.to_string()))
        })
        .collect()
}
