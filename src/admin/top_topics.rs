//! The busiest topics of the last 10–20 seconds, for the dashboard and `/api/stats`.
//!
//! Counted on the publish hot path, so cheaply and approximately:
//! - one publish in [`SAMPLE`] per thread is looked at (a thread-local counter),
//!   and counts as [`SAMPLE`] messages: the numbers are estimates from a
//!   1-in-8 sample, good for ranking busy topics, not for billing (a topic
//!   with a handful of messages may not show at all);
//! - the sample is recorded under a `try_lock`: when another thread holds the
//!   lock, the sample is skipped rather than waited for;
//! - a topic already counted costs a lookup by `&str`, no allocation; a new one
//!   clones the publish's `Arc<str>` (no copy of the name), and is ignored once
//!   [`MAX_TOPICS`] distinct topics are counted in the current window.
//!
//! Two windows, current and previous: the current one becomes the previous
//! once it is [`WINDOW`] old (checked lazily, when a sample is recorded or the
//! list is read). A rate is the count over the time both windows cover.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One publish in this many (per thread) is sampled; each sample counts this many.
pub const SAMPLE: u64 = 8;
/// Distinct topics one window counts at most; further new topics are ignored.
pub const MAX_TOPICS: usize = 1024;
/// How long a window collects before it becomes the previous one.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Rates are never computed over less than this (a window just opened).
const MIN_SPAN: Duration = Duration::from_secs(1);

thread_local! {
    /// Publishes seen on this thread, for the 1-in-[`SAMPLE`] choice.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// One topic in the ranking.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRate {
    pub topic: Arc<str>,
    /// Estimated messages published in the windows (a multiple of [`SAMPLE`]).
    pub messages: u64,
    /// Estimated messages a second over the time the windows cover.
    pub rate: f64,
}

/// Approximate per-topic publish counts over a recent window.
#[derive(Debug)]
pub struct TopTopics {
    windows: Mutex<Windows>,
}

#[derive(Debug)]
struct Windows {
    current: Window,
    /// Empty and unused until the first rotation (or after a long idle time).
    previous: Window,
    has_previous: bool,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    counts: HashMap<Arc<str>, u64>,
}

impl Window {
    fn new(started: Instant) -> Window {
        Window {
            started,
            counts: HashMap::new(),
        }
    }
}

impl Default for TopTopics {
    fn default() -> Self {
        TopTopics::new(Instant::now())
    }
}

impl TopTopics {
    /// Empty, its first window starting at `now`.
    pub fn new(now: Instant) -> TopTopics {
        TopTopics {
            windows: Mutex::new(Windows {
                current: Window::new(now),
                previous: Window::new(now),
                has_previous: false,
            }),
        }
    }

    /// A client published on `topic` (hot path: usually one thread-local increment).
    pub fn record(&self, topic: &Arc<str>) {
        let sampled = SEEN.with(|seen| {
            let n = seen.get().wrapping_add(1);
            seen.set(n);
            n % SAMPLE == 0
        });
        if sampled {
            self.record_sample(topic, Instant::now());
        }
    }

    /// Counts one sample (worth [`SAMPLE`] messages) at `now`; skipped under contention.
    pub fn record_sample(&self, topic: &Arc<str>, now: Instant) {
        let Some(mut windows) = self.windows.try_lock() else {
            return;
        };
        windows.rotate_if_due(now);
        let counts = &mut windows.current.counts;
        if let Some(count) = counts.get_mut(&**topic) {
            *count += SAMPLE;
        } else if counts.len() < MAX_TOPICS {
            counts.insert(Arc::clone(topic), SAMPLE);
        }
    }

    /// The `n` busiest topics at `now`, busiest first (ties by name).
    pub fn top(&self, n: usize, now: Instant) -> Vec<TopicRate> {
        let mut windows = self.windows.lock();
        windows.rotate_if_due(now);
        let mut merged: HashMap<&Arc<str>, u64> = HashMap::new();
        for (topic, count) in &windows.current.counts {
            *merged.entry(topic).or_default() += count;
        }
        let since = if windows.has_previous {
            for (topic, count) in &windows.previous.counts {
                *merged.entry(topic).or_default() += count;
            }
            windows.previous.started
        } else {
            windows.current.started
        };
        let span = now.saturating_duration_since(since).max(MIN_SPAN);
        let mut ranked: Vec<(&Arc<str>, u64)> = merged.into_iter().collect();
        ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked
            .into_iter()
            .take(n)
            .map(|(topic, messages)| TopicRate {
                topic: Arc::clone(topic),
                messages,
                rate: messages as f64 / span.as_secs_f64(),
            })
            .collect()
    }

    /// Starts a new window at `now` at once (the current one becomes the previous).
    pub fn rotate(&self, now: Instant) {
        self.windows.lock().rotate(now);
    }
}

impl Windows {
    fn rotate_if_due(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.current.started);
        if age >= 2 * WINDOW {
            // Idle for a while: both windows are stale.
            self.previous.counts.clear();
            self.has_previous = false;
            self.current.counts.clear();
            self.current.started = now;
        } else if age >= WINDOW {
            self.rotate(now);
        }
    }

    /// The current window becomes the previous; the old previous's map is reused.
    fn rotate(&mut self, now: Instant) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.has_previous = true;
        self.current.counts.clear();
        self.current.started = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn record(top: &TopTopics, name: &str, samples: usize, now: Instant) {
        let name = topic(name);
        for _ in 0..samples {
            top.record_sample(&name, now);
        }
    }

    fn names(list: &[TopicRate]) -> Vec<&str> {
        list.iter().map(|t| &*t.topic).collect()
    }

    #[test]
    fn busiest_topics_come_first_and_ties_go_by_name() {
        let t0 = Instant::now();
        let top = TopTopics::new(t0);
        record(&top, "b", 3, t0);
        record(&top, "a", 3, t0);
        record(&top, "busy", 10, t0);
        record(&top, "quiet", 1, t0);
        let list = top.top(3, t0 + Duration::from_secs(2));
        assert_eq!(names(&list), ["busy", "a", "b"]);
        assert_eq!(list[0].messages, 10 * SAMPLE);
        assert_eq!(list[1].messages, 3 * SAMPLE);
        // 80 messages over the 2 s since the window opened.
        assert_eq!(list[0].rate, 40.0);
    }

    #[test]
    fn one_publish_in_eight_is_sampled_on_a_thread() {
        std::thread::spawn(|| {
            let top = TopTopics::default();
            let name = topic("sampled");
            for _ in 0..8 * 25 {
                top.record(&name);
            }
            let list = top.top(1, Instant::now());
            assert_eq!(list[0].messages, 200);
        })
        .join()
        .expect("the sampling thread");
    }

    #[test]
    fn new_topics_beyond_the_cap_are_ignored_but_known_ones_still_count() {
        let t0 = Instant::now();
        let top = TopTopics::new(t0);
        for i in 0..MAX_TOPICS {
            record(&top, &format!("t/{i:04}"), 1, t0);
        }
        record(&top, "late", 5, t0);
        record(&top, "t/0500", 4, t0);
        let list = top.top(MAX_TOPICS + 1, t0);
        assert_eq!(list.len(), MAX_TOPICS);
        assert!(!names(&list).contains(&"late"));
        assert_eq!(list[0].topic.as_ref(), "t/0500");
        assert_eq!(list[0].messages, 5 * SAMPLE);
    }

    #[test]
    fn counts_span_two_windows_and_older_ones_are_forgotten() {
        let t0 = Instant::now();
        let top = TopTopics::new(t0);
        record(&top, "old", 4, t0);
        top.rotate(t0 + Duration::from_secs(5));
        record(&top, "new", 2, t0 + Duration::from_secs(6));
        record(&top, "old", 1, t0 + Duration::from_secs(6));
        let list = top.top(10, t0 + Duration::from_secs(8));
        assert_eq!(names(&list), ["old", "new"]);
        assert_eq!(list[0].messages, 5 * SAMPLE);
        // Both windows cover the 8 s since t0.
        assert_eq!(list[0].rate, 5.0);

        // A second rotation drops what the first window held.
        top.rotate(t0 + Duration::from_secs(9));
        let list = top.top(10, t0 + Duration::from_secs(9));
        assert_eq!(names(&list), ["new", "old"]);
        assert_eq!(list[1].messages, SAMPLE);
    }

    #[test]
    fn windows_rotate_by_themselves_when_read_or_written_late() {
        let t0 = Instant::now();
        let top = TopTopics::new(t0);
        record(&top, "a", 1, t0);
        // One window later: "a" is in the previous window, still listed.
        record(&top, "b", 1, t0 + WINDOW);
        assert_eq!(names(&top.top(10, t0 + WINDOW)), ["a", "b"]);
        // Two windows after "b": nothing recent is left.
        assert!(top.top(10, t0 + 3 * WINDOW).is_empty());
    }
}
