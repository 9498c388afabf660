-- Agents' signing secrets are encrypted at rest, like every other secret (AES-GCM under the
-- master key, see shared/src/crypto.rs). New agents store only signing_secret_sealed. SQL
-- does not know the master key, so rows written before this migration keep their plain
-- text until the API seals them at start-up (agents::seal_signing_secrets), which also
-- clears the plain text; until then the worker reads either form.
ALTER TABLE agents ADD COLUMN signing_secret_sealed bytea;
ALTER TABLE agents ALTER COLUMN signing_secret DROP NOT NULL;
ALTER TABLE agents ADD CONSTRAINT agents_signing_secret_present
    CHECK (signing_secret IS NOT NULL OR signing_secret_sealed IS NOT NULL);
