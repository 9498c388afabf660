//! Conversations: chats with an agent over several runs. The API starts one at a chat
//! without a `conversation_id` and answers with its id; a run of a conversation carries the
//! id in its trigger (copied into `runs.conversation_id` when it is recorded) and sees the
//! conversation's earlier messages: each earlier run's input (the user's) and its assistant
//! messages, in order.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::ids::{AgentId, RunId, TeamId};
use crate::pagination::{Cursor, Page};

/// A conversation as shown.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Conversation {
    /// Conversation id; pass it as `conversation_id` to go on.
    pub id: Uuid,
    /// The agent.
    pub agent_id: AgentId,
    /// Started at.
    pub created_at: DateTime<Utc>,
    /// Last chat at.
    pub updated_at: DateTime<Utc>,
}

/// One message of a conversation.
#[derive(Clone, Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = ConversationMessage)]
pub struct Message {
    /// The step's id (messages are steps of the conversation's runs).
    pub id: Uuid,
    /// The run it belongs to.
    pub run_id: RunId,
    /// `user` or `assistant`.
    #[schema(example = "user")]
    pub role: String,
    /// The text.
    pub content: Option<String>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, agent_id, created_at, updated_at";

/// Messages are a conversation's runs' inputs and assistant messages.
const MESSAGE_SELECT: &str =
    "SELECT s.id, s.run_id, CASE s.kind WHEN 'input' THEN 'user' ELSE 'assistant' END AS role,
        s.content, s.created_at
    FROM runs r JOIN run_steps s ON s.run_id = r.id
    WHERE r.conversation_id = $1 AND r.team_id = $2
      AND (s.kind = 'input' OR (s.kind = 'message' AND s.role = 'assistant'))";

/// Starts a conversation with a team's agent; None if the agent is not there.
pub async fn start(
    db: impl PgExecutor<'_>,
    team: TeamId,
    agent: AgentId,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO conversations (id, team_id, agent_id)
         SELECT $1, team_id, id FROM agents WHERE id = $2 AND team_id = $3 AND deleted_at IS NULL
         RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(agent)
    .bind(team)
    .fetch_optional(db)
    .await
}

/// Marks a team's conversation with an agent as going on; false if there is no such one.
pub async fn touch(
    db: impl PgExecutor<'_>,
    team: TeamId,
    agent: AgentId,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE conversations SET updated_at = now() WHERE id = $1 AND team_id = $2 AND agent_id = $3",
    )
    .bind(id)
    .bind(team)
    .bind(agent)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A team's conversation, if it exists.
pub async fn get(
    db: impl PgExecutor<'_>,
    team: TeamId,
    id: Uuid,
) -> Result<Option<Conversation>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM conversations WHERE id = $1 AND team_id = $2"
    ))
    .bind(id)
    .bind(team)
    .fetch_optional(db)
    .await
}

/// An agent's conversations, newest first.
pub async fn for_agent(
    db: impl PgExecutor<'_>,
    team: TeamId,
    agent: AgentId,
    cursor: &Cursor,
) -> Result<Page<Conversation>, sqlx::Error> {
    let rows: Vec<Conversation> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM conversations WHERE agent_id = $1 AND team_id = $2
           AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(agent)
    .bind(team)
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(db)
    .await?;
    Ok(cursor.page(rows, |c| c.id))
}

/// A conversation's messages, newest first.
pub async fn messages(
    db: impl PgExecutor<'_>,
    team: TeamId,
    id: Uuid,
    cursor: &Cursor,
) -> Result<Page<Message>, sqlx::Error> {
    let rows: Vec<Message> = sqlx::query_as(&format!(
        "{MESSAGE_SELECT} AND ($3::uuid IS NULL OR s.id < $3) ORDER BY s.id DESC LIMIT $4"
    ))
    .bind(id)
    .bind(team)
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(db)
    .await?;
    Ok(cursor.page(rows, |m| m.id))
}

/// The messages of the conversation's runs before `run`, oldest first (at most `limit`,
/// the latest ones).
pub async fn before(
    db: impl PgExecutor<'_>,
    team: TeamId,
    id: Uuid,
    run: RunId,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    let mut rows: Vec<Message> = sqlx::query_as(&format!(
        "{MESSAGE_SELECT} AND r.id < $3 ORDER BY r.id DESC, s.seq DESC LIMIT $4"
    ))
    .bind(id)
    .bind(team)
    .bind(run)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.reverse();
    Ok(rows)
}
