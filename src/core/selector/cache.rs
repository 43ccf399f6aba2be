//! Compiled selectors shared by text, and the per-publish memo that evaluates
//! each distinct selector once per message.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::{Selector, SelectorError};
use crate::core::content::MessageView;
use crate::core::message::Message;

/// Selectors by text, held weakly: a selector lives as long as a subscription
/// uses it, and subscriptions with the same text share one `Arc` (so one
/// evaluation per message).
#[derive(Debug, Default)]
pub struct SelectorCache {
    by_text: Mutex<HashMap<String, Weak<Selector>>>,
}

impl SelectorCache {
    pub fn new() -> SelectorCache {
        SelectorCache::default()
    }

    /// The compiled selector for `text`, compiled now if no subscription holds it.
    pub fn get_or_compile(&self, text: &str) -> Result<Arc<Selector>, SelectorError> {
        let mut by_text = self.by_text.lock();
        if let Some(selector) = by_text.get(text).and_then(Weak::upgrade) {
            return Ok(selector);
        }
        let selector = Arc::new(Selector::parse(text)?);
        // Forget dead entries whenever the map doubles, so it stays within
        // twice the live selectors.
        if by_text.len() >= 64 && by_text.len().is_power_of_two() {
            by_text.retain(|_, weak| weak.strong_count() > 0);
        }
        by_text.insert(text.to_owned(), Arc::downgrade(&selector));
        Ok(selector)
    }

    /// Distinct selectors some subscription still uses.
    pub fn live(&self) -> usize {
        self.by_text
            .lock()
            .values()
            .filter(|weak| weak.strong_count() > 0)
            .count()
    }
}

/// One message's view and each selector's verdict on it, for one publish: a
/// selector shared by many subscriptions is evaluated once.
#[derive(Debug)]
pub struct SelectorMemo<'a> {
    view: MessageView<'a>,
    verdicts: RefCell<Vec<(*const Selector, bool)>>,
}

impl<'a> SelectorMemo<'a> {
    pub fn new(message: &'a Message) -> SelectorMemo<'a> {
        SelectorMemo::with_view(MessageView::new(message))
    }

    pub fn with_view(view: MessageView<'a>) -> SelectorMemo<'a> {
        SelectorMemo {
            view,
            verdicts: RefCell::new(Vec::new()),
        }
    }

    pub fn view(&self) -> &MessageView<'a> {
        &self.view
    }

    /// True when `selector` matches the message (evaluated on first ask).
    pub fn matches(&self, selector: &Arc<Selector>) -> bool {
        let key = Arc::as_ptr(selector);
        if let Some((_, verdict)) = self.verdicts.borrow().iter().find(|(k, _)| *k == key) {
            return *verdict;
        }
        let verdict = selector.matches(&self.view);
        self.verdicts.borrow_mut().push((key, verdict));
        verdict
    }

    /// Distinct selectors evaluated so far.
    pub fn evaluated(&self) -> usize {
        self.verdicts.borrow().len()
    }
}
