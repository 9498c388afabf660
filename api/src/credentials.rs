//! `/api/v1/credentials`: a team's secrets (model API keys, MCP tokens) that agents and MCP
//! server configs name by id. The value is write-only: encrypted at rest, never in an
//! answer. Revoking is final; runs that need a revoked credential fail naming it (see
//! `agentq_shared::credentials::resolve`). A key limited to some agents cannot manage them,
//! as they are team-wide.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use agentq_shared::credentials::{CredentialView, VIEW_COLUMNS};
use agentq_shared::pagination::{Cursor, Page};
use agentq_shared::scopes::Scope;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// The largest credential value, in bytes.
const MAX_VALUE: usize = 16 * 1024;

/// Routes under `/api/v1`.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(revoke))
}

/// `POST /credentials`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateCredential)]
struct CreateBody {
    /// 1 to 200 characters (trimmed); named in errors, e.g. when it is revoked.
    #[schema(example = "openai", min_length = 1, max_length = 200)]
    name: String,
    /// The secret, 1 to 16384 bytes. Write-only: never shown again.
    #[schema(example = "sk-...", min_length = 1, max_length = 16384)]
    value: String,
    /// At most 2000 characters.
    #[schema(max_length = 2000)]
    description: Option<String>,
}

/// The list query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Refuses keys limited to some agents (credentials are team-wide), and checks the scope.
fn allowed(auth: &Auth, scope: Scope) -> Result<(), ApiError> {
    auth.require(scope)?;
    if auth.agent_restriction().is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "This API key is limited to some agents and cannot manage credentials, which are team-wide.",
        ));
    }
    Ok(())
}

async fn visible(state: &AppState, auth: &Auth, id: Uuid) -> Result<CredentialView, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM credentials WHERE id = $1 AND team_id = $2"
    ))
    .bind(id)
    .bind(auth.team_id())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("Credential"))
}

/// Stores a secret, encrypted; the answer never contains the value.
///
/// Scope: `credentials:write`. A key limited to some agents cannot manage credentials (403).
#[utoipa::path(post, path = "/credentials", operation_id = "createCredential", tag = "credentials", request_body = CreateBody,
    responses((status = 201, description = "Created (the value is not shown).", body = CredentialView)))]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<CredentialView>), ApiError> {
    allowed(&auth, Scope::CredentialsWrite)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 200 characters",
        ));
    }
    if body.value.is_empty() || body.value.len() > MAX_VALUE {
        return Err(ApiError::invalid_field(
            "value",
            format!("must be 1 to {MAX_VALUE} bytes"),
        ));
    }
    if body
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 2000)
    {
        return Err(ApiError::invalid_field(
            "description",
            "must be at most 2000 characters",
        ));
    }
    let mut tx = state.db.begin().await?;
    let created: CredentialView = sqlx::query_as(&format!(
        "INSERT INTO credentials (id, team_id, name, description, value) VALUES ($1, $2, $3, $4, $5)
         RETURNING {VIEW_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(auth.team_id())
    .bind(name)
    .bind(&body.description)
    .bind(state.keyring.encrypt(&body.value))
    .fetch_one(&mut *tx)
    .await?;
    auth.audit(
        &mut tx,
        "credential.created",
        "credential",
        created.id.to_string(),
        json!({"name": created.name}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists the team's credentials, newest first (never their values).
///
/// Scope: `credentials:read`.
#[utoipa::path(get, path = "/credentials", operation_id = "listCredentials", tag = "credentials", params(ListQuery),
    responses((status = 200, description = "A page of credentials.", body = Page<CredentialView>)))]
async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<CredentialView>>, ApiError> {
    allowed(&auth, Scope::CredentialsRead)?;
    let cursor = Cursor::new(q.limit, q.cursor.as_deref())?;
    let rows: Vec<CredentialView> = sqlx::query_as(&format!(
        "SELECT {VIEW_COLUMNS} FROM credentials WHERE team_id = $1
           AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(auth.team_id())
    .bind(cursor.after)
    .bind(cursor.fetch_limit())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(cursor.page(rows, |c| c.id)))
}

/// One credential (never its value).
///
/// Scope: `credentials:read`.
#[utoipa::path(get, path = "/credentials/{id}", operation_id = "getCredential", tag = "credentials", params(("id" = Uuid, Path, description = "The credential's id.")),
    responses((status = 200, description = "The credential.", body = CredentialView)))]
async fn show(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<CredentialView>, ApiError> {
    allowed(&auth, Scope::CredentialsRead)?;
    Ok(Json(visible(&state, &auth, id).await?))
}

/// Revokes a credential at once; runs that need it fail, naming it. Revoking twice is 409.
///
/// Scope: `credentials:write`.
#[utoipa::path(post, path = "/credentials/{id}/revoke", operation_id = "revokeCredential", tag = "credentials", params(("id" = Uuid, Path, description = "The credential's id.")),
    responses((status = 200, description = "The credential, revoked.", body = CredentialView),
        (status = 409, description = "`credential_revoked`: it already was.", body = crate::error::Envelope)))]
async fn revoke(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<CredentialView>, ApiError> {
    allowed(&auth, Scope::CredentialsWrite)?;
    let mut tx = state.db.begin().await?;
    let revoked: Option<CredentialView> = sqlx::query_as(&format!(
        "UPDATE credentials SET revoked_at = now() WHERE id = $1 AND team_id = $2 AND revoked_at IS NULL
         RETURNING {VIEW_COLUMNS}"
    ))
    .bind(id)
    .bind(auth.team_id())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(revoked) = revoked else {
        // Either not ours (404) or already revoked (409).
        visible(&state, &auth, id).await?;
        return Err(ApiError::conflict(
            "credential_revoked",
            "This credential is already revoked.",
        ));
    };
    auth.audit(
        &mut tx,
        "credential.revoked",
        "credential",
        id.to_string(),
        json!({"name": revoked.name}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(revoked))
}
