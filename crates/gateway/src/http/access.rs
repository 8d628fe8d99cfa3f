//! One line per request, written in one place when its response is done (as pingora's logging
//! phase): status, dialect, role, time to the first event, duration and how it ended.

use std::fmt;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use streamflight_tokio::Role;

/// What is known of one request's answer so far; logged once, when it is dropped.
#[derive(Debug)]
pub(crate) struct Record {
    started: Instant,
    method: axum::http::Method,
    path: Box<str>,
    id: String,
    status: OnceLock<u16>,
    dialect: OnceLock<&'static str>,
    role: OnceLock<Role>,
    first_event: OnceLock<Instant>,
    outcome: Mutex<Option<String>>,
}

impl Record {
    /// The record of a request for `path`, shown to its client as `id`, started now.
    pub(crate) fn new(id: String, method: axum::http::Method, path: &str) -> Record {
        Record {
            started: Instant::now(),
            method,
            path: path.into(),
            id,
            status: OnceLock::new(),
            dialect: OnceLock::new(),
            role: OnceLock::new(),
            first_event: OnceLock::new(),
            outcome: Mutex::new(None),
        }
    }

    /// The response's status.
    pub(crate) fn status(&self, status: u16) {
        let _ = self.status.set(status);
    }

    /// The dialect that coalesced it.
    pub(crate) fn dialect(&self, name: &'static str) {
        let _ = self.dialect.set(name);
    }

    /// Its role in its flight.
    pub(crate) fn role(&self, role: Role) {
        let _ = self.role.set(role);
    }

    /// An event went to the client: the first one sets the time to the first event.
    pub(crate) fn event(&self) {
        if self.first_event.get().is_none() {
            let _ = self.first_event.set(Instant::now());
        }
    }

    /// How the answer ended (the first word counts: a later one is a consequence).
    pub(crate) fn end(&self, outcome: &dyn fmt::Display) {
        let mut slot = self.outcome.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(outcome.to_string());
        }
    }
}

/// A role as `x-streamflight-role` and the log line name it.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Joiner => "joiner",
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let ms = |at: Instant| at.duration_since(self.started).as_secs_f64() * 1e3;
        let outcome = self.outcome.get_mut().map(Option::take).unwrap_or_default();
        tracing::info!(
            request_id = %self.id,
            method = %self.method,
            path = %self.path,
            status = self.status.get().copied().unwrap_or(0),
            dialect = self.dialect.get().copied().unwrap_or("passthrough"),
            role = self.role.get().map_or("", |&role| role_name(role)),
            first_event_ms = self.first_event.get().map(|&at| ms(at)),
            duration_ms = ms(Instant::now()),
            outcome = outcome.as_deref().unwrap_or("done"),
            "request"
        );
    }
}
