//! Selectors: filter on subscribe with the JMS message selector language (the
//! conditional subset of SQL-92), evaluated against the content model
//! ([`crate::core::content`]). Pure: text → [`Selector`] (compiled tree) →
//! `matches(&MessageView)`.
//!
//! The language:
//! - literals: `'it''s'` (strings, `''` for a quote), `42`, `2.5`, `.5`,
//!   `1e3` (numbers), `TRUE`, `FALSE`; keywords in any case;
//! - `= <> < <= > >=`, `AND OR NOT`, `+ - * /` and unary `-`,
//!   `[NOT] BETWEEN a AND b`, `[NOT] IN (a, b, ...)`,
//!   `[NOT] LIKE 'pattern' [ESCAPE 'c']` (`%` any run, `_` one character),
//!   `IS [NOT] NULL`, parentheses;
//! - names: the content model's reserved names (`topic`, `topic.<n>`, `qos`,
//!   `retain`, `content-type`, `correlation-id`, `reply-to`, `payload-size`,
//!   `payload.<path>`; see [`crate::core::content::Field`]), any other name is
//!   a user property / custom header. A `-` between name characters is part
//!   of the name (`x-kind`; subtract with spaces: `a - b`). A double-quoted
//!   name (`"my header"`, `"topic"`) is always a property, never reserved.
//!
//! Three-valued logic: a missing name is NULL, comparisons and arithmetic
//! with NULL are UNKNOWN, and a message matches only when the selector is
//! TRUE; nothing a message carries makes evaluation fail. A string compared
//! with a number is compared as a number when it parses as one (STOMP headers
//! are all strings); strings also compare by order (`<`, `>`: code points).

mod ast;
mod cache;
mod eval;
mod lexer;
mod parser;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_prop;

use std::fmt;
use std::sync::Arc;

pub use ast::{BinaryOp, Expr, LikePart, LikePattern};
pub use cache::{SelectorCache, SelectorMemo};

use crate::core::content::MessageView;
use crate::core::message::Message;

/// Longest selector text accepted (bytes).
pub const MAX_SELECTOR_LENGTH: usize = 4096;

/// A selector that does not parse: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector error at byte {position}: expected {expected}, found {found}")]
pub struct SelectorError {
    /// Byte offset in the selector text.
    pub position: usize,
    pub expected: String,
    pub found: String,
}

impl SelectorError {
    pub(crate) fn new(position: usize, expected: &str, found: String) -> SelectorError {
        SelectorError {
            position,
            expected: expected.to_owned(),
            found,
        }
    }
}

/// A compiled selector; shared (`Arc`) by every subscription with the same text.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    text: String,
    expr: Expr,
}

impl Selector {
    /// Compiles `text` (at most [`MAX_SELECTOR_LENGTH`] bytes).
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.len() > MAX_SELECTOR_LENGTH {
            return Err(SelectorError::new(
                MAX_SELECTOR_LENGTH,
                &format!("a selector of at most {MAX_SELECTOR_LENGTH} bytes"),
                format!("{} bytes", text.len()),
            ));
        }
        Ok(Selector {
            text: text.to_owned(),
            expr: parser::parse(text)?,
        })
    }

    /// The text it was compiled from.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// True when the selector is TRUE for this message (FALSE and UNKNOWN do not match).
    pub fn matches(&self, view: &MessageView<'_>) -> bool {
        eval::matches(&self.expr, view)
    }

    /// Keeps the messages `selector` matches (all when None): retained
    /// messages sent on subscribe go through the subscription's selector too.
    pub fn keep_matching(selector: Option<&Selector>, messages: &mut Vec<Arc<Message>>) {
        if let Some(selector) = selector {
            messages.retain(|message| selector.matches(&MessageView::new(message)));
        }
    }
}

// Number literals are finite (the lexer refuses others), so equality is total.
impl Eq for Selector {}

/// The compiled tree, fully parenthesised: parses back to the same tree.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}
