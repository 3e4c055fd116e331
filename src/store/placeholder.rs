//! PLACEHOLDER until the code-engine backends land: every call panics.
#![allow(unused_variables)]
use super::StoreResult;
use super::codes::*;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::time::Duration;
use uuid::Uuid;

pub struct Placeholder;

#[async_trait]
impl ChallengeStore for Placeholder {
    async fn create_challenge(&self, challenge: &Challenge, ttl: Duration) -> StoreResult<()> {
        unimplemented!("placeholder")
    }
    async fn get_challenge(&self, id: Uuid) -> StoreResult<Option<Challenge>> {
        unimplemented!("placeholder")
    }
    async fn attempt(
        &self,
        id: Uuid,
        candidates: &[[u8; 32]],
        now: DateTime<Utc>,
        max_attempts: u32,
    ) -> StoreResult<AttemptOutcome> {
        unimplemented!("placeholder")
    }
    async fn replace_code(
        &self,
        id: Uuid,
        mac: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        resend_available_at: DateTime<Utc>,
        ttl: Duration,
    ) -> StoreResult<ReplaceOutcome> {
        unimplemented!("placeholder")
    }
    async fn remember_request(
        &self,
        key: &str,
        challenge_id: Uuid,
        ttl: Duration,
    ) -> StoreResult<Option<Uuid>> {
        unimplemented!("placeholder")
    }
    async fn forget_request(&self, key: &str) -> StoreResult<()> {
        unimplemented!("placeholder")
    }
}

#[async_trait]
impl RateLimiter for Placeholder {
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<u32, Duration>> {
        unimplemented!("placeholder")
    }
}

#[async_trait]
impl FailureBudgetStore for Placeholder {
    async fn failure_state(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<FailureState> {
        unimplemented!("placeholder")
    }
    async fn record_failure(
        &self,
        identity_id: Uuid,
        now: DateTime<Utc>,
        budget: u32,
        window: Duration,
    ) -> StoreResult<FailureState> {
        unimplemented!("placeholder")
    }
    async fn reset_failures(&self, identity_id: Uuid) -> StoreResult<()> {
        unimplemented!("placeholder")
    }
}

#[async_trait]
impl Outbox for Placeholder {
    async fn enqueue(&self, message: &OutboxMessage, audit: &AuditEvent) -> StoreResult<()> {
        unimplemented!("placeholder")
    }
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()> {
        unimplemented!("placeholder")
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> StoreResult<Vec<OutboxMessage>> {
        unimplemented!("placeholder")
    }
    async fn finish_attempt(
        &self,
        attempt: &DeliveryAttempt,
        result: AttemptResult,
    ) -> StoreResult<()> {
        unimplemented!("placeholder")
    }
    async fn abandon(&self, id: Uuid, now: DateTime<Utc>) -> StoreResult<()> {
        unimplemented!("placeholder")
    }
    async fn get_message(&self, id: Uuid) -> StoreResult<Option<OutboxMessage>> {
        unimplemented!("placeholder")
    }
    async fn attempts(&self, id: Uuid) -> StoreResult<Vec<DeliveryAttempt>> {
        unimplemented!("placeholder")
    }
    async fn list_messages(
        &self,
        status: Option<MessageStatus>,
        recipient: Option<&str>,
        before: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>> {
        unimplemented!("placeholder")
    }
    async fn audit_events(&self, identity_id: Uuid) -> StoreResult<Vec<AuditEvent>> {
        unimplemented!("placeholder")
    }
}
