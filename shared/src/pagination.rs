//! Cursor pagination, newest first. Ids are UUIDv7, so the cursor is the last id seen and
//! the next page is `id < cursor`: stable under inserts, no offsets.

use serde::Serialize;
use uuid::Uuid;

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size.
pub const MAX_LIMIT: i64 = 200;

/// Where a page starts and how long it is.
#[derive(Clone, Debug)]
pub struct Cursor {
    /// Only rows with ids below this one.
    pub after: Option<Uuid>,
    /// Page size, 1..=MAX_LIMIT.
    pub limit: i64,
}

/// Why a cursor or limit was refused.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// `limit` outside 1..=200.
    #[error("limit must be between 1 and {MAX_LIMIT}")]
    Limit,
    /// `cursor` not one we handed out.
    #[error("cursor is not valid")]
    Cursor,
}

impl Cursor {
    /// Validates query parameters.
    pub fn new(limit: Option<i64>, cursor: Option<&str>) -> Result<Self, CursorError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(CursorError::Limit);
        }
        let after = match cursor.filter(|c| !c.is_empty()) {
            Some(c) => Some(Uuid::parse_str(c).map_err(|_| CursorError::Cursor)?),
            None => None,
        };
        Ok(Self { after, limit })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        self.limit + 1
    }

    /// Cuts the fetched rows to a page and sets `next_cursor` when more follow.
    pub fn page<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> Uuid) -> Page<T> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| id(r).to_string())
        } else {
            None
        };
        Page {
            data: rows,
            next_cursor,
        }
    }
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The rows.
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}
