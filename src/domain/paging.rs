//! Keyset pagination shared by every list: a page size with a default and a ceiling, an opaque
//! token that is the id of the last item shown, and one extra row fetched to tell whether
//! another page exists without a second query.
use super::error::{DomainError, DomainResult, FieldViolation};
use uuid::Uuid;

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 500;

/// A validated page request: fetch `limit + 1` rows after (or before) `cursor`.
pub struct PageRequest {
    pub limit: u32,
    pub cursor: Option<Uuid>,
}

impl PageRequest {
    pub fn parse(page_size: u32, page_token: &str) -> DomainResult<Self> {
        let limit = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size > MAX_PAGE_SIZE => {
                return Err(DomainError::Validation(vec![FieldViolation::new(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                )]));
            }
            size => size,
        };
        let cursor = if page_token.is_empty() {
            None
        } else {
            Some(Uuid::parse_str(page_token).map_err(|_| {
                DomainError::Validation(vec![FieldViolation::new(
                    "page_token",
                    "is not a token from a previous page",
                )])
            })?)
        };
        Ok(Self { limit, cursor })
    }

    /// How many rows to ask the store for.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// Cuts the extra row off and returns the token for the next page, if there is one.
    pub fn finish<T>(&self, items: &mut Vec<T>, id_of: impl Fn(&T) -> Uuid) -> Option<String> {
        if items.len() <= self.limit as usize {
            return None;
        }
        items.truncate(self.limit as usize);
        items.last().map(|item| id_of(item).to_string())
    }
}
