-- Conversations: chats with an agent that go on over several runs. A run of a conversation
-- (runs.conversation_id, set from its trigger's conversation_id when it is recorded) sees the
-- conversation's earlier user and assistant messages.

CREATE TABLE conversations (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams (id),
    agent_id    uuid NOT NULL REFERENCES agents (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX conversations_agent_idx ON conversations (agent_id, id DESC);

ALTER TABLE runs ADD COLUMN conversation_id uuid REFERENCES conversations (id);

CREATE INDEX runs_conversation_idx ON runs (conversation_id, id) WHERE conversation_id IS NOT NULL;
